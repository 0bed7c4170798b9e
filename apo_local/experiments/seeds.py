"""One config over several seeds, and a verdict on what the search changed: ``optimize --seeds N``.

    apo-local optimize --config configs/demo.yaml --out runs/demo-seeds --seeds 3

Each seed is a normal run directory ``OUT/seed-<s>/`` (seeds ``seed`` .. ``seed + N - 1``), run by the
sweep's cell runner: a finished one is skipped, an interrupted one resumed, so re-running the command
continues. The verdict compares the selected prompt with the initial prompt on the same test rows and seeds
(``compare_stats``: a Student t interval over the per-seed differences, df = seeds - 1, widened to the rows'
paired bootstrap; McNemar per seed): better, worse, no detectable change (with the seeds or rows the observed
effect would need), or not established (one seed). ``OUT/seeds.json`` holds the per-seed figures and the verdict.
"""

from __future__ import annotations

import json
from pathlib import Path

from apo_local.experiments.compare_stats import paired, prediction_rows, selected_rows, verdict, verdict_line
from apo_local.experiments.sweep.cell import run_cell
from apo_local.run.config import RunConfig, dump_config
from apo_local.support.files import write_json
from apo_local.tasks import load_task


def optimize_seeds(cfg: RunConfig, out: str | Path, n: int) -> dict:
    """Run (or resume, or skip) ``n`` seeds of ``cfg`` under ``out`` and return the per-seed figures and the
    verdict of selected vs initial (also written to ``out/seeds.json``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    seeds = [cfg.seed + k for k in range(n)]
    runs, selected, initial = [], [], []
    for seed in seeds:
        cell = out / f"seed-{seed}"
        run_cell(cell, dump_config(cfg.model_copy(update={"seed": seed})), release=False)
        res = json.loads((cell / "results.json").read_text(encoding="utf-8"))
        m = res["metric"]
        runs.append(
            {
                "seed": seed,
                "dir": str(cell),
                "selected_test": res["selected_test"]["metrics"][m],
                "initial_test": res["initial_test"]["metrics"][m],
                "headline": res.get("headline", ""),
                "selected_prompt": res["selected_prompt"],
            }
        )
        selected.append(selected_rows(cell))
        initial.append(prediction_rows(cell / "predictions" / "test-initial.jsonl"))
    metric = load_task(cfg.task).metric
    vs = paired(metric, selected, initial)
    summary = {
        "metric": metric.name,
        "seeds": seeds,
        "runs": runs,
        "verdict": verdict(vs),
        "verdict_line": verdict_line("selected", "initial", vs, metric.name),
        "selected_vs_initial": vs,
    }
    write_json(out / "seeds.json", summary)
    return summary


def seeds_lines(summary: dict) -> list[str]:
    """The CLI's table of a multi-seed run: one line per seed, then the verdict line last."""
    m = summary["metric"]
    lines = [f"{'seed':>4}  {'selected ' + m:>12}  {'initial ' + m:>12}  run directory"]
    for r in summary["runs"]:
        lines.append(f"{r['seed']:>4}  {r['selected_test']:>12.3f}  {r['initial_test']:>12.3f}  {r['dir']}")
    return lines + ["", summary["verdict_line"]]
