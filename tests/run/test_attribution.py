"""Edit attribution's arithmetic (apo_local/run/attribution.py), no engine: the lineage walk on synthetic candidate
records, sentence splitting and the ablated prompts, gains with paired intervals on synthetic predictions, the
one-batch scoring, the lines people read, compare's share, the estimate's bound and the report section."""

from __future__ import annotations

import json
import math

import pytest

from apo_local.run import attribution as A
from apo_local.run.headline import SplitStats
from apo_local.tasks.demos import join_prompt
from apo_local.tasks.metrics import get_metric

INITIAL = "Decide whether the Statement is a lie. Answer Yes or No."
EDIT1 = INITIAL + " Weigh the speaker's record."
PARA2 = "Say Yes if the Statement is a lie, otherwise No. Weigh the speaker's record."


def _c(cid, text, rnd, op, parent, gradient=None, status="beam"):
    return {
        "id": cid,
        "text": text,
        "round": rnd,
        "operator": op,
        "parent": parent,
        "gradient": gradient,
        "status": status,
    }


def _rounds():
    r1 = [
        _c("init", INITIAL, 0, "initial", None, status="kept"),
        _c("e1", EDIT1, 1, "edit", "init", "ignores records"),
        _c("x1", "Other.", 1, "edit", "init", "noise", "not selected"),
    ]
    r2 = [
        _c("e1", EDIT1, 1, "edit", "init", "ignores records", "kept"),
        _c("init", INITIAL, 0, "initial", None, status="kept"),
        _c("p2", PARA2, 2, "paraphrase", "e1", None),
    ]
    return [{"round": 1, "candidates": r1}, {"round": 2, "candidates": r2}]


# -- the lineage ------------------------------------------------------------------------------------------------


def test_lineage_walks_from_the_initial_prompt_to_the_selected_one():
    records = A.candidate_records(_rounds())
    assert set(records) == {"init", "e1", "x1", "p2"} and records["e1"]["status"] == "beam"  # first seen wins
    chain, complete = A.lineage(records, PARA2, INITIAL)
    assert complete and [n["id"] for n in chain] == ["init", "e1", "p2"]
    assert [n["operator"] for n in chain] == ["initial", "edit", "paraphrase"]
    assert chain[1]["gradient"] == "ignores records" and chain[2]["parent"] == "e1"


def test_lineage_of_the_initial_prompt_and_of_a_broken_chain():
    chain, complete = A.lineage(A.candidate_records(_rounds()), INITIAL, INITIAL)
    assert complete and [n["id"] for n in chain] == ["init"]
    chain, complete = A.lineage({}, INITIAL, INITIAL)  # no round at all: the root alone
    assert complete and chain[0]["operator"] == "initial" and chain[0]["text"] == INITIAL
    records = A.candidate_records(_rounds()[1:])
    del records["e1"]  # the parent is missing: the walk ends there
    chain, complete = A.lineage(records, PARA2, INITIAL)
    assert not complete and [n["id"] for n in chain] == ["p2"]
    loop = {"a": _c("a", "A.", 1, "edit", "b"), "b": _c("b", "B.", 1, "edit", "a")}
    chain, complete = A.lineage(loop, "A.", INITIAL)  # a cycle ends instead of looping
    assert not complete and [n["id"] for n in chain] == ["b", "a"]


# -- sentences and ablations ------------------------------------------------------------------------------------


def test_sentences_split_at_sentence_ends_and_line_breaks_only():
    text = 'Read the Statement. Is it a lie? Say "Yes." or No!  Use e.g. the Context.\n1. Be brief\n2. Be exact.'
    parts = A.sentences(text)
    assert "".join(parts) == text
    assert [p.strip() for p in parts] == [
        "Read the Statement.",
        "Is it a lie?",
        'Say "Yes." or No!',
        "Use e.g. the Context.",
        "1. Be brief",
        "2. Be exact.",
    ]
    assert A.sentences("") == [] and A.sentences("  ") == [] and A.sentences("One") == ["One"]


def test_ablations_remove_one_sentence_or_one_demonstration():
    units, total = A.ablations("First. Second. Third.")
    assert total == 3 and [u["ablated"] for u in units] == ["Second. Third.", "First. Third.", "First. Second."]
    assert [u["kind"] for u in units] == ["sentence"] * 3 and [u["index"] for u in units] == [0, 1, 2]
    demos = [
        {"id": "t1", "input": "Tax cuts pay for themselves.", "label": "Yes"},
        {"id": "t2", "input": "The sky is blue.", "label": "No"},
    ]
    units, total = A.ablations(join_prompt("Is it a lie? Answer Yes or No.", demos))
    assert total == 4 and [u["kind"] for u in units] == ["sentence", "sentence", "demonstration", "demonstration"]
    assert units[0]["ablated"] == join_prompt("Answer Yes or No.", demos)
    assert units[2]["ablated"] == join_prompt("Is it a lie? Answer Yes or No.", demos[1:])
    assert units[3]["text"] == "The sky is blue. -> No"
    units, total = A.ablations(" ".join(f"S{i}." for i in range(30)), max_units=5)
    assert total == 30 and len(units) == 5


def test_prompts_to_score_are_distinct_lineage_first():
    chain, _ = A.lineage(A.candidate_records(_rounds()), PARA2, INITIAL)
    units, _ = A.ablations(PARA2)
    texts = A.prompts_to_score(chain, units)
    assert texts[:3] == [INITIAL, EDIT1, PARA2] and len(texts) == len(set(texts)) == 3 + len(units)


# -- gains ------------------------------------------------------------------------------------------------------

GOLDS = ["Yes", "No"] * 10


def test_gain_is_the_paired_difference_with_its_interval():
    acc = get_metric("accuracy")
    right, wrong = list(GOLDS), ["No" if g == "Yes" else "Yes" for g in GOLDS]
    g = A.gain(acc, GOLDS, right, wrong)
    assert g["diff"] == 1.0 and g["ci"] == [1.0, 1.0] and g["excludes_zero"] and g["n"] == 20
    assert not A.gain(acc, GOLDS, right, right)["excludes_zero"] and A.gain(acc, GOLDS, right, right)["diff"] == 0
    half = right[:10] + wrong[10:]
    g = A.gain(acc, GOLDS, half, right[:19] + wrong[19:])
    assert g["diff"] == pytest.approx(-0.45) and g["excludes_zero"] and g["ci"][1] < 0
    assert A.gain(acc, [], [], []) is None
    # the same figures as SplitStats.paired on evaluations (reused, not reimplemented)
    from types import SimpleNamespace as NS

    ev = lambda labels: NS(predictions=[NS(label=x) for x in labels])  # noqa: E731
    want = SplitStats(acc, [NS(label=x) for x in GOLDS]).paired(ev(half), ev(right))["accuracy"]
    got = A.gain(acc, GOLDS, half, right)
    assert got["diff"] == want["diff"] and got["ci"] == want["ci"] and got["p"] == want["p"]


def _labels(good: int) -> list[str]:
    """Predictions right on the first ``good`` of the 20 rows."""
    return [g if i < good else ("No" if g == "Yes" else "Yes") for i, g in enumerate(GOLDS)]


def _attribution(metric="accuracy"):
    chain, complete = A.lineage(A.candidate_records(_rounds()), PARA2, INITIAL)
    units, total = A.ablations(PARA2)
    quality = {INITIAL: 8, EDIT1: 18, PARA2: 17, units[0]["ablated"]: 17, units[1]["ablated"]: 10}
    labels = {t: {"test": _labels(q), "validation": _labels(q)[10:]} for t, q in quality.items()}
    golds = {"test": GOLDS, "validation": GOLDS[10:]}
    return A.attribute(get_metric(metric, positive_label="Yes"), golds, labels, chain, complete, units, total)


def test_attribute_reports_step_gains_unit_contributions_and_the_tally():
    a = _attribution()
    assert a["metric"] == "accuracy" and a["rows"] == {"validation": 10, "test": 20} and a["lineage_complete"]
    assert [n["scores"]["test"] for n in a["lineage"]] == [0.4, 0.9, 0.85]
    edit, para = a["steps"]
    assert (edit["operator"], edit["round"], edit["gradient"], edit["parent"]) == ("edit", 1, "ignores records", "init")
    assert edit["test"]["diff"] == pytest.approx(0.5) and edit["test"]["excludes_zero"]
    assert para["test"]["diff"] == pytest.approx(-0.05) and not para["test"]["excludes_zero"]
    assert edit["validation"]["n"] == 10 and edit["validation"]["diff"] == pytest.approx(0.8)
    first, second = a["units"]
    assert first["kind"] == "sentence" and first["text"].startswith("Say Yes") and first["test"]["diff"] == 0
    assert second["text"] == "Weigh the speaker's record." and second["test"]["diff"] == pytest.approx(0.35)
    assert a["summary"] == {"steps": 2, "steps_excluding_zero": 1, "steps_flagged": 1} and A.step_tally(a) == (2, 1)
    assert edit["test"]["flagged"] and edit["test"]["family"] == 4 and edit["test"]["p_holm"] < 0.05
    assert A.step_tally(None) == (None, None)
    json.dumps(a, allow_nan=False)  # plain JSON in results.json


def test_the_cli_line_and_the_explain_lines():
    a = _attribution()
    line = A.attribution_line(a)
    assert line.startswith("attribution (test accuracy): 2 steps (edit r1 +0.500 [")
    # the largest unit is picked on validation (+0.700) and reported with its test figure
    assert "paraphrase r2 -0.050 [" in line and "; 2 sentences, largest on validation +0.700 [" in line
    assert "(test +0.350 [" in line and '"Weigh the speaker\'s record."' in line
    assert line.endswith("1 of 2 step gains distinguishable from zero (Holm over 4 test gains)")
    text = "\n".join(A.explain_lines(a))
    assert "lineage (initial -> selected):" in text and 'from gradient "ignores records"' in text
    assert " *r1 edit" in text and "  r2 paraphrase" in text and "validation (used for selection) +0.800 [" in text
    assert "Holm over all 4 test gains" in text
    assert "units of the selected prompt" in text and "2 of 2 ablated" in text
    root = dict(a, steps=[], lineage=a["lineage"][:1], summary=A.summary([]))
    assert "no lineage steps (the selected prompt is the initial prompt)" in A.attribution_line(root)
    assert A.fmt_gain(None) == "-"


def test_compute_scores_everything_in_one_batch_on_validation_then_test():
    from types import SimpleNamespace as NS

    from apo_local.scoring import Prediction

    class Scorer:
        calls = []

        def evaluate_many(self, texts, rows):
            self.calls.append((list(texts), list(rows)))
            return [NS(instruction=t, predictions=[Prediction(r.label) for r in rows]) for t in texts]

    validation = [NS(id=f"v{i}", label=g) for i, g in enumerate(GOLDS[:4])]
    test = [NS(id=f"t{i}", label=g) for i, g in enumerate(GOLDS)]
    scorer = Scorer()
    a = A.compute(
        scorer, NS(metric=get_metric("accuracy")), A.candidate_records(_rounds()), PARA2, INITIAL, validation, test
    )
    assert len(scorer.calls) == 1 and scorer.calls[0][1] == validation + test
    assert scorer.calls[0][0][:3] == [INITIAL, EDIT1, PARA2]
    assert a["rows"] == {"validation": 4, "test": 20} and all(s["test"]["diff"] == 0 for s in a["steps"])
    empty = A.compute(scorer, NS(metric=get_metric("accuracy")), {}, INITIAL, INITIAL, [], [])
    assert len(scorer.calls) == 1 and empty["units"][0]["test"] is None  # no rows: no engine work, no interval


# -- where attribution is read ----------------------------------------------------------------------------------


def test_compare_reports_the_share_of_distinguishable_lineage_steps():
    from apo_local.experiments.compare import CompareSpec, run_record, summarize
    from apo_local.experiments.compare_tables import markdown

    def results(attribution):
        ev = {"metrics": {"accuracy": 0.5}}
        return {
            "metric": "accuracy",
            "selected_test": ev,
            "best_test": ev,
            "initial_test": ev,
            "rounds_completed": 2,
            "stop_reason": "completed",
            "history": [],
            "usage": {},
            **({"attribution": attribution} if attribution else {}),
        }

    a = _attribution()
    runs = [
        run_record("protegi", 0, results(a)),
        run_record("protegi", 1, results(a)),
        run_record("mc", 0, results(None)),
    ]
    assert runs[0]["lineage_steps"] == 2 and runs[0]["lineage_steps_distinguishable"] == 1
    assert runs[2]["lineage_steps"] is None  # a run made before attribution existed
    spec = CompareSpec(base={}, methods={"protegi": {}, "mc": {}}, seeds=[0, 1])
    rows = {r["method"]: r for r in summarize(spec, runs)}
    assert rows["protegi"]["lineage_distinguishable_share"] == 0.5 and rows["protegi"]["lineage_steps"] == 4
    assert rows["mc"]["lineage_distinguishable_share"] is None
    md = markdown(spec, list(rows.values()), runs)
    assert "Edit attribution: accepted steps on the selected prompts' lineages" in md and "protegi 2/4 (0.5)" in md


def test_the_estimate_counts_the_attribution_prompts():
    from apo_local.run.config import build_config
    from apo_local.run.estimate import estimate
    from apo_local.search.splits import eval_rows, train_rows, validation_rows
    from apo_local.tasks import load_task

    task = load_task("liar")
    data = {"search": {"rounds": 2}, "evaluation": {"test_limit": 10, "validation_rows": 8}, "train_limit": 200}

    def size(attribution: bool):
        cfg = build_config({**data, "evaluation": {**data["evaluation"], "attribution": attribution}})
        return estimate(cfg, task, train_rows(task, cfg), eval_rows(task, cfg), validation_rows(task, cfg)).target

    on, off = size(True), size(False)
    assert on.prompts - off.prompts == (2 + 1 + A.MAX_UNITS) * (8 + 10) and on.calls == off.calls + 1


def test_the_report_has_the_edit_attribution_section(tmp_path):
    pytest.importorskip("matplotlib")
    from apo_local.report import write_report
    from tests.report.test_report import make_run

    run = make_run(tmp_path / "run")
    res = json.loads((run / "results.json").read_text())
    res["attribution"] = _attribution()
    (run / "results.json").write_text(json.dumps(res))
    page = write_report(run).read_text()
    assert '<h2 id="attribution">Edit attribution</h2>' in page and "test gain [95% CI]" in page
    assert "test contribution [95% CI]" in page and "Weigh the speaker&#x27;s record." in page
    assert "+0.500 [" in page and "ignores records" in page
    assert not math.isnan(res["attribution"]["steps"][0]["test"]["ci"][0])


def test_the_flags_hold_the_family_wise_error_under_the_null():
    """A selected prompt of 10 units none of which matters (removing one changes some answers, but no more often
    to right than to wrong): the share of prompts with any false "*" stays at 5% (Holm); flagged one by one,
    most prompts would show one."""
    import numpy as np

    acc = get_metric("accuracy")
    rng = np.random.default_rng(29)
    golds = ["Yes"] * 60
    sims, any_flag, any_single = 150, 0, 0
    units = [{"index": k, "kind": "sentence", "text": f"s{k}", "ablated": f"without s{k}"} for k in range(10)]
    chain = [{"id": "sel", "round": 0, "operator": "initial", "parent": None, "gradient": None, "text": "sel"}]
    for _ in range(sims):
        right = rng.random(60) < 0.6
        labels = {"sel": {"test": ["Yes" if r else "No" for r in right], "validation": []}}
        for u in units:
            redraw = rng.random(60) < 0.3  # these rows answered afresh, at the same rate
            ablated = np.where(redraw, rng.random(60) < 0.6, right)
            labels[u["ablated"]] = {"test": ["Yes" if r else "No" for r in ablated], "validation": []}
        a = A.attribute(acc, {"test": golds, "validation": []}, labels, chain, True, units, len(units))
        any_flag += any(u["test"]["flagged"] for u in a["units"])
        any_single += any(u["test"]["excludes_zero"] for u in a["units"])
    mc = math.sqrt(0.05 * 0.95 / sims)
    assert any_flag / sims <= 0.05 + 2 * mc, any_flag / sims
    assert any_single / sims > 0.2  # the uncorrected flags this test would catch
