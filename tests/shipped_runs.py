"""The shipped run configs at a tiny size, each run ONCE per session on the real engine: the behaviour lock
(tests/test_equivalence_e2e.py, against tests/golden/) and the study checks (tests/test_study_configs_e2e.py)
read the same run directory."""

from __future__ import annotations

from pathlib import Path

from apo_local.config import read_run_config

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
# judge, server, tracking: a task of their own, a server, a logger; run by their own end-to-end tests
NO_GOLDEN = {"judge", "server", "tracking"}
RUN_CONFIGS = sorted(p.stem for p in CONFIGS.glob("*.yaml")
                     if not p.name.startswith(("compare-", "sweep-")) and p.stem not in NO_GOLDEN)

ABO_READY = ("Follow these steps:\n1. Read the statement and its context.\n2. Look for exaggerations or claims that "
             "contradict known facts.\n3. Answer Yes if it is a lie, otherwise No.\n\nDemonstration:\nStep 1: The statement "
             "is about taxes.\nStep 2: It exaggerates.\nStep 3: Yes")

# the method sections of each proposer, and the tiny caps of their knobs
METHOD_SECTION = {"rewrite": ("rewrite",), "improve": ("improve",), "abo": ("abo",), "fewshot": ("fewshot",),
                  "instruction+fewshot": ("protegi", "fewshot")}
TINY_KNOBS = {"protegi": {"n_gradients": 1, "errors_per_gradient": 2, "mc_samples": 1},
              "rewrite": {"samples_per_parent": 1, "mc_samples": 1}, "improve": {"samples_per_parent": 1, "mc_samples": 1},
              "abo": {"init_samples": 1, "revise_samples": 1, "errors_per_revision": 2},
              "fewshot": {"samples_per_parent": 2, "max_demos": 2, "pool_size": 8}}


# Run sizes. RUN_SIZE: the real-engine runs (optimizer replies long enough to finish their tags most of the
# time, so edits and paraphrases are exercised). LOCK_SIZE: the stand-in engine's three-round lock
# (tests/test_search_logic_equivalence.py), whose golden was recorded at these sizes before the redesign.
RUN_SIZE = {"minibatch_size": 6, "budget": 12, "batch_size": 6, "validation_size": 6, "max_tokens": 64, "test_limit": 6,
            "train_limit": 100, "work_tokens": 40, "validation_rows": 8}
LOCK_SIZE = {"minibatch_size": 4, "budget": 12, "batch_size": 4, "validation_size": 4, "max_tokens": 32, "test_limit": 6,
             "train_limit": 40, "work_tokens": 16, "validation_rows": None}


def tiny(name: str, size: dict = RUN_SIZE) -> dict:
    """The shipped config at a tiny size, everything that defines the method kept: one round (the demo two)."""
    d = read_run_config(CONFIGS / f"{name}.yaml")  # a study config's extends: resolved
    s, sel = d.setdefault("search", {}), d.setdefault("selection", {})
    s.update(rounds=2 if name == "demo" else 1, beam_size=min(s.get("beam_size", 4), 2),
             minibatch_size=size["minibatch_size"], max_expansion=2)
    for section in METHOD_SECTION.get(s.get("proposer", "protegi"), ("protegi",)):
        node = d.setdefault(section, {})
        caps = {**TINY_KNOBS[section], **({"work_tokens": size["work_tokens"]} if section == "abo" else {})}
        for key, cap in caps.items():
            node[key] = min(node.get(key, cap), cap)
    sel.update(budget=size["budget"], batch_size=size["batch_size"], arms_per_round=2)
    if sel.get("acceptance") == "validated":
        sel.update(validation_k=2, validation_size=size["validation_size"])
    d.setdefault("optimizer", {})["max_tokens"] = size["max_tokens"]
    d.setdefault("evaluation", {}).update(test_limit=size["test_limit"], per_round_test=name == "demo",
                                         **({"validation_rows": size["validation_rows"]} if size["validation_rows"] else {}))
    d["train_limit"] = size["train_limit"]
    if name == "abo":
        s["initial_prompt"] = ABO_READY  # the revise path (abo-no-demo takes the init path)
    return d
