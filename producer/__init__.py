"""flowherd producer: reads traces as raw records, packs them into batches, enqueues jobs."""
