import sys, time, subprocess, statistics
from pathlib import Path
from memos_agents.bench.scale import _mos, BENCH_USER, CUBE_ID, DEFAULT_EMBEDDER
from memos_agents.bench.scale_data import ScaleCorpus
home = Path(sys.argv[1]); heavy = sys.argv[2] == "heavy"
qs = ScaleCorpus.from_locomo("/work/shared/data/locomo/locomo_dev7.json").questions
mos = _mos(home, DEFAULT_EMBEDDER, {"hnsw_ef_search": 384})
mos.store.conn.execute("CREATE TABLE IF NOT EXISTS bench_touch (x)")
def s(q):
    t = time.perf_counter(); mos.search(q, BENCH_USER, [CUBE_ID], top_k=10); return (time.perf_counter() - t) * 1000
for q in qs[:20]: s(q)
ratios, warm, cold = [], [], []
for i in range(int(sys.argv[3])):
    q = qs[20 + i]
    s(q); w = s(q)
    if heavy:  # a whole second process reading the 1.8 GB graph file, as the bench's foreign writer does
        subprocess.run(["cat", *[str(p) for p in (home / "memos.db.ann").glob("*.hnsw")]], stdout=subprocess.DEVNULL, check=True)
    subprocess.run([sys.executable, "-c", f"import sqlite3; c=sqlite3.connect('{home}/memos.db', isolation_level=None); c.execute('INSERT INTO bench_touch VALUES (1)'); c.close()"], check=True)
    c = s(q)
    warm.append(w); cold.append(c); ratios.append(c / w)
print(f"heavy={heavy} same query: warm median {statistics.median(warm):.1f} ms, after foreign commit median {statistics.median(cold):.1f} ms, median ratio {statistics.median(ratios):.2f}")
mos.store.conn.execute("DROP TABLE bench_touch")
mos.close()
