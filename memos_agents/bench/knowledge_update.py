"""``memos bench knowledge-update``: how often search returns the current fact first when facts change.

A generated, seeded set of facts that change over time (no LLM, no external data):

* ``subjects`` people (first names), each with ``attributes`` of seven kinds (where they live, work,
  their favourite colour, their dog's name, their locker number, the car they drive, their gym
  day), each stated once and then changed 1 to 3 times, on dates spread over a year in order.
* A change restates the fact in the same words with the new value ("Maria lives in Porto" after
  "Maria lives in Lisbon") or, with probability ``paraphrase``, in other words ("Maria has moved
  to Porto"): the rule of MemLifecycle (no LLM) recognises only the first kind, by design.
* Besides, each person has 2 kinds of fact that hold several values at once (languages spoken,
  pets, allergies, games played, places visited), 2-3 values each: all stay true, so each of them
  archived counts as a false positive of superseding.
* Every statement is one fact, added on its own (``mode="facts"``, as a memory tool saves one) at
  its date, all subjects interleaved in time order, into one cube of one user.

Each (subject, attribute) is then asked once ("Where does Maria live?", top 5). A question scores
**current-first** when the first result states the latest value (a word match on the value), and
**stale-first** when it states an earlier one. The same data runs with superseding off (every
statement stays active; ranking alone decides, with its newer-first tie-break) and on
(``ReaderConfig.supersede``: a newer statement archives the one it restates), in one run.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from memos_agents.bench import save_chart, write_json
from memos_agents.os import MemOS
from memos_agents.plaintext.text import words

BENCH_USER = "ku-bench"
CUBE = "facts"

NAMES = (
    "Maria John Aisha Kenji Lena Omar Priya Lucas Sofia Mateo Chloe Ivan Nadia Tom Elena Raj Grace Hugo Mei Samuel "
    "Anna Diego Fatima Leo Zara Noah Ines Yusuf Clara Felix"
).split()


@dataclass(frozen=True)
class Attribute:
    """One kind of fact: how it is stated, restated in other words, asked, and its values."""

    name: str
    statement: str
    paraphrase: str
    question: str
    values: tuple[str, ...]


ATTRIBUTES = (
    Attribute(
        "home",
        "{s} lives in {v}",
        "{s} has moved to {v}",
        "Where does {s} live?",
        tuple("Lisbon Porto Berlin Madrid Oslo Vienna Prague Dublin Warsaw Athens Zurich Lyon".split()),
    ),
    Attribute(
        "employer",
        "{s} works at {v}",
        "{s} has started a new job at {v}",
        "Where does {s} work?",
        ("the bakery", "the library", "the hospital", "the bank", "the museum", "the airport", "the school"),
    ),
    Attribute(
        "colour",
        "{s}'s favourite colour is {v}",
        "These days {s} likes {v} best of all colours",
        "What is {s}'s favourite colour?",
        tuple("blue green red yellow purple orange black white teal".split()),
    ),
    Attribute(
        "dog",
        "{s}'s dog is called {v}",
        "{s} named the new dog {v}",
        "What is the name of {s}'s dog?",
        tuple("Rex Bella Max Luna Charlie Daisy Rocky Milo Bruno".split()),
    ),
    Attribute(
        "locker",
        "{s}'s locker number is {v}",
        "{s} was given locker {v}",
        "What is {s}'s locker number?",
        tuple(str(n) for n in (114, 227, 309, 452, 518, 631, 746, 853, 962)),
    ),
    Attribute(
        "car",
        "{s} drives a {v}",
        "{s} bought a {v} and sold the old car",
        "What car does {s} drive?",
        ("Volvo", "Toyota", "Fiat", "Renault", "Skoda", "Tesla", "Honda", "Peugeot"),
    ),
    Attribute(
        "gym",
        "{s} goes to the gym on {v}",
        "{s} switched gym sessions to {v}",
        "Which day does {s} go to the gym?",
        ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    ),
)


#: Facts that hold several values at once ("speaks French", "speaks Spanish"): every one stays
#: true, so superseding any of them is a false positive.
COEXISTING = (
    ("{s} speaks {v}", ("French", "Spanish", "German", "Italian", "Japanese", "Arabic")),
    ("{s} has a {v}", ("dog", "cat", "parrot", "rabbit", "hamster")),
    ("{s} is allergic to {v}", ("peanuts", "shellfish", "pollen", "penicillin", "dust")),
    ("{s} plays {v}", ("tennis", "chess", "the piano", "golf", "the violin")),
    ("{s} visited {v} last year", ("Rome", "Tokyo", "Cairo", "Lima", "Seoul", "Quebec")),
)


@dataclass(frozen=True)
class Statement:
    """One generated message: when, about whom and what, and whether it paraphrases."""

    when: datetime
    subject: str
    attribute: str
    value: str
    text: str
    paraphrased: bool


def generate(subjects: int, attributes: int, paraphrase: float, seed: int) -> list[Statement]:
    """Return the statements of the data set in time order (see the module docstring)."""
    rng = random.Random(seed)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    out: list[Statement] = []
    for subject in NAMES[:subjects]:
        for attr in rng.sample(ATTRIBUTES, attributes):
            values = rng.sample(attr.values, 1 + rng.randint(1, 3))
            days = sorted(rng.sample(range(365), len(values)))
            for n, (value, day) in enumerate(zip(values, days, strict=True)):
                para = n > 0 and rng.random() < paraphrase
                text = (attr.paraphrase if para else attr.statement).format(s=subject, v=value)
                when = start + timedelta(days=day, minutes=rng.randint(0, 600))
                out.append(Statement(when, subject, attr.name, value, text, para))
        for template, options in rng.sample(COEXISTING, 2):
            for value in rng.sample(options, 2 + rng.randint(0, 1)):
                when = start + timedelta(days=rng.randrange(365), minutes=rng.randint(0, 600))
                out.append(Statement(when, subject, "coexisting", value, template.format(s=subject, v=value), False))
    out.sort(key=lambda s: s.when)
    return out


def _states(text: str, value: str) -> bool:
    """Whether ``text`` holds ``value`` as whole words."""
    return f" {' '.join(words(value))} " in f" {' '.join(words(text))} "


def _about(text: str, subject: str) -> bool:
    """Whether ``text`` names ``subject`` (``"Maria's"`` counts)."""
    return subject.lower() in {w.split("'")[0] for w in words(text)}


def run_knowledge_update_bench(
    mos_factory: Callable[[Path, bool], MemOS],
    *,
    subjects: int = 30,
    attributes: int = 4,
    paraphrase: float = 0.3,
    seed: int = 7,
    top_k: int = 5,
) -> dict[str, Any]:
    """Run the benchmark with superseding off and on; return the results dict.

    Args:
        mos_factory: ``(home, supersede) -> MemOS`` (store and embedder of the caller's choice).
        subjects: People (at most 30).
        attributes: Kinds of fact per person (at most 7).
        paraphrase: Probability that a change is worded differently from the first statement.
        seed: Seeds the generator (the same data for both runs).
        top_k: Results asked per question.

    """
    data = generate(min(subjects, len(NAMES)), min(attributes, len(ATTRIBUTES)), paraphrase, seed)
    latest: dict[tuple[str, str], Statement] = {}
    earlier: dict[tuple[str, str], set[str]] = {}
    para_changed: dict[tuple[str, str], bool] = {}
    coexisting = {s.text for s in data if s.attribute == "coexisting"}
    for s in data:
        if s.attribute == "coexisting":
            continue
        key = (s.subject, s.attribute)
        if key in latest:
            earlier.setdefault(key, set()).add(latest[key].value)
        latest[key] = s
        para_changed[key] = s.paraphrased
    attrs = {a.name: a for a in ATTRIBUTES}
    runs: dict[str, Any] = {}
    for mode in ("off", "on"):
        with tempfile.TemporaryDirectory(prefix="memos-bench-ku-") as tmp, mos_factory(Path(tmp), mode == "on") as mos:
            mos.create_cube(CUBE, BENCH_USER)
            t0 = time.perf_counter()
            for s in data:
                message = {"role": "user", "content": s.text, "timestamp": s.when.isoformat()}
                mos.add([message], BENCH_USER, CUBE, mode="facts")
            ingest_s = time.perf_counter() - t0
            rows: list[dict[str, Any]] = []
            for key, last in latest.items():
                question = attrs[key[1]].question.format(s=key[0])
                t0 = time.perf_counter()
                hits = mos.search(question, BENCH_USER, [CUBE], top_k=top_k)
                ms = (time.perf_counter() - t0) * 1000
                first = hits[0].item.text if hits else ""
                rows.append(
                    {
                        "current_first": _about(first, key[0]) and _states(first, last.value),
                        "stale_first": _about(first, key[0]) and any(_states(first, v) for v in earlier.get(key, ())),
                        "current_in_top_k": any(
                            _about(h.item.text, key[0]) and _states(h.item.text, last.value) for h in hits
                        ),
                        "last_change_paraphrased": para_changed[key],
                        "attribute": key[1],
                        "ms": ms,
                    }
                )
            stored = mos.store.list_items(CUBE)
            archived = sum(1 for i in stored if i.status.value == "archived")
            wrongly = sum(1 for i in stored if i.status.value == "archived" and i.text in coexisting)

        def share(subset: list[dict[str, Any]], field: str) -> float:
            return round(sum(r[field] for r in subset) / len(subset), 4) if subset else 0.0

        same = [r for r in rows if not r["last_change_paraphrased"]]
        para = [r for r in rows if r["last_change_paraphrased"]]
        runs[mode] = {
            "questions": len(rows),
            "current_first": share(rows, "current_first"),
            "stale_first": share(rows, "stale_first"),
            "current_in_top_k": share(rows, "current_in_top_k"),
            "current_first_same_wording": share(same, "current_first"),
            "current_first_paraphrased": share(para, "current_first"),
            "questions_same_wording": len(same),
            "questions_paraphrased": len(para),
            "current_first_by_attribute": {
                a.name: share([r for r in rows if r["attribute"] == a.name], "current_first")
                for a in ATTRIBUTES
                if any(r["attribute"] == a.name for r in rows)
            },
            "archived_memories": archived,
            "coexisting_facts": len(coexisting),
            "coexisting_archived": wrongly,
            "ingest_seconds": round(ingest_s, 3),
            "search_ms_p50": round(statistics.median(r["ms"] for r in rows), 2),
        }
    return {
        "runs": runs,
        "setup": {
            "statements": len(data),
            "subjects": min(subjects, len(NAMES)),
            "attributes_per_subject": min(attributes, len(ATTRIBUTES)),
            "paraphrase": paraphrase,
            "seed": seed,
            "top_k": top_k,
        },
    }


def write_results(results: dict[str, Any], out: str | Path, embedder: str) -> list[Path]:
    """Write ``results.json``, ``results.md`` and ``knowledge_update.png`` (with matplotlib); return the paths."""
    results = {**results, "setup": {**results["setup"], "embedder": embedder}}
    out_dir, paths = write_json(results, out)
    st = results["setup"]
    lines = [
        "# Knowledge update (memos bench knowledge-update)",
        "",
        f"{st['statements']} generated statements about {st['subjects']} people, "
        f"{st['attributes_per_subject']} changing facts each (seed {st['seed']}, {st['paraphrase']:.0%} of changes "
        f"worded differently); embedder {embedder}; one question per fact, top {st['top_k']}.",
        "",
        "| superseding | questions | current fact first | stale fact first | current in top k | "
        "current first (same wording) | current first (paraphrased) | archived | coexisting facts archived "
        "(false positives) | search p50 (ms) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, r in results["runs"].items():
        lines.append(
            f"| {mode} | {r['questions']} | {r['current_first']:.3f} | {r['stale_first']:.3f} | "
            f"{r['current_in_top_k']:.3f} | {r['current_first_same_wording']:.3f} ({r['questions_same_wording']}) | "
            f"{r['current_first_paraphrased']:.3f} ({r['questions_paraphrased']}) | {r['archived_memories']} | "
            f"{r['coexisting_archived']} of {r['coexisting_facts']} | {r['search_ms_p50']} |"
        )
    names = list(next(iter(results["runs"].values()))["current_first_by_attribute"])
    lines += ["", "Current fact first by kind of fact:", "", "| superseding | " + " | ".join(names) + " |"]
    lines.append("|---" * (len(names) + 1) + "|")
    for mode, r in results["runs"].items():
        by = r["current_first_by_attribute"]
        lines.append(f"| {mode} | " + " | ".join(f"{by[n]:.2f}" for n in names) + " |")
    paths[1].write_text("\n".join(lines) + "\n")

    def draw(ax: Any) -> None:
        labels = ["current first", "stale first", "current in top k"]
        fields = ["current_first", "stale_first", "current_in_top_k"]
        width = 0.38
        for n, (mode, r) in enumerate(results["runs"].items()):
            xs = [i + (n - 0.5) * width for i in range(len(fields))]
            ax.bar(xs, [r[f] for f in fields], width, label=f"superseding {mode}")
        ax.set_xticks(range(len(fields)), labels)
        ax.set_ylim(0, 1)
        ax.set_ylabel("share of questions")
        ax.set_title("memos bench knowledge-update")
        ax.legend()

    if save_chart(out_dir / "knowledge_update.png", draw):
        paths.append(out_dir / "knowledge_update.png")
    return paths
