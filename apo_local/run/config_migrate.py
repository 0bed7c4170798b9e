"""Run configs of earlier layouts: a key of the earlier flat layout is refused with where it lives now
(``refuse_moved``); a run directory's own config, written by an earlier version, is migrated on resume so it
continues with the behaviour it started with (``migrate_flat_keys``, ``keep_earlier_selection``)."""

from __future__ import annotations

import copy

from apo_local.config.schema import ProTeGiConfig
from apo_local.search.proposers import METHODS
from apo_local.support.errors import ApoError

# keys of the earlier flat layout -> where they live now (refused with this hint; migrated on resume)
MOVED = {
    "search.n_gradients": "protegi.n_gradients (rewrite/improve: <proposer>.samples_per_parent; "
    "abo: abo.init_samples, abo.revise_samples)",
    "search.errors_per_gradient": "protegi.errors_per_gradient (abo: abo.errors_per_revision)",
    "search.reasons_per_gradient": "protegi.reasons_per_gradient",
    "search.edits_per_gradient": "protegi.edits_per_gradient",
    "search.mc_samples": "protegi.mc_samples (rewrite/improve: <proposer>.mc_samples)",
    "search.demonstration": "abo.demonstration",
    "search.abo_work_tokens": "abo.work_tokens",
    "selection.c": "selection.ucb_c (ucb-e: selection.ucb_e_a)",
}


def refuse_moved(data: dict, origin: str) -> None:
    for dotted, hint in MOVED.items():
        section, key = dotted.split(".")
        if isinstance(data.get(section), dict) and key in data[section]:
            raise ApoError(f"{origin}: {dotted}: moved to {hint}")


def migrate_flat_keys(data: dict) -> dict:
    """A config of the earlier flat layout (``search.n_gradients``, ``selection.c``, ...) in today's sections."""
    data = copy.deepcopy(data)
    s, sel = data.get("search") or {}, data.get("selection") or {}
    old = {
        k: s.pop(k)
        for k in (
            "n_gradients",
            "errors_per_gradient",
            "reasons_per_gradient",
            "edits_per_gradient",
            "mc_samples",
            "demonstration",
            "abo_work_tokens",
        )
        if k in s
    }
    proposer = s.get("proposer", "protegi")
    n, errors = old.get("n_gradients", 4), old.get("errors_per_gradient", 4)
    if not old:
        pass  # today's layout already: its method section is kept as written
    elif proposer in ("rewrite", "improve"):
        data[proposer] = {
            "samples_per_parent": n * old.get("edits_per_gradient", 1),
            "mc_samples": old.get("mc_samples", 2),
        }
    elif proposer == "abo":
        data["abo"] = {
            "init_samples": max(1, n),
            "revise_samples": max(1, n),
            "errors_per_revision": errors,
            "demonstration": old.get("demonstration", True),
            "work_tokens": old.get("abo_work_tokens", 128),
        }
    else:
        knobs = METHODS[proposer].knobs.get("protegi", ()) if proposer in METHODS else set(ProTeGiConfig.model_fields)
        data["protegi"] = {k: v for k, v in old.items() if k in knobs}
    if proposer == "abo" and "answer" not in (data.get("abo") or {}):  # started before abo.answer: log-probs
        data["abo"] = {**(data.get("abo") or {}), "answer": "logprobs"}
    if "c" in sel:
        c = sel.pop("c")
        if sel.get("selector", "ucb") in ("ucb", "ucb-e"):
            sel["ucb_c" if sel.get("selector", "ucb") == "ucb" else "ucb_e_a"] = c
    if sel.get("acceptance", "bandit") != "validated":
        sel.pop("validation_k", None), sel.pop("validation_size", None)
    return data


def keep_earlier_selection(data: dict) -> dict:
    """A run directory's config written before the shared bandit sample, the metric-following reward, the
    reference's UCB constants and the validation rows existed resumes with the behaviour it started with
    (today's writes every one of these keys, so their absence dates the config)."""
    data = copy.deepcopy(data)
    sel, ev = data.setdefault("selection", {}), data.setdefault("evaluation", {})
    if "sample" not in sel:
        sel.update(sample="independent", reward=sel.get("reward", "accuracy"))
        if sel.get("selector", "ucb") == "ucb":
            sel.setdefault("ucb_c", 2.0)
            sel.setdefault("ucb_t", "examples")
    ev.setdefault("validation_split", "none")
    return data
