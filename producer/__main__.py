from flowherd.producer.cli.main import main

main()
