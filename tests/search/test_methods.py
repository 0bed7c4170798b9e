"""A method is one module: the registry of proposal methods (``apo_local/search/proposers``). A new method's module,
found where it lies, is named by a config, sized by ``--preset``, checked for unused knobs, costed by the estimate
and run by the search, with nothing added anywhere else. Runs use the scripted engine (tests/helpers/stand_in.py)."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from apo_local.run.config import build_config, dump_config
from apo_local.run.estimate import estimate
from apo_local.run.optimize import optimize
from apo_local.search import proposers
from apo_local.search.proposers import METHODS, Method, declared_methods, method_of, register_method
from apo_local.search.splits import eval_rows, train_rows, validation_rows
from apo_local.support.errors import ApoError
from apo_local.tasks import load_task
from tests.helpers.stand_in import use_stand_in

# A method of its own, as a user (or a new built-in) writes it: one module, nothing else.
ECHO_MODULE = '''
from apo_local.search.proposers.method import Method
from apo_local.search.state import Candidate


class EchoProposer:
    """Each parent's instruction with one plain sentence added."""

    name = "echo"

    def __init__(self, mc_samples=2):
        self.mc_samples = mc_samples

    def propose(self, parents, ctx):
        made = [Candidate(p.text + f" Answer Yes or No ({i}).", ctx.round, "echo", parent=p.id)
                for p in parents for i in range(1 + self.mc_samples)]
        return ctx.admit(made, parents)


def _cost(x):
    return x.parents * (1 + x.cfg.protegi.mc_samples)  # no engine call: only the proposals


METHOD = Method(name="echo", proposer=EchoProposer, knobs={"protegi": frozenset({"mc_samples"})}, cost=_cost,
                presets={"smoke": {"protegi": {"mc_samples": 1}}})
'''


@pytest.fixture
def echo_method(tmp_path, monkeypatch):
    """The echo module in a package of its own, found and registered; the registry restored afterwards."""
    package = tmp_path / "my_methods"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "echo.py").write_text(textwrap.dedent(ECHO_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(proposers, "METHODS", dict(METHODS))
    monkeypatch.setattr(proposers, "PROPOSERS", dict(proposers.PROPOSERS))
    import apo_local.run.config as config

    monkeypatch.setattr(config, "METHODS", proposers.METHODS)
    found = declared_methods([str(package)], "my_methods")
    yield [register_method(m) for m in found]
    sys.modules.pop("my_methods.echo", None), sys.modules.pop("my_methods", None)


def test_the_built_in_methods_are_found_in_their_modules_in_the_order_of_the_docs():
    assert list(METHODS) == [
        "protegi",
        "one-step",
        "three-stage",
        "rewrite",
        "improve",
        "abo",
        "fewshot",
        "instruction+fewshot",
    ]
    assert proposers.METHOD_SECTIONS == ("protegi", "rewrite", "improve", "abo", "fewshot")
    for name, method in METHODS.items():
        assert method.make().name == name  # each declaration builds its own proposer
    assert method_of("one-step").knobs["protegi"] == METHODS["protegi"].knobs["protegi"] - {"reasons_per_gradient"}
    with pytest.raises(ApoError, match="unknown proposer 'opro' \\(known: protegi, one-step"):
        method_of("opro")


def test_a_new_method_is_one_module(echo_method, tmp_path, monkeypatch):
    (echo,) = echo_method
    assert echo.name == "echo" and method_of("echo") is echo
    # the config names it, its preset sizes its knobs, and the knobs it does not read are refused
    cfg = build_config({"task": "liar", "search": {"proposer": "echo"}}, preset="smoke")
    assert cfg.protegi.mc_samples == 1 and cfg.search.rounds == 1
    assert "n_gradients" not in dump_config(cfg)
    with pytest.raises(ApoError, match="protegi.n_gradients: not used by proposer echo"):
        build_config({"search": {"proposer": "echo"}, "protegi": {"n_gradients": 2}})
    # the estimate reads its cost: no optimizer call, its proposals selected by the bandit
    task = load_task("liar")
    est = estimate(cfg, task, train_rows(task, cfg), eval_rows(task, cfg)[:16], validation_rows(task, cfg))
    assert est.optimizer.calls == 0 and est.target.prompts > 0
    # the search runs it: its candidates, made by its operator, reach the round file
    use_stand_in(monkeypatch)
    run = build_config(
        {
            "task": "liar",
            "search": {"proposer": "echo", "rounds": 2, "hygiene": False},
            "train_limit": 40,
            "evaluation": {"test_limit": 6, "validation_rows": 4},
            "selection": {"budget": 8, "batch_size": 4},
        },
        {"cache": "off"},
        preset="smoke",
    )
    optimize(run, tmp_path / "run")
    made = json.loads((tmp_path / "run" / "rounds" / "round-01.json").read_text())["candidates"]
    assert {c["operator"] for c in made} >= {"echo"}
    assert any(c["text"].endswith("Answer Yes or No (1).") for c in made)


def test_a_library_user_reaches_the_registry_from_the_package():
    import apo_local as apo

    assert apo.register_method is register_method and apo.Method is Method


def test_a_method_whose_knobs_live_in_no_section_is_refused():
    stray = Method(name="stray", proposer=object, knobs={"nowhere": frozenset({"k"})}, cost=lambda x: 0)
    with pytest.raises(ApoError, match="method 'stray': no config section 'nowhere'"):
        register_method(stray)
    assert "stray" not in METHODS


def test_the_readmes_own_method_example_runs(monkeypatch):
    """README "Your own method": its block registers a method and builds a config that names it."""
    import re
    from pathlib import Path

    import apo_local.run.config as config

    monkeypatch.setattr(proposers, "METHODS", dict(METHODS))
    monkeypatch.setattr(proposers, "PROPOSERS", dict(proposers.PROPOSERS))
    monkeypatch.setattr(config, "METHODS", proposers.METHODS)
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Your own method\n", 1)[1].split("\n### ", 1)[0]
    (block,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    scope: dict = {}
    exec(block, scope)
    assert scope["cfg"].search.proposer == "hedge" and "hedge" in proposers.METHODS


class _Echo:
    """A proposer a library user passes as an object (no registry): one plain sentence added to each parent."""

    name = "echo-object"

    def propose(self, parents, ctx):
        from apo_local.search.state import Candidate

        made = [Candidate(p.text + " Answer Yes or No.", ctx.round, "echo", parent=p.id) for p in parents]
        return ctx.admit(made, parents)

    @staticmethod
    def cost(expansion) -> int:
        return expansion.parents  # no engine call, one proposal per parent


class _KeepParents:
    """An acceptance rule passed as an object: the kept parents stay the beam, unscored."""

    name = "keep-parents"

    def accept(self, candidates, ctx):
        from apo_local.search.state import Status

        kept = [c for c in candidates if c.status == Status.KEPT]
        return kept, {"rule": self.name}

    @staticmethod
    def cost(size) -> None:
        size.target.add(7, 1)  # a marker the estimate must carry


def test_a_library_user_passes_strategy_objects_not_names(tmp_path, monkeypatch):
    """optimize(cfg, proposer=..., acceptance=...) runs the objects, costs them by their own ``cost``, and says so
    in the run directory's config; resume continues with the same objects."""
    use_stand_in(monkeypatch)
    cfg = build_config({"task": "liar", "search": {"rounds": 1}}, preset="smoke")
    sizes = []
    result = optimize(cfg, tmp_path / "run", proposer=_Echo(), acceptance=_KeepParents(), on_estimate=sizes.append)
    rounds = json.loads((tmp_path / "run" / "rounds" / "round-01.json").read_text())
    assert {c["operator"] for c in rounds["candidates"]} == {"initial", "echo"}  # the object proposed
    assert result.history[0]["selection"] == {"rule": "keep-parents"}  # the object selected
    assert result.selected_prompt == result.initial_prompt
    header = (tmp_path / "run" / "config.yaml").read_text().splitlines()
    assert any("search.proposer: a strategy object (" in line and "_Echo" in line for line in header)
    assert any("selection.acceptance: a strategy object (" in line for line in header)
    named = estimate(
        cfg,
        load_task("liar"),
        train_rows(load_task("liar"), cfg),
        eval_rows(load_task("liar"), cfg),
        validation_rows(load_task("liar"), cfg),
    )
    assert sizes[0].optimizer.calls == 0 < named.optimizer.calls  # the echo object's cost: no optimizer call
    assert sizes[0].target.calls < named.target.calls  # the rule's marker instead of the bandit's rounds


def test_every_acceptance_rule_declares_itself_in_its_module():
    """``selection.acceptance`` names a rule of the registry; each rule module declares its options, the selection
    keys it reads (each one a real key) and its cost."""
    from apo_local.config.schema import SelectionConfig
    from apo_local.run.estimate import RoleSize
    from apo_local.search.acceptance import RULES, SelectionCost, make_acceptance

    assert sorted(RULES) == ["bandit", "naive", "validated"]
    cfg = build_config({"task": "liar"})
    for name, rule in RULES.items():
        assert rule.knobs <= set(SelectionConfig.model_fields), name
        made = make_acceptance(
            build_config({"task": "liar", "selection": {"acceptance": name}, "protegi": {"mc_samples": 0}})
        )
        assert made.name == name
        target = RoleSize()
        rule.cost(SelectionCost(cfg, target, parents=2, new=6, target_in=100))
        assert (target.prompts > 0) == (name != "naive"), name  # naive scores nothing
