"""``producer``: one module per command group, the options they share, and the shell of a
command that writes a capture run."""
