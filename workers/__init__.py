"""flowherd workers: dissect batches with scapy, fold them into flow tables, merge into Redis."""
