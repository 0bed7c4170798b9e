"""The command line a user meets: optimize's grouped help with value names, --verbose after the command, flag
errors that name the flag, and compare's overrides (--seeds, --methods, sizes) run on a stand-in engine."""

from __future__ import annotations

import json
import logging

import pytest
import yaml
from click.testing import CliRunner

from apo_local.commands.cli import cli
from tests.helpers.stand_in import use_stand_in


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_optimize_help_is_grouped_by_section_with_value_names():
    res = invoke("optimize", "--help")
    assert res.exit_code == 0
    text = res.output
    headings = [line for line in text.splitlines() if line and not line.startswith(" ") and line.endswith(":")]
    assert headings[0] == "Run: config, run directory, size:"
    assert {"search (config section):", "selection (config section):", "target (config section):"} <= set(headings)
    assert " V " not in text and not any(line.rstrip().endswith(" V") for line in text.splitlines())
    for flag, metavar in (
        ("--rounds", "N"),
        ("--optimizer-temperature", "X"),
        ("--target-model", "ALIAS|DIR"),
        ("--selector", "NAME"),
        ("--acceptance", "bandit|naive|validated"),
        ("--optimizer-guided", "true|false"),
        ("--train-limit", "N"),
    ):
        assert f"  {flag} {metavar} " in text or f"  {flag} {metavar}\n" in text, flag
    search = text.split("search (config section):")[1].split("(config section):")[0]
    assert "--rounds" in search and "--selector" not in search  # each flag under its own section


@pytest.mark.parametrize(
    "args", [["models", "list", "--verbose"], ["--verbose", "models", "list"], ["models", "list", "-v"]]
)
def test_verbose_before_or_after_the_command(args, monkeypatch):
    monkeypatch.delenv("APO_LOCAL_VERBOSE", raising=False)
    res = invoke(*args)
    assert res.exit_code == 0, res.output
    import os

    assert os.environ.get("APO_LOCAL_VERBOSE") == "1"
    assert logging.getLogger("vllm").level == logging.INFO


def test_a_bad_flag_value_names_the_flag_and_a_bad_file_value_the_file(tmp_path):
    res = invoke("optimize", "--out", tmp_path / "a", "--rounds", "0")
    assert str(res.exception).startswith("--rounds (search.rounds): "), res.exception
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"search": {"rounds": 0}}))
    res = invoke("optimize", "--config", path, "--out", tmp_path / "b")
    assert str(res.exception).startswith(f"{path}: search.rounds: "), res.exception
    res = invoke("optimize", "--config", path, "--out", tmp_path / "c", "--beam-size", "two")
    assert str(res.exception).startswith(f"{path}: search.rounds: ")  # the file's value is the first error
    res = invoke("optimize", "--out", tmp_path / "d", "--n-gradients", "2", "--proposer", "rewrite")
    assert str(res.exception).startswith("--n-gradients (protegi.n_gradients): not used by proposer rewrite")


COMPARE = {
    "base": {
        "task": "liar",
        "cache": "off",
        "train_limit": 60,
        "search": {"rounds": 2, "beam_size": 2, "minibatch_size": 8, "max_expansion": 2, "hygiene": False},
        "selection": {"budget": 32, "batch_size": 8, "arms_per_round": 2},
        "optimizer": {"max_tokens": 32},
        "protegi": {"n_gradients": 1, "errors_per_gradient": 2, "mc_samples": 1},
        "evaluation": {"test_limit": 12, "validation_rows": 8, "attribution": False},
    },
    "methods": {"protegi": {}, "greedy": {"search": {"beam_size": 1}}, "no-iteration": {"search": {"rounds": 1}}},
    "seeds": [3, 4, 5],
}


@pytest.fixture
def compare_config(tmp_path, monkeypatch):
    use_stand_in(monkeypatch)
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(COMPARE, sort_keys=False))
    return path


def test_compare_takes_seeds_methods_and_sizes_from_flags(compare_config, tmp_path):
    out = tmp_path / "cmp"
    res = invoke(
        "compare",
        "--config",
        compare_config,
        "--out",
        out,
        "--seeds",
        "1",
        "--methods",
        "greedy",
        "--rounds",
        "1",
        "--test-limit",
        "6",
        "--beam-size",
        "3",
    )
    assert res.exit_code == 0, (res.output, res.exception)
    assert sorted(p.relative_to(out).as_posix() for p in out.glob("*/seed-*")) == ["greedy/seed-3", "protegi/seed-3"]
    greedy = yaml.safe_load((out / "greedy" / "seed-3" / "config.yaml").read_text())
    protegi = yaml.safe_load((out / "protegi" / "seed-3" / "config.yaml").read_text())
    assert greedy["search"]["rounds"] == protegi["search"]["rounds"] == 1
    assert greedy["search"]["beam_size"] == 1 and protegi["search"]["beam_size"] == 3  # greedy keeps its own beam
    assert greedy["evaluation"]["test_limit"] == 6 and greedy["seed"] == 3
    results = json.loads((out / "greedy" / "seed-3" / "results.json").read_text())
    assert results["rounds_completed"] == 1 and results["selected_test"]["metrics"]["n"] == 6
    assert yaml.safe_load((out / "compare.yaml").read_text())["seeds"] == [3]


def test_compare_seeds_count_from_the_configs_first(compare_config, tmp_path):
    from apo_local.experiments.compare import load_spec
    from apo_local.experiments.compare_cli import with_overrides

    spec = with_overrides(load_spec(compare_config), n_seeds=4)
    assert spec.seeds == [3, 4, 5, 6] and list(spec.methods) == list(COMPARE["methods"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--methods", "nope"], "--methods: unknown method 'nope' (the config's: protegi, greedy, no-iteration)"),
        (["--rounds", "0"], "--rounds (search.rounds): "),
        (["--seeds", "0"], "Invalid value for '--seeds'"),
    ],
)
def test_compare_flag_errors_name_the_flag(compare_config, tmp_path, args, message):
    res = invoke("compare", "--config", compare_config, "--out", tmp_path / "cmp", *args)
    assert res.exit_code != 0 and message in (str(res.exception) + res.output), (res.output, res.exception)
    assert not (tmp_path / "cmp").exists()
