"""MongoDB: the driver seam, collections and indexes, queries, and the retry policy."""
