"""The result cache shared by several processes: every write lands, no "database is locked".

No engine: the writers are plain processes (and, when Ray is installed, the cells of a 200-cell sweep on
4 Ray workers) that write results through ``ResultCache`` into one file, reading between writes as a
scorer does. Also the cache's streaming: a large call is computed and written chunk by chunk.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sqlite3
import time

import pytest

from apo_local.engine import cache as C
from apo_local.engine.cache import CachedEngine, ResultCache
from apo_local.engine.protocol import ChoiceScores


def _writer(path: str, who: int, batches: int, per: int, hold: float) -> int:
    cache = ResultCache(path)
    for b in range(batches):
        items = {f"w{who}-b{b}-k{k}": f"v{who}.{b}.{k}" for k in range(per)}
        cache.get_many(list(items)[:10])  # readers and writers interleave, as scorers do
        if hold and b == 0:  # one long transaction: the others must wait for it, not fail
            with cache.db:
                cache.db.execute("BEGIN IMMEDIATE")
                cache.db.executemany("INSERT OR REPLACE INTO results (key, value) VALUES (?, ?)", items.items())
                time.sleep(hold)
        else:
            cache.put_many(items)
    cache.close()
    return who


def _count(path) -> dict[str, str]:
    db = sqlite3.connect(path)
    try:
        return dict(db.execute("SELECT key, value FROM results").fetchall())
    finally:
        db.close()


def test_cache_waits_long_for_a_busy_writer(tmp_path):
    cache = ResultCache(tmp_path / "c.sqlite")
    assert cache.db.execute("PRAGMA busy_timeout").fetchone()[0] >= 60_000  # sqlite3's default is 5 s
    assert cache.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    cache.close()


def test_concurrent_writer_processes_lose_nothing(tmp_path):
    path = str(tmp_path / "shared.sqlite")
    ResultCache(path).close()
    n, batches, per = 6, 30, 50
    ctx = mp.get_context("spawn" if os.environ.get("APO_TEST_SPAWN") else "fork")
    with ctx.Pool(n) as pool:
        done = pool.starmap(_writer, [(path, w, batches, per, 1.0 if w == 0 else 0.0) for w in range(n)])
    assert sorted(done) == list(range(n))  # no writer raised ("database is locked" would)
    rows = _count(path)
    want = {f"w{w}-b{b}-k{k}": f"v{w}.{b}.{k}" for w in range(n) for b in range(batches) for k in range(per)}
    assert rows == want


class _Counting:
    model_id, max_model_len = "m", 64

    def __init__(self):
        self.calls: list[int] = []

    def score_choices(self, prompts, choices):
        self.calls.append(len(prompts))
        return [ChoiceScores((-1.0, -float(len(p))), len(p)) for p in prompts]


def test_large_call_is_computed_and_stored_chunk_by_chunk(tmp_path, monkeypatch):
    monkeypatch.setattr(C, "CHUNK", 7)
    inner = _Counting()
    cache = ResultCache(tmp_path / "c.sqlite")
    eng = CachedEngine(inner, cache)
    prompts = [f"p{i}" for i in range(30)] + ["p0", "p1"]  # repeats are computed once
    got = eng.score_choices(prompts, ["A", "B"])
    assert inner.calls == [7, 7, 7, 7, 2]
    assert got[30] == got[0] and [g.input_tokens for g in got[:3]] == [2, 2, 2]
    assert len(_count(tmp_path / "c.sqlite")) == 30
    again = CachedEngine(inner, cache).score_choices(prompts, ["A", "B"])
    assert again == got and inner.calls == [7, 7, 7, 7, 2]  # all from disk
    cache.close()


RAY_SWEEP = """
import json, os, sys
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
import ray

def cell(path, who):  # a stand-in cell: writes its results into the shared cache, reading between writes
    from apo_local.engine.cache import ResultCache

    cache = ResultCache(path)
    for b in range(3):
        items = {f"w{who}-b{b}-k{k}": f"v{who}.{b}.{k}" for k in range(20)}
        cache.get_many(list(items))
        cache.put_many(items)
    cache.close()
    return who

ray.init(num_cpus=4, num_gpus=0, include_dashboard=False, object_store_memory=80 * 1024**2,
         log_to_driver=False, configure_logging=False)
try:
    remote = ray.remote(num_cpus=1)(cell)
    print(json.dumps(sorted(ray.get([remote.remote(sys.argv[1], c) for c in range(200)]))))
finally:
    ray.shutdown()
"""


def test_sweep_of_200_cells_on_4_ray_workers_shares_one_cache(tmp_path):
    """In its own process: a Ray instance of its own, never beside another test's."""
    import json
    import subprocess
    import sys

    pytest.importorskip("ray", reason="Ray is an optional extra")
    path = str(tmp_path / "sweep.sqlite")
    ResultCache(path).close()
    run = subprocess.run([sys.executable, "-c", RAY_SWEEP, path], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout.strip().splitlines()[-1]) == list(range(200))  # every cell finished, none raised
    rows = _count(path)
    assert len(rows) == 200 * 3 * 20
    assert all(rows[f"w{c}-b{b}-k{k}"] == f"v{c}.{b}.{k}" for c in range(200) for b in range(3) for k in range(20))
