"""Benchmark 2: one ProTeGi search, same hyperparameters and seed, run two ways.

  (a) apo-local: in-process vLLM, every phase one batch, label log-probability scoring, identical
      (prompt, example) pairs scored once and remembered across rounds;
  (b) the reference pattern: the SAME BeamSearch loop and meta-prompts, but every target and
      optimizer call is its own request to a local OpenAI-compatible vLLM server (started and stopped
      here on 127.0.0.1): target calls from a pool of --target-workers threads (32, as the reference's
      scorer), optimizer calls from --optimizer-workers (1: the reference loops over them one by one),
      free-text answers (4 tokens, parsed), and the reference implementation's caching and test
      schedule (microsoft/LMOps prompt_optimization): bandit rewards cached by (prompt, example) for
      the whole run (its ``Cached01Scorer``); minibatch and test evaluations re-sent every time (its
      ``task.evaluate``); the beam evaluated on the test rows after every round, as its ``main.py``
      does (``--reference-test-every-round``, on by default); its last round's test line is its report.

Reports wall time, engine calls / requests, prompt, prefilled and generated tokens for both, per role
and per phase (from each run's trace.jsonl).

    .venv/bin/python scripts/bench_protegi.py                         # configs/demo.yaml, test_limit 100
    .venv/bin/python scripts/bench_protegi.py --config configs/liar-protegi.yaml --set search.rounds=2
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench_common import (
    ROOT,
    counter_delta,
    enable_inprocess_stats,
    inprocess_counters,
    load_avg,
    machine,
    trace_by_phase,
    tree_cpu_seconds,
    write_json,
)

import apo_local  # noqa: F401


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted config override, e.g. search.rounds=1 (YAML value); repeatable",
    )
    p.add_argument("--sides", default="apo,reference")
    p.add_argument("--target-workers", type=int, default=32)
    p.add_argument("--optimizer-workers", type=int, default=1)
    p.add_argument("--answer-tokens", type=int, default=4, help="reference side: max_tokens of a target answer")
    p.add_argument(
        "--reference-test-every-round",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="reference side: evaluate the beam on the test rows after every round, as the reference's "
        "main.py does (default on)",
    )
    p.add_argument("--work-dir", default=str(ROOT / "runs" / "bench" / "protegi"))
    p.add_argument("--out", default=None, help="JSON result (default: WORK_DIR/protegi.json)")
    return p.parse_args(argv)


def build_cfg(args):
    import yaml

    from apo_local.run.config import load_config

    overrides = {"cache": "off"}
    for kv in args.set:
        key, _, value = kv.partition("=")
        overrides[key] = yaml.safe_load(value)
    return load_config(args.config, overrides)


def run_apo(cfg, out: Path) -> dict:
    """(a) exactly ``apo_local.optimize``; the engine is started first (and timed apart), then reused."""
    from apo_local.engine import shutdown_engines
    from apo_local.ledger import Trace
    from apo_local.run.optimize import engines_for, optimize

    enable_inprocess_stats()
    try:
        t_load = time.perf_counter()
        target, optimizer = engines_for(cfg, Trace())  # starts (and keeps) the engine(s) optimize() will use
        load_s = time.perf_counter() - t_load
        llms = {id(e.engine.inner.llm): e.engine.inner.llm for e in (target, optimizer)}
        before = {k: inprocess_counters(v) for k, v in llms.items()}
        c0, t0 = tree_cpu_seconds(os.getpid()), time.perf_counter()
        result = optimize(cfg, out=out, overwrite=True)
        wall = time.perf_counter() - t0
        cpu = tree_cpu_seconds(os.getpid()) - c0
        counters = [counter_delta(before[k], inprocess_counters(v)) for k, v in llms.items()]
    finally:
        shutdown_engines()
    return summarize(
        "apo-local (in-process, batched, log-prob scoring)", result, wall, load_s, out, counters, requests=None, cpu=cpu
    )


def reference_scorer(task, engine, max_tokens: int):
    """A ``Scorer`` with the reference implementation's caching (see the module docstring)."""
    from apo_local.scoring import Scorer

    class ReferenceScorer(Scorer):
        def __init__(self):
            super().__init__(task, engine, mode="generate", max_tokens=max_tokens, dedupe=False)
            self.bandit_cache: dict = {}  # Cached01Scorer: (prompt, example) -> prediction, whole run
            self.evaluated: dict = {}  # every evaluation made, read only by the final report
            self.final = False

        def rewards(self, pairs):
            keys = [(ins, ex.id) for ins, ex in pairs]
            todo = {k: pair for k, pair in zip(keys, pairs) if k not in self.bandit_cache}
            if todo:
                self.bandit_cache.update(zip(todo, Scorer.predict(self, list(todo.values()))))
            return [
                self.task.metric.example_score(self.bandit_cache[k].label, ex.label) for k, (_, ex) in zip(keys, pairs)
            ]

        def predict(self, pairs):
            keys = [(ins, ex.id) for ins, ex in pairs]
            if self.final:  # the report: the last per-round test line (only unseen prompts are sent)
                todo = {k: pair for k, pair in zip(keys, pairs) if k not in self.evaluated}
            else:  # task.evaluate: everything re-sent
                todo = dict(zip(keys, pairs))
            if todo:
                self.evaluated.update(zip(todo, super().predict(list(todo.values()))))
            return [self.evaluated[k] for k in keys]

    return ReferenceScorer()


def run_reference(cfg, out: Path, args) -> dict:
    from http_engine import HttpEngine, LocalServer

    from apo_local.engine import RoleEngine
    from apo_local.ledger import Budget, Trace
    from apo_local.models.registry import resolve_model
    from apo_local.run.checkpoint import Checkpoint
    from apo_local.run.config import dump_config
    from apo_local.run.finish import Finish
    from apo_local.run.plan import RunPlan
    from apo_local.run.recorder import RunRecorder
    from apo_local.run.run_dir import RunDir
    from apo_local.scoring import limit_length
    from apo_local.search import BeamSearch, RunState
    from apo_local.tasks import load_task

    if cfg.optimizer.model not in (None, cfg.target.model):
        raise SystemExit("the reference side serves one model; use the same model for both roles")
    cfg = cfg.model_copy(
        update={
            "scoring": cfg.scoring.model_copy(update={"mode": "generate", "max_tokens": args.answer_tokens}),
            "evaluation": cfg.evaluation.model_copy(update={"per_round_test": args.reference_test_every_round}),
        }
    )
    model_path = resolve_model(cfg.target.model)
    task = load_task(cfg.task)
    max_len = cfg.target.max_model_len or 2048
    t_load = time.perf_counter()
    with LocalServer(model_path, max_model_len=max_len, seed=cfg.seed) as server:
        load_s = time.perf_counter() - t_load
        target_http = HttpEngine(
            server.base_url, str(model_path), workers=args.target_workers, max_model_len=max_len, tokenizer=model_path
        )
        optimizer_http = HttpEngine(
            server.base_url,
            str(model_path),
            workers=args.optimizer_workers,
            max_model_len=max_len,
            tokenizer=model_path,
        )
        run_dir = RunDir(out)
        run_dir.open(dump_config(cfg), overwrite=True)
        try:
            trace = Trace(run_dir.trace)
            target = RoleEngine(target_http, "target", trace)
            plan = RunPlan.build(cfg, task)  # what optimize() checks and computes before the search
            limit_length(task, target, max(16, plan.answer.max_tokens), trace)  # over-long examples cut, as it does
            scorer, budget = reference_scorer(task, target, args.answer_tokens), Budget(cfg.budget, trace)
            recorder = RunRecorder(run_dir, Checkpoint(run_dir.checkpoint), trace, scorer, budget)
            optimizer = RoleEngine(optimizer_http, "optimizer", trace)
            search = BeamSearch(
                task, cfg, plan.splits, plan.proposer, plan.acceptance, scorer, optimizer, budget, recorder
            )
            before = server.metrics()
            c0, t0 = tree_cpu_seconds(os.getpid()), time.perf_counter()
            budget.start()
            state = search.run(RunState.fresh(cfg.search.initial_prompt or task.initial_instruction))
            budget.stop()
            scorer.final = True  # the report: the last per-round test line (only unseen prompts are sent)
            result = Finish(task, cfg, plan.splits, scorer, trace).result(state, budget.elapsed, recorder.records)
            wall = time.perf_counter() - t0
            cpu = tree_cpu_seconds(os.getpid()) - c0  # client + server (our child) + its engine
            counters = [counter_delta(before, server.metrics())]
        finally:
            run_dir.close()
            target_http.close()
            optimizer_http.close()
    return summarize(
        f"reference pattern (HTTP, 1 request/prompt, {args.target_workers} target / "
        f"{args.optimizer_workers} optimizer workers, 4-token answers)",
        result,
        wall,
        load_s,
        out,
        counters,
        requests={"target": target_http.requests_sent, "optimizer": optimizer_http.requests_sent},
        cpu=cpu,
    )


def summarize(name, result, wall, load_s, out: Path, counters: list[dict], requests, cpu=None) -> dict:
    merged: dict = {}
    for c in counters:
        for k, v in c.items():
            if isinstance(v, (int, float)) and v is not None and k != "prefix_cache_hit_rate":
                merged[k] = merged.get(k, 0) + v
    q = merged.get("prompt_tokens", 0)
    merged["prefix_cache_hit_rate"] = round(merged.get("prefix_cache_hit_tokens", 0) / q, 3) if q else None
    return {
        "side": name,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1) if cpu is not None else None,
        "engine_start_s": round(load_s, 1),
        "load_avg": load_avg(),
        "usage": result.usage,
        "http_requests": requests,
        "engine_counters": merged,
        "by_phase": trace_by_phase(out / "trace.jsonl"),
        "rounds_completed": result.rounds_completed,
        "stop_reason": result.stop_reason,
        "initial_test": result.initial_test["metrics"],
        "best_test": result.best_test["metrics"],
        "best_prompt": result.best_prompt,
        "faults": result.faults,
        "run_dir": str(out),
    }


def markdown(res: dict) -> str:
    sides = res["sides"]
    lines = [
        f"Config: `{res['config_file']}` with {res['overrides'] or 'no overrides'}; hyperparameters: "
        f"{res['hyperparameters']}",
        "",
        "| | " + " | ".join(s["side"] for s in sides) + " |",
        "|---|" + "---:|" * len(sides),
    ]

    def row(label, fn):
        vals = []
        for s in sides:
            try:
                vals.append(str(fn(s)))
            except (KeyError, TypeError):
                vals.append("-")
        lines.append(f"| {label} | " + " | ".join(vals) + " |")

    row("wall time of the search, s", lambda s: s["wall_s"])
    row("CPU seconds of the search (all our processes)", lambda s: s["cpu_s"])
    row("engine / server start, s (not in wall time)", lambda s: s["engine_start_s"])
    for role in ("target", "optimizer"):
        row(f"{role}: engine calls (batches)", lambda s, r=role: s["usage"][r]["calls"])
        row(f"{role}: prompts (= HTTP requests on the reference side)", lambda s, r=role: s["usage"][r]["prompts"])
        row(f"{role}: prompt tokens", lambda s, r=role: s["usage"][r]["input_tokens"])
        row(f"{role}: generated tokens", lambda s, r=role: s["usage"][r]["output_tokens"])
        row(f"{role}: engine seconds", lambda s, r=role: s["by_phase"]["total"][r]["seconds"])
    for phase in ("minibatch", "select", "test", "final"):
        row(
            f"target prompts in phase {phase}",
            lambda s, ph=phase: s["by_phase"].get(ph, {}).get("target", {}).get("prompts", 0),
        )
    row("all: prompt tokens seen by vLLM", lambda s: s["engine_counters"]["prompt_tokens"])
    row("all: prefilled tokens (prompt - prefix-cache hits)", lambda s: s["engine_counters"]["prefilled_tokens"])
    row("all: prefix-cache hit rate", lambda s: s["engine_counters"]["prefix_cache_hit_rate"])
    row("all: generated tokens seen by vLLM", lambda s: s["engine_counters"]["generated_tokens"])
    row(
        "test metric: initial -> best",
        lambda s: f"{list(s['initial_test'].values())[0]:.3f} -> {list(s['best_test'].values())[0]:.3f}",
    )
    row("load average at end", lambda s: s["load_avg"])
    if len(sides) == 2:
        a, b = sides
        lines += [
            "",
            f"apo-local / reference: wall time {a['wall_s'] / b['wall_s']:.2f}, CPU seconds {a['cpu_s'] / b['cpu_s']:.2f}, prefilled tokens "
            f"{a['engine_counters'].get('prefilled_tokens', 0) / max(1, b['engine_counters'].get('prefilled_tokens', 1)):.2f}, "
            f"prompt tokens {(a['usage']['target']['input_tokens'] + a['usage']['optimizer']['input_tokens']) / max(1, b['usage']['target']['input_tokens'] + b['usage']['optimizer']['input_tokens']):.2f}",
        ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    args = parse_args(argv)
    cfg = build_cfg(args)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    facts = machine()
    print(f"machine: {facts}", flush=True)
    sides = []
    for side in [s for s in args.sides.split(",") if s]:
        out = work / side
        if out.exists():
            shutil.rmtree(out)
        print(f"--- {side} (load {load_avg()})", flush=True)
        sides.append(run_apo(cfg, out) if side == "apo" else run_reference(cfg, out, args))
        print({k: v for k, v in sides[-1].items() if k not in ("by_phase",)}, flush=True)
    s, sel = cfg.search, cfg.selection
    p = cfg.protegi
    hyper = (
        f"rounds {s.rounds}, beam {s.beam_size}, minibatch {s.minibatch_size}, gradients {p.n_gradients} x "
        f"{p.errors_per_gradient} errors, mc_samples {p.mc_samples}, max_expansion {s.max_expansion}, selector "
        f"{sel.selector} budget {sel.budget} batch {sel.batch_size}, optimizer max_tokens {cfg.optimizer.max_tokens} "
        f"T={cfg.optimizer.temperature}, test_limit {cfg.evaluation.test_limit}, seed {cfg.seed}"
    )
    res = {
        "machine": facts,
        "load_avg_end": load_avg(),
        "config_file": args.config,
        "overrides": args.set,
        "hyperparameters": hyper,
        "sides": sides,
    }
    out = Path(args.out or work / "protegi.json")
    write_json(out, res)
    md = markdown(res)
    out.with_suffix(".md").write_text(md)
    print(md)
    return res


if __name__ == "__main__":
    main()
