"""Pure parts of the study methods: feedback corruption, ABO's step judgement and answer reading, acceptance
rules, held-out validation rows, contradictory settings, reflection similarity, config keys. No engine."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

import pytest

from apo_local.experiments.diagnostics import TfIdf, diagnose, jaccard, within_run
from apo_local.run.config import build_config, flag_names
from apo_local.search import acceptance
from apo_local.search.feedback import corrupt_examples, corrupt_label, pseudo_errors, real_errors
from apo_local.search.meta_prompts import MetaPrompts
from apo_local.search.proposers import target_answer
from apo_local.search.proposers.abo_format import (
    STRICT,
    WORK,
    blamed_step,
    fallback_steps,
    format_abo,
    parse_abo,
    parse_judgement,
)
from apo_local.support.errors import ApoError
from apo_local.tasks import Example


def _task(kind="classification", labels=("Yes", "No"), metric="f1"):
    return SimpleNamespace(name="t", kind=kind, labels=labels, metric=SimpleNamespace(name=metric))


BINARY = _task()
MULTI = _task(labels=("billing", "bug", "other", "praise"), metric="macro_f1")
NUMERIC = _task(kind="generation", labels=(), metric="numeric_match")


# -- feedback corruption ------------------------------------------------------------------------


def test_binary_labels_are_flipped():
    assert corrupt_label(Example("a", "x", "Yes"), BINARY, 0) == "No"
    assert corrupt_label(Example("a", "x", "No"), BINARY, 123) == "Yes"


def test_multiclass_wrong_label_is_a_fixed_other_class():
    exs = [Example(f"train-{i}", "x", "bug") for i in range(40)]
    wrong = [corrupt_label(ex, MULTI, 0) for ex in exs]
    assert all(w in MULTI.labels and w != "bug" for w in wrong)
    assert wrong == [corrupt_label(ex, MULTI, 0) for ex in exs]  # fixed per example (and seed)
    assert len(set(wrong)) == 3  # spread over the other classes by the hash of the id
    assert [corrupt_label(ex, MULTI, 1) for ex in exs] != wrong  # the seed changes the draw
    # a fixed input: same answer in every process (sha256, not Python's salted hash)
    assert corrupt_label(Example("train-0", "x", "bug"), MULTI, 0) == corrupt_label(
        Example("train-0", "y", "bug"), MULTI, 0
    )


def test_numeric_wrong_label_is_true_value_plus_bounded_nonzero_offset():
    for i in range(50):
        ex = Example(f"e{i}", "q", "12")
        w = corrupt_label(ex, NUMERIC, 3, numeric_offset=4)
        assert w == corrupt_label(ex, NUMERIC, 3, numeric_offset=4)
        assert w.lstrip("-").isdigit() and 0 < abs(int(w) - 12) <= 4
        f = float(corrupt_label(Example(f"e{i}", "q", "2.5"), NUMERIC, 3, numeric_offset=0.5))
        assert 0 < abs(f - 2.5) <= 0.5


def test_corruption_refuses_free_text_tasks():
    with pytest.raises(ApoError, match="numeric_match"):
        corrupt_label(Example("a", "x", "Paris"), _task(kind="generation", labels=(), metric="exact_match"), 0)


def test_corrupt_examples_keeps_ids_and_inputs():
    exs = [Example("a", "x", "Yes"), Example("b", "y", "No")]
    out = corrupt_examples(exs, BINARY, 0)
    assert [(e.id, e.input, e.label) for e in out] == [("a", "x", "No"), ("b", "y", "Yes")]


def test_pseudo_errors_are_correct_rows_with_flipped_predictions():
    rows = [
        (Example("a", "x", "Yes"), "Yes", 1.0),
        (Example("b", "y", "No"), "Yes", 0.0),
        (Example("c", "z", "No"), "No", 1.0),
    ]
    assert [(ex.id, pred) for ex, pred in pseudo_errors(rows, BINARY, 0)] == [("a", "No"), ("c", "Yes")]
    assert [(ex.id, pred) for ex, pred in real_errors(rows)] == [("b", "Yes")]


def test_error_block_without_evaluation_hides_labels():
    meta = MetaPrompts()
    rows = [(Example("a", "the text", "Yes"), "No")]
    assert "Label: Yes" in meta.errors(rows) and "Prediction: No" in meta.errors(rows)
    hidden = meta.errors(rows, evaluated=False)
    assert "Yes" not in hidden and "Output: No" in hidden and "the text" in hidden


def test_default_gradient_and_edit_meta_prompts_are_unchanged():
    meta = MetaPrompts()
    g = meta.render("gradient", prompt="P", errors="E", num_reasons=1, evaluated=True)
    assert (
        "But this prompt gets the following examples wrong:\nE\n\ngive 1 reasons why the prompt could have gotten these examples wrong."
        in g
    )
    assert meta.render("gradient", prompt="P", errors="E", num_reasons=1) == g  # user templates need no `evaluated`
    assert "not checked for correctness" in meta.render(
        "gradient", prompt="P", errors="E", num_reasons=1, evaluated=False
    )


# -- ABO -----------------------------------------------------------------------------------------

STEPS = ["Read the statement.", "Check the context.", "Decide Yes or No."]


def test_judgement_reply_gives_the_first_step_judged_not_followed():
    assert parse_judgement("Step 1: yes\nStep 2: no\nStep 3: no", 3) == 2
    assert parse_judgement("Step 1: Yes, it read it.\nStep 2: yes\nStep 3: yes", 3) == 0  # all followed
    assert parse_judgement("step 1 - not followed: it only gave a label", 3) == 1
    assert parse_judgement("Step 3: no. Step 1: yes", 3) == 3
    assert parse_judgement("Step 2: no\nStep 2: yes", 3) == 2  # the first verdict of a step counts
    assert parse_judgement("Step 7: no", 3) is None  # no step of this prompt: unreadable
    assert parse_judgement("The model did fine.", 3) is None


def test_blamed_step_is_the_most_frequent_first_failure():
    step, blame = blamed_step(3, [1, 2, 2, 0])
    assert blame == [1, 2, 2, 3]  # a wrong answer that followed every step blames the last step
    assert step == 2
    assert blamed_step(3, [1, 2])[0] == 1  # tie -> earliest


def test_abo_prompt_round_trip():
    text = format_abo(STEPS, "Step 1: read.\nStep 2: ok.\nStep 3: Yes")
    parsed = parse_abo(text)
    assert parsed.steps == STEPS and parsed.demonstration.startswith("Step 1: read.")
    strict = format_abo(STEPS, "ignored", with_demo=False)
    assert strict.endswith(STRICT) and "Demonstration" not in strict
    assert parse_abo(strict).steps == STEPS and parse_abo(strict).demonstration is None
    assert parse_abo("Determine whether the Statement is a lie.").steps == []
    assert fallback_steps("Read it. Then decide!\nDemonstration: x") == ["Read it.", "Then decide!"]


def test_the_worked_abo_prompt_asks_for_the_steps_and_a_final_answer_line_and_reads_back_unchanged():
    worked = format_abo(STEPS, "Step 1: read.\nStep 3: yes\nAnswer: Yes", work=True)
    assert worked.endswith("\n\n" + WORK) and 'last line "Answer: <label>"' in WORK and "one by one" in WORK
    parsed = parse_abo(worked)  # the fixed line is neither a step nor part of the demonstration
    assert parsed.steps == STEPS and parsed.demonstration == "Step 1: read.\nStep 3: yes\nAnswer: Yes"
    assert format_abo(parsed.steps, parsed.demonstration, work=True) == worked  # reassembled once, not twice
    no_demo = format_abo(STEPS, None, with_demo=False, work=True)
    assert no_demo.endswith(STRICT + "\n\n" + WORK) and parse_abo(no_demo).demonstration is None
    assert WORK not in format_abo(STEPS, "Step 1: read.")  # the log-prob ablation: the target never works


# -- acceptance ----------------------------------------------------------------------------------


def _c(id, status="new", parent=None):
    from apo_local.search.state import Candidate

    return Candidate(id, 1, "edit", parent=parent, id=id, status=status)


def test_roots_follow_edit_then_paraphrase_chains():
    cands = [_c("p", "kept"), _c("q", "kept"), _c("e", parent="p"), _c("pe", parent="e"), _c("pq", parent="q")]
    assert acceptance.roots(cands) == {"p": "p", "q": "q", "e": "p", "pe": "p", "pq": "q"}


def test_naive_beam_takes_newest_proposals_and_tops_up_with_parents():
    new, kept = [_c("a"), _c("b"), _c("c")], [_c("p", "kept")]
    beam = acceptance.naive_beam(new, kept, 2, random.Random(0))
    assert len(beam) == 2 and all(c.status == "new" for c in beam)
    assert beam == acceptance.naive_beam(new, kept, 2, random.Random(0))
    assert [c.id for c in acceptance.naive_beam(new[:1], kept, 2, random.Random(0))] == ["a", "p"]
    assert [c.id for c in acceptance.naive_beam([], kept, 1, random.Random(0))] == ["p"]


def test_naive_acceptance_takes_the_edit_never_a_paraphrase_of_the_parent():
    from dataclasses import replace

    from apo_local.search.streams import Streams

    parent, edit = _c("p", "kept"), _c("e", parent="p")
    paraphrases = [replace(_c(f"pp{i}", parent="p"), operator="paraphrase") for i in range(6)]
    ctx = SimpleNamespace(beam_size=1, streams=Streams(0, 1))
    for order in ([parent, edit, *paraphrases], [parent, *paraphrases, edit]):
        beam, record = acceptance.NaiveAcceptance().accept(order, ctx)
        assert [c.id for c in beam] == ["e"] and record["acceptance"] == "naive"
    beam, _ = acceptance.NaiveAcceptance().accept([parent, *paraphrases], ctx)
    assert [c.id for c in beam] == ["p"]  # no update this round: the parent stays


def test_validated_choice_needs_a_strict_improvement():
    assert acceptance.validated_choice(0.5, [0.4, 0.6, 0.6]) == 1
    assert acceptance.validated_choice(0.5, [0.5, 0.5]) is None
    assert acceptance.validated_choice(0.5, []) is None


def test_validation_rows_are_held_out_of_the_training_rows():
    from apo_local.search.splits import train_rows, validation_rows
    from apo_local.tasks import load_task

    task = load_task("liar")
    cfg = build_config(
        {
            "train_limit": 100,
            "search": {"minibatch_size": 8},
            "protegi": {"mc_samples": 0},
            "selection": {"acceptance": "validated", "validation_size": 20},
        }
    )
    train, val = train_rows(task, cfg), validation_rows(task, cfg)
    # the run's validation rows: a quarter of train_limit (25), at least validation_size for this rule
    assert len(val) == 25 and len(train) == 100 and not {ex.id for ex in val} & {ex.id for ex in train}
    assert [ex.id for ex in val] == [ex.id for ex in validation_rows(task, cfg)]  # fixed: every round, on resume
    big = build_config(
        {
            "train_limit": 40,
            "search": {"minibatch_size": 8},
            "protegi": {"mc_samples": 0},
            "selection": {"acceptance": "validated", "validation_size": 20},
        }
    )
    assert len(validation_rows(task, big)) == 20  # raised to validation_size (a quarter of 40 would be 10)
    none = build_config(
        {
            "train_limit": 100,
            "search": {"minibatch_size": 8},
            "evaluation": {"validation_split": "none"},
            "protegi": {"mc_samples": 0},
            "selection": {"acceptance": "validated"},
        }
    )
    with pytest.raises(ApoError, match="validated needs validation rows"):
        validation_rows(task, none)


@pytest.mark.parametrize(
    "data, message",
    [
        (
            {"feedback": {"errors": "pseudo", "show_evaluation": False}},
            "feedback.errors: pseudo shows fabricated errors",
        ),
        (
            {"search": {"proposer": "rewrite"}, "feedback": {"labels": "wrong"}},
            "feedback.labels: wrong: proposer rewrite",
        ),
        (
            {"search": {"proposer": "improve"}, "feedback": {"errors": "pseudo"}},
            "feedback.errors: pseudo: proposer improve",
        ),
        ({"protegi": {"n_gradients": 0}, "feedback": {"show_evaluation": False}}, "protegi with n_gradients: 0"),
        ({"search": {"proposer": "abo"}, "feedback": {"show_evaluation": False}}, "abo revises the steps"),
        ({"search": {"proposer": "abo"}, "scoring": {"mode": "logprobs"}}, "scoring.mode: not used by proposer abo"),
        ({"selection": {"acceptance": "naive"}}, "protegi.mc_samples: naive acceptance accepts an update itself"),
        (
            {"selection": {"acceptance": "validated"}},
            "protegi.mc_samples: validated acceptance accepts an update itself",
        ),
        (
            {"selection": {"acceptance": "validated"}, "protegi": {"n_gradients": 0, "mc_samples": 0}},
            "validated accepts an",
        ),
        ({"scoring": {"parse": "positive-prefix"}}, "scoring.parse: positive-prefix reads generated replies"),
        ({"selection": {"acceptance": "naive"}, "protegi": {"n_gradients": 0, "mc_samples": 0}}, "makes none"),
        (
            {
                "selection": {"acceptance": "naive"},
                "protegi": {"mc_samples": 0},
                "feedback": {"selection_labels": "wrong"},
            },
            "naive acceptance scores nothing",
        ),
    ],
)
def test_contradictory_settings_are_refused_with_one_line(data, message):
    with pytest.raises(ApoError, match=message) as err:
        build_config(data)
    assert "\n" not in str(err.value)


def test_consistent_study_settings_are_accepted():
    build_config({"selection": {"acceptance": "naive"}, "protegi": {"mc_samples": 0}})
    build_config({"search": {"proposer": "rewrite"}, "feedback": {"selection_labels": "wrong"}})
    assert target_answer(build_config({"search": {"proposer": "abo"}}))[:2] == ("generate", 128)
    assert (
        target_answer(build_config({"search": {"proposer": "abo"}, "abo": {"answer": "logprobs"}})).mode == "logprobs"
    )
    old_run = {"search": {"proposer": "abo"}, "abo": {"work_tokens": 16}, "scoring": {"mode": "logprobs"}}
    assert (
        build_config(old_run, resume=True).abo.answer == "logprobs"
    )  # a run started before abo.answer resumes as it ran
    assert (
        build_config({"search": {"proposer": "abo"}, "abo": {"answer": "generate"}}, resume=True).abo.answer
        == "generate"
    )


# -- reflection diagnostics ------------------------------------------------------------------------


def test_similarities_on_fixed_texts():
    assert jaccard("the prompt is vague", "The prompt is VAGUE!") == 1.0
    assert jaccard("a b", "c d") == 0.0
    assert jaccard("a b c", "a b d") == pytest.approx(2 / 4)
    t = TfIdf(["the prompt is vague", "the labels are noisy", "the prompt ignores context"])
    assert t.cosine("the prompt is vague", "the prompt is vague") == pytest.approx(1.0)
    assert 0 < t.cosine("the prompt is vague", "the prompt ignores context") < 1
    assert t.cosine("vague", "noisy") == 0.0


def test_within_run_separates_across_and_within_rounds():
    rep = within_run({1: ["x y", "x z"], 2: ["x y"]})
    assert rep["reflections"] == 3 and rep["per_round"] == {"1": 2, "2": 1}
    assert rep["across_rounds"]["pairs"] == 2 and rep["within_round"]["pairs"] == 1
    assert rep["across_rounds"]["jaccard"] == pytest.approx((1 + 1 / 3) / 2, abs=1e-4)


def _fake_run(path, rounds):
    (path / "rounds").mkdir(parents=True)
    for r, grads in rounds.items():
        cands = [{"round": r, "operator": "edit", "gradient": g} for g in grads]
        cands.append({"round": r, "operator": "paraphrase", "gradient": grads[0] if grads else None})
        cands.append({"round": r - 1, "operator": "kept", "gradient": "old"})
        (path / "rounds" / f"round-{r:02d}.json").write_text(json.dumps({"round": r, "candidates": cands}))
    return path


def test_diagnose_reads_run_directories(tmp_path):
    a = _fake_run(tmp_path / "a", {1: ["the prompt is vague"], 2: ["the prompt is vague", "context matters"]})
    b = _fake_run(tmp_path / "b", {1: ["the prompt is vague"]})
    rep = diagnose(a, b)
    assert rep["within"]["reflections"] == 3  # paraphrase copies and earlier rounds' candidates are skipped
    assert rep["between"]["same_round"]["pairs"] == 1 and rep["between"]["same_round"]["jaccard"] == 1.0
    with pytest.raises(ApoError):
        diagnose(tmp_path / "nope")


# -- config --------------------------------------------------------------------------------------


def test_new_config_keys_and_flags():
    flags = flag_names()
    for key, flag in {
        "selection.acceptance": "acceptance",
        "selection.validation_k": "validation-k",
        "feedback.labels": "feedback-labels",
        "feedback.selection_labels": "feedback-selection-labels",
        "feedback.show_evaluation": "feedback-show-evaluation",
        "feedback.errors": "feedback-errors",
        "abo.demonstration": "abo-demonstration",
        "meta_prompts.one_step": "meta-prompts-one-step",
    }.items():
        assert flags[key] == flag
    cfg = build_config({}, {"feedback.labels": True, "selection.acceptance": "validated", "protegi.mc_samples": 0})
    assert cfg.feedback.labels == "true" and cfg.selection.acceptance == "validated"
    with pytest.raises(ApoError, match="feedback.errors"):
        build_config({"feedback": {"errors": "fake"}})


def test_diagnose_command_prints_json(tmp_path):
    from click.testing import CliRunner

    from apo_local.commands.cli import cli

    a = _fake_run(tmp_path / "a", {1: ["the prompt is vague"], 2: ["the labels are noisy"]})
    b = _fake_run(tmp_path / "b", {1: ["the prompt is vague"]})
    res = CliRunner().invoke(cli, ["diagnose", str(a), str(b)])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.output)
    assert rep["within"]["across_rounds"]["pairs"] == 1 and rep["between"]["all_pairs"]["pairs"] == 2


# -- what the optimizer is shown (search/feedback) with a fake scorer ------------------


class _Trace:
    def __init__(self):
        self.events = []

    def at(self, phase, round):
        pass

    def event(self, kind, **detail):
        self.events.append(kind)


def _ctx(feedback: dict):
    from apo_local.scoring import Prediction
    from apo_local.search.feedback import make_feedback
    from apo_local.search.state import Candidate
    from apo_local.search.streams import Streams
    from apo_local.tasks import load_task

    task = load_task("liar")
    train = [Example(f"t{i}", f"input {i}", "Yes" if i % 2 else "No") for i in range(8)]

    class Scorer:  # predicts "Yes" for everything: right on odd ids, wrong on even ones
        def predict(self, pairs):
            return [Prediction("Yes") for _ in pairs]

    cfg = build_config({"feedback": feedback})
    fb = make_feedback(cfg.feedback, task, cfg.seed, train, Scorer(), _Trace(), MetaPrompts(), minibatch_size=8)
    parent = Candidate("Is it a lie?", 0, "initial")
    pools = fb.pools([parent], Streams(cfg.seed, 1))
    return fb, parent, sorted((ex.id, ex.label, pred) for ex, pred in pools[parent.id])


def test_feedback_pool_real_errors():
    _, _, rows = _ctx({})
    assert rows == [(f"t{i}", "No", "Yes") for i in (0, 2, 4, 6)]


def test_feedback_pool_wrong_labels_shows_flipped_labels():
    _, _, rows = _ctx({"labels": "wrong"})
    # against the flipped labels the "errors" are the rows the prompt actually got right
    assert rows == [(f"t{i}", "No", "Yes") for i in (1, 3, 5, 7)]


def test_feedback_pool_pseudo_errors():
    _, _, rows = _ctx({"errors": "pseudo"})
    assert rows == [(f"t{i}", "Yes", "No") for i in (1, 3, 5, 7)]  # correct rows, prediction flipped


def test_feedback_pool_without_evaluation_shows_every_row_without_labels():
    from apo_local.search.streams import Streams

    fb, parent, rows = _ctx({"show_evaluation": False})
    assert len(rows) == 8
    groups = fb.groups([parent], Streams(0, 1), n_groups=1, rows_per_group=8)
    assert len(groups) == 1 and "Label:" not in groups[0][1] and "Output: Yes" in groups[0][1]


def test_a_contradictory_study_setting_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    from apo_local.commands.cli import _run_cli

    monkeypatch.setattr(
        "sys.argv",
        [
            "apo-local",
            "optimize",
            "--feedback-errors",
            "pseudo",
            "--feedback-show-evaluation",
            "false",
            "--cache",
            "off",
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert _run_cli() == 2
    err = capsys.readouterr().err
    assert "feedback.errors: pseudo shows fabricated errors" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()
