"""The integrations benchmark (``langgraph_memos.bench``) on a tiny LoCoMo-shaped file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from langgraph_memos.bench import MEMOS_PATHS, SYSTEMS, main, run_integrations_bench

pytestmark = pytest.mark.unit

TOPICS = [
    ("pottery class", "I signed up for a pottery class last week"),
    ("dog", "My dog Max loves running on the beach"),
    ("marathon", "I ran my first marathon in Boston"),
    ("painting", "I painted a sunset over the lake"),
    ("camping", "We went camping in the mountains with the kids"),
    ("guitar", "I started learning the guitar in June"),
]


def _sample(n: int) -> dict[str, Any]:
    speakers = (f"Ann{n}", f"Bob{n}")
    conversation: dict[str, Any] = {"speaker_a": speakers[0], "speaker_b": speakers[1]}
    qa = []
    for s in (1, 2):
        conversation[f"session_{s}_date_time"] = f"1:56 pm on {s} May, 2023"
        turns = []
        for t, (topic, text) in enumerate(TOPICS[(s - 1) * 3 : s * 3], start=1):
            dia = f"D{s}:{t}"
            turns.append({"speaker": speakers[t % 2], "dia_id": dia, "text": f"{text}, said number {n}."})
            qa.append({"question": f"What about the {topic}?", "answer": topic, "evidence": [dia], "category": t})
        conversation[f"session_{s}"] = turns
    qa.append({"question": "Adversarial?", "adversarial_answer": "no", "evidence": ["D1:1"], "category": 5})
    qa.append({"question": "No evidence?", "answer": "none", "evidence": [], "category": 4})
    return {"sample_id": f"conv-{n}", "conversation": conversation, "qa": qa}


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "locomo_tiny.json"
    path.write_text(json.dumps([_sample(1), _sample(2)]))
    return path


def test_bench_writes_files_and_memos_paths_agree(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    results = run_integrations_bench(data, out, k=(1, 3), embedder="hashing")
    assert {p.name for p in out.iterdir()} >= {"results.json", "README.md", "chart.png"}
    assert json.loads((out / "results.json").read_text())["identical_recall"] is True
    assert results["identical_recall"] and results["questions_with_different_recall"] == 0
    assert results["identical_rankings"]
    assert results["setup"]["questions"] == 12  # categories 1-4 with evidence only, both conversations
    assert results["ingest"]["turns"] == 12
    systems = results["systems"]
    assert set(systems) == set(SYSTEMS)
    for s in MEMOS_PATHS:
        assert systems[s]["recall_at"] == systems["core"]["recall_at"]
        assert systems[s]["by_category"] == systems["core"]["by_category"]
    for block in systems.values():
        assert block["search_ms"]["n"] == 12 and block["search_ms"]["p95"] >= block["search_ms"]["p50"] > 0
        assert 0.0 <= block["recall_at"]["1"] <= block["recall_at"]["3"] <= 1.0
    assert set(results["overhead_vs_core"]) == {"retriever", "memos_store", "inmemory_store"}
    readme = (out / "README.md").read_text()
    assert "MemOSStore.search" in readme and "python -m langgraph_memos.bench" in readme


def test_cli_one_conversation_two_passes(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    args = ["--data", str(data), "--out", str(out), "--conversations", "1", "--repeats", "2", "--embedder", "hashing"]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["setup"]["conversations"] == ["conv-1"] and results["setup"]["questions"] == 6
    assert results["systems"]["core"]["search_ms"]["n"] == 12  # two passes, every timing kept
    assert results["results_stable_across_repeats"] and results["identical_recall"]
    assert "--repeats 2" in results["setup"]["command"]
    assert "recall@5" in capsys.readouterr().out
