"""The final pick: which prompt the search returns, chosen on validation rows without the test split.

``selection.final_pick: guarded`` (the default) scores the final beam *and the initial prompt* on the
validation rows and picks by the selection's own reward (balanced accuracy when the selection follows an
F1-type metric, else accuracy), so the pick cannot be won by shifting answers toward one label and a search
never returns a prompt that scores below its starting point there. ``reference`` picks among the final beam
only, by the task's metric (the earlier behaviour; ProTeGi's code reports the best beam prompt). Ties go to
the beam in its order, the initial prompt last.

``method`` picks nothing: the search returns the method's own final prompt, the final beam's first (the
acceptance rule's choice: the bandit's best estimate, naive acceptance's last update, validated acceptance's
current prompt). A study of a method reports this one: the guarded pick lets the initial prompt compete at the
end, which would mask a method that made the prompt worse (naive acceptance). The guarded pick is recorded
beside it (``guarded_beside``), so both can be read.
"""

from __future__ import annotations

from collections.abc import Sequence

from apo_local.tasks.metrics import balanced_accuracy

REWARD = "reward"


def validation_scores(scorer, rows: Sequence, texts: Sequence[str], metric: str) -> dict[str, dict]:
    """text -> {metric, "reward", "reward_name"} on ``rows``, every prompt in one batch ({} without rows).
    The reward is balanced accuracy when the scorer's selection reward is class-balanced, else accuracy."""
    if not rows or not texts:
        return {}
    balanced = scorer.reward_weights is not None
    out = {}
    for e in scorer.evaluate_many(list(texts), rows):
        pairs = [(p.label, ex.label) for p, ex in zip(e.predictions, rows)]
        out[e.instruction] = {
            metric: e.metrics[metric],
            REWARD: balanced_accuracy(pairs) if balanced else e.metrics["accuracy"],
            "reward_name": "balanced_accuracy" if balanced else "accuracy",
        }
    return out


def pick_on_validation(
    scores: dict[str, dict], key: str, beam_texts: Sequence[str], initial: str, n_rows: int
) -> tuple[str, str]:
    """(the picked text, how it was picked) among the prompts in ``scores`` (in order: the beam, then the
    initial prompt when it competes), by ``scores[text][key]``; ties go to the earlier prompt."""
    texts = list(scores)
    best = max(texts, key=lambda t: (scores[t][key], -texts.index(t)))
    how = f"validation ({n_rows} rows"
    if key == REWARD:
        how += ", " + scores[best]["reward_name"].replace("_", " ")
    if best == initial and initial not in beam_texts:
        how += "; the initial prompt scored best"
    return best, how + ")"


def guarded_beside(scores: dict[str, dict], beam_texts: Sequence[str], initial: str, rows: int) -> dict | None:
    """The record of the pick ``final_pick: guarded`` would have made, beside the method's own final prompt:
    ``{"rule": "method", "guarded": text, "guarded_by": how}``; None without validation rows. ``scores`` holds the
    final beam's and the initial prompt's validation scores (the final evaluation scores both in one batch)."""
    if not rows:
        return None
    ordered = {t: scores[t] for t in dict.fromkeys([*beam_texts, initial])}
    text, how = pick_on_validation(ordered, REWARD, beam_texts, initial, rows)
    return {"rule": "method", "guarded": text, "guarded_by": how}
