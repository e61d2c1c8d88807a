"""The bench's steps 3 and 4 (searches, first search after a foreign commit) on a reused 1M home."""
import json, sys
from pathlib import Path
from memos_agents.bench.scale import _ScaleRun, DEFAULT_EMBEDDER, WARMUP_QUERIES
from memos_agents.bench.scale_data import ScaleCorpus
home = Path(sys.argv[1]); store = {"hnsw_ef_search": 384}
corpus = ScaleCorpus.from_locomo("/work/shared/data/locomo/locomo_dev7.json")
qs = corpus.questions
timed = [qs[(WARMUP_QUERIES + n) % len(qs)] for n in range(200)]
run = _ScaleRun(corpus, home, DEFAULT_EMBEDDER, store, 1, None)
run.session, run.next_message = "reuse-1m", 900_000 + int(sys.argv[2])
try:
    run.search(timed[0])  # loads the snapshot
    search = run.searches(1_000_000, timed)
    adds = run.one_adds(1_000_000, 50)
    foreign = run.foreign(1_000_000, 5, timed, search["p50"])
finally:
    run.close()
print(json.dumps({"search_ms": search, "one_add_ms": adds, "foreign_commit": foreign}, indent=1))
