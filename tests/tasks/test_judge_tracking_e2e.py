"""Metric judge and experiment tracking on the real engine (embedded model, real Liar rows as a generation task).

One tiny run of the shipped judged task (configs/tasks/liar-judged) with the plain-file tracker: the judge
grades every output from its label log-probs, its reasons reach the gradient prompts, the search's outputs
are stored per example, and the tracker logs params, a round's metrics and the artifacts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from apo_local.engine import RoleEngine

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parents[2]
TASK = ROOT / "configs" / "tasks" / "liar-judged" / "task.yaml"


@pytest.fixture(scope="module")
def judged_run(engine, tmp_path_factory):
    import apo_local as apo

    prompts: list[str] = []
    real = RoleEngine.generate

    def spy(self, requests):  # the real engine answers; the optimizer's prompts are kept to read
        if self.role == "optimizer":
            prompts.extend(r.prompt for r in requests)
        return real(self, requests)

    shipped = yaml.safe_load((ROOT / "configs" / "judge.yaml").read_text())  # the shipped config, shrunk
    tracked = yaml.safe_load((ROOT / "configs" / "tracking.yaml").read_text())["tracking"]
    cfg = apo.build_config(
        {
            **shipped,
            "task": str(TASK),
            "train_limit": 40,
            "cache": str(tmp_path_factory.mktemp("c") / "c.sqlite"),
            "scoring": {**shipped["scoring"], "max_tokens": 4},
            "search": {"rounds": 1, "beam_size": 1, "minibatch_size": 6, "max_expansion": 1},
            "protegi": {"n_gradients": 1, "errors_per_gradient": 2, "mc_samples": 0},
            "selection": {"budget": 8, "batch_size": 4, "arms_per_round": 2},
            "optimizer": {"max_tokens": 32},
            "evaluation": {"test_limit": 6},
            "tracking": tracked,
        }
    )
    out = tmp_path_factory.mktemp("run") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(RoleEngine, "generate", spy)
        result = apo.optimize(cfg, out=out)
    return result, out, prompts


def test_judge_grades_outputs_and_explains_errors(judged_run):
    result, out, prompts = judged_run
    assert result.metric == "judge"
    test = [json.loads(x) for x in (out / "predictions" / "test-best.jsonl").read_text().splitlines()]
    scores = [r["score"] for r in test]
    assert all(0.0 <= s <= 1.0 for s in scores) and len(set(scores)) > 1  # graded, not matched
    assert result.best_test["metrics"]["judge"] == pytest.approx(sum(scores) / len(scores), abs=1e-3)
    gradients = [p for p in prompts if "gets the following examples wrong" in p]
    assert gradients and all("Judge: " in p for p in gradients)  # the judge's reasons, next to each error
    search = [json.loads(x) for x in (out / "predictions" / "search.jsonl").read_text().splitlines()]
    assert {r["split"] for r in search} == {"train", "test"} and all("output" in r for r in search)
    # the pre-run estimate counts the judge's grading and reasons (under the optimizer, as the trace does)
    estimate = json.loads((out / "estimate.json").read_text())
    used = json.loads((out / "results.json").read_text())["usage"]
    for role in ("target", "optimizer"):
        assert used[role]["calls"] <= estimate[role]["calls"] and used[role]["prompts"] <= estimate[role]["prompts"], (
            role,
            used[role],
            estimate[role],
        )


def test_judge_calibration_and_agreement_on_real_outputs(engine, judged_run):
    from apo_local.engine import Trace
    from apo_local.tasks import load_task
    from apo_local.tasks.judge import CONTENT_FREE, GRADES, agreement, attach_judge, judge_of

    task = load_task(TASK)
    attach_judge(task, RoleEngine(engine, "optimizer", Trace()))
    judge = judge_of(task)
    prior = engine.score_choices([judge.prompt(CONTENT_FREE, CONTENT_FREE)], GRADES)[0]
    assert judge.calibrated(prior.logprobs) == pytest.approx(0.5)  # the content-free pair: no preference
    _, out, _ = judged_run
    test = [json.loads(x) for x in (out / "predictions" / "test-best.jsonl").read_text().splitlines()]
    grades = judge.grade([(r["parsed"], r["gold"]) for r in test])
    assert grades == pytest.approx([r["score"] for r in test], abs=1e-4)  # the same grades, from the cache
    report = agreement(
        grades, [r["parsed"] is not None and r["parsed"].strip().lower() == r["gold"].lower() for r in test]
    )
    assert report["n"] == len(test) and 0.0 <= report["agreement"] <= 1.0


def test_tracking_files(judged_run):
    result, out, _ = judged_run
    folder = out / "tracking"
    params = json.loads((folder / "params.json").read_text())
    assert params["search.rounds"] == "1" and params["tracking.logger"] == "files"
    lines = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2]  # round 1, then the final test
    assert lines[0]["target_prompts"] > 0 and lines[1]["best_judge"] == result.best_test["metrics"]["judge"]
    files = json.loads((folder / "artifacts.json").read_text())["files"]
    assert "results.json" in files and "predictions/test-best.jsonl" in files
