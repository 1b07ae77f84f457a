"""Live capture from a network interface into a capture run."""
