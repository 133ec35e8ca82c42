"""Composition roots: the daemon, one service per source, the store worker, metrics,
status, doctor. Only these and ``cli/`` build objects from the config and wire them."""
