"""Two LangGraph agents sharing memory through the MemStore registry (runs ``graphs/multi_agent.py``).

The researcher writes findings into its cube and publishes it; the writer subscribes, recalls from
it and drafts; the writer's attempt to write into the researcher's cube is refused by the store.
The run goes through the graph's async path (``ainvoke``: MemOS's async twins).

Run: ``python cookbook/langgraph_multi_agent_sharing.py [--home DIR] [--real-models]``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from types import ModuleType

from _common import REPO, open_mos, parse_args


def load_multi_agent() -> ModuleType:
    """Import ``graphs/multi_agent.py`` by path, as ``langgraph.json`` does."""
    spec = importlib.util.spec_from_file_location("multi_agent", REPO / "graphs" / "multi_agent.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def main() -> int:
    """Run the team once and print what crossed between the agents and what was refused."""
    args = parse_args(__doc__.splitlines()[0])
    team = load_multi_agent()
    with open_mos(args) as mos:
        graph = team.build_graph(mos)  # scripted models: a deterministic run
        out = asyncio.run(graph.ainvoke({"topic": team.DEFAULT_TOPIC}))
        print(f"researcher findings ({len(out['findings'])}), published as {out['published']}:")
        for finding in out["findings"]:
            print(f"  - {finding}")
        print(f"crossed to the writer ({len(out['crossed'])}):")
        for text in out["crossed"]:
            print(f"  - {text}")
        print(f"refused ({len(out['refused'])}):")
        for line in out["refused"]:
            print(f"  - {line}")
        print(f"draft: {out['draft']}")
        for entry in mos.registry.list("writer"):
            print(f"registry: {entry.name}@{entry.version} ({entry.kind}) by {entry.publisher}")
        for sub in mos.registry.subscriptions("writer"):
            print(f"subscription: writer -> {sub.key} as {sub.granted or 'existing role'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
