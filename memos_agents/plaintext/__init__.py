"""Plaintext memory: the tree organiser, hybrid retrieval and the store backends."""
