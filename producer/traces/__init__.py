"""Synthetic traces with exact ground truth: the sample trace and MAWI-like traces of any size."""
