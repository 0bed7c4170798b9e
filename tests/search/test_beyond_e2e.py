"""Beyond instruction edits, on the real engine with the embedded model on Liar (tiny runs on the shared
session engine): few-shot demonstrations interleaved with instruction edits, length-aware selection with
its report, and the Pareto parent selector against beam + UCB in one ``compare`` run."""

from __future__ import annotations

import csv
import json

import pytest

from apo_local.run.config import build_config
from apo_local.run.optimize import optimize
from apo_local.search.acceptance.length import length_beam, prompt_tokens, shortest_within_ci
from apo_local.search.proposers.fewshot import demo_pool
from apo_local.search.splits import train_rows
from apo_local.tasks.demos import split_prompt

pytestmark = pytest.mark.engine

BASE = {
    "task": "liar",
    "train_limit": 60,
    "search": {"rounds": 1, "beam_size": 2, "minibatch_size": 4, "max_expansion": 4},
    "selection": {"selector": "ucb", "budget": 16, "batch_size": 4, "arms_per_round": 2},
    "optimizer": {"max_tokens": 32},
    "evaluation": {"test_limit": 6},
}


def _candidates(run) -> list[dict]:
    return json.loads((run / "rounds" / "round-01.json").read_text())["candidates"]


def test_demonstrations_interleaved_with_instruction_edits(engine, liar, tmp_path):
    data = dict(
        BASE,
        search=dict(BASE["search"], proposer="instruction+fewshot"),
        protegi={"n_gradients": 1, "errors_per_gradient": 2, "mc_samples": 0},
        fewshot={"samples_per_parent": 2, "max_demos": 2, "pool_size": 8},
    )
    cfg = build_config(data, {"cache": str(tmp_path / "cache.sqlite")})
    result = optimize(cfg, tmp_path / "run")
    cands = _candidates(tmp_path / "run")
    ops = {c["operator"] for c in cands}
    trace = [json.loads(line) for line in (tmp_path / "run" / "trace.jsonl").read_text().splitlines()]
    optimizer_phases = {t["phase"] for t in trace if t.get("role") == "optimizer"}
    # both sections move in the same round: demonstration moves, and instruction edits asked of the optimizer
    # (an edit becomes a candidate only from a gradient that finished within max_tokens; the stand-in
    # engine test in tests/search/test_search_logic_equivalence.py checks the interleaving with every reply finished)
    assert "demo-add" in ops and "gradient" in optimizer_phases, (ops, optimizer_phases)
    pool = {ex.id: ex for ex in demo_pool(liar, 0, 8)}
    searched = {ex.id for ex in train_rows(liar, cfg)}
    test_ids = {ex.id for ex in liar.split("test")}
    with_demos = [c for c in cands if split_prompt(c["text"])[1]]
    assert with_demos
    for c in with_demos:
        instruction, demos = split_prompt(c["text"])
        assert instruction == result.initial_prompt  # a demonstration move keeps the instruction
        for d in demos:  # training rows of the pool only: never test, never scored by the search
            assert d["id"] in pool and d["id"] not in searched and d["id"] not in test_ids
            assert (d["input"], d["label"]) == (pool[d["id"]].input, pool[d["id"]].label)
    edits = [c for c in cands if c["operator"] == "edit"]
    assert all(not split_prompt(c["text"])[1] for c in edits)  # the parent had no demonstrations to keep
    scored = [c for c in with_demos if c["estimate"] is not None]
    assert scored and all(c["pulls"] > 0 for c in scored)  # selection scored them from label log-probs
    assert optimizer_phases <= {"gradient", "edit"}  # demonstration moves make no optimizer call
    text = with_demos[0]["text"]
    shown = liar.render(text, liar.split("test")[0])
    assert shown.count("# Example") == len(split_prompt(text)[1]) and shown.index("# Example") < shown.index("Context:")


def test_length_aware_selection_and_its_report(engine, liar, tmp_path):
    data = dict(
        BASE,
        search=dict(BASE["search"], proposer="fewshot"),
        fewshot={"samples_per_parent": 4, "max_demos": 2, "pool_size": 8},
        selection=dict(BASE["selection"], length_objective="pareto", pick="shortest-within-ci"),
    )
    result = optimize(build_config(data, {"cache": str(tmp_path / "cache.sqlite")}), tmp_path / "run")
    length = result.history[0]["selection"]["length"]
    cands = {c["id"]: c for c in _candidates(tmp_path / "run")}
    ids = [p[0] for p in length["points"]]
    assert set(ids) == {i for i, c in cands.items() if c["estimate"] is not None}
    tokens = prompt_tokens(liar, engine, [cands[i]["text"] for i in ids])
    assert [p[2] for p in length["points"]] == tokens and len(set(tokens)) > 1  # demonstrations make them differ
    points = [(p[1], p[2]) for p in length["points"]]
    assert [b[0] for b in result.history[0]["beam"]] == [ids[i] for i in length_beam(points, 2, "pareto")]
    assert set(length["front"]) <= set(ids)
    pick = result.pick
    assert pick["rule"] == "shortest-within-ci"
    beam = pick["beam"]
    chosen = beam[shortest_within_ci([b[1] for b in beam], [b[2] for b in beam], [b[3] for b in beam])][0]
    assert pick["selected_id"] == chosen and cands[chosen]["text"] == result.selected_prompt

    from apo_local.report import write_run_report

    page = write_run_report(tmp_path / "run").read_text()
    assert "Pareto front" in page and (tmp_path / "run" / "plots" / "length-front.png").stat().st_size > 1000


def test_pareto_parents_against_beam_ucb_on_equal_budget(engine, tmp_path):
    from apo_local.experiments.compare import compare, spec_from_dict

    base = dict(
        BASE,
        cache=str(tmp_path / "cache.sqlite"),
        search=dict(BASE["search"], proposer="fewshot"),
        fewshot={"samples_per_parent": 3, "max_demos": 2, "pool_size": 8},
    )
    data = {
        "base": base,
        "methods": {"ucb": {}, "pareto": {"selection": {"selector": "pareto"}}},
        "seeds": [0],
        "budget": {"max_target_calls": 300},
        "baseline": "ucb",
    }
    rows = compare(spec_from_dict(data), tmp_path / "cmp")
    assert [r["method"] for r in rows] == ["ucb", "pareto"]
    runs = {r["method"]: r for r in csv.DictReader((tmp_path / "cmp" / "runs.csv").open())}
    for m in ("ucb", "pareto"):
        res = json.loads((tmp_path / "cmp" / m / "seed-0" / "results.json").read_text())
        sel = res["history"][0]["selection"]
        assert sel["selector"] == m and sel["budget_used"] <= 16
    pareto = _candidates(tmp_path / "cmp" / "pareto" / "seed-0")
    pulls = {c["pulls"] for c in pareto if c["status"] in ("beam", "not selected")}
    assert len(pulls) == 1 and pulls.pop() == 16 // len([c for c in pareto if c["status"] in ("beam", "not selected")])
    assert runs["pareto"]["stop_reason"] == runs["ucb"]["stop_reason"] == "completed"
    assert "| pareto | 1 |" in (tmp_path / "cmp" / "results.md").read_text()
