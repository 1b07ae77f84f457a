from flowherd.reporter.cli.main import main

main()
