"""Decoding a captured frame: link types, encapsulations, IP options and extension headers, down to
its flow key."""
