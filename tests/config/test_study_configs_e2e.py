"""The shipped study configs whose optimizer or target requests only the real engine can prove, at their tiny size
(tests/helpers/shipped_runs.py), run end-to-end on the real engine (embedded SmolLM2-135M): one config per kind of engine
request (ProTeGi's gradients, edits and paraphrases; one-step; three-stage's critique and feedback; data-free
improve; ABO's check, revise, demonstration and executed steps; ABO's first steps). Each leaves a complete run
directory, does what its study says and stays within its pre-run estimate. What the other configs change is search
logic, checked on the scripted engine for every shipped config (tests/search/test_config_behaviours.py, and the lock in
tests/search/test_search_logic_equivalence.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from apo_local.run.config import build_config
from apo_local.search.proposers.abo_format import WORK
from tests.helpers.shipped_runs import tiny

pytestmark = pytest.mark.engine

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
NOT_RUN_CONFIGS = {
    "demo.yaml",  # not a study: README command 1 (its logic: tests/search/test_config_behaviours.py)
    "judge.yaml",
    "tracking.yaml",
    "server.yaml",  # tests/tasks/test_judge_tracking_e2e.py, test_openai_engine_e2e.py
    "fewshot.yaml",
    "instruction+fewshot.yaml",
}  # tests/search/test_beyond_e2e.py
NOT_RUN_PREFIXES = ("compare-", "sweep-")  # not run configs: a comparison, sweeps (apo_local/experiments/sweep/)
STUDY_CONFIGS = sorted(
    p.name for p in CONFIGS.glob("*.yaml") if p.name not in NOT_RUN_CONFIGS and not p.name.startswith(NOT_RUN_PREFIXES)
)
SHIPPED = {
    "baseline-no-iteration",
    "baseline-greedy",
    "baseline-mc",
    "baseline-uniform",
    "ablation-one-step",
    "ablation-three-stage",
    "ablation-improve",
    "ablation-wrong-labels",
    "ablation-no-evaluation",
    "ablation-naive-acceptance",
    "ablation-validated-acceptance",
    "pseudo-errors",
    "abo",
    "abo-no-demo",
    "abo-logprob-ablation",
}


def test_every_study_config_is_listed():  # that each loads (compare and sweep too): tests/config/test_study_configs.py
    assert {f"{n}.yaml" for n in SHIPPED} <= set(STUDY_CONFIGS), STUDY_CONFIGS
    for name in STUDY_CONFIGS:
        assert (CONFIGS / name).read_text().startswith("#"), f"{name}: no header comment citing the study"


# one config per kind of engine request; the rest differ in search logic only (checked on the scripted engine)
ENGINE_PATHS = [
    "liar-protegi.yaml",
    "ablation-one-step.yaml",
    "ablation-three-stage.yaml",
    "ablation-improve.yaml",
    "abo.yaml",
    "abo-no-demo.yaml",
]


def test_the_engine_paths_are_shipped_configs():
    assert set(ENGINE_PATHS) <= set(STUDY_CONFIGS)


@pytest.mark.parametrize("name", ENGINE_PATHS)
def test_config_runs_end_to_end(name, shipped_run):
    cfg = build_config(tiny(name.removesuffix(".yaml")))
    run = shipped_run(name.removesuffix(".yaml"))

    assert (run / "config.yaml").is_file()
    assert json.loads((run / "checkpoint.json").read_text())["phase"] == "done"
    results = json.loads((run / "results.json").read_text())
    assert results["rounds_completed"] == 1 and results["stop_reason"] == "completed"
    assert results["best_prompt"] in [b["text"] for b in results["beam"]]
    calls = [json.loads(line) for line in (run / "trace.jsonl").read_text().splitlines()]
    engine_calls = [c for c in calls if "role" in c]
    assert {c["role"] for c in engine_calls} == {"target", "optimizer"}
    phases = {c["phase"] for c in engine_calls}
    rnd = json.loads((run / "rounds" / "round-01.json").read_text())
    assert rnd["phase"] == "selected" and any(c["status"] == "beam" for c in rnd["candidates"])
    entry = results["history"][0]
    assert isinstance(entry["accepted"], bool) and len(entry["prompt_tokens"]) == len(results["beam"])
    assert all(n > 0 for n in entry["prompt_tokens"])

    proposer, acceptance = cfg.search.proposer, cfg.selection.acceptance
    new = [c for c in rnd["candidates"] if c["round"] == 1]
    expected_phases = {
        "protegi": {"gradient", "edit"} if cfg.protegi.n_gradients else {"paraphrase"},
        "one-step": {"one_step"},
        "three-stage": {"critique", "feedback", "edit"},
        "rewrite": {"rewrite"},
        "improve": {"improve"},
        "abo": {"abo_check", "abo_revise"}
        | ({"abo_demo"} if cfg.abo.demonstration else set())
        | ({"abo_work"} if cfg.abo.answer == "logprobs" else set())
        if cfg.search.initial_prompt
        else {"abo_init"},
    }[proposer]
    if results["replies"]["truncated"]:  # a step after a truncated reply may never be asked (nothing to build on)
        expected_phases -= {"edit", "feedback", "abo_demo"}
    assert expected_phases <= phases, (expected_phases, phases, [c for c in calls if "role" not in c][:5])
    if proposer in ("rewrite", "improve"):
        assert "minibatch" not in phases  # data-free: no target call before the proposals
    if proposer == "three-stage":
        made = [c for c in new if c["operator"] == "three-stage"]
        assert all(c["critique"] and c["gradient"] for c in made)
        assert made or results["replies"]["truncated"] > 0  # none only when the replies ran out of tokens
    if proposer == "abo":
        texts = [c["text"] for c in new if c["operator"].startswith("abo")]  # rejected ones too: hygiene judged
        assert all(t.startswith("Follow these steps:\n1. ") for t in texts)  # them, their form is ABO's all the same
        assert texts or results["replies"]["truncated"] > 0  # none only when the replies ran out of tokens
        if not cfg.abo.demonstration:
            assert all("\n\nFollow the steps strictly." in t for t in texts)
        if cfg.abo.answer == "generate":  # the target is asked to work through the steps, then answer on a last line
            assert all(t.endswith(WORK) for t in texts)
        target_ops = {c["op"] for c in engine_calls if c["role"] == "target"}
        # generate (the paper): the target executes the steps for every score; logprobs: the labelled ablation
        assert target_ops == (
            {"generate"}
            if cfg.abo.answer == "generate"
            else {"score_choices", "generate"}
            if cfg.search.initial_prompt
            else {"score_choices"}
        )
    if acceptance == "naive":
        assert "select" not in phases and entry["selection"]["acceptance"] == "naive"
    elif acceptance == "validated":
        assert "select" in phases and entry["selection"]["acceptance"] == "validated"
        assert len(results["beam"]) == 1
    else:
        assert "select" in phases and entry["selection"]["selector"] == cfg.selection.selector
    if cfg.feedback.errors == "pseudo" or not cfg.feedback.show_evaluation or cfg.feedback.labels == "wrong":
        assert "gradient" in phases and ("edit" in phases or results["replies"]["truncated"])

    # the pre-run estimate is an upper bound of what the real run used (input tokens: a rough figure)
    from apo_local.run.estimate import estimate
    from apo_local.search.splits import eval_rows, train_rows, validation_rows
    from apo_local.tasks import load_task

    task = load_task(cfg.task)
    est = estimate(cfg, task, train_rows(task, cfg), eval_rows(task, cfg), validation_rows(task, cfg))
    for role, used in results["usage"].items():
        bound = getattr(est, role)
        assert used["calls"] <= bound.calls and used["prompts"] <= bound.prompts, (role, used, bound)
        assert used["output_tokens"] <= bound.output_tokens, (role, used, bound)
        assert used["input_tokens"] <= 3 * bound.input_tokens, (role, used, bound)
