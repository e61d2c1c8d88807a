import sys, time, statistics, cProfile, pstats
from collections import defaultdict
from pathlib import Path
from memos_agents.bench.scale import _mos, BENCH_USER, CUBE_ID, DEFAULT_EMBEDDER, parse_store_options, _MESSAGE_SEED
from memos_agents.bench.scale_data import ScaleCorpus
from memos_agents.schema import Message
home = Path(sys.argv[1]); n = int(sys.argv[2]); mode = sys.argv[3]; start = int(sys.argv[4])
corpus = ScaleCorpus.from_locomo("/work/shared/data/locomo/locomo_dev7.json")
mos = _mos(home, DEFAULT_EMBEDDER, {})
store = mos.store
times = defaultdict(list)
for name in ("_vector_search", "_write_op", "_get", "_catch_up", "_index", "_run_group", "_save_snapshot", "_record_event", "_edges_op"):
    if not hasattr(store, name): continue
    fn = getattr(store, name)
    def wrap(*a, _fn=fn, _n=name, **k):
        t = time.perf_counter(); r = _fn(*a, **k); times[_n].append((time.perf_counter()-t)*1000); return r
    setattr(store, name, wrap)
msgs = [Message(role="user", name=s, content=t.split(": ", 1)[1], id=f"p{start+i}", timestamp=w, session_id=f"prof-{start}")
        for i, (t, s, w) in enumerate(corpus.memories(500000 + start, n + 5, seed=_MESSAGE_SEED))]
for m in msgs[:5]: mos.add([m], BENCH_USER, CUBE_ID, subject_id=m.speaker)
times.clear()
prof = cProfile.Profile() if mode == "prof" else None
ms = []
for m in msgs[5:]:
    t = time.perf_counter()
    if prof: prof.enable()
    mos.add([m], BENCH_USER, CUBE_ID, subject_id=m.speaker)
    if prof: prof.disable()
    ms.append((time.perf_counter() - t) * 1000)
ms.sort(); print(f"one add p50 {ms[len(ms)//2]:.2f} p95 {ms[int(len(ms)*.95)]:.2f}")
for k, v in times.items():
    v.sort(); print(f"  {k:16s} n={len(v)} p50 {v[len(v)//2]:.2f} mean {statistics.fmean(v):.2f}")
if prof:
    st = pstats.Stats(prof); st.sort_stats("tottime").print_stats(30)
mos.close()
