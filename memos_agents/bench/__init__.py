"""Benchmarks (``memos bench ...``): results are written as files, never asserted in unit tests."""
