"""Folding a batch's frames into a partial flow table: the per-packet engine, the fast engine's
arrays, and the segments of flow timeouts."""
