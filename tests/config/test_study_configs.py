"""The shipped configs, without an engine: every one loads through its own loader (run configs, compare-*.yaml,
sweep-*.yaml with every cell), every study config differs from configs/liar-protegi.yaml only in its study keys,
and the ``extends:`` mechanism the study configs are written with."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from apo_local.experiments.compare import load_spec
from apo_local.experiments.sweep.grid import expand
from apo_local.experiments.sweep.spec import load_sweep
from apo_local.run.config import build_config, dump_config, flatten_keys, load_config, read_run_config, unused_knobs
from apo_local.support.errors import ApoError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
ALL = sorted(p.name for p in CONFIGS.glob("*.yaml"))
BASE = "liar-protegi.yaml"

# Per study config, the keys it may change against liar-protegi.yaml: its study variable (and what the
# variable needs: naive and validated acceptance make no paraphrases, validated names its sample).
STUDY_KEYS = {
    "baseline-no-iteration.yaml": {"search.rounds"},
    "baseline-greedy.yaml": {"search.beam_size"},
    "baseline-mc.yaml": {"protegi.n_gradients", "protegi.mc_samples"},
    "baseline-uniform.yaml": {"selection.selector"},
    "ablation-one-step.yaml": {"search.proposer"},
    "ablation-three-stage.yaml": {"search.proposer"},
    "ablation-improve.yaml": {"search.proposer"},
    "ablation-wrong-labels.yaml": {"feedback.labels"},
    "ablation-no-evaluation.yaml": {"feedback.show_evaluation"},
    "ablation-naive-acceptance.yaml": {"selection.acceptance", "search.beam_size", "protegi.mc_samples"},
    "ablation-validated-acceptance.yaml": {
        "selection.acceptance",
        "search.beam_size",
        "protegi.mc_samples",
        "selection.validation_k",
        "selection.validation_size",
    },
    "pseudo-errors.yaml": {"feedback.errors"},
    "abo.yaml": {"search.proposer"},
    "abo-no-demo.yaml": {"search.proposer", "abo.demonstration"},
    "abo-logprob-ablation.yaml": {"search.proposer", "abo.answer"},
    "liar-protegi-reference.yaml": {
        "scoring.mode",
        "scoring.max_tokens",
        "scoring.parse",
        "selection.reward",
        "selection.final_pick",
        "evaluation.validation_split",
        "search.hygiene",
    },
}


def _kind(name: str) -> str:
    return "compare" if name.startswith("compare-") else "sweep" if name.startswith("sweep-") else "run"


@pytest.mark.parametrize("name", ALL)
def test_every_shipped_config_loads_through_its_own_loader(name):
    path = CONFIGS / name
    if _kind(name) == "compare":
        spec = load_spec(path)  # validates every method's run config
        assert spec.baseline in spec.methods
        for method in spec.methods:
            for seed in spec.seeds:
                assert spec.config(method, seed).seed == seed
    elif _kind(name) == "sweep":
        spec, base = load_sweep(path)
        assert expand(spec, base, origin=name)  # every cell's run config
    else:
        cfg = load_config(path)
        assert build_config(yaml.safe_load(dump_config(cfg))) == cfg  # what a run directory's config.yaml holds


def test_the_compare_liar_methods_match_their_study_configs():
    """configs/compare-liar.yaml: naive and validated acceptance load (they make no paraphrases), and each
    method with its study config changes the same keys against the base."""
    spec = load_spec(CONFIGS / "compare-liar.yaml")
    naive, validated = spec.config("naive-acceptance", 0), spec.config("validated-acceptance", 0)
    assert naive.protegi.mc_samples == validated.protegi.mc_samples == 0
    assert naive.selection.final_pick == validated.selection.final_pick == "method"
    base, liar = _flat(spec.config("protegi", 0)), _flat(load_config(CONFIGS / BASE))
    assert {k for k, v in base.items() if liar.get(k) != v} <= {
        "search.rounds",
        "budget.max_target_calls",
        "budget.max_optimizer_tokens",
        "selection.warmup",
    }
    assert base["selection.warmup"] in (None, liar["selection.warmup"])  # unset: batch_size,
    assert base["selection.batch_size"] == liar["selection.warmup"]  # which is liar-protegi's warmup
    for method, study in [
        ("naive-acceptance", "ablation-naive-acceptance.yaml"),
        ("validated-acceptance", "ablation-validated-acceptance.yaml"),
        ("mc", "baseline-mc.yaml"),
        ("wrong-labels", "ablation-wrong-labels.yaml"),
        ("abo", "abo.yaml"),
        ("greedy", "baseline-greedy.yaml"),
        ("abo-no-demo", "abo-no-demo.yaml"),
        ("uniform", "baseline-uniform.yaml"),
        ("pseudo-errors", "pseudo-errors.yaml"),
        ("improve", "ablation-improve.yaml"),
        ("no-evaluation", "ablation-no-evaluation.yaml"),
    ]:
        mine, theirs = spec.config(method, 0), load_config(CONFIGS / study)
        changed = _diff(mine, base)
        assert changed == _diff(theirs, liar), method
        assert {k: _flat(mine)[k] for k in changed} == {k: _flat(theirs)[k] for k in changed}, method


def _flat(cfg) -> dict:
    return flatten_keys(cfg.model_dump(mode="json"))


def _diff(cfg, base_flat: dict) -> set[str]:
    """Keys whose value differs from the base's, less those this config's method does not use."""
    unused = {f"{section}.{key}" for section, keys in unused_knobs(cfg).items() for key in keys}
    return {k for k, v in _flat(cfg).items() if base_flat.get(k) != v and k not in unused}


def test_every_study_config_has_its_study_keys_listed():
    studies = {n for n in ALL if n.startswith(("ablation-", "baseline-", "abo", "pseudo-errors"))}
    assert studies <= set(STUDY_KEYS), sorted(studies - set(STUDY_KEYS))


@pytest.mark.parametrize("name", sorted(STUDY_KEYS))
def test_a_study_config_differs_from_liar_protegi_only_in_its_study_keys(name):
    base = load_config(CONFIGS / BASE)
    cfg = load_config(CONFIGS / name)
    changed = _diff(cfg, _flat(base))
    assert changed and changed <= STUDY_KEYS[name], sorted(changed - STUDY_KEYS[name])
    assert (CONFIGS / name).read_text().startswith("#")  # a header citing the study


def test_the_study_base_reports_the_method_s_own_prompt_and_applies_operator_neutral_hygiene():
    base = load_config(CONFIGS / BASE)
    assert base.selection.final_pick == "method" and base.search.hygiene == "form"


# -- extends ------------------------------------------------------------------------------------------


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_extends_lays_a_config_over_its_base_and_the_run_config_holds_the_result(tmp_path):
    _write(
        tmp_path / "base.yaml",
        {
            "task": "liar",
            "search": {"rounds": 3, "beam_size": 2},
            "protegi": {"n_gradients": 2, "mc_samples": 1},
            "selection": {"selector": "ucb", "ucb_c": 1.5, "warmup": 8},
        },
    )
    (tmp_path / "sub").mkdir()
    _write(tmp_path / "sub" / "mid.yaml", {"extends": "../base.yaml", "search": {"beam_size": 1}})
    child = _write(tmp_path / "sub" / "child.yaml", {"extends": "mid.yaml", "seed": 3})
    data = read_run_config(child)
    assert "extends" not in data
    assert data["search"] == {"rounds": 3, "beam_size": 1} and data["seed"] == 3 and data["protegi"]["n_gradients"] == 2
    cfg = load_config(child)
    assert cfg == build_config(
        {
            "task": "liar",
            "seed": 3,
            "search": {"rounds": 3, "beam_size": 1},
            "protegi": {"n_gradients": 2, "mc_samples": 1},
            "selection": {"selector": "ucb", "ucb_c": 1.5, "warmup": 8},
        }
    )
    dumped = yaml.safe_load(dump_config(cfg))  # the run directory's config.yaml: resolved whole, no extends
    assert "extends" not in dumped and dumped["search"]["beam_size"] == 1 and dumped["selection"]["ucb_c"] == 1.5


def test_extends_leaves_out_inherited_knobs_the_new_method_does_not_use(tmp_path):
    _write(
        tmp_path / "base.yaml",
        {"protegi": {"n_gradients": 2, "mc_samples": 1}, "selection": {"selector": "ucb", "ucb_c": 1.5, "warmup": 8}},
    )
    improve = _write(
        tmp_path / "improve.yaml",
        {"extends": "base.yaml", "search": {"proposer": "improve"}, "selection": {"selector": "uniform"}},
    )
    cfg = load_config(improve)
    assert cfg.search.proposer == "improve" and cfg.selection.selector == "uniform"
    assert "protegi" not in read_run_config(improve) and "ucb_c" not in read_run_config(improve)["selection"]
    own = _write(
        tmp_path / "own.yaml",
        {"extends": "base.yaml", "search": {"proposer": "improve"}, "protegi": {"n_gradients": 3}},
    )
    with pytest.raises(ApoError, match=r"protegi.n_gradients: not used by proposer improve"):
        load_config(own)  # a knob the file itself sets for a method it does not run is still refused


@pytest.mark.parametrize(
    "files, message",
    [
        ({"a.yaml": {"extends": "b.yaml"}, "b.yaml": {"extends": "a.yaml"}}, "extends this file again"),
        ({"a.yaml": {"extends": "a.yaml"}}, "extends this file again"),
        ({"a.yaml": {"extends": "missing.yaml"}}, "missing.yaml does not exist"),
        ({"a.yaml": {"extends": 3}}, "extends: expected the path of a run config file"),
        ({"a.yaml": {"extends": "b.yaml"}, "b.yaml": {"search": {"rounds": "many"}}}, "search.rounds"),
    ],
)
def test_a_bad_extends_is_one_error_line(tmp_path, files, message):
    for name, data in files.items():
        _write(tmp_path / name, data)
    with pytest.raises(ApoError, match=message) as err:
        load_config(tmp_path / "a.yaml")
    assert "\n" not in str(err.value)


def test_a_sweep_base_path_resolves_extends(tmp_path):
    _write(tmp_path / "base.yaml", {"search": {"rounds": 2}})
    _write(tmp_path / "run.yaml", {"extends": "base.yaml", "search": {"beam_size": 1}})
    sweep = _write(tmp_path / "sweep.yaml", {"base": "run.yaml", "grid": {"seed": [0]}})
    assert load_sweep(sweep)[1] == {"search": {"rounds": 2, "beam_size": 1}}
