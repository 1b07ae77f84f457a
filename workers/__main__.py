"""``python -m flowherd.workers``."""

from flowherd.workers.cli import main

if __name__ == "__main__":
    main()
