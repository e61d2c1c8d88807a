"""Operation layer: MemReader (messages → memories, queries → MemoryQuery) and MemScheduler."""
