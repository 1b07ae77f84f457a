from flowherd.producer.cli import main

main()
