"""Stored flow records to rows: the two views, packed records, row order, one-pass scans and the
external sort."""
