"""The cookbook scripts and the graphs' command-line runs, end to end, each in its own process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.smoke

REPO = Path(__file__).resolve().parents[2]

#: script -> lines its offline run must print (each found whole in the output).
OFFLINE = {
    "cookbook/langchain_agent_with_memory.py": [
        "  tool add_memory: Stored memory",
        "alice-notes holds 2 memories; bob-notes holds 0 (the model could not write there)",
    ],
    "cookbook/langgraph_multi_agent_sharing.py": [
        "crossed to the writer (3):",
        "  - writer -> research-notes: PermissionDeniedError: user 'writer' may not write cube 'research-notes'",
        "subscription: writer -> research-notes@1.0.0 as reader",
    ],
    "cookbook/llamaindex_pipeline_with_memos.py": [
        "  answer: Got it, I will remember that.",
        "retriever: 1.000 'user: I moved to Lisbon in May and my dog is called Pixel.'",
    ],
    "cookbook/langmem_on_memos_store.py": [
        "  tool manage_memory: created memory",
        "store.search(('memories', 'alice'), query='tea'): ['Alice prefers green tea to coffee.']",
    ],
    "graphs/memory_agent.py": [
        "  remembered: user: Hi, I'm Alice. I moved to Lisbon in May and I work as a nurse. "
        "| assistant: I do not remember anything about that yet.",
        "    - user: My dog is called Pixel and she loves the beach.",
    ],
    "graphs/multi_agent.py": [
        "writer subscribed to research-notes@1.0.0",
        "crossed (3 memories read by the writer from the published cube):",
        "  - writer -> research-notes: PermissionDeniedError: user 'writer' may not write cube 'research-notes'",
    ],
}


def run(script: str, home: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run a script with ``--home`` from the repository root, without an OpenAI endpoint configured."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    return subprocess.run(
        [sys.executable, str(REPO / script), "--home", str(home), *extra],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@pytest.mark.parametrize("script", sorted(OFFLINE))
def test_offline_run(script: str, tmp_path: Path) -> None:
    result = run(script, tmp_path / "home")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    for expected in OFFLINE[script]:
        assert any(line.startswith(expected) for line in lines), f"{expected!r} not in:\n{result.stdout}"
    assert (tmp_path / "home" / "memos.db").is_file()  # the given home was used


def test_memory_agent_answers_from_memory_on_the_third_turn(tmp_path: Path) -> None:
    result = run("graphs/memory_agent.py", tmp_path / "home")
    assert result.returncode == 0, result.stderr[-3000:]
    third = result.stdout.split("[turn 3]")[1]
    answer = next(line for line in third.splitlines() if line.startswith("  answer: "))
    assert "Pixel" in answer and "Lisbon" in answer


def test_multi_agent_runs_again_on_the_same_home(tmp_path: Path) -> None:
    """The entry is published once; a second run finds it and the writer's trespass is refused again."""
    for _ in range(2):
        result = run("graphs/multi_agent.py", tmp_path / "home")
        assert result.returncode == 0, result.stderr[-3000:]
        assert "refused (1):" in result.stdout


@pytest.mark.models
def test_memory_agent_with_the_local_models(tmp_path: Path) -> None:
    """MiniLM embeddings and SmolLM2 answers through ChatMemOS: three turns, each remembered."""
    result = run("graphs/memory_agent.py", tmp_path / "home", "--real-models")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "model ChatMemOS" in result.stdout
    assert result.stdout.count("  remembered: user: ") == 3


@pytest.mark.models
def test_langchain_cookbook_with_the_local_embedder(tmp_path: Path) -> None:
    result = run("cookbook/langchain_agent_with_memory.py", tmp_path / "home", "--real-models")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Alice moved to Lisbon in May." in result.stdout.split("[conversation-2]")[1]


def test_langgraph_json_targets_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every graph langgraph.json names is a compiled graph; its store path yields a MemOSStore on MEMOS_HOME."""
    import asyncio
    import importlib.util
    import json

    from langgraph.pregel import Pregel
    from langgraph_memos import MemOSStore

    def load(target: str) -> object:
        path, name = target.rsplit(":", 1)
        spec = importlib.util.spec_from_file_location(f"_lgjson_{Path(path).stem}", REPO / path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return getattr(module, name)

    config = json.loads((REPO / "langgraph.json").read_text())
    assert set(config["graphs"]) == {"memory_agent", "multi_agent"}
    for target in config["graphs"].values():
        assert isinstance(load(target), Pregel)

    monkeypatch.setenv("MEMOS_HOME", str(tmp_path / "served"))
    monkeypatch.setenv("MEMOS_OFFLINE", "1")
    monkeypatch.setenv("MEMOS_STORE_USER", "svc")
    make_store = load(config["store"]["path"])

    async def enter() -> None:
        async with make_store() as store:  # type: ignore[operator]
            assert isinstance(store, MemOSStore) and store.user_id == "svc"
            await store.aput(("memories", "alice"), "k", {"content": "tea"})
            assert (await store.aget(("memories", "alice"), "k")).value == {"content": "tea"}

    asyncio.run(enter())
    assert (tmp_path / "served" / "memos.db").is_file()
