"""Capture files read as raw records and blocks: pcap, nanosecond pcap, pcapng, compressed."""
