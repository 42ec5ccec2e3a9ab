"""The I/O side: Redis, RQ, the journal and the processes that run them."""
