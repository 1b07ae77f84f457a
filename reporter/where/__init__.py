"""``--where``: the filter language's parser, and the filter applied to flows as they stream
past."""
