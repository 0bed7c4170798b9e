"""Benchmark 1: candidate scoring, one workload measured three ways in one run.

  1. http    -- the reference pattern: one OpenAI-compatible request per (prompt, example) against a
               local vLLM server of the same model (started and stopped here, 127.0.0.1), from a pool
               of --workers threads, free-text answer (max_tokens 4, greedy) parsed for Yes/No;
  2. chat    -- one plain ``LLM.chat`` call over the same rendered prompts, max_tokens 4, parsed, on a
               plain ``vllm.LLM``: what a user of vLLM writes;
  3. apo     -- apo-local's scorer (``Scorer.evaluate_many``: label log-probabilities, one batch).

Like with like: every method's engine gets the SAME engine arguments -- apo-local's resolved ones for
this machine (``--max-model-len``, dtype, memory fraction, KV bytes, eager, prefix caching, block size,
seed; ``--gpu-memory-utilization``, ``--kv-cache-gb`` and ``--eager`` override them for all three) --
printed with the table. Only the work each method must do is timed: the prompts are rendered before
the clock starts for all, and apo-local's prompt-token count (a second tokenization) is taken after.
On CPU, methods 2 and 3 run vLLM's engine core in this process (apo-local's CPU default); the
server of method 1 cannot, and runs it in its own process.

Decomposition row (``--methods ...,chat-apo-engine``, on by default for the main cell): ``LLM.chat`` as
in 2, but on apo-local's engine object itself, so the table shows how much of 3's gain comes from label
log-prob scoring (one decode step, no sampling) rather than from the engine.

All three see the same rendered prompts (candidate instruction first, then the Liar row). Each
engine is warmed up once on other prompts before timing, and the prefix cache is emptied before
every timed measurement, so no method profits from another's work. Writes JSON and a markdown table.

    .venv/bin/python scripts/bench_scoring.py                      # 16 candidates x 64 rows, + default scaling cells
    .venv/bin/python scripts/bench_scoring.py --scaling full       # the whole 4/16/64 x 16/64/256 grid (slow on CPU)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench_common import (
    ROOT,
    counter_delta,
    enable_inprocess_stats,
    inprocess_counters,
    load_avg,
    load_instructions,
    machine,
    tree_cpu_seconds,
    write_json,
)

import apo_local  # noqa: F401  (offline switches before vLLM is imported)

METHODS = ("http", "chat", "chat-apo-engine", "apo")
NAMES = {
    "http": "1. HTTP, 1 request/prompt, 32 workers",
    "chat": "2. LLM.chat batch, 4 tokens (plain vllm.LLM)",
    "chat-apo-engine": "2b. LLM.chat batch, 4 tokens, on apo-local's engine",
    "apo": "3. apo-local Scorer",
}
SCALING = ("http", "chat", "apo")
FULL_GRID = [(c, e) for c in (4, 16, 64) for e in (16, 64, 256)]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="registry alias or folder (default: the embedded model)")
    p.add_argument("--candidates", type=int, default=16)
    p.add_argument("--examples", type=int, default=64)
    p.add_argument("--split", default="test", help="Liar split the rows come from")
    p.add_argument("--repeats", type=int, default=1, help="timed repetitions of the main cell")
    p.add_argument("--workers", type=int, default=32, help="HTTP client threads (method 1)")
    p.add_argument("--max-tokens", type=int, default=4, help="answer tokens for methods 1 and 2")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument(
        "--scaling",
        default="4x16,4x64,16x16,64x16",
        help="extra cells CxE (comma list), 'full' for the 4/16/64 x 16/64/256 grid, or 'none'",
    )
    p.add_argument("--scaling-methods", default="http,chat,apo", help="methods for the scaling cells")
    p.add_argument("--scaling-repeats", type=int, default=1)
    p.add_argument("--max-model-len", type=int, default=2048)
    p.add_argument("--gpu-memory-utilization", type=float, default=None, help="all methods (default: apo-local's)")
    p.add_argument("--kv-cache-gb", type=float, default=None, help="all methods (default: apo-local's; none on GPU)")
    p.add_argument("--eager", default=None, choices=("on", "off"), help="enforce_eager for all methods")
    p.add_argument("--out", default=str(ROOT / "runs" / "bench" / "scoring.json"))
    p.add_argument("--server-log", default=None)
    p.add_argument(
        "--collect",
        nargs="*",
        metavar="RUN_DIR",
        help="rebuild scripts/bench_instructions.json from these run directories' rounds/*.json, then exit",
    )
    p.add_argument("--collect-count", type=int, default=64)
    return p.parse_args(argv)


def cells_of(args) -> list[tuple[int, int]]:
    main = (args.candidates, args.examples)
    if args.scaling == "none":
        extra = []
    elif args.scaling == "full":
        extra = FULL_GRID
    else:
        extra = [tuple(int(x) for x in c.lower().split("x")) for c in args.scaling.split(",") if c]
    return [main] + [c for c in extra if c != main]


def main(argv=None) -> dict:
    args = parse_args(argv)
    from apo_local.models.registry import resolve_model
    from apo_local.tasks import load_task, parse_label

    model_path = resolve_model(args.model)
    if args.collect is not None:
        from _bench_common import INSTRUCTIONS, collect_instructions

        data = collect_instructions(args.collect, str(model_path), args.collect_count)
        write_json(INSTRUCTIONS, data)
        print(data["note"], "->", INSTRUCTIONS)
        return data

    methods = [m for m in args.methods.split(",") if m]
    scaling_methods = [m for m in args.scaling_methods.split(",") if m]
    task = load_task("liar")
    rows = task.split(args.split)
    cells = cells_of(args)
    work = {}
    for c, e in cells:
        instructions = load_instructions(c)
        examples = rows[:e]
        if len(examples) < e:
            raise SystemExit(f"the {args.split} split has {len(rows)} rows, {e} asked")
        work[(c, e)] = (instructions, examples, [task.render(i, ex) for i in instructions for ex in examples])
    warm = [task.render(task.initial_instruction, ex) for ex in task.split("train")[:16]]
    plan = {
        cell: (
            [m for m in methods] if cell == cells[0] else scaling_methods,
            args.repeats if cell == cells[0] else args.scaling_repeats,
        )
        for cell in cells
    }
    facts = machine()
    print(f"machine: {facts}", flush=True)
    settings, common = common_engine_args(args, model_path)
    print(f"engine arguments (all methods): {common}", flush=True)
    runs: list[dict] = []

    def record(method, cell, rep, seconds, cpu_s, labels, prompt_tokens, counters, extra=None):
        instructions, examples, prompts = work[cell]
        golds = [ex.label for _ in instructions for ex in examples]
        counters = {("engine_" + k if k == "prompt_tokens" else k): v for k, v in counters.items()}
        entry = dict(
            method=method,
            candidates=cell[0],
            examples=cell[1],
            prompts=len(prompts),
            repeat=rep,
            seconds=round(seconds, 2),
            cpu_s=round(cpu_s, 1),
            prompts_per_s=round(len(prompts) / seconds, 2),
            prompt_tokens=prompt_tokens,
            load_avg=load_avg(),
            **counters,
            **(extra or {}),
        )
        entry["f1"] = round(task.metric.compute(labels, golds)[task.metric.name], 4)
        entry["unparsed"] = sum(label is None for label in labels)
        entry["labels"] = labels
        runs.append(entry)
        print(
            f"{method:5s} {cell[0]:3d}x{cell[1]:<4d} rep {rep}: {seconds:7.1f} s  cpu {cpu_s:6.1f} s  {entry['prompts_per_s']:6.2f} prompts/s  "
            f"prompt tokens {prompt_tokens}  prefilled {counters.get('prefilled_tokens')}  "
            f"hit rate {counters.get('prefix_cache_hit_rate')}  load {entry['load_avg']}",
            flush=True,
        )

    # -- 1. the reference pattern: a local server, one request per prompt -------------------
    if any("http" in plan[c][0] for c in cells):
        from http_engine import HttpEngine, LocalServer

        from apo_local.engine import GenerationRequest

        server = LocalServer(
            model_path,
            max_model_len=args.max_model_len,
            env={"VLLM_SERVER_DEV_MODE": "1"},
            log_path=args.server_log,
            kv_cache_bytes=common.get("kv_cache_memory_bytes"),
            gpu_memory_utilization=common["gpu_memory_utilization"],
            enforce_eager=common["enforce_eager"],
            extra_args=server_args(common),
        )
        with server:
            print(f"server healthy after {server.startup_seconds:.0f} s", flush=True)
            eng = HttpEngine(
                server.base_url,
                str(model_path),
                workers=args.workers,
                max_model_len=args.max_model_len,
                tokenizer=model_path,
                answer_tokens=args.max_tokens,
            )
            eng.generate([GenerationRequest(p, temperature=0.0, max_tokens=args.max_tokens) for p in warm])  # warm-up
            for cell in cells:
                if "http" not in plan[cell][0]:
                    continue
                for rep in range(plan[cell][1]):
                    server.reset_prefix_cache()
                    before = server.metrics()
                    c0, t0 = tree_cpu_seconds(os.getpid()), time.perf_counter()
                    gens = eng.generate(
                        [GenerationRequest(p, temperature=0.0, max_tokens=args.max_tokens) for p in work[cell][2]]
                    )
                    dt = time.perf_counter() - t0
                    cpu = tree_cpu_seconds(os.getpid()) - c0  # client threads + server (our child) + its engine
                    counters = counter_delta(before, server.metrics())
                    record(
                        "http",
                        cell,
                        rep,
                        dt,
                        cpu,
                        [parse_label(g.text, task.labels) for g in gens],
                        sum(g.input_tokens for g in gens),
                        counters,
                        {"errors": sum(g.error is not None for g in gens)},
                    )
            eng.close()

    def time_inprocess(llm, method, cell, rep, run) -> None:
        """One timed measurement on an in-process engine: prefix cache emptied, counters and CPU read around it."""
        llm.reset_prefix_cache()
        before = inprocess_counters(llm)
        c0, t0 = tree_cpu_seconds(os.getpid()), time.perf_counter()
        labels, ptoks = run()
        dt = time.perf_counter() - t0
        cpu = tree_cpu_seconds(os.getpid()) - c0  # this process + the engine core process
        if callable(ptoks):  # counted after the clock stopped: not part of the method's work
            ptoks = ptoks()
        record(method, cell, rep, dt, cpu, labels, ptoks, counter_delta(before, inprocess_counters(llm)))

    def chat_run(llm, prompts):
        outs = llm.chat([[{"role": "user", "content": p}] for p in prompts], sp, use_tqdm=False)
        return [parse_label(o.outputs[0].text, task.labels) for o in outs], sum(len(o.prompt_token_ids) for o in outs)

    if any(m in plan[c][0] for c in cells for m in ("chat", "chat-apo-engine", "apo")):
        enable_inprocess_stats()  # before LLM is looked up: it replaces vllm.LLM
        from vllm import LLM, SamplingParams

        sp = SamplingParams(temperature=0.0, max_tokens=args.max_tokens)

    # -- 2. a plain vllm.LLM: vLLM's defaults + the flags the server of method 1 gets ---------------
    if any("chat" in plan[c][0] for c in cells):
        from unittest import mock

        from apo_local.engine.settings import cpu_engine_environment, has_cuda_gpu
        from apo_local.engine.vllm_engine import _start_environment, cpu_engine_in_process

        env, kwargs = {}, dict(common)
        if not has_cuda_gpu():
            cpu_engine_environment()  # the same engine-process environment as methods 1 and 3
            env = _start_environment(settings, cpu_engine_in_process())
            if cpu_engine_in_process():
                kwargs["distributed_executor_backend"] = "uni"  # as apo-local's engine passes
        with mock.patch.dict(os.environ, env):  # in process on CPU, as apo-local's engine
            llm = LLM(**kwargs)
        try:
            chat_run(llm, warm)
            for cell in cells:
                if "chat" in plan[cell][0]:
                    for rep in range(plan[cell][1]):
                        time_inprocess(llm, "chat", cell, rep, lambda cell=cell: chat_run(llm, work[cell][2]))
        finally:
            llm.llm_engine.engine_core.shutdown()
            del llm
            import gc

            gc.collect()

    # -- 2b and 3: apo-local's engine: plain LLM.chat on it, and the scorer ------------------------
    if any(m in plan[c][0] for c in cells for m in ("chat-apo-engine", "apo")):
        from apo_local.engine import load_engine, shutdown_engines
        from apo_local.scoring import Scorer

        engine = load_engine(settings, cache_path=False)
        llm = engine.inner.llm

        def apo_run(instructions, examples):
            evals = Scorer(task, engine).evaluate_many(instructions, examples)
            # prompt tokens: counted after the clock stops (time_inprocess), not a second tokenization inside it
            return [p.label for ev in evals for p in ev.predictions], lambda: sum(
                engine.inner.count_tokens([task.render(i, ex) for i in instructions for ex in examples])
            )

        try:
            chat_run(llm, warm)  # warm-up, both paths
            Scorer(task, engine).evaluate_many([task.initial_instruction], task.split("train")[:16])
            for cell in cells:
                instructions, examples, prompts = work[cell]
                order = [m for m in ("chat-apo-engine", "apo") if m in plan[cell][0]]
                for rep in range(plan[cell][1]):
                    for method in order if rep % 2 == 0 else order[::-1]:  # alternate to spread load drift
                        if method == "apo":
                            time_inprocess(llm, method, cell, rep, lambda i=instructions, e=examples: apo_run(i, e))
                        else:
                            time_inprocess(llm, method, cell, rep, lambda p=prompts: chat_run(llm, p))
        finally:
            shutdown_engines()

    result = {
        "machine": facts,
        "load_avg_end": load_avg(),
        "args": vars(args),
        "engine_args": common,
        "warm_up": "each engine answered 16 other prompts (initial instruction x 16 train rows) before timing; "
        "prefix cache emptied before every timed measurement",
        "runs": runs,
    }
    result["summary"] = summarize(runs, cells[0])
    write_json(args.out, result)
    md = markdown(result, cells)
    Path(args.out).with_suffix(".md").write_text(md)
    print(md)
    return result


def common_engine_args(args, model_path):
    """apo-local's resolved settings for this machine (with the flags' overrides) and the ``vllm.LLM``
    arguments they make: what every method's engine gets."""
    from apo_local.engine import EngineSettings
    from apo_local.engine.settings import has_cuda_gpu
    from apo_local.engine.vllm_engine import engine_kwargs

    eager = None if args.eager is None else args.eager == "on"
    settings = EngineSettings(
        model=args.model,
        max_model_len=args.max_model_len,
        gpu_memory_utilization=args.gpu_memory_utilization,
        kv_cache_gb=args.kv_cache_gb,
        enforce_eager=eager,
    )
    return settings, engine_kwargs(model_path, settings.resolved(), has_cuda_gpu())


def server_args(common: dict) -> list[str]:
    """The server flags for what LocalServer does not set itself (dtype, block size)."""
    out = ["--dtype", str(common["dtype"])]
    if "block_size" in common:
        out += ["--block-size", str(common["block_size"])]
    return out


def _best(runs, method, cell):
    rs = [r for r in runs if r["method"] == method and (r["candidates"], r["examples"]) == cell]
    return min(rs, key=lambda r: r["seconds"]) if rs else None


def summarize(runs, cell) -> dict:
    out: dict = {"cell": list(cell)}
    best = {m: _best(runs, m, cell) for m in METHODS}
    for a, b in (("apo", "http"), ("apo", "chat"), ("apo", "chat-apo-engine"), ("chat-apo-engine", "chat")):
        if best[a] and best[b]:
            out[f"speedup_{a}_over_{b}"] = round(best[b]["seconds"] / best[a]["seconds"], 2)
            if best[a].get("cpu_s") and best[b].get("cpu_s"):
                out[f"cpu_ratio_{b}_over_{a}"] = round(best[b]["cpu_s"] / best[a]["cpu_s"], 2)
    have = [m for m in METHODS if best[m]]
    agree, agree_parsed = {}, {}
    for i, a in enumerate(have):
        for b in have[i + 1 :]:
            la, lb = best[a]["labels"], best[b]["labels"]
            agree[f"{a}~{b}"] = round(sum(x == y for x, y in zip(la, lb)) / len(la), 4)
            both = [(x, y) for x, y in zip(la, lb) if x is not None and y is not None]
            agree_parsed[f"{a}~{b}"] = [round(sum(x == y for x, y in both) / len(both), 4) if both else None, len(both)]
    out["agreement"] = agree
    out["agreement_where_both_parsed"] = agree_parsed  # [fraction, number of prompts both parsed]
    out["predicted"] = {m: dict(Counter(str(label) for label in best[m]["labels"])) for m in have}
    return out


def markdown(result, cells) -> str:
    runs, s = result["runs"], result["summary"]
    m = result["machine"]
    shown = {k: v for k, v in result.get("engine_args", {}).items() if k != "model"}
    lines = [
        f"Machine: {m.get('cpu')}, {m.get('cores')} cores, {m.get('mem_gib')} GiB, GPU {m.get('gpu')}, "
        f"vLLM {m.get('vllm')}; load at start {m['load_avg']}, at end {result['load_avg_end']}.",
        "",
        f"Engine arguments, the same for every method: `{shown}`.",
        "",
    ]
    c, e = cells[0]
    lines += [
        f"**{c} candidates x {e} Liar rows = {c * e} prompts** (best of repeats)",
        "",
        "| method | wall s | CPU s | prompts/s | prompt tokens | prefilled tokens | prefix-cache hit rate | generated tokens | F1 | unparsed | load (1/5/15 min) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for meth in METHODS:
        r = _best(runs, meth, (c, e))
        if r:
            lines.append(
                f"| {NAMES[meth]} | {r['seconds']:.1f} | {r.get('cpu_s', '-')} | {r['prompts_per_s']:.2f} | {r['prompt_tokens']} | "
                f"{r.get('prefilled_tokens', '-')} | {r.get('prefix_cache_hit_rate', '-')} | "
                f"{r.get('generated_tokens', '-')} | {r['f1']:.3f} | {r['unparsed']} | {r['load_avg']} |"
            )
    lines += [
        "",
        f"Speed-ups: 3 over 1 = **{s.get('speedup_apo_over_http', '-')}x**, 3 over 2 = "
        f"**{s.get('speedup_apo_over_chat', '-')}x** (wall); CPU seconds 1/3 = {s.get('cpu_ratio_http_over_apo', '-')}, "
        f"2/3 = {s.get('cpu_ratio_chat_over_apo', '-')}. Decomposition: 2b/3 = {s.get('speedup_apo_over_chat-apo-engine', '-')}x "
        f"(label log-probs vs 4-token answers, same engine), 2/2b = {s.get('speedup_chat-apo-engine_over_chat', '-')}x "
        f"(apo-local's engine settings vs vLLM's defaults, same LLM.chat). Agreement of predictions (unparsed answers count as their own label): "
        f"{s['agreement']}; where both parsed [fraction, prompts]: {s['agreement_where_both_parsed']}.",
        "",
    ]
    if len(cells) > 1:
        lines += [
            "Scaling (wall seconds; prompts/s in brackets; best of repeats):",
            "",
            "| candidates x rows | prompts | " + " | ".join(NAMES[x] for x in SCALING) + " | 3/1 | 3/2 |",
            "|---|---:|" + "---:|" * (len(SCALING) + 2),
        ]
        for cell in cells:
            rs = {x: _best(runs, x, cell) for x in METHODS}
            cellv = [f"{rs[x]['seconds']:.1f} ({rs[x]['prompts_per_s']:.1f})" if rs[x] else "-" for x in SCALING]
            r31 = f"{rs['http']['seconds'] / rs['apo']['seconds']:.2f}" if rs["http"] and rs["apo"] else "-"
            r32 = f"{rs['chat']['seconds'] / rs['apo']['seconds']:.2f}" if rs["chat"] and rs["apo"] else "-"
            lines.append(
                f"| {cell[0]} x {cell[1]} | {cell[0] * cell[1]} | " + " | ".join(cellv) + f" | {r31} | {r32} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
