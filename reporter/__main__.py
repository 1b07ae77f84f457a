"""``python -m flowherd.reporter``."""

from flowherd.reporter.cli.main import main

if __name__ == "__main__":
    main()
