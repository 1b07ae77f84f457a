"""What reads a capture's tables and windows from the store."""
