"""Prompts are code: one module per LLM task, each with the pydantic model its JSON answer must satisfy."""
