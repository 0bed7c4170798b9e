"""Calibrated label scoring: per-label offsets subtracted from a prompt's label log-probs before the argmax.

A small target leans hard to one label whatever the input; the lean is a property of the prompt (instruction +
template), so it is estimated per prompt and removed (``scoring.calibration``):

* ``batch`` (Batch Calibration, Zhou et al. 2024): each label's mean log-prob over a fixed batch of unlabeled
  inputs scored under the prompt: ``CALIBRATION_ROWS`` training inputs, drawn once with a fixed seed (their
  labels are never read), the same for every prompt, run and seed;
* ``content-free`` (contextual calibration, Zhao et al. 2021): the log of each label's mean probability over
  the prompt with content-free inputs (``"N/A"``, ``""``, ``"[MASK]"``) in place of the example.

A prediction is then ``argmax_y (logprob_y - offset_y)``, ties to the first label; offsets are log-probs
normalised over the labels, so they read as the prompt's prior lean (a constant added to every label's offset
changes no prediction). Rows the engine could not score are left out of the estimate; a prompt whose offsets
cannot be estimated (no scorable row, or a label no row gives any probability) is scored uncalibrated (offsets 0).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

CALIBRATIONS = ("none", "batch", "content-free")
CALIBRATION_ROWS = 32  # training inputs per prompt in batch calibration
CONTENT_FREE_INPUTS = ("N/A", "", "[MASK]")  # Zhao et al. 2021's content-free inputs
_SAMPLE_SEED = "apo-local calibration rows"  # fixed: the same rows for every run and seed


def calibration_inputs(method: str, train_inputs: Sequence[str]) -> list[str]:
    """The inputs a prompt is scored on to estimate its offsets (``[]`` for ``none``)."""
    if method == "batch":
        if len(train_inputs) <= CALIBRATION_ROWS:
            return list(train_inputs)
        return random.Random(_SAMPLE_SEED).sample(list(train_inputs), CALIBRATION_ROWS)
    if method == "content-free":
        return list(CONTENT_FREE_INPUTS)
    return []


def normalised(logprobs: Sequence[float]) -> list[float]:
    """Log-probs renormalised over the labels (log-softmax); a row with no finite entry comes back as it is."""
    top = max(logprobs, default=-math.inf)
    if not math.isfinite(top):
        return list(logprobs)
    log_z = top + math.log(sum(math.exp(x - top) for x in logprobs))
    return [x - log_z for x in logprobs]


def offsets(method: str, rows: Sequence[Sequence[float]], n_labels: int) -> tuple[float, ...]:
    """Per-label offsets from the label log-probs of a prompt's calibration rows (one row per input, one value per
    label); zeros when ``method`` is ``none`` or nothing usable was scored."""
    usable = [normalised(r) for r in rows if len(r) == n_labels and any(math.isfinite(x) for x in r)]
    if method == "none" or not usable:
        return (0.0,) * n_labels
    if method == "batch":
        out = [sum(r[j] for r in usable) / len(usable) for j in range(n_labels)]
    elif method == "content-free":
        out = [
            math.log(m) if (m := sum(math.exp(r[j]) for r in usable) / len(usable)) > 0 else -math.inf
            for j in range(n_labels)
        ]
    else:
        raise ValueError(f"unknown calibration {method!r}")
    if not all(math.isfinite(x) for x in out):
        return (0.0,) * n_labels
    return tuple(out)


def calibrated_choice(logprobs: Sequence[float], offs: Sequence[float]) -> int | None:
    """The label index with the highest ``logprob - offset`` (ties: the first); None when no label has a finite
    log-prob (an unscorable prompt)."""
    scores = [lp - off if math.isfinite(lp) else -math.inf for lp, off in zip(logprobs, offs)]
    if not any(math.isfinite(s) for s in scores):
        return None
    return max(range(len(scores)), key=lambda i: (scores[i], -i))
