"""What becomes of the optimizer's replies, free text vs guided decoding: for one model and one task,
N optimizer steps of every kind (gradient, edit, one-step, rewrite, improve, paraphrase, ABO init /
revise / demonstration), each asked twice with the same request seeds: once as free text
(``optimizer.guided: false``), once guided by the step's reply shape.

Per kind and mode: replies, the share that carry their tags, are truncated (max_tokens reached; rejected),
were cut at a loop (``search/repetition.py``; kept), were used whole without tags (free text only),
rejected by each candidate rule (hygiene, degenerate) and accepted; engine seconds and output tokens (the
guided-decoding overhead). Guided shapes are sized to ``--max-tokens`` as the optimizer steps size them.

    .venv/bin/python scripts/bench_optimizer_replies.py --task liar --n 8 --max-tokens 200
    .venv/bin/python scripts/bench_optimizer_replies.py --task scripts/bench_tickets/task.yaml --n 8
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench_common import ROOT, machine, write_json

import apo_local  # noqa: F401

GRADIENT = "it does not say which details of the input decide the label."


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--task", default="liar", help="built-in task name or a task .yaml")
    p.add_argument("--n", type=int, default=8, help="optimizer steps of each kind")
    p.add_argument("--max-tokens", type=int, default=200, help="optimizer.max_tokens")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kinds", default="", help="comma-separated subset of the kinds")
    p.add_argument("--out", default=None, help="JSON result (default: runs/bench/optimizer-replies-<task>.json)")
    return p.parse_args(argv)


def kinds(task, meta, rows, n, max_tokens):
    """kind -> (prompts, shape, candidate maker or None, parent text). ``rows``: (example, wrong prediction)."""
    from apo_local.search.proposers.abo_format import format_abo, numbered, strip_marker
    from apo_local.search.reply_shapes import abo_steps, tagged

    inst = task.initial_instruction
    labels = ", ".join(task.labels) if task.labels else "the answer"
    steps = [
        "Read the input carefully.",
        f"Decide which label ({labels}) fits it best.",
        "Answer with that label only.",
    ]
    demo = "Step 1: read.\nStep 2: compare.\nStep 3: " + (task.labels[0] if task.labels else "answer")
    abo_parent = format_abo(steps, demo)
    block = lambda i: meta.errors(rows[(3 * i) % len(rows) :][:3] or rows[:3])  # noqa: E731
    ex = lambda i: rows[i % len(rows)][0]  # noqa: E731
    same = lambda t: t  # noqa: E731
    one = tagged(1, max_tokens=max_tokens)
    return {
        "gradient": (
            [meta.render("gradient", prompt=inst, errors=block(i), num_reasons=1, evaluated=True) for i in range(n)],
            one,
            None,
            inst,
        ),
        "edit": (
            [
                meta.render("edit", prompt=inst, errors=block(i), gradient=GRADIENT, num_prompts=1, evaluated=True)
                for i in range(n)
            ],
            one,
            same,
            inst,
        ),
        "one_step": (
            [meta.render("one_step", prompt=inst, errors=block(i), num_prompts=1, evaluated=True) for i in range(n)],
            one,
            same,
            inst,
        ),
        "rewrite": ([meta.render("rewrite", prompt=inst)] * n, one, same, inst),
        "improve": ([meta.render("improve", prompt=inst)] * n, one, same, inst),
        "paraphrase": ([meta.render("paraphrase", prompt=inst)] * n, None, same, inst),
        "abo_init": (
            [
                meta.render("abo_init", prompt=inst, input=ex(i).input.strip(), label=ex(i).label, demonstration=True)
                for i in range(n)
            ],
            abo_steps(True, max_tokens=max_tokens),
            _abo_init,
            inst,
        ),
        "abo_revise": (
            [
                meta.render("abo_revise", steps=numbered(steps), step=2, step_text=steps[1], errors=block(i))
                for i in range(n)
            ],
            one,
            lambda t: format_abo(steps[:1] + [strip_marker(t, 2)] + steps[2:], demo),
            abo_parent,
        ),
        "abo_demo": (
            [
                meta.render("abo_demo", steps=numbered(steps), input=ex(i).input.strip(), label=ex(i).label)
                for i in range(n)
            ],
            one,
            lambda t: format_abo(steps, t),
            abo_parent,
        ),
    }


def _abo_init(item: str) -> str | None:
    from apo_local.search.proposers.abo_format import fallback_steps, format_abo, parse_abo

    a = parse_abo(item)
    steps = a.steps or fallback_steps(item)
    return format_abo(steps, a.demonstration) if steps else None


def run_kind(engine, cfg, kind, spec, hygiene, seed) -> dict:
    from apo_local.engine import RoleEngine, Trace
    from apo_local.search.hygiene import rule
    from apo_local.search.optimizer_calls import OptimizerCalls
    from apo_local.search.parsing import extract_tagged, is_degenerate
    from apo_local.search.streams import Streams

    prompts, shape, make, parent = spec
    trace = Trace()
    calls = OptimizerCalls(RoleEngine(engine, "optimizer", trace), cfg.optimizer, "whole", Streams(seed, 1))
    replies = calls.ask(kind, prompts, shape=shape)
    row = {"tagged": 0, "items": 0, "accepted": 0, "rejected": {}}
    for reply in replies:
        for text in reply.texts:
            row["tagged"] += bool(extract_tagged(text).items)
            for item in calls.parse(text, kind, tagged=kind != "paraphrase")[:1]:
                row["items"] += 1
                cand = make(item) if make else item
                why = (
                    "no steps"
                    if cand is None
                    else (is_degenerate(cand, parent) or (hygiene.reason(cand, parent) if make else None))
                )
                if why:
                    row["rejected"][rule(why)] = row["rejected"].get(rule(why), 0) + 1
                else:
                    row["accepted"] += 1
    t = trace.totals["optimizer"]
    c = trace.counts
    row.update(
        replies=c.get("replies", 0),
        truncated=c.get("replies_truncated", 0),
        cut=c.get("replies_cut_repetition", 0),
        used_whole=c.get("replies_used_whole", 0),
        seconds=round(t.seconds, 2),
        output_tokens=t.output_tokens,
    )
    return row


def main(argv=None) -> dict:
    import random

    from apo_local.engine import EngineSettings, GenerationRequest, load_engine, shutdown_engines
    from apo_local.run.config import build_config
    from apo_local.search.hygiene import Hygiene
    from apo_local.search.meta_prompts import MetaPrompts
    from apo_local.tasks import load_task

    args = parse_args(argv)
    task = load_task(args.task)
    train = task.split("train")
    rng = random.Random(args.seed)
    rows = [
        (ex, rng.choice([lab for lab in task.labels if lab != ex.label] or ["(no answer)"]))
        for ex in rng.sample(train, min(len(train), 3 * args.n))
    ]
    specs = kinds(task, MetaPrompts(), rows, args.n, args.max_tokens)
    if args.kinds:
        specs = {k: v for k, v in specs.items() if k in args.kinds.split(",")}
    hygiene = Hygiene([ex.input for ex in train], task.labels)
    engine = load_engine(EngineSettings(model=args.model, seed=args.seed), cache_path=False)
    engine.generate([GenerationRequest("Say hello.", max_tokens=8)])  # warm-up: neither mode pays the first call
    out = {
        "machine": machine(),
        "model": args.model,
        "task": task.name,
        "n": args.n,
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "seed": args.seed,
        "kinds": {},
    }
    for kind, spec in specs.items():
        for mode, guided in (("free", False), ("guided", True)):
            cfg = build_config(
                {
                    "task": args.task,
                    "seed": args.seed,
                    "optimizer": {"max_tokens": args.max_tokens, "temperature": args.temperature, "guided": guided},
                }
            )
            r = run_kind(engine, cfg, kind, spec, hygiene, args.seed)
            out["kinds"].setdefault(kind, {})[mode] = r
            print(f"{kind:11} {mode:6} " + _line(r), flush=True)
    out["totals"] = {m: _total(out["kinds"], m) for m in ("free", "guided")}
    for m, r in out["totals"].items():
        print(f"{'all':11} {m:6} " + _line(r))
    f, g = out["totals"]["free"], out["totals"]["guided"]
    if f["output_tokens"] and g["output_tokens"]:
        out["guided_seconds_per_token_vs_free"] = round(
            (g["seconds"] / g["output_tokens"]) / (f["seconds"] / f["output_tokens"]), 3
        )
        print(f"guided / free seconds per output token: {out['guided_seconds_per_token_vs_free']}")
    write_json(args.out or ROOT / "runs" / "bench" / f"optimizer-replies-{task.name}.json", out)
    shutdown_engines()
    return out


def _total(by_kind: dict, mode: str) -> dict:
    tot = {
        "replies": 0,
        "tagged": 0,
        "truncated": 0,
        "cut": 0,
        "used_whole": 0,
        "items": 0,
        "accepted": 0,
        "seconds": 0.0,
        "output_tokens": 0,
        "rejected": {},
    }
    for modes in by_kind.values():
        r = modes[mode]
        for k in tot:
            if k == "rejected":
                for rule_, v in r["rejected"].items():
                    tot["rejected"][rule_] = tot["rejected"].get(rule_, 0) + v
            else:
                tot[k] += r.get(k, 0)
    tot["seconds"] = round(tot["seconds"], 2)
    return tot


def _line(r: dict) -> str:
    n = r["replies"] or 1
    rej = ", ".join(f"{k} {v}" for k, v in sorted(r["rejected"].items())) or "-"
    return (
        f"replies {r['replies']:3}  tagged {r['tagged'] / n:4.0%}  truncated {r['truncated'] / n:4.0%}  "
        f"cut {r.get('cut', 0) / n:4.0%}  whole {r['used_whole'] / n:4.0%}  accepted {r['accepted'] / n:4.0%}  {r['seconds']:6.1f} s "
        f"{r['output_tokens']:5} tok  rejected: {rej}"
    )


if __name__ == "__main__":
    main()
