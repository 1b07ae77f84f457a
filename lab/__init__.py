"""flowherd on several hosts of one machine: network namespaces on a bridge and the roles and
scenarios run on them (tests and benchmarks)."""
