"""One default ProTeGi round on Liar: time, engine calls and tokens per phase.

Runs ``configs/liar-protegi.yaml`` with ``search.rounds = 1`` (plus any shrinking overrides) through
``apo_local.optimize`` into a fresh run directory, then aggregates its ``trace.jsonl``:

  expansion = minibatch + gradient + edit + paraphrase,  selection = select,  final = final test.

    .venv/bin/python scripts/bench_round.py                                   # the default round
    .venv/bin/python scripts/bench_round.py --minibatch-size 32 --budget 512 --test-limit 100
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench_common import ROOT, load_avg, machine, trace_by_phase, write_json

import apo_local  # noqa: F401

GROUPS = (("expansion", "expansion"), ("selection", "select"), ("final", "final"))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "configs" / "liar-protegi.yaml"))
    p.add_argument("--beam-size", type=int)
    p.add_argument("--minibatch-size", type=int)
    p.add_argument("--n-gradients", type=int)
    p.add_argument("--mc-samples", type=int)
    p.add_argument("--max-expansion", type=int)
    p.add_argument("--budget", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--test-limit", type=int)
    p.add_argument("--optimizer-max-tokens", type=int)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any dotted config override")
    p.add_argument("--out-dir", default=str(ROOT / "runs" / "bench" / "round"), help="run directory (replaced)")
    p.add_argument("--out", default=None, help="JSON result (default: OUT_DIR.json)")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    import yaml

    from apo_local.engine import shutdown_engines
    from apo_local.run.config import dump_config, load_config
    from apo_local.run.optimize import optimize

    args = parse_args(argv)
    overrides = {"search.rounds": 1, "cache": "off"}
    flag_keys = {
        "beam_size": "search.beam_size",
        "minibatch_size": "search.minibatch_size",
        "n_gradients": "protegi.n_gradients",
        "mc_samples": "protegi.mc_samples",
        "max_expansion": "search.max_expansion",
        "budget": "selection.budget",
        "batch_size": "selection.batch_size",
        "test_limit": "evaluation.test_limit",
        "optimizer_max_tokens": "optimizer.max_tokens",
    }
    for attr, key in flag_keys.items():
        if getattr(args, attr) is not None:
            overrides[key] = getattr(args, attr)
    for kv in args.set:
        key, _, value = kv.partition("=")
        overrides[key] = yaml.safe_load(value)
    cfg = load_config(args.config, overrides)
    out_dir = Path(args.out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    facts = machine()
    print(f"machine: {facts}", flush=True)
    t0 = time.perf_counter()
    try:
        result = optimize(cfg, out=out_dir)
    finally:
        shutdown_engines()
    wall = time.perf_counter() - t0
    phases = trace_by_phase(out_dir / "trace.jsonl")
    res = {
        "machine": facts,
        "load_avg_end": load_avg(),
        "config_file": args.config,
        "overrides": overrides,
        "config": yaml.safe_load(dump_config(cfg)),
        "wall_s_including_engine_start": round(wall, 1),
        "phases": {name: phases.get(key, {}) for name, key in GROUPS},
        "by_trace_phase": {k: v for k, v in phases.items() if k not in ("expansion", "total", "faults")},
        "total": phases.get("total", {}),
        "faults": phases.get("faults", {}),
        "initial_test": result.initial_test["metrics"],
        "best_test": result.best_test["metrics"],
        "run_dir": str(out_dir),
    }
    out = Path(args.out or str(out_dir) + ".json")
    write_json(out, res)
    md = markdown(res)
    out.with_suffix(".md").write_text(md)
    print(md)
    return res


def markdown(res: dict) -> str:
    lines = [
        f"Overrides on `{res['config_file']}`: {res['overrides']}",
        "",
        "Indented rows are the trace phases that make up the expansion.",
        "",
        "| phase | role | engine calls | prompts | prompt tokens | generated tokens | engine seconds |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    grouped = {key for _, key in GROUPS}
    rows = (
        list(res["phases"].items())
        + [(f"  {k}", v) for k, v in res["by_trace_phase"].items() if k not in grouped]
        + [("total", res["total"])]
    )
    for name, by_role in rows:
        for role in ("target", "optimizer", "all"):
            t = by_role.get(role)
            if t:
                lines.append(
                    f"| {name} | {role} | {t['calls']} | {t['prompts']} | {t['input_tokens']} | "
                    f"{t['output_tokens']} | {t['seconds']:.1f} |"
                )
    lines += [
        "",
        f"Wall time including engine start: {res['wall_s_including_engine_start']} s; faults {res['faults']}; "
        f"test {res['initial_test']} -> {res['best_test']}; load at end {res['load_avg_end']}",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
