import sqlite3, sys, time, statistics
from collections import Counter
import numpy as np
import memos_agents.plaintext.stores.sqlite as S
from memos_agents.bench.scale_data import ScaleCorpus
from memos_agents.schema import SearchFilters
path = sys.argv[1]; nq = int(sys.argv[2]); k = int(sys.argv[3]) if len(sys.argv) > 3 else 100
store = S.SQLiteMemoryStore(path)
store._conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
for pragma in sys.argv[4:]: store._conn.execute(pragma)
stats = Counter()
orig = S._postings
def counted(cur, cube_id, term, rowids=None):
    t = time.perf_counter(); r = orig(cur, cube_id, term, rowids)
    key = "full" if rowids is None else "probe"
    stats[key + "_rows"] += len(r[0]); stats[key + "_calls"] += 1; stats[key + "_ms"] += (time.perf_counter() - t) * 1000
    return r
S._postings = counted
cube = store._conn.execute("select cube_id from cubes").fetchone()[0]
qs = ScaleCorpus.from_locomo("/work/shared/data/locomo/locomo_dev7.json").questions
ms = []
for q in qs[10:10 + nq]:
    t = time.perf_counter(); store.text_search(cube, q, k); ms.append((time.perf_counter() - t) * 1000)
ms.sort()
print(f"bm25 k={k} p50 {ms[len(ms)//2]:.2f} p95 {ms[int(len(ms)*.95)]:.2f} mean {statistics.fmean(ms):.2f}")
print({a: round(b / nq, 1) for a, b in stats.items()})
