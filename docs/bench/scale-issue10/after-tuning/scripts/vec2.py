import sys, time, statistics, math
import numpy as np
from pathlib import Path
from memos_agents.bench.scale import _mos, CUBE_ID, DEFAULT_EMBEDDER
from memos_agents.bench.scale_data import ScaleCorpus
from memos_agents.plaintext.stores.filters import compile_filters
from memos_agents.schema import SearchFilters
home = Path(sys.argv[1])
corpus = ScaleCorpus.from_locomo("/work/shared/data/locomo/locomo_dev7.json")
mos = _mos(home, DEFAULT_EMBEDDER, {})
qv = np.asarray(mos.embedder.embed(corpus.questions[10:110]), dtype=np.float32)
mos.store.vector_search(CUBE_ID, qv[0], 10)
idx = mos.store._indexes[CUBE_ID]
vecs = np.asarray(idx.graph.get_items(np.arange(idx._n), return_type="numpy"), dtype=np.float32)
spk = corpus.speakers
exact = {}
for i, q in enumerate(qv):
    qn = (q / np.linalg.norm(q)).astype(np.float32)
    m, cnt, _ = idx.mask(compile_filters(SearchFilters(user_id=spk[i % len(spk)])))
    sc = np.where(m, vecs @ qn, -np.inf)
    exact[i] = (qn, m.copy(), cnt, np.sort(sc)[::-1][:10])
for ef in (256, 512, 768, 1024, 1536):
    for k in (3, 10):
        ms, rec, fb = [], [], 0
        for i in range(len(qv)):
            qn, m, cnt, top = exact[i]
            idx.graph.set_ef(ef)
            t = time.perf_counter()
            labels, d = idx.graph.knn_query(qn, k=ef, num_threads=1)
            lab = labels[0].astype(np.int64); keep = m[lab]
            got = (1.0 - d[0][keep])[:k]
            ms.append((time.perf_counter() - t) * 1000)
            if len(got) < k: fb += 1; continue
            kth = top[k - 1]
            rec.append(sum(1 for s in got if s >= kth - 1e-4) / k)
        ms.sort()
        print(f"user post-filter ef={ef} k={k} p50 {ms[50]:.2f} ms recall {statistics.fmean(rec):.4f} fallbacks {fb}", flush=True)
