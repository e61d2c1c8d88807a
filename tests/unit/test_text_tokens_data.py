import json
from pathlib import Path

import pytest

from memos_agents.bench.locomo_data import clean_evidence, evidence_recall, load_locomo, parse_session_time
from memos_agents.errors import InvalidInputError, ModelError
from memos_agents.models.tokens import TokenCounter, get_encoding
from memos_agents.plaintext.text import bm25_idf, bm25_query_terms, content_terms, key_phrases

pytestmark = pytest.mark.unit

LOCOMO = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "locomo" / "locomo_dev7.json"


def test_token_counts_match_tiktoken_reference() -> None:
    counter = TokenCounter()
    # reference counts of cl100k_base
    assert counter.count("hello world") == 2
    assert counter.count("tiktoken is great!") == 6
    assert counter.count_many(["a", "hello world"]) == [1, 2]
    assert get_encoding("o200k_base").encode("hello world") == [24912, 2375]
    with pytest.raises(ModelError):
        get_encoding("r50k_base")


def test_key_phrases_and_terms() -> None:
    phrases = key_phrases("I went to the LGBTQ support group yesterday and it was so powerful.")
    assert phrases[0] == "lgbtq support group"
    assert content_terms("When did Melanie paint a sunrise?") == ["melanie", "paint", "sunrise"]
    assert bm25_query_terms("the and of") == []
    assert bm25_query_terms('say "NEAR" * painted painting') == ["sai", "near", "paint", "paint"]
    assert bm25_idf(100, 1) > bm25_idf(100, 10) > 0 and bm25_idf(100, 90) == 1e-6


def test_evidence_cleaning() -> None:
    known = {"D8:6", "D9:17", "D30:5", "D1:1"}
    assert clean_evidence(["D8:6; D9:17", "D30:05", "D99:1", "D1:1"], known) == ["D8:6", "D9:17", "D30:5", "D1:1"]
    assert evidence_recall(["D1:1", "D1:2"], [["D1:1"], ["D3:3"]]) == 0.5
    assert parse_session_time("1:56 pm on 8 May, 2023").isoformat() == "2023-05-08T13:56:00+00:00"
    assert parse_session_time("garbage") is None


def test_locomo_file_counts() -> None:
    convs = load_locomo(LOCOMO)
    assert len(convs) == 7
    assert sum(c.turn_count for c in convs) == 4124
    assert sum(len(c.qa) for c in convs) == 1347
    assert sum(1 for c in convs for q in c.qa if q.category in (1, 2, 3, 4)) == 1035


def test_locomo_loader_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError):
        load_locomo(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text(json.dumps([{"no": "conversation"}]))
    with pytest.raises(InvalidInputError):
        load_locomo(tmp_path / "bad.json")
