"""Run configuration: one validated tree, loaded from YAML, overridable by CLI flags.

Every key is also a command-line flag (see ``flag_names``): ``search.rounds`` is ``--rounds``,
``target.model`` is ``--target-model``. Validation is pydantic's (unknown keys and wrong types
are refused); errors become one line naming the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import yaml
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, PositiveFloat, PositiveInt, ValidationError,
                      field_validator)

from apo_local.engine import EngineSettings
from apo_local.errors import ApoError

NonNegInt = Field(ge=0)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class EngineConfig(_Section):
    model: Optional[str] = None  # alias from models/registry.yaml or a local folder; None = default
    backend: Literal["vllm", "transformers"] = "vllm"
    dtype: str = "auto"
    max_model_len: Optional[PositiveInt] = None  # None: the model's own, capped by what the KV memory holds
    gpu_memory_utilization: Optional[float] = Field(None, gt=0, le=1)  # None: automatic (see engine/placement.py)
    kv_cache_gb: Optional[PositiveFloat] = None
    tensor_parallel_size: PositiveInt = 1
    enforce_eager: Optional[bool] = None
    # Any other vllm.LLM(**kwargs) argument, passed through: quantization, trust_remote_code,
    # tokenizer, tokenizer_mode, pipeline_parallel_size, ... (they win over apo-local's defaults)
    engine_args: dict[str, Any] = {}
    chat_template_kwargs: dict[str, Any] = {}  # e.g. {enable_thinking: true}; thinking is off by default
    device: Optional[str] = None  # CUDA device(s) for this role's engine ("1", "2,3"); None: automatic

    def settings(self, seed: int) -> EngineSettings:
        return EngineSettings(seed=seed, **self.model_dump())


class OptimizerConfig(EngineConfig):
    """The optimizer model; ``model: null`` means the same model (and engine) as the target."""

    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: PositiveInt = 400


class ScoringConfig(_Section):
    mode: Literal["logprobs", "generate"] = "logprobs"
    max_tokens: PositiveInt = 8  # generate mode only


class SearchConfig(_Section):
    proposer: str = "protegi"  # protegi | one-step | three-stage | rewrite | improve | abo (search/proposers.py)
    rounds: int = Field(6, ge=1)
    beam_size: PositiveInt = 4
    minibatch_size: PositiveInt = 64
    n_gradients: int = Field(4, ge=0)  # error groups (gradient calls) per beam prompt
    errors_per_gradient: PositiveInt = 4
    reasons_per_gradient: PositiveInt = 1
    edits_per_gradient: PositiveInt = 1
    mc_samples: int = Field(2, ge=0)  # Monte-Carlo paraphrases per edit (and per parent)
    max_expansion: PositiveInt = 8  # new candidates kept per parent (seeded subsample)
    parse_fallback: Literal["whole", "none"] = "whole"
    initial_prompt: Optional[str] = None  # replaces the task's initial instruction (e.g. a ready ABO prompt)
    demonstration: bool = True  # abo: a worked demonstration (True) or a "Follow the steps strictly." line
    abo_work_tokens: PositiveInt = 128  # abo: tokens the target may write while showing its steps


class SelectionConfig(_Section):
    selector: str = "ucb"
    budget: PositiveInt = 2048  # example evaluations per round
    batch_size: PositiveInt = 32  # examples per arm pull
    arms_per_round: PositiveInt = 8
    c: PositiveFloat = 2.0
    # bandit: the selector picks the beam among parents + proposals (ProTeGi);
    # naive: the beam becomes the newest proposals, unevaluated (Melcer et al., 2025);
    # validated: per parent, validation_k proposals and the parent are scored on one fixed seeded
    # validation sample and the parent is replaced only by a proposal that beats it.
    acceptance: Literal["bandit", "naive", "validated"] = "bandit"
    validation_k: PositiveInt = 4
    validation_size: PositiveInt = 32


# "true" | "wrong"; an unquoted YAML true (or --feedback-labels true) means "true"
LabelSource = Annotated[Literal["true", "wrong"], BeforeValidator(lambda v: "true" if v is True else v)]


class FeedbackConfig(_Section):
    """What the optimizer is shown (Melcer et al., 2025; Ma et al., 2024). Corruption is seeded by ``seed``."""

    labels: LabelSource = "true"  # gold labels shown to the optimizer (wrong: corrupted)
    selection_labels: LabelSource = "true"  # labels the selection rewards are computed against
    show_evaluation: bool = True  # False: inputs and outputs only, not which are right
    numeric_offset: PositiveFloat = 5.0  # numeric tasks: a wrong label is the true value + U(-k, k)
    errors: Literal["real", "pseudo"] = "real"  # pseudo: correct examples shown with flipped predictions


class EvaluationConfig(_Section):
    test_split: str = "test"
    test_limit: Optional[PositiveInt] = None
    per_round_test: bool = False


class BudgetConfig(_Section):
    max_target_calls: Optional[PositiveInt] = None  # target prompts (example evaluations)
    max_optimizer_tokens: Optional[PositiveInt] = None  # optimizer input + output tokens
    max_minutes: Optional[PositiveFloat] = None


class MetaPromptConfig(_Section):
    gradient: Optional[str] = None  # path to a jinja2 file overriding the built-in meta-prompt
    edit: Optional[str] = None
    paraphrase: Optional[str] = None
    error: Optional[str] = None
    error_noeval: Optional[str] = None  # error block when feedback.show_evaluation is false
    one_step: Optional[str] = None
    critique: Optional[str] = None
    feedback: Optional[str] = None
    rewrite: Optional[str] = None
    improve: Optional[str] = None
    abo_init: Optional[str] = None
    abo_revise: Optional[str] = None
    abo_demo: Optional[str] = None


class RunConfig(_Section):
    task: str = "liar"
    seed: int = 0
    train_limit: Optional[PositiveInt] = None  # use the first N training rows (after a seeded shuffle)
    cache: Optional[str] = None  # result cache file; None = ~/.cache/apo-local; "off" = no cache
    target: EngineConfig = EngineConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    scoring: ScoringConfig = ScoringConfig()
    search: SearchConfig = SearchConfig()
    selection: SelectionConfig = SelectionConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    budget: BudgetConfig = BudgetConfig()
    feedback: FeedbackConfig = FeedbackConfig()
    meta_prompts: MetaPromptConfig = MetaPromptConfig()

    @field_validator("cache", mode="before")
    @classmethod
    def _cache_off(cls, v):
        return "off" if v is False else v  # YAML reads a bare `off` as false

    def optimizer_engine_config(self) -> EngineConfig:
        """Engine settings of the optimizer; inherits the target's model when none is named."""
        engine_fields = set(EngineConfig.model_fields)
        if self.optimizer.model is None:
            return self.target
        return EngineConfig(**self.optimizer.model_dump(include=engine_fields))


def _one_line(err: ValidationError, origin: str) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{origin}: {key}: {msg}{more}"


def build_config(data: dict | None = None, overrides: dict[str, Any] | None = None, origin: str = "config") -> RunConfig:
    """Validate ``data`` (nested dict) with dotted-key ``overrides`` applied on top."""
    data = dict(data or {})
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[leaf] = value
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise ApoError(_one_line(err, origin)) from None


def read_yaml_mapping(path: str | Path, what: str = "config file") -> dict:
    """A YAML file holding a mapping (run, sweep or compare config); bad files end as one ApoError line."""
    p = Path(path)
    if not p.is_file():
        raise ApoError(f"{what} {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ApoError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ApoError(f"{p}: expected a mapping of config keys at the top level")
    return data


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> RunConfig:
    data = read_yaml_mapping(path) if path is not None else {}
    return build_config(data, overrides, origin=str(path or "config"))


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def flag_names() -> dict[str, str]:
    """Every leaf key as a CLI flag: ``search.rounds`` -> ``rounds``, ``target.model`` -> ``target-model``."""
    flags: dict[str, str] = {}
    prefixed = {"target", "optimizer", "meta_prompts", "scoring", "feedback"}
    for section, field in RunConfig.model_fields.items():
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            for leaf in sub.model_fields:
                name = f"{section}_{leaf}" if section in prefixed else {"c": "ucb_c"}.get(leaf, leaf)
                flags[f"{section}.{leaf}"] = name.replace("_", "-")
        else:
            flags[section] = section.replace("_", "-")
    assert len(set(flags.values())) == len(flags), "CLI flag names must be unique"
    return flags
