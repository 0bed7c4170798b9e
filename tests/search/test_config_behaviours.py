"""What defines each shipped run config, checked on its lock run (three rounds on the scripted engine, hygiene off,
so candidates are admitted: tests/helpers/shipped_runs.py ``lock_run``). Each check fails when the config's defining
behaviour is removed (its selector, acceptance rule, proposer, feedback, beam or pick replaced by the default's).

Every shipped run config has a check here (``test_every_run_config_has_a_defining_check``)."""

from __future__ import annotations

import re

import pytest

from apo_local.search.proposers.abo_format import parse_abo
from apo_local.tasks import load_task
from tests.helpers.shipped_runs import RUN_CONFIGS, lock_run

TASK = load_task("liar")
TRUTH = {ex.input.strip(): ex.label for split in ("train", "test") for ex in TASK.split(split)}
ROW = re.compile(r'Text: "(.*?)"\n(?:Label: (\S+)\n)?(?:Prediction|Output): (\S+)', re.S)


def _rows_shown(run) -> list[tuple[str, str, str]]:
    """(input, label shown, prediction shown) of every row the optimizer was shown."""
    return [m for p in run.optimizer_prompts for m in ROW.findall(p) if m[0].strip() in TRUTH]


def _operators(run, round: int | None = None) -> set[str]:
    return {c["operator"] for c in run.candidates(round)} - {"initial"}


def _beam_sizes(run) -> list[int]:
    return [len(h["beam"]) for h in run.results["history"]]


def protegi_edits_and_paraphrases(run):
    assert {"edit", "paraphrase"} <= _operators(run) and "gradient" in run.phases("optimizer")
    assert run.results["history"][0]["selection"]["selector"] == "ucb"
    assert max(_beam_sizes(run)) > 1


def true_labels_shown(run):
    rows = _rows_shown(run)
    assert rows and all(label == TRUTH[text.strip()] for text, label, _ in rows)


def naive_takes_the_new_proposal(run):
    """Naive acceptance: no selection call on the target; a round with an admitted proposal puts one in the beam."""
    assert "select" not in run.phases("target")
    for h in run.results["history"]:
        assert h["selection"]["acceptance"] == "naive" and h["selection"]["budget_used"] == 0
        new = [
            c for c in run.candidates(h["round"]) if c["round"] == h["round"] and not c["status"].startswith("rejected")
        ]
        assert not new or h["accepted"]


def shortest_within_the_interval(run):
    """The length config's pick: the shortest prompt within the interval of the best estimate, never a longer one."""
    pick = run.results["pick"]
    assert pick["rule"] == "shortest-within-ci"
    top = max(pick["beam"], key=lambda b: b[1])
    chosen = next(b for b in pick["beam"] if b[0] == pick["selected_id"])
    assert chosen[3] <= top[3]
    assert chosen[3] == min(b[3] for b in pick["beam"] if b[1] >= chosen[1])


CHECKS = {
    "liar-protegi": [protegi_edits_and_paraphrases, true_labels_shown],
    "demo": [
        protegi_edits_and_paraphrases,
        lambda run: all("test" in h for h in run.results["history"]),
    ],  # per-round test scores
    # one prompt in every beam (the default keeps several)
    "baseline-greedy": [lambda run: _beam_sizes(run) == [1] * len(_beam_sizes(run))],
    # Monte-Carlo search only: paraphrases, never a gradient or an edit
    "baseline-mc": [lambda run: _operators(run) == {"paraphrase"} and "gradient" not in run.phases("optimizer")],
    "baseline-no-iteration": [lambda run: run.results["rounds_completed"] == 1 and len(run.rounds) == 1],
    "baseline-uniform": [lambda run: run.results["history"][0]["selection"]["selector"] == "uniform"],
    "ablation-one-step": [
        lambda run: (
            "one-step" in _operators(run)
            and "edit" not in _operators(run)
            and "gradient" not in run.phases("optimizer")
        )
    ],
    "ablation-three-stage": [
        lambda run: (
            (made := [c for c in run.candidates() if c["operator"] == "three-stage"])
            and all(c["critique"] and c["gradient"] for c in made)
        )
    ],
    # data-free: the optimizer is asked before (and without) any target call on training rows
    "ablation-improve": [
        lambda run: "improve" in _operators(run) and "minibatch" not in run.phases("target") and not _rows_shown(run)
    ],
    # the labels the optimizer sees are the wrong ones, on every row
    "ablation-wrong-labels": [
        lambda run: (rows := _rows_shown(run)) and all(label != TRUTH[text.strip()] for text, label, _ in rows)
    ],
    # the optimizer sees the rows without labels
    "ablation-no-evaluation": [lambda run: (rows := _rows_shown(run)) and all(label == "" for _, label, _ in rows)],
    # pseudo errors: rows shown as errors (prediction != label) with the true label
    "pseudo-errors": [true_labels_shown, lambda run: all(pred != label for _, label, pred in _rows_shown(run))],
    # naive: each round's beam is a new proposal, taken without a selection call on the target
    "ablation-naive-acceptance": [naive_takes_the_new_proposal],
    # validated: one prompt, replaced only after a selection call on held-out rows
    "ablation-validated-acceptance": [
        lambda run: (
            _beam_sizes(run) == [1] * len(_beam_sizes(run))
            and "select" in run.phases("target")
            and all(h["selection"]["acceptance"] == "validated" for h in run.results["history"])
        )
    ],
    "abo": [
        lambda run: "abo" in _operators(run) and "generate" in {t["op"] for t in run.trace if t.get("role") == "target"}
    ],
    "abo-logprob-ablation": [
        lambda run: (
            "abo" in _operators(run)
            and "score_choices" in {t["op"] for t in run.trace if t.get("role") == "target" and t["phase"] == "select"}
        )
    ],
    "abo-no-demo": [
        lambda run: (
            (texts := [c["text"] for c in run.candidates() if c["operator"].startswith("abo")])
            and all("Follow the steps strictly." in t and parse_abo(t).demonstration is None for t in texts)
        )
    ],
    # the reference's prediction (a short generated reply read by its first word) and its pick (no validation split)
    "liar-protegi-reference": [
        lambda run: (
            {t["op"] for t in run.trace if t.get("role") == "target" and t["phase"] == "select"} == {"generate"}
            and run.results["selected_by"] == "selection estimate"
            and run.results.get("initial_validation") is None
        )
    ],
    "fewshot": [lambda run: _operators(run) <= {"demo-add", "demo-swap", "demo-remove"} and _operators(run)],
    "instruction+fewshot": [
        lambda run: "edit" in _operators(run) and _operators(run) & {"demo-add", "demo-swap", "demo-remove"}
    ],
    "length-pareto": [shortest_within_the_interval],
}


def test_every_run_config_has_a_defining_check():
    assert sorted(CHECKS) == sorted(RUN_CONFIGS)


@pytest.mark.parametrize("name", RUN_CONFIGS)
def test_the_config_does_what_defines_it(name, lock_runs):
    run = lock_runs[name]
    for check in CHECKS[name]:
        assert check(run) is not False, (name, getattr(check, "__name__", "check"))


def test_ucb_and_uniform_choose_differently_on_the_same_candidates(tmp_path, monkeypatch):
    """With a budget of many bandit rounds, UCB spends its pulls unevenly (more on the arms that look best) and uniform
    evenly, on the same round-1 candidates (same seed, same proposer), and they keep different beams."""
    sizes = {
        "selection": {"budget": 480, "batch_size": 8, "arms_per_round": 2},
        "search": {"rounds": 1, "max_expansion": 8},
        "protegi": {"n_gradients": 2, "mc_samples": 2},
    }
    ucb = lock_run("liar-protegi", tmp_path / "ucb", monkeypatch, **sizes)
    uniform = lock_run("baseline-uniform", tmp_path / "uniform", monkeypatch, **sizes)

    def arms(run):
        return {c["id"]: (c["pulls"], c["estimate"]) for c in run.candidates(1) if c.get("pulls")}

    assert set(arms(ucb)) == set(arms(uniform)) and len(arms(ucb)) > 4  # the same candidates compete
    even = [pulls for pulls, _ in arms(uniform).values()]
    assert max(even) - min(even) <= 8  # one batch apart at most
    by_estimate = sorted(arms(ucb).values(), key=lambda a: a[1])
    assert by_estimate[-1][0] >= 2 * by_estimate[0][0]  # the best-looking arm pulled at least twice the worst
    assert [b[0] for b in ucb.results["history"][0]["beam"]] != [b[0] for b in uniform.results["history"][0]["beam"]]


@pytest.mark.parametrize("name", RUN_CONFIGS)
def test_the_pre_run_estimate_bounds_the_engine_calls(name, lock_runs):
    """The estimate from the config is an upper bound of the calls and prompts its lock run made, per role."""
    from apo_local.run.estimate import estimate
    from apo_local.search.splits import eval_rows, train_rows, validation_rows

    run = lock_runs[name]
    est = estimate(
        run.config, TASK, train_rows(TASK, run.config), eval_rows(TASK, run.config), validation_rows(TASK, run.config)
    )
    for role, used in run.results["usage"].items():
        bound = getattr(est, role)
        assert used["calls"] <= bound.calls and used["prompts"] <= bound.prompts, (role, used, bound)
