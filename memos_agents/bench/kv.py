"""``memos bench kv``: time to first token with an injected KV cache vs the same memories as prompt text.

For each memory-context size (about 500, 2,000 and 6,000 tokens by default) the memories are real
LoCoMo turns (``[date] Speaker: text`` lines, as MemScheduler renders them) and the query is about
100 tokens (the turns that follow the memories and a LoCoMo question), laid out as ``MemOS.chat``
lays out a scheduled prompt (:func:`memos_agents.prompts.answer.build_scheduled_messages`). Per size:

* **text**: the whole prompt prefilled (no cache): the baseline;
* **warm**: the activation cache in memory injected (:func:`memos_agents.activation.kv.generate`);
* **cold**: the cache read from its safetensors file first (SHA-256 checked against the header, as
  ``ActivationMemory`` does, then loaded), then injected; the file is in the OS page cache;
* **limit**: a bare forward pass over the query tokens on top of the cache vs over the whole
  prompt: the most any injection can save on this machine (no generate loop, no checks).

TTFT is the time from the call to the first generated token (greedy), median of ``repeats``
runs with the variants interleaved. The greedy outputs (``check_tokens`` tokens) with and without
the cache are compared token for token. Cache size on disk per token is given for the model's
dtype and for int8. The model dtype is chosen by measurement: bf16 and float32 prefill speed of
the same prompt are measured and reported; caches are built in the dtype activation memory serves
(``ActivationConfig.dtype``, float32 by default), which their fingerprint records.
"""

from __future__ import annotations

import hashlib
import platform
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from memos_agents.activation.kv import (
    KVCache,
    build_kv_cache,
    generate,
    kv_bytes_per_token,
    prompt_ids,
    render_prefix,
)
from memos_agents.bench import save_chart, write_json
from memos_agents.bench.locomo_data import load_locomo
from memos_agents.models.fingerprint import fingerprint
from memos_agents.prompts import answer as answer_prompt

DEFAULT_SIZES = (500, 2000, 6000)
QUERY_TOKENS = 100


def _lines(data: Path) -> tuple[list[str], list[str]]:
    """Return LoCoMo turns rendered as memory lines, and the questions, in file order."""
    lines: list[str] = []
    questions: list[str] = []
    for conv in load_locomo(data):
        for session in conv.sessions:
            when = f"[{session.time:%-d %B %Y}] " if session.time else ""
            lines.extend(f"{when}{t.speaker}: {t.content}".replace("\n", " ") for t in session.turns)
        questions.extend(q.question for q in conv.qa)
    return lines, questions


def _take(tokenizer: Any, lines: Sequence[str], start: int, target: int, system: bool) -> tuple[str, int]:
    """Return lines from ``start`` (each ending with a newline) until about ``target`` tokens, and the end index."""
    out, i = "", start
    while i < len(lines):
        nxt = out + lines[i] + "\n"
        text = render_prefix(tokenizer, answer_prompt.stable_system(nxt)) if system else nxt
        if len(tokenizer(text, add_special_tokens=False)["input_ids"]) > target and out:
            break
        out, i = nxt, i + 1
    return out, i


def _median_ms(values: Sequence[float]) -> float:
    return round(statistics.median(values) * 1000, 1)


def _forward_ms(model: Any, ids: list[int], cache: KVCache | None, repeats: int) -> float:
    """Median ms of one bare forward pass over ``ids`` (past ``cache``'s tokens when given)."""
    import torch

    from memos_agents.activation.kv import _cache_kwarg

    times = []
    start = cache.num_tokens if cache is not None else 0
    for _ in range(repeats):
        kwargs = {_cache_kwarg(model): cache.fresh_cache(model)} if cache is not None else {}
        t0 = time.perf_counter()
        with torch.inference_mode():
            model(input_ids=torch.tensor([ids[start:]]), use_cache=True, logits_to_keep=1, **kwargs)
        times.append(time.perf_counter() - t0)
    return _median_ms(times)


def run_kv_bench(
    model: Any,
    tokenizer: Any,
    data: Path,
    *,
    model_id: str,
    sizes: Sequence[int] = DEFAULT_SIZES,
    repeats: int = 5,
    check_tokens: int = 32,
    workdir: Path | None = None,
    other_model: Any | None = None,
) -> dict[str, Any]:
    """Run the benchmark (see the module docstring) and return its results.

    Args:
        model: The causal LM (eval mode), in the dtype it serves in.
        tokenizer: Its tokenizer (with a chat template).
        data: A LoCoMo JSON file (memories and questions).
        model_id: Name recorded in the fingerprint and the results.
        sizes: Target memory-context sizes in tokens (default 500, 2,000, 6,000).
        repeats: Timed runs per variant (median reported; default 5).
        check_tokens: Greedy tokens compared with and without the cache (default 32).
        workdir: Where cache files are written (default: a temporary directory).
        other_model: The same model in another dtype, for the dtype measurement (None: skipped).

    """
    import torch

    fp = fingerprint(model, tokenizer, model_id)
    lines, questions = _lines(data)
    runs: list[dict[str, Any]] = []
    tmp = tempfile.TemporaryDirectory(prefix="memos-bench-kv-")
    root = workdir or Path(tmp.name)
    try:
        for n, size in enumerate(sizes):
            memory, end = _take(tokenizer, lines, 0, size, system=True)
            follow, _ = _take(tokenizer, lines, end, QUERY_TOKENS - 20, system=False)
            query = f"{follow}{questions[n % len(questions)]}"
            messages = answer_prompt.build_scheduled_messages(query, memory, "", ())
            prefix = render_prefix(tokenizer, answer_prompt.stable_system(memory))
            t0 = time.perf_counter()
            cache = build_kv_cache(model, tokenizer, prefix, fp)
            build_s = time.perf_counter() - t0
            path = root / f"kv-{size}.safetensors"
            size_native = cache.save(path)
            size_int8 = cache.save(root / f"kv-{size}.int8.safetensors", "int8")
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            ids = prompt_ids(tokenizer, messages)
            text_t, warm_t, cold_t, cold_load = [], [], [], []
            generate(model, tokenizer, messages, kv=cache, fingerprint=fp, max_new_tokens=1)  # warm-up
            for _ in range(repeats):
                text_t.append(generate(model, tokenizer, messages, max_new_tokens=1).ttft_s)
                warm_t.append(generate(model, tokenizer, messages, kv=cache, fingerprint=fp, max_new_tokens=1).ttft_s)
                t0 = time.perf_counter()
                if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
                    raise RuntimeError("cache file changed during the benchmark")
                cold = KVCache.load(path)
                cold.layers()
                loaded = time.perf_counter() - t0
                g = generate(model, tokenizer, messages, kv=cold, fingerprint=fp, max_new_tokens=1)
                cold_load.append(loaded)
                cold_t.append(loaded + g.ttft_s)
            plain = generate(model, tokenizer, messages, max_new_tokens=check_tokens)
            cached = generate(model, tokenizer, messages, kv=cache, fingerprint=fp, max_new_tokens=check_tokens)
            limit_full = _forward_ms(model, ids, None, repeats)
            limit_cached = _forward_ms(model, ids, cache, repeats)
            text_ms, warm_ms, cold_ms = _median_ms(text_t), _median_ms(warm_t), _median_ms(cold_t)
            runs.append(
                {
                    "target_tokens": size,
                    "memory_tokens": cache.num_tokens,
                    "memories": memory.count("\n"),
                    "query_tokens": len(ids) - cache.num_tokens,
                    "prompt_tokens": len(ids),
                    "build_ms": round(build_s * 1000, 1),
                    "ttft_text_ms": text_ms,
                    "ttft_warm_ms": warm_ms,
                    "ttft_cold_ms": cold_ms,
                    "cold_load_ms": _median_ms(cold_load),
                    "reduction_warm_pct": round(100 * (1 - warm_ms / text_ms), 1),
                    "reduction_cold_pct": round(100 * (1 - cold_ms / text_ms), 1),
                    "forward_full_ms": limit_full,
                    "forward_cached_ms": limit_cached,
                    "reduction_limit_pct": round(100 * (1 - limit_cached / limit_full), 1),
                    "identical_greedy_output": plain.token_ids == cached.token_ids,
                    "greedy_tokens_compared": len(plain.token_ids),
                    "answer": plain.text,
                    "file_bytes": size_native,
                    "file_bytes_per_token": round(size_native / cache.num_tokens, 1),
                    "file_bytes_int8": size_int8,
                    "file_bytes_per_token_int8": round(size_int8 / cache.num_tokens, 1),
                }
            )
        dtype: dict[str, Any] = {"serving": fp.dtype}
        if other_model is not None:
            probe, _ = _take(tokenizer, lines, 0, 2000, system=False)
            ids = list(tokenizer(probe, add_special_tokens=False)["input_ids"])
            for m in (model, other_model):
                name = str(next(iter(m.parameters())).dtype).removeprefix("torch.")
                ms = _forward_ms(m, ids, None, 3)
                dtype[f"prefill_{name}_tokens_per_s"] = round(len(ids) / (ms / 1000), 1)
    finally:
        tmp.cleanup()
    return {
        "setup": {
            "model": model_id,
            "dtype": fp.dtype,
            "attention": fp.attention,
            "layers": fp.num_layers,
            "kv_heads": fp.num_kv_heads,
            "head_dim": fp.head_dim,
            "tensor_bytes_per_token": kv_bytes_per_token(fp),
            "threads": torch.get_num_threads(),
            "repeats": repeats,
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "data": str(data),
        },
        "dtype_choice": dtype,
        "runs": runs,
    }


def write_results(results: dict[str, Any], out: str | Path) -> list[Path]:
    """Write ``results.json``, ``results.md`` and ``kv.png`` (when matplotlib is installed); return the paths."""
    out_dir, paths = write_json(results, out)
    s = results["setup"]
    lines = [
        "# KV-cache injection: time to first token (memos bench kv)",
        "",
        f"{s['model']} ({s['dtype']}, {s['attention']} attention, {s['layers']} layers, "
        f"{s['kv_heads']} KV heads x {s['head_dim']}) on CPU, "
        f"{s['threads']} threads, median of {s['repeats']} runs; memories are LoCoMo turns, queries about "
        f"{QUERY_TOKENS} tokens.",
        "",
        "| memory tokens | prompt tokens | TTFT text (ms) | TTFT warm (ms) | TTFT cold (ms) | reduction warm | "
        "reduction cold | limit (bare forward) | identical greedy output | disk B/token (model dtype / int8) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        lines.append(
            f"| {r['memory_tokens']:,} | {r['prompt_tokens']:,} | {r['ttft_text_ms']} | {r['ttft_warm_ms']} | "
            f"{r['ttft_cold_ms']} | {r['reduction_warm_pct']} % | {r['reduction_cold_pct']} % | "
            f"{r['reduction_limit_pct']} % | {'yes' if r['identical_greedy_output'] else 'NO'} "
            f"({r['greedy_tokens_compared']} tokens) | {r['file_bytes_per_token']:,} / "
            f"{r['file_bytes_per_token_int8']:,} |"
        )
    d = results.get("dtype_choice", {})
    if "prefill_float32_tokens_per_s" in d and "prefill_bfloat16_tokens_per_s" in d:
        lines += [
            "",
            f"Dtype: prefill of 2,000 tokens at {d['prefill_bfloat16_tokens_per_s']} tokens/s in bfloat16 vs "
            f"{d['prefill_float32_tokens_per_s']} in float32; caches are built and served in {d['serving']}.",
        ]
    paths[1].write_text("\n".join(lines) + "\n")

    def draw(ax: Any) -> None:
        runs = results["runs"]
        xs = list(range(len(runs)))
        w = 0.27
        ax.bar([x - w for x in xs], [r["ttft_text_ms"] for r in runs], w, label="memories as prompt text")
        ax.bar(xs, [r["ttft_cold_ms"] for r in runs], w, label="KV cache loaded from disk")
        ax.bar([x + w for x in xs], [r["ttft_warm_ms"] for r in runs], w, label="KV cache in memory")
        ax.set_xticks(xs, [f"{r['memory_tokens']:,}" for r in runs])
        ax.set_xlabel("memory context (tokens)")
        ax.set_ylabel("time to first token (ms)")
        ax.set_title(f"memos bench kv: {s['model']} on CPU")
        ax.legend()

    if save_chart(out_dir / "kv.png", draw):
        paths.append(out_dir / "kv.png")
    return paths
