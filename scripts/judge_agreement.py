"""Agreement of the judge metric with normalized match, on a task where both apply.

    python scripts/judge_agreement.py [--task configs/tasks/liar-judged/task.yaml] [--limit 64] [--model ALIAS]

The target (``--model``, default: the registry default) answers each test example in generate mode; the
judge (the task's judge.model, else the same engine) grades every output against the reference; each
output is also scored by normalized match (the parsed answer against the reference). Prints one JSON
object: agreement rate, Cohen's kappa, confusion counts, and both metrics' means.
"""

from __future__ import annotations

import argparse
import json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="configs/tasks/liar-judged/task.yaml")
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=64)
    ap.add_argument("--model", default=None)
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--cache", default=None, help="result cache file (default: the user's)")
    args = ap.parse_args()
    print(json.dumps(measure(args.task, args.split, args.limit, args.model, args.max_tokens, args.cache), indent=2))


def measure(task_path: str, split: str, limit: int, model: str | None, max_tokens: int, cache=None) -> dict:
    from apo_local.engine import EngineSettings, RoleEngine, Trace, load_engine
    from apo_local.scoring import Scorer
    from apo_local.tasks import load_task
    from apo_local.tasks.judge import agreement, attach_judge, judge_of
    from apo_local.tasks.metrics import get_metric

    task = load_task(task_path)
    if judge_of(task) is None:
        raise SystemExit(f"{task_path}: metric is not judge")
    trace = Trace()
    engine = load_engine(EngineSettings(model=model), cache)
    attach_judge(task, RoleEngine(engine, "optimizer", trace), trace)
    examples = task.split(split)[:limit]
    evaluation = Scorer(task, RoleEngine(engine, "target", trace), "generate", max_tokens).evaluate(
        task.initial_instruction, examples
    )
    outputs = [p.label for p in evaluation.predictions]
    grades = judge_of(task).grade([(o, ex.label) for o, ex in zip(outputs, examples)])
    match = get_metric("normalized_match")
    matches = [bool(match.example_score(o, ex.label)) for o, ex in zip(outputs, examples)]
    return {
        "task": task.name,
        "split": split,
        **agreement(grades, matches),
        "judge_mean": round(sum(grades) / len(grades), 4),
        "normalized_match": round(sum(matches) / len(matches), 4),
    }


if __name__ == "__main__":
    main()
