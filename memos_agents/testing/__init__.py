"""Shipped test suites (needs pytest). See :mod:`memos_agents.testing.conformance`."""
