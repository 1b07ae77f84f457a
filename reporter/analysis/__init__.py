"""Pure numbers about flows: sizes, distributions, elephants, heavy hitters, bursts, tail fits,
statistics by key."""
