"""What every flowherd command shares on the terminal.

Options, settings and connections, one-line errors (:mod:`console.cli`); units
(:mod:`console.units`); tables (:mod:`console.tables`); consoles and the display of a capture's
status and report (:mod:`console.show`). It sits below the three CLIs: the producer and the
reporter share it instead of importing each other.
"""
