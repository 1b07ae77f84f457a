"""``python -m flowherd.producer``."""

from flowherd.producer.cli.main import main

if __name__ == "__main__":
    main()
