"""The shipped run configs at a tiny size: on the real engine once per session for the configs whose engine requests
only the engine can prove (tests/config/test_study_configs_e2e.py), and at the lock size on the scripted engine for every
config (``lock_run``: the search-logic golden and each config's defining behaviour)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from apo_local.run.config import read_run_config
from apo_local.search.proposers import method_of

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
# judge, server, tracking: a task of their own, a server, a logger; run by their own end-to-end tests
NO_GOLDEN = {"judge", "server", "tracking"}
RUN_CONFIGS = sorted(
    p.stem for p in CONFIGS.glob("*.yaml") if not p.name.startswith(("compare-", "sweep-")) and p.stem not in NO_GOLDEN
)

ABO_READY = (
    "Follow these steps:\n1. Read the statement and its context.\n2. Look for exaggerations or claims that "
    "contradict known facts.\n3. Answer Yes if it is a lie, otherwise No.\n\nDemonstration:\nStep 1: The statement "
    "is about taxes.\nStep 2: It exaggerates.\nStep 3: Yes"
)

# the tiny caps of each method section's knobs (a method's sections: its ``Method.knobs``)
TINY_KNOBS = {
    "protegi": {"n_gradients": 1, "errors_per_gradient": 2, "mc_samples": 1},
    "rewrite": {"samples_per_parent": 1, "mc_samples": 1},
    "improve": {"samples_per_parent": 1, "mc_samples": 1},
    "abo": {"init_samples": 1, "revise_samples": 1, "errors_per_revision": 2},
    "fewshot": {"samples_per_parent": 2, "max_demos": 2, "pool_size": 8},
}


# Run sizes. RUN_SIZE: the real-engine runs (optimizer replies long enough to finish their tags most of the
# time, so edits and paraphrases are exercised). LOCK_SIZE: the stand-in engine's three-round lock
# (tests/search/test_search_logic_equivalence.py), whose golden was recorded at these sizes before the redesign.
RUN_SIZE = {
    "minibatch_size": 6,
    "budget": 12,
    "batch_size": 6,
    "validation_size": 6,
    "max_tokens": 64,
    "test_limit": 6,
    "train_limit": 100,
    "work_tokens": 40,
    "validation_rows": 8,
}
LOCK_SIZE = {
    "minibatch_size": 4,
    "budget": 12,
    "batch_size": 4,
    "validation_size": 4,
    "max_tokens": 32,
    "test_limit": 6,
    "train_limit": 40,
    "work_tokens": 16,
    "validation_rows": None,
}


def tiny(name: str, size: dict = RUN_SIZE) -> dict:
    """The shipped config at a tiny size, everything that defines the method kept: one round (the demo two)."""
    d = read_run_config(CONFIGS / f"{name}.yaml")  # a study config's extends: resolved
    s, sel = d.setdefault("search", {}), d.setdefault("selection", {})
    s.update(
        rounds=2 if name == "demo" else 1,
        beam_size=min(s.get("beam_size", 4), 2),
        minibatch_size=size["minibatch_size"],
        max_expansion=2,
    )
    for section in method_of(s.get("proposer", "protegi")).knobs:
        node = d.setdefault(section, {})
        caps = {**TINY_KNOBS[section], **({"work_tokens": size["work_tokens"]} if section == "abo" else {})}
        for key, cap in caps.items():
            node[key] = min(node.get(key, cap), cap)
    sel.update(budget=size["budget"], batch_size=size["batch_size"], arms_per_round=2)
    if sel.get("acceptance") == "validated":
        sel.update(validation_k=2, validation_size=size["validation_size"])
    d.setdefault("optimizer", {})["max_tokens"] = size["max_tokens"]
    d.setdefault("evaluation", {}).update(
        test_limit=size["test_limit"],
        per_round_test=name == "demo",
        **({"validation_rows": size["validation_rows"]} if size["validation_rows"] else {}),
    )
    d["train_limit"] = size["train_limit"]
    if name == "abo":
        s["initial_prompt"] = ABO_READY  # the revise path (abo-no-demo takes the init path)
    return d


@dataclass
class LockRun:
    """A shipped config's three rounds on the scripted engine: its config, run directory's comparable part (results
    without wall time or reply counts, every round file), its trace lines and the optimizer's prompts."""

    config: object
    results: dict
    rounds: dict
    trace: list
    optimizer_prompts: list

    @property
    def comparable(self) -> dict:
        return {"results": self.results, "rounds": self.rounds}

    def candidates(self, round: int | None = None) -> list[dict]:
        return [
            c
            for name, r in sorted(self.rounds.items())
            for c in r["candidates"]
            if round is None or r["round"] == round
        ]

    def phases(self, role: str) -> set[str]:
        return {t["phase"] for t in self.trace if t.get("role") == role}


def lock_run(name: str, out: Path, monkeypatch, **overrides) -> LockRun:
    """One shipped config at ``LOCK_SIZE``, three rounds (baseline-no-iteration: its one), on the scripted engine
    (tests/helpers/stand_in.py), with ``overrides`` (section -> keys) on top. Candidate hygiene is off: the stand-in's
    hash-made replies never name the labels (Yes / No), so it would reject nearly every proposal and the rounds would
    exercise no search logic (hygiene has its own tests)."""
    from apo_local.run.config import build_config
    from apo_local.run.optimize import optimize
    from tests.helpers.stand_in import use_stand_in

    data = tiny(name, LOCK_SIZE)
    data["search"]["rounds"] = 1 if name == "baseline-no-iteration" else 3
    data["search"]["hygiene"] = False
    for section, keys in overrides.items():
        data.setdefault(section, {}).update(keys)
    engine = use_stand_in(monkeypatch)
    cfg = build_config(data, {"cache": "off"})
    optimize(cfg, out)
    results = json.loads((out / "results.json").read_text())
    results.pop("time")
    results.pop("replies")  # the reply counts came later than the golden
    results.pop("models", None), results.pop("warnings", None)  # so did the model record and the warnings
    rounds = {p.stem: json.loads(p.read_text()) for p in sorted((out / "rounds").glob("*.json"))}
    trace = [json.loads(line) for line in (out / "trace.jsonl").read_text().splitlines()]
    return LockRun(cfg, results, rounds, trace, list(engine.prompts))
