"""Statistics and selection that follow the task's metric (pure logic, stand-in engines, no model)."""

from __future__ import annotations

import math
import random
from types import SimpleNamespace

import pytest

from apo_local.engine.protocol import ChoiceScores
from apo_local.run.config import build_config
from apo_local.run.headline import SplitStats, power, suppressed_labels
from apo_local.scoring import Scorer
from apo_local.search.acceptance.bandit import BanditAcceptance
from apo_local.search.selectors import make_selector
from apo_local.search.splits import train_rows, validation_rows
from apo_local.search.state import Candidate
from apo_local.search.streams import Streams
from apo_local.stats import bootstrap_ci, examples_needed, mcnemar, paired_bootstrap
from apo_local.support.errors import ApoError
from apo_local.tasks import Example, load_task
from apo_local.tasks.metrics import get_metric, metric_value, selection_weights
from tests.helpers.scripted import ScriptedEngine

# -- the statistics ------------------------------------------------------------------------------


def test_mcnemar_exact_values():
    assert mcnemar([1, 1, 0, 0], [1, 1, 0, 0])["p"] == 1.0  # no discordant row
    r = mcnemar([1] * 10 + [0] * 10, [0] * 10 + [0] * 10)  # 10 rows only a gets right
    assert (r["only_a"], r["only_b"]) == (10, 0) and r["p"] == pytest.approx(2 / 2**10)
    assert mcnemar([1, 0], [0, 1])["p"] == 1.0


def test_bootstrap_ci_covers_the_mean_and_shrinks_with_rows():
    rng = random.Random(1)
    small = [float(rng.random() < 0.6) for _ in range(50)]
    large = [float(rng.random() < 0.6) for _ in range(2000)]
    lo_s, hi_s = bootstrap_ci(small)
    lo_l, hi_l = bootstrap_ci(large)
    assert lo_s < sum(small) / 50 < hi_s and lo_l < sum(large) / 2000 < hi_l
    assert hi_l - lo_l < (hi_s - lo_s) / 3
    assert bootstrap_ci(small) == (lo_s, hi_s)  # seeded: the same interval every time


def test_paired_bootstrap_sees_a_difference_the_seed_permutation_cannot():
    """Three seeds of a prompt 5 points better on 400 rows: the permutation test over the 3 seed scores can
    never go below 0.25; the per-example paired interval excludes 0."""
    from apo_local.experiments.compare import permutation_test

    rng = random.Random(0)
    base = [float(rng.random() < 0.6) for _ in range(400)]
    better = [1.0 if (b or rng.random() < 0.125) else 0.0 for b in base]
    assert permutation_test([0.66, 0.65, 0.67], [0.61, 0.60, 0.62], paired=True) >= 0.25
    res = paired_bootstrap(better, base)
    assert res["diff"] > 0 and res["ci"][0] > 0 and res["p"] < 0.01
    assert mcnemar(better, base)["p"] < 0.01


def test_metric_interval_is_the_metric_not_accuracy():
    """F1 is recomputed per resample: an all-'No' prediction has F1 0 with interval [0, 0] while its accuracy
    interval is near 0.84."""
    metric = get_metric("f1", positive_label="Yes", labels=["Yes", "No"])
    rows = [("No", "Yes")] * 16 + [("No", "No")] * 84
    assert metric_value(metric, rows) == 0.0
    assert bootstrap_ci(rows, lambda r: metric_value(metric, r)) == (0.0, 0.0)


def test_examples_needed_and_power():
    n = examples_needed(0.05, 0.2)
    assert 600 < n < 700  # (1.96 * sqrt(.2) + .84 * sqrt(.2 - .0025))^2 / .0025 = 622
    assert examples_needed(0.02, 0.2) > n
    p = power(400, 0.2)
    assert (
        examples_needed(p["detectable_accuracy_difference"], 0.2)
        <= 400
        < examples_needed(p["detectable_accuracy_difference"] - 0.005, 0.2)
    )


# -- the reward is the task's metric ----------------------------------------------------------------


def test_selection_weights_make_a_single_class_prompt_score_one_over_k():
    golds = ["Yes"] * 16 + ["No"] * 84
    w = selection_weights("f1", golds)
    always_no = sum(w[g] * (g == "No") for g in golds) / len(golds)
    assert always_no == pytest.approx(0.5)
    assert selection_weights("accuracy", golds) is None and selection_weights("f1", ["No"] * 5) is None


def _leaning_target(prompt: str, labels) -> ChoiceScores:
    """A target that answers 'No' to every row under the prompt 'Always No.', and under 'Read closely.' gets 60%
    of the 'Yes' rows and 70% of the 'No' rows right (a seeded pick per row)."""
    row = prompt.split("ROW-")[1].split()[0]
    gold = "Yes" if row.startswith("y") else "No"
    if "Always No." in prompt:
        answer = "No"
    else:
        right = random.Random(row).random() < (0.6 if gold == "Yes" else 0.7)
        answer = gold if right else ("No" if gold == "Yes" else "Yes")
    return ChoiceScores(tuple(0.0 if lab == answer else -5.0 for lab in labels), 10)


def _imbalanced_rows(n=500, positives=0.16):
    k = int(n * positives)
    return [Example(f"y{i}", f"ROW-y{i} claim", "Yes") for i in range(k)] + [
        Example(f"n{i}", f"ROW-n{i} claim", "No") for i in range(n - k)
    ]


@pytest.mark.parametrize("reward", ["metric", "accuracy"])
def test_degenerate_single_class_prompt_loses_the_selection(reward):
    """16% positives, metric F1: the always-'No' prompt (accuracy 0.84, F1 0) beats the informative one
    (accuracy ~0.68) on plain correctness; with the reward following the metric it loses."""
    task = load_task("liar")
    rows = _imbalanced_rows()
    scorer = Scorer(task, ScriptedEngine(scores=_leaning_target))
    if reward == "metric":
        scorer.reward_weights = selection_weights(task.metric.name, [ex.label for ex in rows])
    ctx = SimpleNamespace(
        streams=Streams(0, 1),
        selection_train=rows,
        budget=SimpleNamespace(check=lambda: None),
        trace=SimpleNamespace(at=lambda *a: None),
        scorer=scorer,
        beam_size=1,
        round=1,
    )
    arms = [Candidate("Always No.", 0, "initial"), Candidate("Read closely.", 1, "edit")]
    beam, _ = BanditAcceptance(make_selector("uniform", budget=800)).accept(arms, ctx)
    assert beam[0].text == ("Read closely." if reward == "metric" else "Always No.")


def test_shared_sample_scores_every_arm_of_a_round_on_the_same_rows():
    seen = []

    class Recording:
        reward_weights = None

        def rewards(self, pairs):
            seen.append(pairs)
            return [1.0] * len(pairs)

    rows = [Example(str(i), f"x{i}", "Yes" if i % 2 else "No") for i in range(100)]
    for shared in (True, False):
        seen.clear()
        ctx = SimpleNamespace(
            streams=Streams(0, 1),
            selection_train=rows,
            budget=SimpleNamespace(check=lambda: None),
            trace=SimpleNamespace(at=lambda *a: None),
            scorer=Recording(),
            beam_size=1,
            round=1,
        )
        arms = [Candidate(f"p{i}", 1, "edit") for i in range(3)]
        BanditAcceptance(make_selector("uniform", budget=30), shared=shared).accept(arms, ctx)
        per_arm = [[ex.id for text, ex in seen[0] if text == f"p{i}"] for i in range(3)]
        assert (per_arm[0] == per_arm[1] == per_arm[2]) is shared


# -- the split -------------------------------------------------------------------------------------


def test_default_split_keeps_validation_apart_from_train_and_test():
    task = load_task("liar")
    cfg = build_config({"task": "liar"})
    val, train = validation_rows(task, cfg), train_rows(task, cfg)
    assert len(val) == 200 and not {ex.id for ex in val} & {ex.id for ex in train}
    assert len(train) + len(val) == len(task.split("train"))
    assert not {ex.id for ex in val} & {ex.id for ex in task.split("test")}
    small = build_config({"task": "liar", "train_limit": 40, "search": {"minibatch_size": 4}})
    assert len(validation_rows(task, small)) == 10  # a quarter of train_limit
    assert not {ex.id for ex in validation_rows(task, small)} & {ex.id for ex in train_rows(task, small)}
    none = build_config({"task": "liar", "evaluation": {"validation_split": "none"}})
    assert validation_rows(task, none) == [] and len(train_rows(task, none)) == len(task.split("train"))
    with pytest.raises(ApoError, match="is the test split"):
        validation_rows(task, build_config({"task": "liar", "evaluation": {"validation_split": "test"}}))


# -- the headline ------------------------------------------------------------------------------------


def _evaluation(preds, golds):
    from apo_local.scoring import Evaluation, Prediction

    metric = get_metric("f1", positive_label="Yes", labels=["Yes", "No"])
    from collections import Counter

    return Evaluation(
        "p", metric.compute(preds, golds), [Prediction(p) for p in preds], dict(Counter(preds)), dict(Counter(golds))
    )


def test_test_stats_give_intervals_and_a_paired_comparison():
    metric = get_metric("f1", positive_label="Yes", labels=["Yes", "No"])
    golds = ["Yes"] * 30 + ["No"] * 70
    rows = [Example(str(i), "x", g) for i, g in enumerate(golds)]
    good = _evaluation(["Yes"] * 25 + ["No"] * 5 + ["No"] * 65 + ["Yes"] * 5, golds)
    flat = _evaluation(["No"] * 100, golds)
    stats = SplitStats(metric, rows)
    s = stats.summary(good)
    lo, hi = s["ci"]["f1"]
    assert lo < s["metrics"]["f1"] < hi and "accuracy" in s["ci"]
    p = stats.paired(good, flat)
    assert p["f1"]["diff"] > 0.7 and p["f1"]["ci"][0] > 0.5 and p["mcnemar"]["only_a"] == 25
    assert p["power"]["detectable_accuracy_difference"] > 0
    assert suppressed_labels(stats.summary(flat)) == [("Yes", 0.0, 0.3)]
    assert suppressed_labels(s) == []


def test_compare_per_example_statistics_over_seeds():
    from apo_local.experiments.compare_stats import paired, score_ci

    metric = get_metric("accuracy")
    rng = random.Random(3)
    base = [{str(i): ("No" if rng.random() < 0.4 else "Yes", "Yes") for i in range(150)} for _ in range(3)]
    better = [
        {i: ("Yes", "Yes") if (p == "Yes" or rng.random() < 0.25) else (p, g) for i, (p, g) in b.items()} for b in base
    ]
    vs = paired(metric, better, base)
    assert vs["diff"] > 0.05 and vs["rows_ci"][0] > 0 and vs["seeds"] == 3
    assert all(t["p"] < 1e-3 and t["only_baseline"] == 0 for t in vs["mcnemar"])
    assert vs["examples"] == 150  # distinct test rows: the three seeds score the same 150
    assert vs["ci"][0] <= min(vs["seed_ci"][0], vs["rows_ci"][0])  # the verdict's interval: the wider of the two
    lo, hi = score_ci(metric, base)
    assert lo < 0.6 < hi and not math.isnan(lo)


def test_cli_table_headlines_the_selected_prompt_with_its_interval_and_warns_on_prevalence():
    from apo_local.commands.summary import summary_lines
    from apo_local.run.result import RunResult

    metric = get_metric("f1", positive_label="Yes", labels=["Yes", "No"])
    golds = ["Yes"] * 16 + ["No"] * 84
    rows = [Example(str(i), "x", g) for i, g in enumerate(golds)]
    stats = SplitStats(metric, rows)
    flat = _evaluation(["No"] * 100, golds)  # the search selected a prompt that always answers No
    good = _evaluation(["Yes"] * 12 + ["No"] * 4 + ["No"] * 70 + ["Yes"] * 14, golds)
    result = RunResult(
        metric="f1",
        initial_prompt="Is it a lie?",
        best_prompt="Careful.",
        selected_prompt="No",
        initial_test=stats.summary(good),
        best_test=stats.summary(good),
        selected_test=stats.summary(flat),
        beam=[{"text": "No", "estimate": 0.84}, {"text": "Careful.", "estimate": 0.7}],
        rounds_completed=1,
        stop_reason="completed",
        usage={},
        faults={},
        selected_by="validation (200 rows)",
        selected_vs_initial=stats.paired(flat, good),
    )
    lines = summary_lines(result)
    assert lines[0].startswith("headline: worse than the initial prompt (f1 -") and lines[1] == ""
    table = lines[3:]
    assert table[0].startswith("selected (validation (200 rows))") and "0.000 [0.000, 0.000]" in table[0]
    assert "0.840 [" in table[0]  # accuracy (= micro-F1) beside the binary F1
    assert table[1].startswith("initial") and table[2].startswith("best of beam (picked on test")
    assert any(line.startswith("selected - initial: f1 -") and "McNemar p=" in line for line in lines)
    assert any(line.startswith("power: with 100 test rows") for line in lines)
    warning = [
        line
        for line in lines
        if line.startswith("warning: the selected prompt predicts 'Yes' for 0% of test rows (true share 16%)")
    ]
    assert len(warning) == 1 and warning[0].endswith("a metric can rise this way while the classifier gets worse")
    result.selected_prompt = result.initial_prompt  # kept by the search: the lean is the target's own
    assert any(
        line.endswith("the target leans this way with the initial prompt, which the search kept")
        for line in summary_lines(result)
    )


def test_sweep_tables_headline_the_selected_prompt():
    from apo_local.experiments.sweep.tables import _result_values

    res = {
        "metric": "f1",
        "rounds_completed": 1,
        "stop_reason": "completed",
        "initial_test": {"metrics": {"f1": 0.5}},
        "best_test": {"metrics": {"f1": 0.8}},
        "selected_test": {"metrics": {"f1": 0.6}, "ci": {"f1": [0.52, 0.68]}},
    }
    row = _result_values(res)
    assert row["test_gain"] == pytest.approx(0.1) and row["test_selected_ci"] == "[0.520, 0.680]"


def test_a_run_from_before_resumes_with_the_selection_it_started_with():
    from pathlib import Path

    from apo_local.run.config import dump_config, load_config

    old = load_config(Path(__file__).resolve().parent / "golden" / "v1-run" / "config.yaml", resume=True)
    s = old.selection
    assert (s.sample, s.reward, s.ucb_c, s.ucb_t, old.evaluation.validation_split) == (
        "independent",
        "accuracy",
        2.0,
        "examples",
        "none",
    )
    today = build_config({"task": "liar"})
    import yaml

    again = build_config(yaml.safe_load(dump_config(today)), resume=True)  # today's config resumes as written
    assert (again.selection.sample, again.selection.ucb_t, again.evaluation.validation_split) == (
        "shared",
        "round",
        "auto",
    )
