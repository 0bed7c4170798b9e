"""Scoring speed of the CPU engine by weight dtype: one instruction x N Liar test rows, label log-probs.

    .venv/bin/python scripts/bench_cpu_dtype.py --dtype auto --rows 64
    .venv/bin/python scripts/bench_cpu_dtype.py --dtype float32 --rows 64
    .venv/bin/python scripts/bench_cpu_dtype.py --dtype bfloat16 --rows 64

"auto" is what a run gets by default (engine/settings.py: bf16 only where the CPU computes it natively).
Prints one JSON line: dtype asked, dtype resolved, CPU bf16 support, load and scoring seconds, metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import time

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--rows", type=int, default=64)
    args = ap.parse_args()

    import apo_local  # noqa: F401  (offline environment first)
    from apo_local.engine import EngineSettings, RoleEngine, Trace, load_engine
    from apo_local.engine.settings import cpu_auto_dtype
    from apo_local.scoring import Scorer
    from apo_local.tasks import load_task

    settings = EngineSettings(dtype=args.dtype)
    started = time.perf_counter()
    engine = load_engine(settings, False)
    load_s = time.perf_counter() - started
    task = load_task("liar")
    rows = task.split("test")[: args.rows]
    scorer = Scorer(task, RoleEngine(engine, "target", Trace()), "logprobs")
    started = time.perf_counter()
    result = scorer.evaluate(task.initial_instruction, rows)
    score_s = time.perf_counter() - started
    print(
        json.dumps(
            {
                "dtype": args.dtype,
                "resolved": settings.resolved().dtype,
                "cpu_native_bf16": cpu_auto_dtype() == "auto",
                "rows": len(rows),
                "load_s": round(load_s, 1),
                "score_s": round(score_s, 1),
                "metrics": result.metrics,
            }
        )
    )
    os._exit(0)  # the engine's threads need no orderly shutdown here
