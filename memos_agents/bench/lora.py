"""``memos bench lora``: what parametric memory (a LoRA adapter trained on memories) costs and recalls.

**Data** (generated, seeded; no LLM, no external data): ``memories`` personal facts about invented
people, four facts per person from eight kinds (their dog's name, the town they grew up in, their
employer, the instrument they play, their favourite dish, their lucky number, their car, their
hobby), e.g. "Ilse Varga's dog is called Marzipan." Every fact has a **trained question** ("What
is the name of Ilse Varga's dog?", answered by the value) and a **reworded question** that is
never trained on ("What did Ilse Varga call their dog?").

**Training** (:func:`~memos_agents.parametric.lora.train_adapter`): each fact becomes two chat
exchanges, the memory text as the answer to "What do you remember?" and the trained question
with the value as the answer; LoRA on SmolLM2-135M-Instruct's attention and MLP projections, in
float32 on CPU, for the configured epochs within a step and time budget.

**Figures**: training seconds per 100 memories; steps; the adapter's size on disk; accuracy (a
greedy answer of at most 16 tokens contains the expected value, case-insensitively) on the trained
and on the reworded questions, without the adapter (the base model) and with it; the mean
per-token loss (nats) on unrelated text (:data:`UNRELATED_TEXT`, written for this benchmark) without
and with the adapter, to show the adapter did not break the model elsewhere; and the time to load
an adapter from disk into the runtime and to switch it on and off.
"""

from __future__ import annotations

import math
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memos_agents.bench import write_json
from memos_agents.errors import InvalidInputError
from memos_agents.schema import MemoryItem

CUBE = "lora-bench"

FIRST = (
    "Ilse Tomas Amara Kofi Lucia Henrik Noor Mateus Yuki Oskar Leila Dmitri Sunita Pablo Greta Ayodele Ines "
    "Rafael Mirela Jonas Sade Viktor Hana Emeka Freya Tariq Ottilie Bruno Kalani Ruth"
).split()
LAST = (
    "Varga Lindqvist Okafor Brennan Castellanos Novak Haddad Ferreira Takahashi Moreau Kowalczyk Andersen Mensah "
    "Duarte Petrova Quigley Stavros Nakamura Oyelaran Fitzgerald Horvath Delacroix Szabo Iwasaki Lundgren"
).split()


@dataclass(frozen=True)
class Kind:
    """One kind of fact: its statement, the trained question, the reworded question, and its values."""

    name: str
    statement: str
    question: str
    reworded: str
    values: tuple[str, ...]


KINDS = (
    Kind(
        "dog",
        "{p}'s dog is called {v}.",
        "What is the name of {p}'s dog?",
        "What did {p} call their dog?",
        tuple("Biscuit Pepper Waffles Juniper Noodle Ziggy Pickle Mochi Tofu Rusty Clementine Gizmo Pretzel".split()),
    ),
    Kind(
        "hometown",
        "{p} grew up in {v}.",
        "Where did {p} grow up?",
        "Which town is {p} from?",
        tuple("Tbilisi Hobart Dunedin Trieste Bergen Cusco Lviv Cork Tartu Bruges Galway Kaunas Aarhus Graz".split()),
    ),
    Kind(
        "employer",
        "{p} works at {v}.",
        "Where does {p} work?",
        "Which company employs {p}?",
        (
            "Brightwave Labs",
            "Norcastle Bank",
            "Tidewell Foods",
            "Quillfeather Press",
            "Ironbark Freight",
            "Sunmere Energy",
            "Halvorsen Optics",
            "Cobalt Ridge Games",
            "Fernhollow Clinic",
            "Greystone Insurance",
        ),
    ),
    Kind(
        "instrument",
        "{p} plays the {v}.",
        "Which instrument does {p} play?",
        "What musical instrument can {p} play?",
        tuple("cello banjo oboe harp accordion ukulele bassoon trombone mandolin sitar bagpipes marimba".split()),
    ),
    Kind(
        "dish",
        "{p}'s favourite dish is {v}.",
        "What is {p}'s favourite dish?",
        "Which food does {p} like best?",
        tuple("shakshuka pierogi ramen paella moussaka bibimbap goulash risotto falafel ceviche laksa borscht".split()),
    ),
    Kind(
        "number",
        "{p}'s lucky number is {v}.",
        "What is {p}'s lucky number?",
        "Which number does {p} consider lucky?",
        tuple(str(n) for n in (17, 23, 31, 38, 42, 47, 56, 61, 64, 73, 79, 88, 94)),
    ),
    Kind(
        "car",
        "{p} drives a {v}.",
        "What car does {p} drive?",
        "Which make of car does {p} own?",
        tuple("Volvo Skoda Subaru Fiat Saab Lada Peugeot Mazda Citroen Dacia Alfa".split()),
    ),
    Kind(
        "hobby",
        "{p}'s hobby is {v}.",
        "What is {p}'s hobby?",
        "What does {p} do for fun?",
        ("birdwatching", "fencing", "pottery", "beekeeping", "origami", "kayaking", "calligraphy", "archery"),
    ),
)

#: Text unrelated to the facts (written for this benchmark): the adapter should not raise its loss much.
UNRELATED_TEXT = (
    "The water cycle moves water between the oceans, the air and the land. Sunlight warms the surface of the "
    "sea, and water evaporates into the atmosphere, where it cools, condenses into clouds and falls again as "
    "rain or snow. Rivers carry much of it back to the sea, while some seeps into the ground and feeds wells "
    "and springs for years before it returns.",
    "A good loaf of bread needs only flour, water, salt and yeast, but time matters as much as the "
    "ingredients. A slow rise in a cool kitchen lets the dough develop flavour, and a hot oven with some "
    "steam in the first minutes gives the crust its colour and crunch.",
    "Railways changed how people thought about distance. Before them, a journey of a hundred miles could take "
    "several days by coach; within a few decades the same trip took a few hours, and towns began to keep a "
    "common time so that timetables could be printed and trusted.",
    "To keep a small garden healthy, water the plants early in the morning, when less water is lost to the "
    "sun, and cover the soil with mulch to keep it moist. Rotate vegetables from year to year so that pests "
    "and diseases do not build up in one bed.",
    "In chess, the opening is about development: bring the knights and bishops out, control the centre, and "
    "castle early to keep the king safe. Moving the same piece many times in the opening usually gives the "
    "opponent time to take the initiative.",
    "The human heart beats about a hundred thousand times a day. It has four chambers: the right side pumps "
    "blood to the lungs to pick up oxygen, and the left side pumps it out to the rest of the body through "
    "the arteries.",
)


@dataclass(frozen=True)
class Fact:
    """One generated fact: the memory, its expected value, and the two questions about it."""

    item: MemoryItem
    kind: str
    value: str
    question: str
    reworded: str


def make_facts(n: int, seed: int = 7) -> list[Fact]:
    """Return ``n`` facts, four per invented person, deterministically from ``seed`` (see the module docstring)."""
    rng = random.Random(seed)
    people = [f"{f} {last}" for f in FIRST for last in LAST]
    rng.shuffle(people)
    facts = []
    for i in range(n):
        k, j = divmod(i, 4)
        person = people[k % len(people)]
        kind = KINDS[(k + 2 * j + (j // 2)) % len(KINDS)]
        value = rng.choice(kind.values)
        item = MemoryItem(
            id=f"fact-{i:04d}", cube_id=CUBE, text=kind.statement.format(p=person, v=value), tags=[kind.name]
        )
        facts.append(
            Fact(
                item=item,
                kind=kind.name,
                value=value,
                question=kind.question.format(p=person),
                reworded=kind.reworded.format(p=person),
            )
        )
    return facts


def _accuracy(runtime: Any, facts: Sequence[Fact], attr: str, batch_size: int) -> tuple[float, list[str]]:
    questions = [[{"role": "user", "content": getattr(f, attr)}] for f in facts]
    answers = runtime.generate_batch(questions, max_new_tokens=16, batch_size=batch_size)
    hits = sum(f.value.lower() in a.lower() for f, a in zip(facts, answers, strict=True))
    return hits / len(facts), answers


def run_lora_bench(
    model: Any,
    tokenizer: Any,
    *,
    memories: int = 100,
    config: Any = None,
    seed: int = 7,
    batch_size: int = 16,
    exchanges: str = "text+qa",
    progress: Callable[[str, int, int], None] | None = None,
    model_id: str | None = None,
) -> dict[str, Any]:
    """Train an adapter on ``memories`` generated facts and measure it; return the results dict.

    Args:
        model: The base model (float32 is fastest on CPU; see ``LoRAConfig.train_dtype``).
        tokenizer: Its tokenizer.
        memories: Facts to train on (default 100).
        config: A :class:`~memos_agents.parametric.lora.LoRAConfig` (default: :func:`default_config`).
        seed: Seed of the generated facts.
        batch_size: Questions per generation batch.
        exchanges: ``text+qa`` (default): two exchanges per fact, the memory text (after
            ``config.memory_prompt``) and the trained question answered by the value; ``qa``: one,
            the trained question answered by the memory text (half the training compute).
        progress: ``progress(phase, done, total)`` during training (phase ``"train"``).
        model_id: Name recorded in the adapter's fingerprint.

    """
    from memos_agents.parametric.lora import AdapterArtifact, train_adapter
    from memos_agents.parametric.runtime import AdapterRuntime

    config = config or default_config()
    if exchanges not in ("text+qa", "qa"):
        raise InvalidInputError(f"exchanges must be text+qa or qa, not {exchanges!r}")
    facts = make_facts(memories, seed)
    items = [f.item for f in facts]
    if exchanges == "qa":
        config = config.model_copy(update={"memory_text": False})
        qa = {f.item.id: [(f.question, f.item.text)] for f in facts}
    else:
        qa = {f.item.id: [(f.question, f.value)] for f in facts}
    runtime = AdapterRuntime(model, tokenizer, model_id=model_id)

    t0 = time.perf_counter()
    base_trained, base_answers = _accuracy(runtime, facts, "question", batch_size)
    base_reworded, _ = _accuracy(runtime, facts, "reworded", batch_size)
    base_nll = runtime.mean_nll(UNRELATED_TEXT)
    base_eval_s = time.perf_counter() - t0

    def report(p: Any) -> None:
        if progress is not None:
            progress("train", p.step, p.total_steps)

    t0 = time.perf_counter()
    artifact = train_adapter(model, tokenizer, items, config, qa=qa, progress=report, model_id=model_id)
    train_wall_s = time.perf_counter() - t0
    tmp = Path(tempfile.mkdtemp(prefix="memos-bench-lora-"))
    try:
        path = artifact.save(tmp / "adapter")
        files = {p.name: p.stat().st_size for p in sorted(path.iterdir())}
        t0 = time.perf_counter()
        loaded = AdapterArtifact.load(path)
        runtime.load(loaded, "facts")
        load_s = time.perf_counter() - t0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.perf_counter()
    for _ in range(10):
        runtime.activate(None)
        runtime.activate("facts")
    switch_ms = (time.perf_counter() - t0) / 20 * 1000

    t0 = time.perf_counter()
    lora_trained, lora_answers = _accuracy(runtime, facts, "question", batch_size)
    lora_reworded, reworded_answers = _accuracy(runtime, facts, "reworded", batch_size)
    lora_nll = runtime.mean_nll(UNRELATED_TEXT)
    lora_eval_s = time.perf_counter() - t0
    runtime.unload_all()

    m = artifact.metrics
    per_kind: dict[str, dict[str, float]] = {}
    for kind in sorted({f.kind for f in facts}):
        idx = [i for i, f in enumerate(facts) if f.kind == kind]
        per_kind[kind] = {
            "facts": len(idx),
            "trained_base": _share(facts, base_answers, idx),
            "trained_lora": _share(facts, lora_answers, idx),
            "reworded_lora": _share(facts, reworded_answers, idx),
        }
    import torch

    return {
        "setup": {
            "model": model_id or runtime.fingerprint.model_id,
            "model_dtype": runtime.fingerprint.dtype,
            "memories": memories,
            "examples": m.examples,
            "exchanges": exchanges,
            "seed": seed,
            "config": config.model_dump(mode="json"),
            "torch_threads": config.num_threads or torch.get_num_threads(),
            "answer_check": "the greedy answer (at most 16 tokens) contains the expected value, case-insensitively",
            "unrelated_text_tokens": sum(
                len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in UNRELATED_TEXT
            ),
        },
        "training": {
            "steps": m.steps,
            "total_steps": m.total_steps,
            "epochs_done": round(m.steps * config.batch_size / m.examples, 2),
            "stopped_by": m.stopped_by,
            "train_seconds": round(m.seconds, 2),
            "train_wall_seconds": round(train_wall_s, 2),
            "train_seconds_per_100_memories": round(m.seconds * 100 / memories, 2),
            "seconds_per_step": round(m.seconds / m.steps, 3) if m.steps else None,
            "target_tokens": m.target_tokens,
            "loss_before": _round(m.loss_before),
            "loss_after": _round(m.loss_after),
            "losses": [round(x, 4) for x in m.losses],
        },
        "adapter": {
            "weights_bytes": artifact.size_bytes(),
            "files_bytes": files,
            "total_bytes": sum(files.values()),
            "parameters": sum(int(t.numel()) for t in artifact.tensors.values()),
            "load_seconds": round(load_s, 3),
            "switch_ms": round(switch_ms, 3),
        },
        "accuracy": {
            "trained_questions": {"base": base_trained, "lora": lora_trained},
            "reworded_questions": {"base": base_reworded, "lora": lora_reworded},
            "per_kind": per_kind,
        },
        "unrelated_text_nll": {
            "base": round(base_nll, 4),
            "lora": round(lora_nll, 4),
            "delta": round(lora_nll - base_nll, 4),
            "perplexity_base": round(math.exp(base_nll), 2),
            "perplexity_lora": round(math.exp(lora_nll), 2),
        },
        "eval_seconds": {"base": round(base_eval_s, 1), "lora": round(lora_eval_s, 1)},
        "examples": [
            {
                "question": f.question,
                "expected": f.value,
                "base": b,
                "lora": a,
                "reworded": f.reworded,
                "lora_reworded": r,
            }
            for f, b, a, r in list(zip(facts, base_answers, lora_answers, reworded_answers, strict=True))[:8]
        ],
    }


def _cell(text: str) -> str:
    """Return ``text`` fit for a Markdown table cell (no pipes, newlines or control characters)."""
    return "".join(ch if ch.isprintable() else " " for ch in text).replace("|", "/")


def _share(facts: Sequence[Fact], answers: Sequence[str], idx: Sequence[int]) -> float:
    return round(sum(facts[i].value.lower() in answers[i].lower() for i in idx) / len(idx), 3) if idx else 0.0


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def default_config(**overrides: Any) -> Any:
    """Return the benchmark's :class:`~memos_agents.parametric.lora.LoRAConfig` (``overrides`` replace fields)."""
    from memos_agents.parametric.lora import LoRAConfig

    values: dict[str, Any] = {
        "rank": 16,
        "alpha": 32,
        "target_modules": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
        "learning_rate": 1e-3,
        "epochs": 8,
        "batch_size": 8,
        "max_seq_len": 128,
        "max_seconds": 900.0,
        "seed": 0,
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    return LoRAConfig(**values)


def write_results(results: dict[str, Any], out: str | Path) -> list[Path]:
    """Write ``results.json``, ``results.md`` and ``lora.png`` (when matplotlib is installed); return the paths."""
    out_dir, paths = write_json(results, out)
    s, t, a, acc, nll = (
        results["setup"],
        results["training"],
        results["adapter"],
        results["accuracy"],
        results["unrelated_text_nll"],
    )
    c = s["config"]

    def pct(x: float) -> str:
        return f"{100 * x:.0f} %"

    lines = [
        "# Parametric memory: a LoRA adapter trained on memories (memos bench lora)",
        "",
        f"{s['model']} ({s['model_dtype']}) on CPU, {s['torch_threads']} torch thread(s). {s['memories']} generated "
        f"facts ({s['examples']} training exchanges: "
        + (
            "each memory's text and one question answered by its value"
            if s["exchanges"] == "text+qa"
            else "one question per memory, answered by the memory's text"
        )
        + f"), LoRA rank "
        f"{c['rank']} (alpha {c['alpha']}) on {', '.join(c['target_modules'])}; AdamW lr {c['learning_rate']}, "
        f"batch {c['batch_size']}, {c['epochs']} epochs planned, time budget {c['max_seconds']} s.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| training time per 100 memories (s) | {t['train_seconds_per_100_memories']} |",
        f"| steps (epochs done) | {t['steps']} of {t['total_steps']} ({t['epochs_done']}); "
        f"stopped by {t['stopped_by']} |",
        f"| seconds per step | {t['seconds_per_step']} |",
        f"| training loss before → after (nats/token) | {t['loss_before']} → {t['loss_after']} |",
        f"| adapter size on disk (bytes) | {a['total_bytes']:,} (weights {a['weights_bytes']:,}; "
        f"{a['parameters']:,} parameters) |",
        f"| load from disk into the runtime (s) / switch on or off (ms) | {a['load_seconds']} / {a['switch_ms']} |",
        "",
        "| accuracy | base model | with the adapter |",
        "|---|---|---|",
        f"| trained questions | {pct(acc['trained_questions']['base'])} | {pct(acc['trained_questions']['lora'])} |",
        f"| reworded questions (not trained on) | {pct(acc['reworded_questions']['base'])} | "
        f"{pct(acc['reworded_questions']['lora'])} |",
        "",
        f"Loss on unrelated text ({s['unrelated_text_tokens']} tokens): {nll['base']} nats/token without the "
        f"adapter, {nll['lora']} with it (perplexity {nll['perplexity_base']} → {nll['perplexity_lora']}).",
        "",
        f"An answer counts when {s['answer_check']}.",
        "",
        "| kind | facts | trained, base | trained, adapter | reworded, adapter |",
        "|---|---|---|---|---|",
    ]
    for kind, row in acc["per_kind"].items():
        lines.append(
            f"| {kind} | {row['facts']} | {pct(row['trained_base'])} | {pct(row['trained_lora'])} | "
            f"{pct(row['reworded_lora'])} |"
        )
    lines += ["", "Examples:", "", "| question | expected | base | adapter |", "|---|---|---|---|"]
    for ex in results["examples"]:
        cells = [ex["question"], ex["expected"], ex["base"], ex["lora"]]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    paths[1].write_text("\n".join(lines) + "\n")
    if _chart(results, out_dir / "lora.png"):
        paths.append(out_dir / "lora.png")
    return paths


def _chart(results: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    acc = results["accuracy"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    try:
        labels = ["trained questions", "reworded questions"]
        base = [100 * acc["trained_questions"]["base"], 100 * acc["reworded_questions"]["base"]]
        lora = [100 * acc["trained_questions"]["lora"], 100 * acc["reworded_questions"]["lora"]]
        xs = range(len(labels))
        left.bar([x - 0.2 for x in xs], base, width=0.4, label="base model")
        left.bar([x + 0.2 for x in xs], lora, width=0.4, label="with the adapter")
        left.set_xticks(list(xs), labels)
        left.set_ylabel("accuracy (%)")
        left.set_ylim(0, 100)
        nll = results["unrelated_text_nll"]
        left.set_title(f"unrelated-text loss {nll['base']} → {nll['lora']} nats/token", fontsize=9)
        left.legend()
        losses = results["training"]["losses"]
        right.plot(range(1, len(losses) + 1), losses)
        right.set_xlabel("step")
        right.set_ylabel("batch loss (nats/token)")
        right.set_title(f"training: {results['training']['train_seconds']} s, {len(losses)} steps", fontsize=9)
        fig.suptitle(f"LoRA on {results['setup']['memories']} memories ({results['setup']['model']})")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
    return True
