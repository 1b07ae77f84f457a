"""Running flowherd for real: Redis connections, the embedded private Redis, deploy files."""
