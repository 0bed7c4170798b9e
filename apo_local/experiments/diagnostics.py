"""Reflection diagnostics (Ma et al., 2024): are the optimizer's reflections about the data at all?

Every reflection text a run produced (ProTeGi gradient, three-stage critique and feedback, ABO's
failed-step note) is stored on its candidate in ``rounds/round-NN.json``. If reflections are
generic and prior-driven, they look alike from round to round, and alike between a run shown the
real errors and a run shown pseudo errors. This module measures that with two dependency-free
similarities: token-set Jaccard and TF-IDF cosine (stdlib only; IDF over all texts compared).

``apo-local diagnose RUN_DIR [OTHER_RUN_DIR]`` prints the report as JSON.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from apo_local.support.errors import ApoError

_TOKEN = re.compile(r"[a-z0-9]+")
FIELDS = ("gradient", "critique")


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def jaccard(a: str, b: str) -> float:
    sa, sb = set(tokens(a)), set(tokens(b))
    if not sa and not sb:
        return 1.0
    return len(sa & sb) / len(sa | sb)


class TfIdf:
    """TF-IDF vectors over a fixed set of documents (smoothed IDF, as scikit-learn's default)."""

    def __init__(self, documents: Iterable[str]):
        docs = [tokens(d) for d in documents]
        df = Counter(t for d in docs for t in set(d))
        n = len(docs)
        self.idf = {t: math.log((1 + n) / (1 + c)) + 1 for t, c in df.items()}

    def vector(self, text: str) -> dict[str, float]:
        tf = Counter(tokens(text))
        return {t: c * self.idf.get(t, 1.0) for t, c in tf.items()}

    def cosine(self, a: str, b: str) -> float:
        va, vb = self.vector(a), self.vector(b)
        dot = sum(v * vb.get(t, 0.0) for t, v in va.items())
        na, nb = math.sqrt(sum(v * v for v in va.values())), math.sqrt(sum(v * v for v in vb.values()))
        return dot / (na * nb) if na and nb else (1.0 if not va and not vb else 0.0)


def reflections(run_dir: str | Path) -> dict[int, list[str]]:
    """Round -> the distinct reflection texts of that round (in candidate order)."""
    rounds_dir = Path(run_dir) / "rounds"
    if not rounds_dir.is_dir():
        raise ApoError(f"{run_dir}: no rounds/ folder (not a run directory?)")
    out: dict[int, list[str]] = {}
    for path in sorted(rounds_dir.glob("round-*.json")):
        data = json.loads(path.read_text())
        texts = [
            c[f]
            for c in data["candidates"]
            for f in FIELDS
            if c.get(f) and c.get("round") == data["round"] and c.get("operator") != "paraphrase"
        ]
        out[int(data["round"])] = list(dict.fromkeys(t.strip() for t in texts if t.strip()))
    return out


def _mean(xs: Sequence[float]) -> float | None:
    return round(sum(xs) / len(xs), 4) if xs else None


def mean_pairwise(pairs: Sequence[tuple[str, str]], tfidf: TfIdf) -> dict:
    return {
        "pairs": len(pairs),
        "jaccard": _mean([jaccard(a, b) for a, b in pairs]),
        "tfidf_cosine": _mean([tfidf.cosine(a, b) for a, b in pairs]),
    }


def within_run(by_round: dict[int, list[str]]) -> dict:
    """Mean similarity of reflections from different rounds (and, separately, within a round)."""
    all_texts = [t for ts in by_round.values() for t in ts]
    tfidf = TfIdf(all_texts)
    across = [
        (a, b) for (ra, ta), (rb, tb) in itertools.combinations(sorted(by_round.items()), 2) for a in ta for b in tb
    ]
    within = [p for ts in by_round.values() for p in itertools.combinations(ts, 2)]
    return {
        "reflections": len(all_texts),
        "per_round": {str(r): len(ts) for r, ts in sorted(by_round.items())},
        "across_rounds": mean_pairwise(across, tfidf),
        "within_round": mean_pairwise(within, tfidf),
    }


def between_runs(a: dict[int, list[str]], b: dict[int, list[str]]) -> dict:
    ta, tb = [t for ts in a.values() for t in ts], [t for ts in b.values() for t in ts]
    tfidf = TfIdf(ta + tb)
    same_round = [(x, y) for r in sorted(set(a) & set(b)) for x in a[r] for y in b[r]]
    return {
        "all_pairs": mean_pairwise([(x, y) for x in ta for y in tb], tfidf),
        "same_round": mean_pairwise(same_round, tfidf),
    }


def diagnose(run_dir: str | Path, other: str | Path | None = None) -> dict:
    a = reflections(run_dir)
    report = {"run": str(run_dir), "within": within_run(a)}
    if other is not None:
        b = reflections(other)
        report["other"] = {"run": str(other), "within": within_run(b)}
        report["between"] = between_runs(a, b)
    return report


import click  # noqa: E402


@click.command("diagnose")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.argument("other_run_dir", required=False, type=click.Path(file_okay=False))
def diagnose_command(run_dir, other_run_dir):
    """Similarity of a run's reflections across rounds (and to another run's, e.g. real vs pseudo errors), as JSON."""
    click.echo(json.dumps(diagnose(run_dir, other_run_dir), indent=2))
