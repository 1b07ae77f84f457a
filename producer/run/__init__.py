"""A capture run's life: writing it, submitting files, following, resuming and retrying it."""
