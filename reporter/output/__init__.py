"""Formats, no Redis: flow lines, export files, IPFIX, rich tables and plots."""
