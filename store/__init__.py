"""The capture store: where captures, their state and their flow tables live in Redis.

``backend`` builds the two clients (the queue Redis, and the store: one Redis or a Redis
Cluster); ``captures`` is the one home of a capture's registry entry, facts and state;
``tables`` reads flow tables back across shards. Producer, workers and reporter all go through
these modules; nothing else spells a capture's keys or meta fields.
"""
