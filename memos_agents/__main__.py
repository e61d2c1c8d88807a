"""``python -m memos_agents`` runs the ``memos`` CLI."""

from memos_agents.cli import main

main()
