#!/usr/bin/env python
"""Soak test: many small optimizations back to back in ONE process on ONE engine; memory and open
file descriptors must stay flat.

    .venv/bin/python scripts/soak.py                   # 20 runs, summary in soak-summary.json
    .venv/bin/python scripts/soak.py -n 6 --out /tmp/soak.json

Each run is a complete ``apo_local.optimize`` (its own run directory, trace, checkpoints, results)
on the real engine and the embedded model, with its own seed and training subset (``train_limit``),
so prompts and replies differ from run to run (seeds share one engine). After every run: resident
memory of this process and of its children (vLLM's engine-core and worker processes when the
engine runs in subprocesses; on CPU it runs in this process by default) and their open file
descriptors, in total and per process.

Pass/fail (exit 1 on fail): after ``--warmup`` runs (allocator and prefix caches fill up), the median
of the last three runs may exceed the median of the three runs after warm-up by at most
``--rss-tolerance-mb`` MiB (default 128) in total RSS of the process tree, ``--self-rss-tolerance-mb``
(default 32) in this process's RSS, and ``--fd-tolerance`` (default 8) descriptors.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import apo_local  # noqa: E402,F401  (offline environment first)


def _tree_stats() -> dict:
    import psutil

    me = psutil.Process()
    procs = [me] + me.children(recursive=True)
    rss, fds, by_process = 0, 0, {}
    for p in procs:
        try:
            r = p.memory_info().rss
            rss += r
            fds += p.num_fds()
            name = "apo-local" if p.pid == me.pid else p.name()
            by_process[name] = round(by_process.get(name, 0) + r / 2**20, 1)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return {
        "rss_mb": round(rss / 2**20, 1),
        "self_rss_mb": round(me.memory_info().rss / 2**20, 1),
        "fds": fds,
        "self_fds": len(os.listdir("/proc/self/fd")),
        "processes": len(procs),
        "rss_mb_by_process": by_process,
    }


def _config(i: int, cache: str, kv_cache_gb: float | None) -> dict:
    return {
        "task": "liar",
        "seed": i,
        "train_limit": 60 + 7 * i,
        "cache": cache,
        "target": {"kv_cache_gb": kv_cache_gb},
        "search": {"rounds": 1, "beam_size": 2, "minibatch_size": 8, "max_expansion": 2},
        "protegi": {"n_gradients": 1, "errors_per_gradient": 2, "mc_samples": 1},
        "selection": {"selector": "ucb", "budget": 16, "batch_size": 8, "arms_per_round": 2},
        "optimizer": {"max_tokens": 48},
        "evaluation": {"test_limit": 8},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rss-tolerance-mb", type=float, default=128.0)
    ap.add_argument(
        "--self-rss-tolerance-mb",
        type=float,
        default=32.0,
        help="growth allowed to this process alone (apo-local's own code)",
    )
    ap.add_argument("--fd-tolerance", type=int, default=8)
    ap.add_argument(
        "--cache",
        choices=["shared", "off"],
        default="shared",
        help="shared: one temporary result cache file for all runs; off: no disk cache",
    )
    ap.add_argument(
        "--kv-cache-gb",
        type=float,
        default=None,
        help="engine KV cache size; vLLM touches its pages lazily, so the engine process grows until "
        "the cache is full: a small cache shows the plateau within a few runs",
    )
    ap.add_argument("--out", default="soak-summary.json", help="JSON summary file")
    args = ap.parse_args()
    if args.runs < args.warmup + 3:
        ap.error(f"--runs must be at least --warmup + 3 ({args.warmup + 3})")

    from apo_local.engine import shutdown_engines
    from apo_local.run.config import build_config
    from apo_local.run.optimize import optimize

    samples, started = [], time.time()
    with tempfile.TemporaryDirectory(prefix="apo-soak-") as tmp:
        cache = "off" if args.cache == "off" else str(Path(tmp) / "cache.sqlite")
        try:
            for i in range(args.runs):
                t0 = time.time()
                result = optimize(build_config(_config(i, cache, args.kv_cache_gb)), Path(tmp) / f"run-{i:03d}")
                del result
                gc.collect()
                stats = {"run": i, "seconds": round(time.time() - t0, 1), **_tree_stats()}
                samples.append(stats)
                print(json.dumps(stats), flush=True)
        finally:
            shutdown_engines()

    base = samples[args.warmup : args.warmup + 3]
    last = samples[-3:]
    growth = {
        key: round(statistics.median(s[key] for s in last) - statistics.median(s[key] for s in base), 1)
        for key in ("rss_mb", "self_rss_mb", "fds", "self_fds")
    }
    checks = {
        "rss_mb": growth["rss_mb"] <= args.rss_tolerance_mb,
        "self_rss_mb": growth["self_rss_mb"] <= args.self_rss_tolerance_mb,
        "fds": growth["fds"] <= args.fd_tolerance,
    }
    ok = all(checks.values())
    summary = {
        "ok": ok,
        "runs": args.runs,
        "warmup": args.warmup,
        "cache": args.cache,
        "kv_cache_gb": args.kv_cache_gb,
        "tolerance": {
            "rss_mb": args.rss_tolerance_mb,
            "self_rss_mb": args.self_rss_tolerance_mb,
            "fds": args.fd_tolerance,
        },
        "checks": checks,
        "growth_after_warmup": growth,
        "seconds": round(time.time() - started, 1),
        "samples": samples,
    }
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"soak {'OK' if ok else 'FAILED'}: growth after warm-up {growth}, checks {checks} (tolerance: "
        f"process tree {args.rss_tolerance_mb} MiB, this process {args.self_rss_tolerance_mb} MiB, "
        f"fds {args.fd_tolerance}); summary: {args.out}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
