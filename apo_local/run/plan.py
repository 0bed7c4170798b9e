"""Before round 1: the run's plan, built once and checked before any engine starts or any file is written.

``RunPlan.build(cfg)`` loads the task, caps the test limit, resolves the models, makes the proposer and the
acceptance rule (or takes strategy objects a library user passes), checks tracking and the meta-prompt files, and
computes the splits. Bad input (unknown proposer or selector, a missing file, a split that is empty, single-class
or smaller than the config asks) ends here as one ``ApoError`` line naming the key.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from apo_local.engine import RoleEngine, role_models
from apo_local.models.registry import resolve_model
from apo_local.run import tracking
from apo_local.run.config import RunConfig
from apo_local.run.estimate import Estimate, estimate
from apo_local.scoring import Scorer
from apo_local.search.acceptance import Acceptance, make_acceptance
from apo_local.search.proposers import Proposer, TargetAnswer, make_proposer, target_answer
from apo_local.search.splits import Splits, split_rows, validation_warning
from apo_local.support.errors import ApoError
from apo_local.tasks import Task, load_task
from apo_local.tasks.metrics import selection_weights

log = logging.getLogger("apo_local")


@dataclass
class RunPlan:
    cfg: RunConfig  # the config as the run uses it (test_limit capped to the split)
    task: Task
    splits: Splits
    proposer: Proposer
    acceptance: Acceptance
    answer: TargetAnswer  # how the target answers (the method's, else scoring.*)
    warnings: list[str] = field(default_factory=list)  # what the reader must know before trusting the numbers
    custom: list[str] = field(default_factory=list)  # strategy objects passed instead of the config's names

    @classmethod
    def build(
        cls,
        cfg: RunConfig,
        task: Task | None = None,
        *,
        proposer: Proposer | None = None,
        acceptance: Acceptance | None = None,
    ) -> RunPlan:
        task = task or load_task(cfg.task)
        cfg = cap_test_limit(cfg, task)
        check_models(cfg)
        custom = [name for name, obj in (("search.proposer", proposer), ("selection.acceptance", acceptance)) if obj]
        proposer = proposer or make_proposer(cfg.search.proposer, cfg)
        acceptance = acceptance or make_acceptance(cfg)
        tracking.check(cfg)
        for name, file in cfg.meta_prompts.model_dump().items():
            if file and not Path(file).is_file():
                raise ApoError(f"meta_prompts.{name}: file {file} does not exist")
        splits = split_rows(task, cfg)
        warnings = [w for w in (validation_warning(len(splits.validation)),) if w]
        return cls(cfg, task, splits, proposer, acceptance, target_answer(cfg), warnings, custom)

    @cached_property
    def models(self) -> dict:
        """The model each role uses: name, alias, folder, weights fingerprint (``engine.model_of``)."""
        return run_models(self.cfg)

    def estimate(self) -> Estimate:
        """The pre-run size (``run/estimate.py``); a strategy object's own ``cost`` when it declares one."""
        return estimate(
            self.cfg,
            self.task,
            self.splits.train,
            self.splits.test,
            self.splits.validation,
            proposer_cost=getattr(self.proposer, "cost", None) if "search.proposer" in self.custom else None,
            selection_cost=getattr(self.acceptance, "cost", None) if "selection.acceptance" in self.custom else None,
        )

    def scorer(self, target: RoleEngine) -> Scorer:
        """The run's scorer on the target engine: the method's answer, calibration, the selection's reward weights
        (``selection.reward: metric``: class-balanced for F1-type metrics)."""
        a, cfg = self.answer, self.cfg
        scorer = Scorer(self.task, target, a.mode, a.max_tokens, answer=a.reading, calibration=cfg.scoring.calibration)
        if cfg.selection.reward == "metric":
            labels = [ex.label for ex in self.splits.selection_train]
            scorer.reward_weights = selection_weights(self.task.metric.name, labels)
        return scorer


def run_models(cfg: RunConfig) -> dict:
    """The model each role of ``cfg`` uses: name, alias, folder, weights fingerprint (``engine.model_of``)."""
    return role_models(cfg.target.settings(cfg.seed), cfg.optimizer_engine_config().settings(cfg.seed))


def check_models(cfg: RunConfig) -> None:
    """Each role's backend and model: a local model must resolve to a folder, a served one needs its URL."""
    for role, engine_cfg in (("target", cfg.target), ("optimizer", cfg.optimizer_engine_config())):
        if (engine_cfg.backend == "openai") != bool(engine_cfg.base_url):
            raise ApoError(
                f"{role}.base_url: "
                + (
                    "the openai backend needs the server's URL"
                    if engine_cfg.base_url is None
                    else f"only for backend openai (now {engine_cfg.backend})"
                )
            )
        if engine_cfg.backend == "openai":
            continue  # the model is a name the server serves, checked when the engine starts
        try:
            resolve_model(engine_cfg.model)
        except ApoError as exc:
            raise ApoError(f"{role}.model: {exc}") from None


def cap_test_limit(cfg: RunConfig, task: Task) -> RunConfig:
    """``evaluation.test_limit`` larger than the test split: use the whole split, saying so (as evaluate
    --limit does)."""
    limit, split = cfg.evaluation.test_limit, cfg.evaluation.test_split
    if not limit or split not in task.split_names:
        return cfg
    n = len(task.split(split))
    if limit <= n:
        return cfg
    log.info("evaluation.test_limit=%d is larger than the %s split (%d examples): using all %d", limit, split, n, n)
    return cfg.model_copy(update={"evaluation": cfg.evaluation.model_copy(update={"test_limit": n})})
