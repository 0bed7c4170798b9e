"""Prefill cost of the growing few-shot prefix: one instruction with 0, 1, 2, 4, 8 demonstrations x N Liar
test rows, label log-probs (the scorer a few-shot search selects with), on apo-local's engine.

    .venv/bin/python scripts/bench_fewshot_prefill.py --rows 48 --demos 0 1 2 4 8

Per demonstration count: seconds, prompt tokens per prompt, and from vLLM's own counters the prompt
tokens, the prefix-cache hit tokens and the tokens actually prefilled (prompt - hits), the prefix cache
emptied before each measurement. Demonstrations come from the few-shot pool (training rows). One JSON
line per count, then a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=48)
    ap.add_argument("--demos", type=int, nargs="+", default=[0, 1, 2, 4, 8])
    args = ap.parse_args()

    from _bench_common import counter_delta, enable_inprocess_stats, inprocess_counters, load_avg

    import apo_local  # noqa: F401  (offline environment first)

    enable_inprocess_stats()
    from apo_local.engine import EngineSettings, RoleEngine, Trace, load_engine
    from apo_local.scoring import Scorer
    from apo_local.search.proposers.fewshot import demo_pool
    from apo_local.tasks import Example, load_task
    from apo_local.tasks.demos import demo, join_prompt

    engine = load_engine(EngineSettings(), False)
    llm = engine.inner.llm  # the vllm.LLM under the (disabled) result cache
    task = load_task("liar")
    rows = task.split("test")[: args.rows]
    pool = [demo(ex) for ex in demo_pool(task, 0, max(args.demos))]
    Scorer(task, RoleEngine(engine, "target", Trace()), "logprobs").evaluate(
        task.initial_instruction, rows[:4]
    )  # warm-up
    out = []
    for k in args.demos:
        text = join_prompt(task.initial_instruction, pool[:k])
        scorer = Scorer(task, RoleEngine(engine, "target", Trace()), "logprobs")
        per_prompt = engine.count_tokens([task.render(text, ex) for ex in rows])
        llm.reset_prefix_cache()
        before = inprocess_counters(llm)
        t0 = time.perf_counter()
        result = scorer.evaluate(text, rows)
        dt = time.perf_counter() - t0
        c = counter_delta(before, inprocess_counters(llm))
        entry = {
            "demos": k,
            "rows": len(rows),
            "seconds": round(dt, 2),
            "prompt_tokens_mean": round(sum(per_prompt) / len(per_prompt), 1),
            "prefix_tokens": engine.count_tokens([task.render(text, Example("p", "", ""))])[0],
            **c,
            "f1": round(result.metrics[task.metric.name], 4),
            "load_avg": load_avg(),
        }
        out.append(entry)
        print(json.dumps(entry), flush=True)
    print(
        "\n| demonstrations | prefix tokens | prompt tokens / prompt | engine prompt tokens | prefix-cache hits "
        "| prefilled tokens | seconds | test F1 |\n|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    for e in out:
        print(
            f"| {e['demos']} | {e['prefix_tokens']} | {e['prompt_tokens_mean']} | {e.get('prompt_tokens', '-')} | "
            f"{e.get('prefix_cache_hit_tokens', '-')} | {e.get('prefilled_tokens', '-')} | {e['seconds']} | {e['f1']} |"
        )
    os._exit(0)  # the engine's threads need no orderly shutdown here
