"""search.max_prompt_tokens on the real engine: candidates over the cap are rejected before scoring (counted and
logged like the hygiene rules, few-shot demonstrations counted), and an initial prompt over it is refused with
one line and exit code 2."""

from __future__ import annotations

import json
import sys

import pytest

from apo_local.run.config import build_config
from apo_local.run.optimize import optimize
from apo_local.search.acceptance.length import prompt_tokens
from apo_local.search.admission import OVER_BUDGET
from apo_local.tasks import load_task

pytestmark = pytest.mark.engine

CFG = {
    "task": "liar",
    "seed": 0,
    "train_limit": 60,
    "search": {"rounds": 1, "beam_size": 2, "minibatch_size": 6, "max_expansion": 2},
    "protegi": {"n_gradients": 2, "errors_per_gradient": 2, "mc_samples": 1},
    "selection": {"budget": 12, "batch_size": 6, "arms_per_round": 2},
    "optimizer": {"max_tokens": 64},
    "evaluation": {"test_limit": 6, "validation_rows": 8},
}


def _events(run):
    return [json.loads(line) for line in (run / "trace.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("proposer", ["protegi", "fewshot"])
def test_candidates_over_the_cap_are_rejected_before_scoring(engine, tmp_path, proposer):
    task = load_task("liar")
    cap = prompt_tokens(task, engine, [task.initial_instruction])[0] + 2  # the initial fits; nearly every edit will not
    # hygiene off: its rules run first and could reject every edit of the small model before the size rule sees it
    cfg = {**CFG, "search": {**CFG["search"], "proposer": proposer, "max_prompt_tokens": cap, "hygiene": False}}
    if proposer == "fewshot":
        cfg["fewshot"] = {"samples_per_parent": 2, "max_demos": 2, "pool_size": 8}
        cfg.pop("protegi")
    run = tmp_path / "run"
    result = optimize(build_config(cfg, {"cache": str(tmp_path / "cache.sqlite")}), run)
    rejected = [e for e in _events(run) if e.get("event") == "candidate_rejected" and e["rule"] == OVER_BUDGET]
    assert rejected, "no candidate went over a cap two tokens above the initial prompt"
    assert all(f"> search.max_prompt_tokens {cap})" in e["reason"] for e in rejected)
    assert result.replies["rejected"][OVER_BUDGET] == len(rejected)
    candidates = json.loads((run / "rounds" / "round-01.json").read_text())["candidates"]
    scored = [c for c in candidates if c.get("pulls")]
    assert scored and all(
        prompt_tokens(task, engine, [c["text"]])[0] <= cap for c in scored
    )  # nothing over it was scored
    over = {c["text"] for c in candidates if c["status"].startswith(f"rejected: {OVER_BUDGET}")}
    assert over and all(prompt_tokens(task, engine, [t])[0] > cap for t in over)
    assert prompt_tokens(task, engine, [result.selected_prompt])[0] <= cap


def test_an_initial_prompt_over_the_cap_is_one_line_and_exit_2(engine, tmp_path, monkeypatch, capsys):
    from apo_local.commands.cli import _run_cli

    monkeypatch.setattr(
        sys,
        "argv",
        [
            "apo-local",
            "optimize",
            "--task",
            "liar",
            "--preset",
            "smoke",
            "--max-prompt-tokens",
            "20",
            "--out",
            str(tmp_path / "run"),
            "--cache",
            str(tmp_path / "cache.sqlite"),
        ],
    )
    assert _run_cli() == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert (
        len(err) == 1 and "search.max_prompt_tokens: the initial prompt is" in err[0] and "over the cap of 20" in err[0]
    )
    assert not (tmp_path / "run" / "results.json").exists()
