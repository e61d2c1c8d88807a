"""Open a built bench home, time searches per store op; optional cProfile."""
import sys, time, statistics, cProfile, pstats, json
from collections import defaultdict
from pathlib import Path
import numpy as np
from memos_agents.bench.scale import _mos, BENCH_USER, CUBE_ID, DEFAULT_EMBEDDER, WARMUP_QUERIES, parse_store_options
from memos_agents.bench.scale_data import ScaleCorpus
from memos_agents.bench.locomo import EmbedTimer

home = Path(sys.argv[1]); nq = int(sys.argv[2]); mode = sys.argv[3] if len(sys.argv) > 3 else "time"
opts = parse_store_options(sys.argv[4:])
corpus = ScaleCorpus.from_locomo("/work/shared/data/locomo/locomo_dev7.json")
qs = corpus.questions
t0 = time.perf_counter()
mos = _mos(home, DEFAULT_EMBEDDER, opts)
print("open", round((time.perf_counter()-t0)*1000,1), "ms")
store = mos.store
times = defaultdict(list)
for name in ("_vector_search", "_text_search", "_expand", "_get", "_index"):
    fn = getattr(store, name)
    def wrap(*a, _fn=fn, _n=name, **k):
        t = time.perf_counter(); r = _fn(*a, **k); times[_n].append((time.perf_counter()-t)*1000); return r
    setattr(store, name, wrap)
timer = EmbedTimer(mos.embedder).__enter__()
t = time.perf_counter(); mos.search(qs[0], BENCH_USER, [CUBE_ID], top_k=10); print("first search", round((time.perf_counter()-t)*1000,1))
for q in qs[:WARMUP_QUERIES]: mos.search(q, BENCH_USER, [CUBE_ID], top_k=10)
times.clear()
timed = [qs[(WARMUP_QUERIES + n) % len(qs)] for n in range(nq)]
ms = []
prof = cProfile.Profile() if mode == "prof" else None
for q in timed:
    e0 = timer.seconds; t = time.perf_counter()
    if prof: prof.enable()
    mos.search(q, BENCH_USER, [CUBE_ID], top_k=10)
    if prof: prof.disable()
    ms.append((time.perf_counter()-t - (timer.seconds-e0))*1000)
def pct(v,q): v=sorted(v); return v[int((len(v)-1)*q)] if v else 0
print(f"search excl embed p50 {pct(ms,.5):.2f} p95 {pct(ms,.95):.2f} mean {statistics.fmean(ms):.2f}")
for n, v in times.items():
    print(f"  {n:16s} n={len(v):4d} p50 {pct(v,.5):7.2f} p95 {pct(v,.95):7.2f} mean {statistics.fmean(v):7.2f}")
idx = store._indexes.get(CUBE_ID)
if idx is not None: print("index", idx.mode, len(idx), idx.params)
if prof:
    st = pstats.Stats(prof); st.sort_stats("cumulative").print_stats(35); st.sort_stats("tottime").print_stats(25)
mos.close()
