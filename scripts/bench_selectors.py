"""Simulation benchmark of the beam selectors: known arm means, many trials, equal budget.

    python scripts/bench_selectors.py [--trials 300] [--out bench_selectors.json]

Each arm is a prompt with a known accuracy. One example is a latent difficulty shared by every prompt:
arm ``i`` answers example ``j`` right when ``sqrt(rho) * z_j + sqrt(1 - rho) * e_ij < Phi^-1(p_i)`` (a
Gaussian copula: every arm's accuracy is exactly ``p_i``, and two prompts agree on easy and hard rows as
real prompts on one model do; ``rho`` is the share of the variance the rows carry). ``shared`` gives every
arm of a bandit round the same rows (as ``selection.sample: shared`` does); ``independent`` draws rows per
arm. Every selector runs through ``apo_local.search.selectors`` with the budget the run config gives it.

Printed per scenario: mean top-k overlap (of the k arms chosen, how many are among the true top k), the
share of trials the best arm is chosen, and the difference to uniform with its standard error (the same
trial seeds for every selector). No engine, no model: a few minutes on one core.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from apo_local.search.selectors import make_selector  # noqa: E402

BUDGET, BATCH, PER_ROUND, K = 2048, 32, 8, 4

SCENARIOS = {
    # the close race: 36 arms (4 parents + 32 proposals) with accuracies 0.50 .. 0.65, evenly spread
    "close (36 arms, 0.50-0.65)": [0.50 + 0.15 * i / 35 for i in range(36)],
    # a few good proposals among many poor ones: the case best-arm identification is made for
    "few good (36 arms: 4 at 0.62-0.68, 32 at 0.40-0.52)": [0.62, 0.64, 0.66, 0.68]
    + [0.40 + 0.12 * i / 31 for i in range(32)],
    # ProTeGi's usual late round: 16 arms, a clear best
    "clear best (16 arms: 0.75, 0.65, 14 at 0.40-0.60)": [0.75, 0.65] + [0.40 + 0.20 * i / 13 for i in range(14)],
}

SELECTORS = {
    "uniform": ("uniform", {}),
    "ucb (c=1, t=round, warm-up 32)": ("ucb", {"c": 1.0, "t_unit": "round"}),
    "ucb (c=1, t=round, warm-up 8)": ("ucb", {"c": 1.0, "t_unit": "round", "warmup": 8}),
    "ucb (c=1, t=round, no warm-up)": ("ucb", {"c": 1.0, "t_unit": "round", "warmup": 0}),
    "ucb (c=2, t=examples: earlier default)": ("ucb", {"c": 2.0, "t_unit": "examples"}),
    "ucb-e (a=2)": ("ucb-e", {}),
    "successive-rejects": ("successive-rejects", {}),
    "successive-halving": ("successive-halving", {}),
}


class SimPull:
    """The pull function of one trial: correlated Bernoulli rewards, shared or independent rows per round."""

    def __init__(self, means, rho: float, shared: bool, rng: np.random.Generator):
        self.thresholds = np.asarray([statistics.NormalDist().inv_cdf(m) for m in means])
        self.rho, self.shared, self.rng = rho, shared, rng

    def _answers(self, arm: int, z: np.ndarray) -> list[float]:
        noise = self.rng.standard_normal(len(z))
        return (math.sqrt(self.rho) * z + math.sqrt(1 - self.rho) * noise < self.thresholds[arm]).astype(float).tolist()

    def __call__(self, requests):
        common = self.rng.standard_normal(max(n for _, n in requests)) if self.shared else None
        return [self._answers(i, common[:n] if self.shared else self.rng.standard_normal(n)) for i, n in requests]


def run(means, name, params, rho, shared, trials):
    top = set(np.argsort(means)[::-1][:K])
    best = int(np.argmax(means))
    overlaps, hits = [], []
    for t in range(trials):
        perm = random.Random(t).sample(range(len(means)), len(means))  # the best arm at a seeded position
        arm_means = [means[p] for p in perm]
        top_t, best_t = {perm.index(i) for i in top}, perm.index(best)
        sel = make_selector(
            name,
            budget=BUDGET,
            batch_size=BATCH,
            **({"arms_per_round": PER_ROUND} if name in ("ucb", "ucb-e") else {}),
            **params,
        )
        res = sel.select(len(means), K, SimPull(arm_means, rho, shared, np.random.default_rng(t)), random.Random(t))
        overlaps.append(len(top_t & set(res.chosen)))
        hits.append(best_t in res.chosen)
    return overlaps, hits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=300)
    ap.add_argument("--rho", type=float, default=0.5, help="share of the reward variance the rows carry")
    ap.add_argument("--out", default=None, help="write the figures as JSON")
    args = ap.parse_args()
    out = {"trials": args.trials, "rho": args.rho, "budget": BUDGET, "k": K, "scenarios": {}}
    for scenario, means in SCENARIOS.items():
        print(f"\n## {scenario}  (budget {BUDGET}, top {K}, {args.trials} trials, rho {args.rho})")
        print(f"{'selector':42} {'sample':12} {'top-4 overlap':>14} {'vs uniform':>18} {'best chosen':>12}")
        rows = {}
        for sample in ("shared", "independent"):
            base, _ = run(means, "uniform", {}, args.rho, sample == "shared", args.trials)
            for label, (name, params) in SELECTORS.items():
                ov, hits = run(means, name, params, args.rho, sample == "shared", args.trials)
                diff = [a - b for a, b in zip(ov, base)]
                se = statistics.stdev(diff) / math.sqrt(len(diff)) if any(diff) else 0.0
                rows[f"{label} | {sample}"] = {
                    "overlap": statistics.mean(ov),
                    "vs_uniform": statistics.mean(diff),
                    "vs_uniform_se": se,
                    "best_chosen": statistics.mean(hits),
                }
                print(
                    f"{label:42} {sample:12} {statistics.mean(ov):>14.2f} "
                    f"{statistics.mean(diff):>+10.2f} ± {se:.2f} {statistics.mean(hits):>12.2f}"
                )
        out["scenarios"][scenario] = rows
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
