"""The OpenAI-compatible clients against a real HTTP endpoint on loopback (the server is a test double)."""

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from memos_agents import MemOS
from memos_agents.errors import ModelError
from memos_agents.models.embedders import OpenAIEmbedder
from memos_agents.models.llm import OpenAICompatibleLLM

pytestmark = pytest.mark.unit

FACTS = {"facts": [{"text": "Caroline takes pottery classes.", "source_ids": ["D1:1"], "memory_type": "UserMemory"}]}


class Handler(BaseHTTPRequestHandler):
    requests: ClassVar[list[dict[str, object]]] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Handler.requests.append({"path": self.path, **body})
        if self.path.endswith("/embeddings"):
            data = [
                {"object": "embedding", "index": i, "embedding": [1.0, float(i), 0.5]}
                for i in range(len(body["input"]))
            ]
            payload = {
                "object": "list",
                "data": data,
                "model": body["model"],
                "usage": {"prompt_tokens": 1, "total_tokens": 1},
            }
        elif self.path.endswith("/chat/completions"):
            system = body["messages"][0]["content"]
            content = json.dumps(FACTS) if "extract" in system else "She takes pottery classes."
            payload = {
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [
                    {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        else:
            self.send_response(404)
            self.end_headers()
            return
        raw = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


@pytest.fixture
def endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Handler.requests = []
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_chat_and_embeddings_over_http(endpoint: str) -> None:
    llm = OpenAICompatibleLLM("smollm2", base_url=endpoint, api_key="k")
    assert llm.generate([{"role": "user", "content": "hi"}], max_tokens=5) == "She takes pottery classes."
    emb = OpenAIEmbedder("minilm", dim=3, base_url=endpoint).embed(["a", "b"])
    assert emb.shape == (2, 3)
    assert abs(float((emb[1] ** 2).sum()) - 1.0) < 1e-6
    assert Handler.requests[0]["max_tokens"] == 5 and Handler.requests[1]["input"] == ["a", "b"]
    with pytest.raises(ModelError):
        OpenAIEmbedder("minilm", dim=4, base_url=endpoint).embed(["a"])


def test_fine_mode_through_an_openai_compatible_server(endpoint: str, tmp_path: Path) -> None:
    config = {
        "embedder": {"provider": "hashing", "dim": 64},
        "llm": {"provider": "openai", "model": "smollm2", "base_url": endpoint, "api_key": "k"},
    }
    with MemOS.from_path(tmp_path, **config) as mos:
        mos.create_cube("c", "u")
        result = mos.add(
            [{"name": "Caroline", "content": "I started pottery classes.", "id": "D1:1", "session_id": "s1"}],
            "u",
            "c",
            mode="fine",
        )
        assert len(result.ids) == 2 and not result.failures
        texts = [h.item.text for h in mos.search("pottery", "u", ["c"])]
        assert "Caroline takes pottery classes." in texts
        assert mos.chat("What does Caroline do?", "u", ["c"]).answer == "She takes pottery classes."


def test_unreachable_endpoint_is_a_model_error() -> None:
    llm = OpenAICompatibleLLM("m", base_url="http://127.0.0.1:9/v1", api_key="k", timeout=2, max_retries=0)
    with pytest.raises(ModelError):
        llm.generate([{"role": "user", "content": "hi"}])


@pytest.mark.models
def test_demo_answers_through_an_openai_compatible_endpoint(endpoint: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from memos_agents.cli import app

    locomo = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "locomo" / "locomo_dev7.json"
    args = ["demo", "--data", str(locomo), "--home", str(tmp_path / "home"), "--max-sessions", "1", "--questions", "1"]
    run = CliRunner().invoke(
        app, [*args, "--llm-base-url", endpoint, "--llm-model", "real-model", "--llm-api-key", "k"]
    )
    assert run.exit_code == 0, run.output
    assert "She takes pottery classes." in run.output and "real-model" in run.output
    chats = [r for r in Handler.requests if str(r["path"]).endswith("/chat/completions")]
    assert len(chats) == 1 and chats[0]["stop"] == ["\n"] and chats[0]["max_tokens"] == 48
    assert not (tmp_path / "home" / "models").exists()  # the local model was never loaded
    run = CliRunner().invoke(app, [*args, "--llm-base-url", endpoint])
    assert run.exit_code == 2 and "--llm-model" in run.output
