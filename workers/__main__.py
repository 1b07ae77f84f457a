from flowherd.workers.cli import main

main()
