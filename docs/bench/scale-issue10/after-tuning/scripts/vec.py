"""Time CubeVectorIndex.search paths on a built home: filtered callback vs post-filtered; recall vs exact."""
import sys, time, statistics
import numpy as np
from pathlib import Path
from memos_agents.bench.scale import _mos, CUBE_ID, DEFAULT_EMBEDDER, parse_store_options
from memos_agents.bench.scale_data import ScaleCorpus
from memos_agents.plaintext.stores.filters import compile_filters
from memos_agents.schema import SearchFilters
home = Path(sys.argv[1]); opts = parse_store_options(sys.argv[3:]); mode = sys.argv[2]
corpus = ScaleCorpus.from_locomo("/work/shared/data/locomo/locomo_dev7.json")
mos = _mos(home, DEFAULT_EMBEDDER, opts)
qv = np.asarray(mos.embedder.embed(corpus.questions[10:110]), dtype=np.float32)
t = time.perf_counter(); mos.store.vector_search(CUBE_ID, qv[0], 10); print("load", round(time.perf_counter()-t, 2), "s")
idx = mos.store._indexes[CUBE_ID]
print(idx.mode, len(idx), idx.params)
spk = corpus.speakers
flts = {"default": compile_filters(SearchFilters()), "user": None}
exact = None
if mode == "recall":
    n = idx._n
    vecs = np.asarray(idx.graph.get_items(np.arange(n), return_type="numpy"), dtype=np.float32)
    print("got vectors", vecs.shape)
def run(name, k, fn):
    ms = []
    res = []
    for i, q in enumerate(qv):
        preds = compile_filters(SearchFilters(user_id=spk[i % len(spk)])) if name == "user" else flts["default"]
        t = time.perf_counter(); r = fn(q, k, preds); ms.append((time.perf_counter()-t)*1000); res.append(r)
    ms.sort()
    out = f"{name:8s} k={k:3d} p50 {ms[len(ms)//2]:6.2f} p95 {ms[int(len(ms)*.95)]:6.2f} ms"
    if mode == "recall":
        rec = []
        for i, q in enumerate(qv):
            preds = compile_filters(SearchFilters(user_id=spk[i % len(spk)])) if name == "user" else flts["default"]
            m, cnt, _ = idx.mask(preds)
            sc = vecs[:idx._n] @ (q / np.linalg.norm(q))
            sc = np.where(m, sc, -np.inf)
            kth = np.sort(sc)[-k]
            got = res[i]
            rec.append(sum(1 for r, _ in got if sc[idx.pos[r]] >= kth - 1e-4) / k)
        out += f" recall@{k} {statistics.fmean(rec):.4f}"
    print(out, flush=True)
def filtered(q, k, preds):  # force the in-walk filter
    mf, idx.max_fetch = idx.max_fetch, 0
    try: return idx.search(q, k, preds)
    finally: idx.max_fetch = mf
for ef in [int(x) for x in (sys.argv[3:] and []) or []]: pass
efs = [256] if mode != "recall" else [256, 384, 512]
for ef in efs:
    idx.params = type(idx.params)(m=idx.params.m, ef_construction=idx.params.ef_construction, ef_search=ef)
    print("ef_search", ef)
    for name in ("default", "user"):
        for k in (3, 10, 100):
            run(name + "-new", k, idx.search) if False else None
            run(name, k, idx.search)
            run(name, k, filtered)
