"""Per-method config sections, presets, flag help, the pre-run estimate and the typed run state. No engine."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from apo_local.commands.cli import main
from apo_local.run.checkpoint import Checkpoint
from apo_local.run.config import PRESETS, build_config, dump_config, flag_help, flag_names, load_config
from apo_local.search.state import Candidate, Phase, RunState, Status
from apo_local.support.errors import ApoError

ROOT = Path(__file__).resolve().parents[2]
RUN_CONFIGS = sorted(p for p in (ROOT / "configs").glob("*.yaml") if not p.name.startswith(("compare-", "sweep-")))
V1_RUN = Path(__file__).resolve().parents[1] / "golden" / "v1-run"


def _refused(data: dict, match: str) -> str:
    with pytest.raises(ApoError) as info:
        build_config(data)
    msg = str(info.value)
    assert "\n" not in msg and match in msg, msg
    return msg


# -- per-method sections ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, key",
    [
        (
            {"search": {"proposer": "abo"}, "protegi": {"n_gradients": 2}},
            "protegi.n_gradients: not used by proposer abo",
        ),
        (
            {"search": {"proposer": "one-step"}, "protegi": {"reasons_per_gradient": 2}},
            "protegi.reasons_per_gradient: not used by proposer one-step",
        ),
        ({"rewrite": {"samples_per_parent": 2}}, "rewrite.samples_per_parent: not used by proposer protegi"),
        (
            {"search": {"proposer": "improve"}, "abo": {"demonstration": False}},
            "abo.demonstration: not used by proposer improve",
        ),
        ({"selection": {"selector": "ucb-e", "ucb_c": 1.0}}, "selection.ucb_c: not used by selector ucb-e"),
        ({"selection": {"ucb_e_a": 1.0}}, "selection.ucb_e_a: not used by selector ucb"),
        ({"selection": {"validation_k": 2}}, "selection.validation_k: not used by selector ucb with acceptance bandit"),
    ],
)
def test_a_knob_the_method_ignores_is_refused(data, key):
    _refused(data, key)


def test_knobs_of_the_method_in_use_are_accepted():
    cfg = build_config({"search": {"proposer": "abo"}, "abo": {"init_samples": 2, "work_tokens": 16}})
    assert (cfg.abo.init_samples, cfg.abo.work_tokens, cfg.abo.revise_samples) == (2, 16, 4)
    cfg = build_config({"search": {"proposer": "three-stage"}, "protegi": {"reasons_per_gradient": 2}})
    assert cfg.protegi.reasons_per_gradient == 2
    cfg = build_config(
        {
            "selection": {"selector": "ucb-e", "ucb_e_a": 0.5, "acceptance": "validated", "validation_k": 2},
            "protegi": {"mc_samples": 0},
        }
    )
    assert (cfg.selection.ucb_e_a, cfg.selection.validation_k) == (0.5, 2)


@pytest.mark.parametrize(
    "data, hint",
    [
        ({"search": {"n_gradients": 2}}, "search.n_gradients: moved to protegi.n_gradients"),
        ({"search": {"abo_work_tokens": 2}}, "search.abo_work_tokens: moved to abo.work_tokens"),
        ({"selection": {"c": 1.0}}, "selection.c: moved to selection.ucb_c"),
    ],
)
def test_keys_of_the_flat_layout_are_refused_with_the_new_key(data, hint):
    _refused(data, hint)


def test_cli_refuses_an_ignored_knob_with_one_line_and_exit_2(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(sys, "argv", ["apo-local", "optimize", "--out", str(tmp_path / "r"), "--ucb-e-a", "1"])
    with pytest.raises(SystemExit) as info:
        main()
    err = capsys.readouterr().err.splitlines()
    assert info.value.code == 2 and err == [
        "error: --ucb-e-a (selection.ucb_e_a): not used by selector ucb with acceptance bandit; remove it"
    ]


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: p.stem)
def test_shipped_configs_load_and_their_dump_loads_back_the_same(path):
    cfg = load_config(path)
    again = build_config(yaml.safe_load(dump_config(cfg)))
    assert again == cfg
    assert "protegi" not in yaml.safe_load(dump_config(build_config({"search": {"proposer": "abo"}})))


def test_resume_migrates_a_flat_config():
    old = {
        "search": {
            "proposer": "rewrite",
            "n_gradients": 3,
            "edits_per_gradient": 2,
            "mc_samples": 1,
            "demonstration": True,
            "abo_work_tokens": 128,
        },
        "selection": {"selector": "ucb", "c": 1.5, "validation_k": 4, "validation_size": 32},
    }
    cfg = build_config(old, resume=True)
    assert (cfg.rewrite.samples_per_parent, cfg.rewrite.mc_samples, cfg.selection.ucb_c) == (6, 1, 1.5)
    abo = build_config(
        {"search": {"proposer": "abo", "n_gradients": 0, "errors_per_gradient": 3, "demonstration": False}}, resume=True
    ).abo
    assert (abo.init_samples, abo.revise_samples, abo.errors_per_revision, abo.demonstration) == (1, 1, 3, False)
    one = build_config({"search": {"proposer": "one-step", "n_gradients": 2, "reasons_per_gradient": 1}}, resume=True)
    assert one.protegi.n_gradients == 2


# -- presets ---------------------------------------------------------------------------------------


def test_preset_lies_under_the_file_and_the_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("search: {rounds: 3}\nprotegi: {mc_samples: 0}\n")
    cfg = load_config(path, {"search.beam_size": 3}, preset="smoke")
    assert (cfg.search.rounds, cfg.search.beam_size, cfg.search.minibatch_size) == (3, 3, 8)  # file, flag, preset
    assert (cfg.protegi.mc_samples, cfg.protegi.n_gradients, cfg.evaluation.test_limit) == (0, 1, 16)
    abo = build_config({"search": {"proposer": "abo"}}, preset="smoke")  # only the proposer's own section
    assert abo.abo.init_samples == 1 and "protegi" not in yaml.safe_load(dump_config(abo))
    assert build_config({}, preset="paper") == build_config({})
    demo = build_config({}, preset="demo")
    # the demo preset is the demo config's sizes; the config also names its optimizer model
    assert demo == load_config(ROOT / "configs" / "demo.yaml", {"optimizer.model": demo.optimizer.model})
    assert demo.optimizer.model != load_config(ROOT / "configs" / "demo.yaml").optimizer.model
    assert set(PRESETS) == {"smoke", "demo", "paper"}
    with pytest.raises(ApoError, match="unknown preset"):
        build_config({}, preset="huge")


# -- help ------------------------------------------------------------------------------------------


def test_every_optimize_flag_has_a_meaning_and_a_default():
    from click.testing import CliRunner

    from apo_local.commands.cli import cli

    out = CliRunner().invoke(cli, ["optimize", "--help"]).output
    text = " ".join(out.split())
    blocks = {b.split()[0]: b for b in ("--" + part for part in text.split(" --")[1:]) if b.split()}
    helps = flag_help()
    for dotted, flag in flag_names().items():
        block = blocks[f"--{flag}"]
        assert "[default: " in block and len(helps[dotted].split("[default:")[0].strip()) > 8, block
    for flag, values in {
        "selector": "ucb | ucb-e | successive-rejects | successive-halving | uniform",
        "proposer": "protegi | one-step | three-stage | rewrite | improve | abo",
        "scoring-mode": "logprobs | generate",
        "acceptance": "bandit | naive | validated",
    }.items():
        assert values.replace(" ", "") in blocks[f"--{flag}"].replace(" ", ""), flag
    assert "[default: 6]" in blocks["--rounds"] and "[default: 2048]" in blocks["--budget"]
    assert "--preset [smoke|demo|paper]" in text


# -- estimate --------------------------------------------------------------------------------------


def test_estimate_grows_with_the_config_and_follows_the_method():
    from apo_local.run.estimate import estimate
    from apo_local.search.splits import eval_rows, train_rows
    from apo_local.tasks import load_task

    task = load_task("liar")

    def size(data):
        cfg = build_config(data)
        return estimate(cfg, task, train_rows(task, cfg), eval_rows(task, cfg))

    small = size({"search": {"rounds": 1}, "evaluation": {"test_limit": 10}})
    from apo_local.run.attribution import MAX_UNITS

    # minibatch, selection budget, final test of beam + initial, edit attribution (lineage of 1 round + ablations)
    assert small.target.prompts == 1 * 64 + 2048 + 5 * 10 + (1 + 1 + MAX_UNITS) * 10
    assert small.optimizer.calls == 3 and small.optimizer.prompts == 4 + 4 + (4 + 1)  # gradients, edits, paraphrases
    assert small.optimizer.output_tokens == (4 + 4 + 5 * 2) * 1024  # optimizer.max_tokens default: the reference value
    bigger = size({"search": {"rounds": 2}, "evaluation": {"test_limit": 10}})
    assert bigger.target.prompts > small.target.prompts and bigger.optimizer.prompts > small.optimizer.prompts
    naive = size(
        {
            "search": {"rounds": 1},
            "evaluation": {"test_limit": 10},
            "selection": {"acceptance": "naive"},
            "protegi": {"mc_samples": 0},
        }
    )
    assert naive.target.prompts == small.target.prompts - 2048
    free = size({"search": {"rounds": 1, "proposer": "rewrite"}, "evaluation": {"test_limit": 10}})
    assert free.target.prompts == small.target.prompts - 64  # data-free: no minibatch scoring
    assert small.lines()[0].startswith("pre-run estimate (1 rounds")


# -- typed state -----------------------------------------------------------------------------------


def test_candidate_status_is_typed_and_serializes_as_before():
    c = Candidate("Is it a lie?", 1, "edit", parent="p")
    c.mark(Status.REJECTED, "identical to parent")
    d = c.to_dict()
    assert d["status"] == "rejected: identical to parent" and "reason" not in d
    back = Candidate.from_dict(d)
    assert back.status is Status.REJECTED and back.reason == "identical to parent" and back == c
    assert Candidate.from_dict(dict(d, status="not selected")).status is Status.NOT_SELECTED


def test_run_state_round_trips_and_refuses_unknown_versions(tmp_path):
    state = RunState.fresh("Is it a lie?")
    state.history.append({"round": 1})
    Checkpoint(tmp_path / "checkpoint.json").save(state)
    data = json.loads((tmp_path / "checkpoint.json").read_text())
    assert data["version"] == 2 and data["phase"] == "start"
    assert Checkpoint(tmp_path / "checkpoint.json").load() == state
    with pytest.raises(ApoError, match="checkpoint version 3"):
        RunState.from_dict(dict(data, version=3))


def test_a_version_1_checkpoint_written_by_the_earlier_layout_migrates():
    raw = json.loads((V1_RUN / "checkpoint.json").read_text())
    assert raw["version"] == 1 and "state" in raw
    state = RunState.from_dict(raw)
    assert (state.round, state.phase) == (raw["state"]["round"], Phase(raw["state"]["phase"]))
    assert [c.to_dict() for c in state.candidates] == raw["state"]["candidates"]
    assert state.totals == raw["totals"] and state.predictions == raw["predictions"]
    assert RunState.from_dict(state.to_dict()) == state


def test_resume_keeps_the_method_section_of_a_config_in_todays_layout():
    """A run directory's own config.yaml (today's layout) read back for --resume keeps its protegi knobs."""
    from apo_local.run.config import build_config, dump_config

    cfg = build_config({"protegi": {"n_gradients": 2, "mc_samples": 1}, "selection": {"ucb_c": 1.5}})
    again = build_config(yaml.safe_load(dump_config(cfg)), resume=True)
    assert (again.protegi.n_gradients, again.protegi.mc_samples, again.selection.ucb_c) == (2, 1, 1.5)
    assert again == cfg
