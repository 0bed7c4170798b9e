"""compare: spec validation, the permutation test and the tables, on fixed inputs (no engine)."""

from __future__ import annotations

import pytest

from apo_local.experiments.compare import permutation_test, spec_from_dict, summarize
from apo_local.experiments.compare_tables import csv_text, markdown
from apo_local.support.errors import ApoError


def test_permutation_test_exact_values():
    assert permutation_test([1, 1], [0, 0]) == pytest.approx(2 / 6)  # 2 of C(4,2) relabelings as extreme
    assert permutation_test([1, 1], [0, 0], paired=True) == pytest.approx(0.5)  # 2 of 4 sign patterns
    assert permutation_test([0.5, 0.7], [0.5, 0.7]) == 1.0
    assert permutation_test([0.5, 0.7], [0.5, 0.7], paired=True) == 1.0
    assert permutation_test([], [1.0]) is None


def test_permutation_test_resampled_is_seeded_and_small_for_a_clear_difference():
    a, b = [1.0 + 0.01 * i for i in range(20)], [0.0 + 0.01 * i for i in range(20)]
    p = permutation_test(a, b, resamples=2000, seed=3)
    assert p == permutation_test(a, b, resamples=2000, seed=3)
    assert 0 < p < 0.01
    assert 0 < permutation_test(a, b, paired=True, resamples=2000) < 0.01


def test_spec_validation():
    with pytest.raises(ApoError, match="methods"):
        spec_from_dict({"base": {}, "methods": {}})
    with pytest.raises(ApoError, match="unknown key"):
        spec_from_dict({"methods": {"protegi": {}}, "sedes": [1]})
    with pytest.raises(ApoError, match="baseline"):
        spec_from_dict({"methods": {"mc": {}}})
    with pytest.raises(ApoError, match="compare method 'mc'"):
        spec_from_dict({"methods": {"protegi": {}, "mc": {"search": {"n_grads": 0}}}})
    spec = spec_from_dict(
        {
            "base": {"search": {"rounds": 2}},
            "methods": {"protegi": {}, "mc": {"protegi": {"n_gradients": 0}}},
            "seeds": [3],
            "budget": {"max_target_calls": 99},
        }
    )
    cfg = spec.config("mc", 3)
    assert (cfg.seed, cfg.search.rounds, cfg.protegi.n_gradients, cfg.budget.max_target_calls) == (3, 2, 0, 99)
    # a method can't change the shared budget
    spec = spec_from_dict(
        {"methods": {"protegi": {"budget": {"max_target_calls": 5}}}, "budget": {"max_target_calls": 99}}
    )
    assert spec.config("protegi", 0).budget.max_target_calls == 99


def _run(method, seed, test, accepted, tokens):
    row = {
        "method": method,
        "seed": seed,
        "metric": "f1",
        "test": test,
        "best_test": test,
        "initial_test": 0.5,
        "rounds": len(tokens),
        "stop_reason": "completed",
        "accepted_steps": accepted,
        "prompt_tokens_per_step": tokens,
    }
    for role in ("target", "optimizer"):
        for k in ("calls", "prompts", "input_tokens", "output_tokens"):
            row[f"{role}_{k}"] = 10
    return row


def test_summary_and_tables():
    spec = spec_from_dict({"methods": {"protegi": {}, "mc": {}}, "seeds": [0, 1]})
    runs = [
        _run("protegi", 0, 0.6, 1, [20, 30]),
        _run("protegi", 1, 0.8, 2, [22, 34]),
        _run("mc", 0, 0.5, 0, [20]),
        _run("mc", 1, 0.5, 1, [24]),
    ]
    rows = summarize(spec, runs)
    by = {r["method"]: r for r in rows}
    assert by["protegi"]["test_mean"] == pytest.approx(0.7) and by["protegi"]["test_std"] == pytest.approx(
        0.1414, abs=1e-3
    )
    assert by["protegi"]["p_vs_protegi"] is None and by["mc"]["p_vs_protegi"] == pytest.approx(0.5)  # paired, 2 seeds
    assert by["protegi"]["prompt_tokens_per_step"] == "21 → 32" and by["mc"]["accepted_steps_mean"] == 0.5
    md = markdown(spec, rows, runs)
    assert "| protegi | 2 | 0.7000 ± 0.1414 |" in md and "| mc | 1 | 0.5000 | 1 | 24 | completed |" in md
    table = csv_text(runs)
    assert table.splitlines()[0].startswith("method,seed,metric,test") and "20;30" in table


def test_reflection_similarity_columns(tmp_path):
    import json

    from apo_local.experiments.compare import add_reflection_similarity

    spec = spec_from_dict({"methods": {"protegi": {}, "pseudo": {}}, "seeds": [0]})
    texts = {
        "protegi": {1: ["the prompt is vague"], 2: ["the prompt is vague"]},
        "pseudo": {1: ["labels are noisy"], 2: []},
    }
    for m, rounds in texts.items():
        (tmp_path / m / "seed-0" / "rounds").mkdir(parents=True)
        for r, grads in rounds.items():
            cands = [{"round": r, "operator": "edit", "gradient": g} for g in grads]
            (tmp_path / m / "seed-0" / "rounds" / f"round-{r:02d}.json").write_text(
                json.dumps({"round": r, "candidates": cands})
            )
    runs = [_run("protegi", 0, 0.6, 1, [1, 2]), _run("pseudo", 0, 0.6, 1, [1, 2])]
    add_reflection_similarity(spec, runs, tmp_path)
    assert runs[0]["reflection_self_jaccard"] == 1.0 and runs[0]["reflection_vs_protegi_jaccard"] is None
    assert runs[1]["reflection_self_jaccard"] is None and runs[1]["reflection_vs_protegi_jaccard"] == 0.0
    rows = summarize(spec, runs)
    assert rows[1]["reflection_vs_protegi_jaccard_mean"] == 0.0
    assert "| pseudo | - | 0 |" in markdown(spec, rows, runs)


def test_per_example_statistics_in_the_tables():
    """Two seeds, the same 200 test rows: mc gets 30 more rows right per seed than protegi. The seed-level
    permutation p is 0.5 (two seeds); the paired interval excludes 0, McNemar of each seed is tiny, and the
    power line speaks of the 200 distinct rows, not 400."""
    from apo_local.tasks import get_metric

    spec = spec_from_dict({"methods": {"protegi": {}, "mc": {}}, "seeds": [0, 1]})
    runs = [
        _run("protegi", 0, 0.5, 1, [20]),
        _run("protegi", 1, 0.5, 1, [20]),
        _run("mc", 0, 0.65, 1, [20]),
        _run("mc", 1, 0.65, 1, [20]),
    ]
    base = {str(i): ("Yes" if i < 100 else "No", "Yes") for i in range(200)}
    better = {str(i): ("Yes" if i < 130 else "No", "Yes") for i in range(200)}
    per_row = {("protegi", 0): base, ("protegi", 1): base, ("mc", 0): better, ("mc", 1): better}
    rows = summarize(spec, runs, per_row, get_metric("accuracy"))
    mc = {r["method"]: r for r in rows}["mc"]
    assert mc["p_vs_protegi"] == pytest.approx(0.5)
    assert mc["diff_vs_baseline"] == pytest.approx(0.15) and mc["diff_ci"][0] > 0.05
    assert len(mc["mcnemar_p_per_seed"]) == 2 and max(mc["mcnemar_p_per_seed"]) < 1e-8
    assert mc["paired_examples"] == 200 and mc["test_ci"][0] < 0.65 < mc["test_ci"][1]
    md = markdown(spec, rows, runs)
    assert "| mc | 2 | 0.6500 ± 0.0000 | [" in md and "+0.1500 [" in md
    assert "Power: one pair of prompts (mc vs protegi, one seed) on 200 distinct test rows detects an accuracy" in md
    assert "| 1.863e-09 / 1.863e-09 |" in md  # McNemar per seed


# -- the verdict --------------------------------------------------------------------------------------


def _seed_rows(correct_a: list[int], correct_b: list[int]):
    """Per seed: row id -> (parsed, gold) for a method and a baseline (gold always 'Yes')."""
    a = {str(i): ("Yes" if c else "No", "Yes") for i, c in enumerate(correct_a)}
    b = {str(i): ("Yes" if c else "No", "Yes") for i, c in enumerate(correct_b)}
    return a, b


def test_verdict_reads_the_two_level_interval_and_says_what_detection_would_need():
    from apo_local.experiments.compare_stats import paired, verdict, verdict_line
    from apo_local.tasks.metrics import get_metric

    metric = get_metric("accuracy")
    strong = [_seed_rows([1] * 90 + [0] * 10, [1] * 50 + [0] * 50) for _ in range(3)]
    vs = paired(metric, [a for a, _ in strong], [b for _, b in strong])
    assert verdict(vs) == "better" and vs["seeds"] == 3 and vs["rows_per_seed"] == 100
    line = verdict_line("mc", "protegi", vs, "accuracy")
    assert line.startswith("verdict: mc vs protegi: better (accuracy +0.400 [") and "3 seeds × 100 test rows" in line
    worse = paired(metric, [b for _, b in strong], [a for a, _ in strong])
    assert verdict(worse) == "worse"
    close = [
        _seed_rows([1] * 52 + [0] * 48, [1] * 50 + [0] * 50),
        _seed_rows([1] * 49 + [0] * 51, [1] * 50 + [0] * 50),
        _seed_rows([1] * 51 + [0] * 49, [1] * 50 + [0] * 50),
    ]
    vs = paired(metric, [a for a, _ in close], [b for _, b in close])
    line = verdict_line("mc", "protegi", vs, "accuracy")
    assert (
        verdict(vs) == "no detectable change" and "would need about" in line and "seeds at 100 test rows each" in line
    )
    same = paired(metric, [b for _, b in close], [b for _, b in close])
    assert "no number of seeds or rows would detect it" in verdict_line("mc", "protegi", same, "accuracy")
    assert verdict(None) == "no data" and verdict_line("mc", "protegi", None, "accuracy").endswith(
        "no paired test rows"
    )


def test_the_markdown_has_a_verdict_section_and_names_methods_under_the_constant():
    from apo_local.experiments.compare import CompareSpec
    from apo_local.experiments.compare_tables import markdown

    spec = CompareSpec(base={}, methods={"protegi": {}, "mc": {}}, seeds=[0])
    common = {
        "seeds": 1,
        "metric": "f1",
        "test_std": 0.0,
        "best_test_mean": 0.6,
        "p_vs_protegi": None,
        "accepted_steps_mean": 1,
        "target_calls_mean": 1,
        "target_prompts_mean": 1,
        "optimizer_calls_mean": 1,
        "optimizer_input_tokens_mean": 1,
        "optimizer_output_tokens_mean": 1,
        "prompt_tokens_per_step": "",
        "initial_test_mean": 0.4,
        "constant_test_mean": 0.68,
        "constant_label": "Yes",
        "reflection_self_jaccard_mean": None,
        "reflection_vs_protegi_jaccard_mean": None,
        "lineage_steps": 2,
        "lineage_steps_distinguishable": 0,
        "lineage_distinguishable_share": 0.0,
    }
    rows = [
        {**common, "method": "protegi", "test_mean": 0.6, "test_ci": [0.5, 0.7]},
        {
            **common,
            "method": "mc",
            "test_mean": 0.75,
            "test_ci": [0.70, 0.80],
            "verdict_line": "verdict: mc vs protegi: better (f1 +0.150 [+0.050, +0.250], 1 seed × 100 test rows)",
        },
    ]
    md = markdown(spec, rows, [])
    assert "0.68 (always Yes)" in md
    assert "Not above a constant answer: protegi (" in md  # its interval reaches 0.68; mc's does not
    assert "## Verdict" in md and "- mc vs protegi: better (f1 +0.150" in md


def test_not_above_a_constant_answer_reads_the_paired_interval():
    """compare names a method under the best constant answer from the paired interval on the same rows, as
    the run headline does: a score interval above the constant's score is not enough."""
    from apo_local.tasks import get_metric

    spec = spec_from_dict({"methods": {"protegi": {}, "mc": {}}, "seeds": [0, 1]})
    runs = [
        dict(_run(m, s, 0.6, 1, [20]), constant_label="Yes", constant_test=0.5)
        for m in ("protegi", "mc")
        for s in (0, 1)
    ]
    gold = ["Yes"] * 50 + ["No"] * 50
    # protegi: right on 55 rows of 100, always-Yes right on 50: above by 0.05 on the same rows, not detectably
    protegi = {str(i): ("Yes" if i < 30 or i >= 75 else "No", g) for i, g in enumerate(gold)}
    # mc: right on every Yes row and 40 of the No rows: 0.9 vs 0.5
    mc = {str(i): ("Yes" if i < 50 or i >= 90 else "No", g) for i, g in enumerate(gold)}
    per_row = {("protegi", 0): protegi, ("protegi", 1): protegi, ("mc", 0): mc, ("mc", 1): mc}
    rows = summarize(spec, runs, per_row, get_metric("accuracy"))
    by = {r["method"]: r for r in rows}
    assert by["protegi"]["diff_vs_constant"] == pytest.approx(0.05) and by["protegi"]["diff_vs_constant_ci"][0] <= 0
    assert by["mc"]["diff_vs_constant_ci"][0] > 0.2
    for r in rows:
        r.update(constant_test_mean=0.5, constant_label="Yes", test_ci=[0.51, 0.95])  # both score intervals above 0.5
    md = markdown(spec, rows, runs)
    assert "Not above a constant answer: protegi (the paired 95% interval" in md


def test_a_method_inherits_only_the_base_knobs_its_own_proposer_uses():
    """The base's protegi knobs do not follow a data-free method (as with ``extends:``); a method's own are kept,
    and one it sets that its proposer ignores is still refused."""
    base = {"task": "liar", "protegi": {"n_gradients": 2, "errors_per_gradient": 3, "mc_samples": 1}}
    spec = spec_from_dict({"base": base, "methods": {"protegi": {}, "improve": {"search": {"proposer": "improve"}}}})
    assert spec.config("improve", 0).search.proposer == "improve"
    assert spec.config("protegi", 0).protegi.n_gradients == 2
    bad = {"search": {"proposer": "improve"}, "protegi": {"n_gradients": 1}}
    with pytest.raises(ApoError, match="protegi.n_gradients: not used by proposer improve"):
        spec_from_dict({"base": base, "methods": {"improve": bad}, "baseline": "improve"}).config("improve", 0)
