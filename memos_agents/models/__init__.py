"""Model clients: embedders, LLMs and token counting."""
