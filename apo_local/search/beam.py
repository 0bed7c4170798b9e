"""The search loop: rounds of expand (proposer) -> select (bandit) over a beam of prompts.

Every method and ablation is a configuration of this one loop: which proposer, which selector (or
acceptance rule: bandit, naive, validated), what beam size, how many rounds, and what feedback the
optimizer is shown (``feedback``: true or wrong labels, real or pseudo errors, with or without
evaluation). The state is checkpointed at every phase boundary; a resumed run re-derives its
randomness from (seed, round, purpose) and replays finished engine calls from the result cache, so
it ends with the same ``results.json`` as an uninterrupted run. Each round's history entry records
whether an update was accepted into the beam and the beam's prompt lengths (tokens).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field

from apo_local.config import RunConfig, dump_config
from apo_local.engine import RoleEngine, Trace
from apo_local.errors import ApoError
from apo_local.run_dir import RunDir, write_json
from apo_local.scoring import Scorer
from apo_local.search import acceptance
from apo_local.search.candidates import Candidate
from apo_local.search.feedback import corrupt_examples
from apo_local.search.context import SearchContext
from apo_local.search.meta_prompts import MetaPrompts
from apo_local.search.proposers import make_proposer
from apo_local.search.selectors import make_selector
from apo_local.tasks import Task

log = logging.getLogger("apo_local")


@dataclass
class RunResult:
    metric: str
    initial_prompt: str
    best_prompt: str  # best beam prompt on the test split ("max-pooled", as ProTeGi reports)
    selected_prompt: str  # best beam prompt by the bandit's training estimate (no test peeking)
    initial_test: dict
    best_test: dict
    selected_test: dict
    beam: list[dict]
    rounds_completed: int
    stop_reason: str
    usage: dict  # by role: calls, prompts, input_tokens, output_tokens (identical on resume)
    faults: dict  # counted fallbacks: parse failures, rejected candidates, ...
    history: list[dict] = field(default_factory=list)  # per round: beam estimates (and test, if asked)
    time: dict = field(default_factory=dict)  # wall seconds, by role, cache hits (vary across runs)

    def to_dict(self) -> dict:
        return asdict(self)


def _selector_params(cfg: RunConfig) -> dict:
    sel = cfg.selection
    params = dict(budget=sel.budget, batch_size=sel.batch_size)
    if sel.selector == "ucb":
        params.update(c=sel.c, arms_per_round=sel.arms_per_round)
    elif sel.selector == "ucb-e":
        params.update(a=sel.c, arms_per_round=sel.arms_per_round)
    return params


class BeamSearch:
    def __init__(self, task: Task, target: RoleEngine, optimizer: RoleEngine, cfg: RunConfig, run_dir: RunDir | None = None):
        self.task, self.cfg, self.run_dir = task, cfg, run_dir
        self.trace: Trace = target.trace
        self.proposer = make_proposer(cfg.search.proposer)
        self.selector = make_selector(cfg.selection.selector, **_selector_params(cfg))
        train = task.check_split("train", min_size=cfg.search.minibatch_size, size_name="search.minibatch_size")
        if cfg.train_limit:
            train = sorted(train, key=lambda ex: hash_key(cfg.seed, ex.id))[: cfg.train_limit]
        self.scorer = Scorer(task, target, cfg.scoring.mode, cfg.scoring.max_tokens)
        self.ctx = SearchContext(task, train, self.scorer, optimizer, cfg, MetaPrompts(cfg.meta_prompts.model_dump()))
        self.test = task.check_split(cfg.evaluation.test_split, min_size=cfg.evaluation.test_limit or 1,
                                     size_name="evaluation.test_limit")[: cfg.evaluation.test_limit]
        f = cfg.feedback  # labels the selection rewards are computed against (same example ids)
        if "wrong" in (f.labels, f.selection_labels) or f.errors == "pseudo":
            corrupt_examples(train[:1], task, cfg.seed, f.numeric_offset)  # refuse a task that can't be corrupted, now
        self.selection_train = train if f.selection_labels == "true" else corrupt_examples(train, task, cfg.seed, f.numeric_offset)

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> RunResult:
        state = self._load_state()
        if state["phase"] == "done" and self.run_dir and self.run_dir.results.is_file():
            return RunResult(**json.loads(self.run_dir.results.read_text()))
        started = time.monotonic() - state["elapsed"]
        stop_reason = "completed"
        while True:
            state["elapsed"] = time.monotonic() - started
            if state["phase"] in ("start", "selected"):
                if state["round"] >= self.cfg.search.rounds:
                    break
                if (stop_reason := self._over_budget(state)) != "completed":
                    break
                state["round"] += 1
                self.ctx.round = state["round"]
                log.info("round %d/%d: expanding %d beam prompts", state["round"], self.cfg.search.rounds, len(state["beam"]))
                parents = [Candidate.from_dict(c) for c in state["beam"]]
                new = self.proposer.propose(parents, self.ctx)
                state["candidates"] = [_as_kept(p) for p in parents] + [c.to_dict() for c in new]
                state["phase"] = "expanded"
                self._write_round(state)
                self._checkpoint(state)
            if state["phase"] == "expanded":
                self.ctx.round = state["round"]
                if (stop_reason := self._over_budget(state)) != "completed":
                    break
                self._select(state)
                state["phase"] = "selected"
                self._write_round(state)
                self._checkpoint(state)
                best = state["beam"][0]
                log.info("round %d: beam estimates %s; best: %s", state["round"],
                         [round(c["estimate"] or 0, 3) for c in state["beam"]], _short(best["text"]))
        result = self._final(state, stop_reason)
        state["phase"] = "done"
        self._checkpoint(state)
        return result

    # -- phases --------------------------------------------------------------------------

    def _select(self, state: dict) -> None:
        parent_ids = {c["id"] for c in state["candidates"] if c["status"] == "kept"}
        mode = self.cfg.selection.acceptance  # bandit (ProTeGi) | naive | validated (Melcer et al., 2025)
        if mode == "naive":
            selection = self._accept_naive(state)
        elif mode == "validated":
            selection = self._accept_validated(state)
        else:
            selection = self._select_bandit(state)
        texts = [c["text"] for c in state["beam"]]
        entry = {"round": state["round"], "beam": [(c["id"], c["estimate"]) for c in state["beam"]],
                 "selection": selection,
                 "accepted": any(c["id"] not in parent_ids for c in state["beam"]),
                 "prompt_tokens": self.scorer.engine.count_tokens(texts) if texts else []}
        if self.cfg.evaluation.per_round_test:
            self.trace.at("test", state["round"])
            evals = self.scorer.evaluate_many(texts, self.test)
            entry["test"] = [e.metrics[self.task.metric.name] for e in evals]
        state["history"].append(entry)

    def _select_bandit(self, state: dict) -> dict:
        arms = [Candidate.from_dict(c) for c in state["candidates"] if c["status"] in ("new", "kept")]
        rng = self.ctx.rng("select")
        train = self.selection_train

        def pull(requests: list[tuple[int, int]]) -> list[list[float]]:
            pairs, sizes = [], []
            for arm, n in requests:
                sample = rng.sample(train, n) if n <= len(train) else rng.choices(train, k=n)
                pairs += [(arms[arm].text, ex) for ex in sample]
                sizes.append(n)
            self.trace.at("select", state["round"])
            rewards = self.scorer.rewards(pairs)
            out, pos = [], 0
            for n in sizes:
                out.append(rewards[pos : pos + n])
                pos += n
            return out

        res = self.selector.select(len(arms), self.cfg.search.beam_size, pull, rng)
        est = {a.id: (None if math.isnan(e) else e, p) for a, e, p in zip(arms, res.estimates, res.pulls)}
        for c in state["candidates"]:
            if c["id"] in est:
                c["estimate"], c["pulls"] = est[c["id"]]
        _mark_beam(state["candidates"], {arms[i].id for i in res.chosen})
        state["beam"] = [dict(arms[i].to_dict(), estimate=est[arms[i].id][0], pulls=est[arms[i].id][1]) for i in res.chosen]
        return {"selector": self.selector.name, "budget_used": res.budget_used, "bandit_rounds": res.rounds}

    def _accept_naive(self, state: dict) -> dict:
        cands = state["candidates"]
        new = [c for c in cands if c["status"] == "new"]
        kept = [c for c in cands if c["status"] == "kept"]
        beam = acceptance.naive_beam(new, kept, self.cfg.search.beam_size, self.ctx.rng("accept"))
        _mark_beam(cands, {c["id"] for c in beam})
        state["beam"] = [dict(c, status="new") for c in beam]
        return {"acceptance": "naive", "budget_used": 0}

    def _accept_validated(self, state: dict) -> dict:
        sel, cands = self.cfg.selection, state["candidates"]
        root = acceptance.roots(cands)
        parents = [c for c in cands if c["status"] == "kept"]
        val = acceptance.validation_sample(self.selection_train, sel.validation_size, self.cfg.seed)
        groups = []  # (parent, [proposals])
        for p in parents:
            mine = [c for c in cands if c["status"] == "new" and root.get(c["id"]) == p["id"]]
            groups.append((p, self.ctx.rng("validate", p["id"]).sample(mine, min(sel.validation_k, len(mine)))))
        texts = list(dict.fromkeys(c["text"] for p, props in groups for c in [p, *props]))
        self.trace.at("select", state["round"])
        rewards = self.scorer.rewards([(t, ex) for t in texts for ex in val])
        score = {t: sum(rewards[i * len(val) : (i + 1) * len(val)]) / max(1, len(val)) for i, t in enumerate(texts)}
        beam = []
        for p, props in groups:
            for c in [p, *props]:
                c["estimate"], c["pulls"] = score[c["text"]], len(val)
            win = acceptance.validated_choice(score[p["text"]], [score[c["text"]] for c in props])
            beam.append(p if win is None else props[win])
        _mark_beam(cands, {c["id"] for c in beam})
        beam.sort(key=lambda c: -(c["estimate"] or 0.0))
        state["beam"] = [dict(c, status="new") for c in beam]
        return {"acceptance": "validated", "budget_used": len(texts) * len(val), "validation_size": len(val)}

    def _final(self, state: dict, stop_reason: str) -> RunResult:
        self.trace.at("final", state["round"])
        initial = state["initial"]
        beam_texts = [c["text"] for c in state["beam"]]
        evals = self.scorer.evaluate_many(list(dict.fromkeys(beam_texts + [initial])), self.test)
        by_text = {e.instruction: e for e in evals}
        name = self.task.metric.name
        best = max(beam_texts, key=lambda t: (by_text[t].metrics[name], -beam_texts.index(t)))
        totals = self.trace.totals_dict()
        result = RunResult(
            metric=name,
            initial_prompt=initial,
            best_prompt=best,
            selected_prompt=beam_texts[0],
            initial_test=by_text[initial].to_dict(),
            best_test=by_text[best].to_dict(),
            selected_test=by_text[beam_texts[0]].to_dict(),
            beam=[dict(id=c["id"], text=c["text"], estimate=c["estimate"], test=by_text[c["text"]].metrics[name]) for c in state["beam"]],
            rounds_completed=sum(1 for h in state["history"]),
            stop_reason=stop_reason,
            usage={r: {k: v for k, v in t.items() if k not in ("seconds", "cache_hits")} for r, t in totals.items()},
            faults=dict(sorted(self.trace.faults.items())),
            history=state["history"],
            time={"seconds": round(time.monotonic() - (time.monotonic() - state["elapsed"]), 1),
                  "by_role": {r: round(t["seconds"], 1) for r, t in totals.items()},
                  "cache_hits": {r: t["cache_hits"] for r, t in totals.items()}},
        )
        if self.run_dir:
            write_json(self.run_dir.results, result.to_dict())
        return result

    # -- state ---------------------------------------------------------------------------

    def _load_state(self) -> dict:
        saved = self.run_dir.load_checkpoint() if self.run_dir else None
        if saved:
            self.trace.restore(saved["totals"], saved["faults"])
            self.scorer.import_memo(saved.get("predictions", {}))
            log.info("resuming at round %d (%s)", saved["round"], saved["phase"])
            return saved["state"]
        initial = self.cfg.search.initial_prompt or self.task.initial_instruction
        return {"round": 0, "phase": "start", "initial": initial, "elapsed": 0.0, "history": [], "candidates": [],
                "beam": [Candidate(initial, 0, "initial").to_dict()]}

    def _checkpoint(self, state: dict) -> None:
        if self.run_dir:
            write_json(self.run_dir.checkpoint, {"version": 1, "round": state["round"], "phase": state["phase"],
                                                 "totals": self.trace.totals_dict(), "faults": self.trace.faults,
                                                 "state": state, "predictions": self.scorer.export_memo()})

    def _write_round(self, state: dict) -> None:
        if self.run_dir:
            write_json(self.run_dir.round_file(state["round"]), {"round": state["round"], "phase": state["phase"],
                                                                  "candidates": state["candidates"]})

    def _over_budget(self, state: dict) -> str:
        b, t = self.cfg.budget, self.trace.totals
        if b.max_target_calls and t["target"].prompts >= b.max_target_calls:
            return f"budget: max_target_calls ({b.max_target_calls}) reached"
        opt_tokens = t["optimizer"].input_tokens + t["optimizer"].output_tokens
        if b.max_optimizer_tokens and opt_tokens >= b.max_optimizer_tokens:
            return f"budget: max_optimizer_tokens ({b.max_optimizer_tokens}) reached"
        if b.max_minutes and state["elapsed"] >= b.max_minutes * 60:
            return f"budget: max_minutes ({b.max_minutes}) reached"
        return "completed"


def hash_key(seed: int, text: str) -> str:
    return hashlib.sha256(f"{seed}|{text}".encode()).hexdigest()


def _mark_beam(candidates: list[dict], chosen: set[str]) -> None:
    """Record the selection's verdict on every candidate that competed in it."""
    for c in candidates:
        if c["status"] in ("new", "kept"):
            c["status"] = "beam" if c["id"] in chosen else "not selected"


def _as_kept(c: Candidate) -> dict:
    return dict(c.to_dict(), status="kept")


def _short(text: str, n: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"
