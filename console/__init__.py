"""What every flowherd command shares on the terminal.

Options, settings and connections, one-line errors (:mod:`flowherd.console.cli`); units
(:mod:`flowherd.console.units`); tables (:mod:`flowherd.console.tables`); consoles and the display
of a capture's status and report (:mod:`flowherd.console.show`). It sits below the three CLIs: the
producer and the reporter share it instead of importing each other.
"""
