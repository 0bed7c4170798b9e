"""Benchmark 1b: the scorer's host path alone, on a stubbed engine (no model computes anything).

apo-local's real ``VLLMEngine`` (its real tokenizer and chat template) with ``llm.generate`` replaced by
a stub that returns at once: what is timed is only the host's work per scored prompt -- render
(task template + chat template), tokenize, build the engine's inputs, parse the outputs -- i.e. what
stands between the GPU and the next batch. Two parts:

  steps  -- ``Scorer.evaluate_many`` over C candidates x E Liar rows (default 64 x 256), per step
            (render/tokenize, build, parse) and per scored prompt; the result cache on (a temporary file);
  scale  -- C x R prompts (default 64 x 16,384 = 1,048,576) in one ``evaluate_many`` call through the
            same path (memo and cache on), rows repeated from the Liar splits with a distinct id each; the
            scorer chunks it; peak RSS and time per chunk (linearity).

    .venv/bin/python scripts/bench_host_path.py                       # steps at 64 x 256, then the 1M-prompt scale run
    .venv/bin/python scripts/bench_host_path.py --part steps --profile # + a cProfile of the steps run
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import resource
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench_common import ROOT, load_instructions, machine, write_json

import apo_local  # noqa: F401  (offline switches first)


class StubLLM:
    """``vllm.LLM.generate`` that returns at once: one shared output object per sampling-params object
    (log-probabilities of the asked token ids, or a fixed 1-token answer), no model, no copies."""

    def __init__(self):
        self.prompts = 0
        self.seconds = 0.0
        self._outs: dict[int, object] = {}

    def _out(self, params):
        key = id(params)
        if key not in self._outs:
            ids = getattr(params, "logprob_token_ids", None) or []
            lp = {t: SimpleNamespace(logprob=-1.0 - k * 0.5) for k, t in enumerate(ids)}
            comp = SimpleNamespace(logprobs=[lp], text=" Yes", token_ids=[1])
            self._outs[key] = (params, SimpleNamespace(outputs=[comp], prompt_token_ids=[0] * 8))
        return self._outs[key][1]

    def generate(self, prompts, params, use_tqdm=False):
        t0 = time.perf_counter()
        params = params if isinstance(params, list) else [params] * len(prompts)
        outs = [self._out(p) for p in params]
        self.prompts += len(prompts)
        self.seconds += time.perf_counter() - t0
        return outs


def stub_engine(model: str | None = None, max_model_len: int = 2048):
    """apo-local's VLLMEngine on the real tokenizer and chat template, ``llm`` a ``StubLLM``."""
    from transformers import AutoTokenizer

    from apo_local.engine.chat import ChatFormatter
    from apo_local.engine.vllm_engine import VLLMEngine
    from apo_local.models.registry import chat_template_for, resolve_model

    path = resolve_model(model)
    eng = VLLMEngine.__new__(VLLMEngine)
    eng.llm, eng.in_process, eng.max_model_len = StubLLM(), False, max_model_len
    eng.settings = SimpleNamespace(seed=0)
    eng.chat = ChatFormatter(AutoTokenizer.from_pretrained(str(path)), chat_template_for(path), {}, name=str(path))
    eng.model_id = f"stub|{path.name}|{max_model_len}" + eng.chat.template_id
    return eng


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed_steps(eng):
    """Wrap the engine's host steps (where they exist) with timers; returns the totals dict."""
    totals: dict[str, float] = {}

    def wrap(obj, name, step):
        fn = getattr(obj, name, None)
        if fn is None:
            return

        def timed(*a, **k):
            t0 = time.process_time()  # CPU seconds: a loaded machine stretches wall time, not these
            try:
                return fn(*a, **k)
            finally:
                totals[step] = totals.get(step, 0.0) + time.process_time() - t0

        setattr(obj, name, timed)

    for name, step in (("_prompt_ids", "render+tokenize"), ("_build", "build"), ("_parse", "parse")):
        wrap(eng, name, step)
    return totals


def timed_scorer_render(scorer, totals: dict):
    """Time the scorer's own rendering (the task template) as a step of its own."""
    fn = getattr(scorer, "prompt", None)
    if fn is None:  # an earlier scorer: rendering is not a step of its own
        return

    def timed(*a):
        t0 = time.process_time()
        try:
            return fn(*a)
        finally:
            totals["task template"] = totals.get("task template", 0.0) + time.process_time() - t0

    scorer.prompt = timed
    return totals


def run_steps(args, task, out: dict) -> None:
    from apo_local.engine.cache import CachedEngine, ResultCache
    from apo_local.scoring import Scorer

    eng = stub_engine(args.model)
    instructions = load_instructions(args.candidates)
    rows = (task.split("train") + task.split("test"))[: args.examples]
    with tempfile.TemporaryDirectory() as tmp:
        cached = CachedEngine(eng, ResultCache(Path(tmp) / "c.sqlite"))
        Scorer(task, cached).evaluate_many(instructions[:1], rows[:4])  # warm-up: tokenizer, label ids
        totals = timed_steps(eng)
        scorer = Scorer(task, cached)
        timed_scorer_render(scorer, totals)
        prof = cProfile.Profile() if args.profile else None
        t0, c0 = time.perf_counter(), time.process_time()
        if prof:
            prof.enable()
        scorer.evaluate_many(instructions, rows)
        if prof:
            prof.disable()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        cached.cache.close()
    n = len(instructions) * len(rows)
    host = wall - eng.llm.seconds
    if "build" in totals and "render+tokenize" in totals:  # _build calls _prompt_ids: count each step once
        totals["build"] -= totals["render+tokenize"]
    out["steps"] = {
        "candidates": len(instructions),
        "examples": len(rows),
        "prompts": n,
        "wall_s": round(wall, 3),
        "stub_s": round(eng.llm.seconds, 4),
        "host_ms_per_prompt": round(1000 * host / n, 4),
        "cpu_s": round(cpu, 3),
        "host_cpu_ms_per_prompt": round(1000 * cpu / n, 4),
        "load_avg": list(os.getloadavg()),
        "per_step_cpu_ms_per_prompt": {k: round(1000 * v / n, 4) for k, v in totals.items()},
        "rest_cpu_ms_per_prompt (scorer, cache keys, cache)": round(1000 * (cpu - sum(totals.values())) / n, 4),
    }
    print(json.dumps(out["steps"], indent=1), flush=True)
    if prof:
        stats = pstats.Stats(prof)
        stats.sort_stats("cumulative").print_stats(35)
        stats.sort_stats("tottime").print_stats(25)


def run_scale(args, task, out: dict) -> None:
    """C x R prompts in ONE ``Scorer.evaluate_many`` call, memo and result cache on (a temporary file),
    rows repeated from the Liar splits with a distinct id each: the scorer chunks the call; time and peak
    RSS are read after every chunk (linear time: equal chunks take equal time)."""
    from apo_local.engine.cache import CachedEngine, ResultCache
    from apo_local.scoring import Scorer
    from apo_local.tasks import Example

    eng = stub_engine(args.model)
    instructions = load_instructions(args.candidates)
    base = task.split("train") + task.split("test")
    rows = [
        Example(id=f"r{i}", input=base[i % len(base)].input, label=base[i % len(base)].label) for i in range(args.rows)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        cached = CachedEngine(eng, ResultCache(Path(tmp) / "c.sqlite") if args.cache else None)
        inner, marks = cached.score_choices, []
        t0, c0 = time.perf_counter(), time.process_time()

        def marked(prompts, choices):
            got = inner(prompts, choices)
            done = (marks[-1]["prompts"] if marks else 0) + len(prompts)
            marks.append(
                {
                    "prompts": done,
                    "seconds": round(time.perf_counter() - t0, 2),
                    "cpu_s": round(time.process_time() - c0, 2),
                    "peak_rss_mib": round(peak_rss_mib()),
                }
            )
            print(marks[-1], flush=True)
            return got

        cached.score_choices = marked
        scorer = Scorer(task, cached, chunk=args.chunk)
        rss0 = peak_rss_mib()
        evals = scorer.evaluate_many(instructions, rows)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        db_mib = sum(f.stat().st_size for f in Path(tmp).glob("c.sqlite*")) / 2**20  # + its WAL
        if cached.cache:
            cached.cache.close()
    done = sum(len(e.predictions) for e in evals)
    steps = [b["cpu_s"] - a["cpu_s"] for a, b in zip([{"cpu_s": 0.0}] + marks, marks)]
    half = len(steps) // 2
    out["scale"] = {
        "candidates": len(instructions),
        "rows": args.rows,
        "prompts": done,
        "chunk": args.chunk,
        "cache": bool(args.cache),
        "cache_file_mib": round(db_mib),
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "host_cpu_ms_per_prompt": round(1000 * cpu / done, 4),
        "peak_rss_mib_before": round(rss0),
        "peak_rss_mib": round(peak_rss_mib()),
        "chunk_cpu_s_first_half_vs_second_half": [
            round(sum(steps[:half]) / max(half, 1), 2),
            round(sum(steps[half:]) / max(len(steps) - half, 1), 2),
        ],
        "marks": marks,
    }
    print(json.dumps({k: v for k, v in out["scale"].items() if k != "marks"}, indent=1), flush=True)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None)
    p.add_argument("--part", choices=("steps", "scale", "both"), default="both")
    p.add_argument("--candidates", type=int, default=64)
    p.add_argument("--examples", type=int, default=256, help="rows of the steps run")
    p.add_argument("--rows", type=int, default=16384, help="rows of the scale run")
    p.add_argument("--chunk", type=int, default=32_768, help="the scorer's chunk (prompts per engine call)")
    p.add_argument("--no-cache", dest="cache", action="store_false", help="scale run without the result cache")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--out", default=str(ROOT / "runs" / "bench" / "host_path.json"))
    args = p.parse_args(argv)
    from apo_local.tasks import load_task

    task = load_task("liar")
    out: dict = {"machine": machine(), "args": vars(args)}
    if args.part in ("steps", "both"):
        run_steps(args, task, out)
    if args.part in ("scale", "both"):
        run_scale(args, task, out)
    write_json(args.out, out)
    return out


if __name__ == "__main__":
    main()
