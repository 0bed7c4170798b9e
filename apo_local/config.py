"""Run configuration: one validated tree, loaded from YAML, overridable by CLI flags.

Every key is also a command-line flag (see ``flag_names``): ``search.rounds`` is ``--rounds``,
``target.model`` is ``--target-model``. Validation is pydantic's (unknown keys and wrong types
are refused); errors become one line naming the key.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, get_args, get_origin

import yaml
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, PositiveFloat, PositiveInt, ValidationError,
                      field_validator)

from apo_local.engine import EngineSettings
from apo_local.errors import ApoError

NonNegInt = Field(ge=0)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def D(default, description: str, **kw):
    """A config field with its one-line meaning (shown by ``apo-local optimize --help``)."""
    return Field(default, description=description, **kw)


class EngineConfig(_Section):
    model: Optional[str] = D(None, "model alias (models/registry.yaml) or local folder; unset: the registry default")
    backend: Literal["vllm", "transformers"] = D("vllm", "engine backend")
    dtype: str = D("auto", "weight dtype passed to the backend")
    max_model_len: Optional[PositiveInt] = D(None, "context length in tokens (prompt + answer); unset: the model's "
                                                   "own, capped by what the KV cache memory holds")
    gpu_memory_utilization: Optional[float] = D(None, "memory fraction for the engine (host RAM on CPU); unset: "
                                                      "automatic (split between two models on one GPU), 0.3 on CPU",
                                                gt=0, le=1)
    kv_cache_gb: Optional[PositiveFloat] = D(None, "KV cache size in GiB; unset: vLLM's choice on GPU, 2 on CPU")
    tensor_parallel_size: PositiveInt = D(1, "GPUs per engine (tensor parallelism)")
    enforce_eager: Optional[bool] = D(None, "no CUDA graph capture; unset: true on CPU")
    engine_args: dict[str, Any] = D({}, "any other vllm.LLM argument, passed through (quantization, "
                                        "trust_remote_code, tokenizer, tokenizer_mode, pipeline_parallel_size, ...)")
    chat_template_kwargs: dict[str, Any] = D({}, "chat-template arguments, e.g. {enable_thinking: true}; "
                                                 "thinking is off by default")
    device: Optional[str] = D(None, "CUDA device(s) for this role's engine (\"1\", \"2,3\"); unset: automatic")

    def settings(self, seed: int) -> EngineSettings:
        return EngineSettings(seed=seed, **self.model_dump())


class OptimizerConfig(EngineConfig):
    """The optimizer model; ``model: null`` means the same model (and engine) as the target."""

    model: Optional[str] = D(None, "optimizer model alias or local folder; unset: the target's model (one engine)")
    temperature: float = D(0.7, "optimizer sampling temperature", ge=0)
    top_p: float = D(1.0, "optimizer nucleus sampling mass", gt=0, le=1)
    max_tokens: PositiveInt = D(400, "most tokens per optimizer reply")


class ScoringConfig(_Section):
    mode: Literal["logprobs", "generate"] = D("logprobs", "how the target answers: label log-probs or generated text")
    max_tokens: PositiveInt = D(8, "most answer tokens in generate mode")


PROPOSER_NAMES = ("protegi", "one-step", "three-stage", "rewrite", "improve", "abo")
SELECTOR_NAMES = ("ucb", "ucb-e", "successive-rejects", "successive-halving", "uniform")


class SearchConfig(_Section):
    proposer: str = D("protegi", "how candidates are made: " + " | ".join(PROPOSER_NAMES) + "; its knobs live in the "
                                 "section of that name (protegi's also serve one-step and three-stage)")
    rounds: int = D(6, "search rounds (expand, then select)", ge=1)
    beam_size: PositiveInt = D(4, "prompts kept after every round")
    minibatch_size: PositiveInt = D(64, "training rows each beam prompt is scored on to find its errors")
    max_expansion: PositiveInt = D(8, "new candidates kept per beam prompt (a seeded pick)")
    parse_fallback: Literal["whole", "none"] = D("whole", "optimizer reply without <START>/<END> tags: use it "
                                                          "whole, or drop it")
    initial_prompt: Optional[str] = D(None, "starting instruction; unset: the task's")


class ProTeGiConfig(_Section):
    """Knobs of the protegi proposer and of its operator ablations one-step and three-stage."""

    n_gradients: int = D(4, "error groups (gradient calls) per beam prompt; 0: paraphrases only", ge=0)
    errors_per_gradient: PositiveInt = D(4, "errors shown per gradient call")
    reasons_per_gradient: PositiveInt = D(1, "reasons asked per gradient call (three-stage: notes per critique)")
    edits_per_gradient: PositiveInt = D(1, "rewritten prompts per reason (one-step: per error group)")
    mc_samples: int = D(2, "Monte-Carlo paraphrases per edit and per parent", ge=0)


class SamplingConfig(_Section):
    """Knobs of the data-free proposers rewrite and improve."""

    samples_per_parent: int = D(4, "rewrites sampled per beam prompt", ge=0)
    mc_samples: int = D(2, "Monte-Carlo paraphrases per rewrite and per parent", ge=0)


class ABOConfig(_Section):
    """Knobs of Automatic Behavior Optimization (Ma et al., 2024)."""

    init_samples: PositiveInt = D(4, "step lists sampled from a plain instruction")
    revise_samples: PositiveInt = D(4, "revisions sampled of the first failed step")
    errors_per_revision: PositiveInt = D(4, "failed examples shown per revision")
    demonstration: bool = D(True, "a worked demonstration (true) or a 'Follow the steps strictly.' line")
    work_tokens: PositiveInt = D(128, "tokens the target may write while showing its steps")


class SelectionConfig(_Section):
    selector: str = D("ucb", "best-arm bandit that picks the beam (acceptance bandit): " + " | ".join(SELECTOR_NAMES))
    budget: PositiveInt = D(2048, "example evaluations per round's selection")
    batch_size: PositiveInt = D(32, "examples per arm pull (ucb, ucb-e)")
    arms_per_round: PositiveInt = D(8, "arms pulled per bandit round (ucb, ucb-e)")
    ucb_c: PositiveFloat = D(2.0, "ucb exploration weight c: mean + c*sqrt(ln t / n)")
    ucb_e_a: PositiveFloat = D(2.0, "ucb-e exploration parameter a: mean + sqrt(a / n)")
    acceptance: Literal["bandit", "naive", "validated"] = D(
        "bandit", "bandit: the selector picks among parents + proposals; naive: the newest proposals, unevaluated; "
                  "validated: a proposal replaces its parent only if it scores higher")
    validation_k: PositiveInt = D(4, "validated: proposals scored per parent")
    validation_size: PositiveInt = D(32, "validated: rows of the fixed validation sample")


# "true" | "wrong"; an unquoted YAML true (or --feedback-labels true) means "true"
LabelSource = Annotated[Literal["true", "wrong"], BeforeValidator(lambda v: "true" if v is True else v)]


class FeedbackConfig(_Section):
    """What the optimizer is shown (Melcer et al., 2025; Ma et al., 2024). Corruption is seeded by ``seed``."""

    labels: LabelSource = D("true", "labels shown to the optimizer: true or wrong (corrupted)")
    selection_labels: LabelSource = D("true", "labels the selection rewards are computed against")
    show_evaluation: bool = D(True, "false: inputs and outputs only, not which are right")
    numeric_offset: PositiveFloat = D(5.0, "numeric tasks: a wrong label is the true value + U(-k, k)")
    errors: Literal["real", "pseudo"] = D("real", "pseudo: correct rows shown with flipped predictions")


class EvaluationConfig(_Section):
    test_split: str = D("test", "split the final prompts are scored on")
    test_limit: Optional[PositiveInt] = D(None, "score the first N test rows only; unset: all")
    per_round_test: bool = D(False, "also score the beam on the test split after every round")


class BudgetConfig(_Section):
    max_target_calls: Optional[PositiveInt] = D(None, "stop after this many target prompts (example evaluations)")
    max_optimizer_tokens: Optional[PositiveInt] = D(None, "stop after this many optimizer tokens (in + out)")
    max_minutes: Optional[PositiveFloat] = D(None, "stop after this many minutes of search")


class MetaPromptConfig(_Section):
    gradient: Optional[str] = D(None, "jinja2 file replacing the built-in gradient meta-prompt")
    edit: Optional[str] = D(None, "jinja2 file replacing the built-in edit meta-prompt")
    paraphrase: Optional[str] = D(None, "jinja2 file replacing the built-in paraphrase meta-prompt")
    error: Optional[str] = D(None, "jinja2 file replacing the built-in error block")
    error_noeval: Optional[str] = D(None, "jinja2 file replacing the error block without evaluation")
    one_step: Optional[str] = D(None, "jinja2 file replacing the built-in one-step meta-prompt")
    critique: Optional[str] = D(None, "jinja2 file replacing the built-in critique meta-prompt")
    feedback: Optional[str] = D(None, "jinja2 file replacing the built-in feedback meta-prompt")
    rewrite: Optional[str] = D(None, "jinja2 file replacing the built-in rewrite meta-prompt")
    improve: Optional[str] = D(None, "jinja2 file replacing the built-in improve meta-prompt")
    abo_init: Optional[str] = D(None, "jinja2 file replacing the built-in ABO step-writing meta-prompt")
    abo_revise: Optional[str] = D(None, "jinja2 file replacing the built-in ABO step-revision meta-prompt")
    abo_demo: Optional[str] = D(None, "jinja2 file replacing the built-in ABO demonstration meta-prompt")


class RunConfig(_Section):
    task: str = D("liar", "built-in task name or a task .yaml file")
    seed: int = D(0, "seed of every random draw and engine request")
    train_limit: Optional[PositiveInt] = D(None, "use N training rows (a seeded subset); unset: all")
    cache: Optional[str] = D(None, "result cache file, or off; unset: ~/.cache/apo-local")
    target: EngineConfig = EngineConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    scoring: ScoringConfig = ScoringConfig()
    search: SearchConfig = SearchConfig()
    protegi: ProTeGiConfig = ProTeGiConfig()
    rewrite: SamplingConfig = SamplingConfig()
    improve: SamplingConfig = SamplingConfig()
    abo: ABOConfig = ABOConfig()
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

    def unused_knobs(self) -> dict[str, set[str]]:
        """Per section, the keys this run's proposer, selector or acceptance rule ignores."""
        used = method_knobs(self.search.proposer, self.selection.selector, self.selection.acceptance)
        return {section: set(type(getattr(self, section)).model_fields) - keys for section, keys in used.items()}


_PROTEGI = set(ProTeGiConfig.model_fields)
_PROPOSER_KNOBS = {"protegi": {"protegi": _PROTEGI}, "three-stage": {"protegi": _PROTEGI},
                   "one-step": {"protegi": _PROTEGI - {"reasons_per_gradient"}},
                   "rewrite": {"rewrite": set(SamplingConfig.model_fields)},
                   "improve": {"improve": set(SamplingConfig.model_fields)}, "abo": {"abo": set(ABOConfig.model_fields)}}
METHOD_SECTIONS = ("protegi", "rewrite", "improve", "abo")


def method_knobs(proposer: str, selector: str, acceptance: str) -> dict[str, set[str]]:
    """Per method-specific section, the keys a run with this proposer / selector / acceptance uses."""
    used = {section: set() for section in METHOD_SECTIONS}
    used.update(_PROPOSER_KNOBS.get(proposer, {}))  # an unknown proposer is refused by name later
    generic = set(SelectionConfig.model_fields) - {"ucb_c", "ucb_e_a", "validation_k", "validation_size"}
    used["selection"] = generic | ({"ucb_c"} if selector == "ucb" else set()) | (
        {"ucb_e_a"} if selector == "ucb-e" else set()) | (
        {"validation_k", "validation_size"} if acceptance == "validated" else set())
    return used


# keys of the earlier flat layout -> where they live now (refused with this hint; migrated on resume)
MOVED = {"search.n_gradients": "protegi.n_gradients (rewrite/improve: <proposer>.samples_per_parent; "
                               "abo: abo.init_samples, abo.revise_samples)",
         "search.errors_per_gradient": "protegi.errors_per_gradient (abo: abo.errors_per_revision)",
         "search.reasons_per_gradient": "protegi.reasons_per_gradient",
         "search.edits_per_gradient": "protegi.edits_per_gradient",
         "search.mc_samples": "protegi.mc_samples (rewrite/improve: <proposer>.mc_samples)",
         "search.demonstration": "abo.demonstration", "search.abo_work_tokens": "abo.work_tokens",
         "selection.c": "selection.ucb_c (ucb-e: selection.ucb_e_a)"}


def _one_line(err: ValidationError, origin: str) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{origin}: {key}: {msg}{more}"


def build_config(data: dict | None = None, overrides: dict[str, Any] | None = None, origin: str = "config", *,
                 preset: str | None = None, resume: bool = False) -> RunConfig:
    """Validate ``data`` (nested dict) with dotted-key ``overrides`` applied on top, and a size ``preset``
    (``PRESETS``) underneath. A method knob set for a method that ignores it, or a key of the earlier flat
    layout, is refused with one line; ``resume=True`` (a run directory's own config) migrates old keys."""
    data = _merged(data or {}, overrides or {})
    if resume:
        data = migrate_flat_keys(data)
    else:
        _refuse_moved(data, origin)
    if preset is not None:
        data = _deep_merge(preset_values(preset, (data.get("search") or {}).get("proposer", "protegi")), data)
    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as err:
        raise ApoError(_one_line(err, origin)) from None
    if not resume:
        _refuse_unused(cfg, origin)
    return cfg


def _merged(data: dict, overrides: dict[str, Any]) -> dict:
    data = copy.deepcopy(data)
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[leaf] = value
    return data


def _deep_merge(base: dict, top: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in top.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _refuse_moved(data: dict, origin: str) -> None:
    for dotted, hint in MOVED.items():
        section, key = dotted.split(".")
        if isinstance(data.get(section), dict) and key in data[section]:
            raise ApoError(f"{origin}: {dotted}: moved to {hint}")


def _refuse_unused(cfg: RunConfig, origin: str) -> None:
    s = cfg.selection
    for section, unused in cfg.unused_knobs().items():
        bad = sorted(getattr(cfg, section).model_fields_set & unused)
        if bad:
            method = (f"proposer {cfg.search.proposer}" if section in METHOD_SECTIONS
                      else f"selector {s.selector} with acceptance {s.acceptance}")
            raise ApoError(f"{origin}: {section}.{bad[0]}: not used by {method}; remove it")


def migrate_flat_keys(data: dict) -> dict:
    """A config of the earlier flat layout (``search.n_gradients``, ``selection.c``, ...) in today's sections."""
    data = copy.deepcopy(data)
    s, sel = data.get("search") or {}, data.get("selection") or {}
    old = {k: s.pop(k) for k in ("n_gradients", "errors_per_gradient", "reasons_per_gradient", "edits_per_gradient",
                                 "mc_samples", "demonstration", "abo_work_tokens") if k in s}
    proposer = s.get("proposer", "protegi")
    n, errors = old.get("n_gradients", 4), old.get("errors_per_gradient", 4)
    if not old:
        pass  # today's layout already: its method section is kept as written
    elif proposer in ("rewrite", "improve"):
        data[proposer] = {"samples_per_parent": n * old.get("edits_per_gradient", 1), "mc_samples": old.get("mc_samples", 2)}
    elif proposer == "abo":
        data["abo"] = {"init_samples": max(1, n), "revise_samples": max(1, n), "errors_per_revision": errors,
                       "demonstration": old.get("demonstration", True), "work_tokens": old.get("abo_work_tokens", 128)}
    else:
        knobs = _PROPOSER_KNOBS.get(proposer, {"protegi": _PROTEGI})["protegi"]
        data["protegi"] = {k: v for k, v in old.items() if k in knobs}
    if "c" in sel:
        c = sel.pop("c")
        if sel.get("selector", "ucb") in ("ucb", "ucb-e"):
            sel["ucb_c" if sel.get("selector", "ucb") == "ucb" else "ucb_e_a"] = c
    if sel.get("acceptance", "bandit") != "validated":
        sel.pop("validation_k", None), sel.pop("validation_size", None)
    return data


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


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None, *, preset: str | None = None,
                resume: bool = False) -> RunConfig:
    data = read_yaml_mapping(path) if path is not None else {}
    return build_config(data, overrides, origin=str(path or "config"), preset=preset, resume=resume)


def dump_config(cfg: RunConfig) -> str:
    """The resolved config as YAML, without the knobs this run's methods ignore (so it loads back as is)."""
    data = cfg.model_dump(mode="json")
    for section, unused in cfg.unused_knobs().items():
        for key in unused:
            data[section].pop(key, None)
        if not data[section]:
            del data[section]
    return yaml.safe_dump(data, sort_keys=False)


# Size presets (``--preset``), applied under the config file and the flags. Method knobs go to the section
# of the run's proposer only. ``paper`` is the ProTeGi reference (the defaults).
PRESETS: dict[str, dict] = {
    "smoke": {"search": {"rounds": 1, "beam_size": 2, "minibatch_size": 8, "max_expansion": 2},
              "selection": {"budget": 32, "batch_size": 8, "arms_per_round": 2},
              "optimizer": {"max_tokens": 96}, "evaluation": {"test_limit": 16},
              "protegi": {"n_gradients": 1, "errors_per_gradient": 2, "mc_samples": 1},
              "rewrite": {"samples_per_parent": 1, "mc_samples": 1}, "improve": {"samples_per_parent": 1, "mc_samples": 1},
              "abo": {"init_samples": 1, "revise_samples": 1, "errors_per_revision": 2, "work_tokens": 48}},
    "demo": {"search": {"rounds": 2, "beam_size": 2, "minibatch_size": 16, "max_expansion": 3},
             "selection": {"budget": 128, "batch_size": 16, "arms_per_round": 4},
             "optimizer": {"max_tokens": 200}, "evaluation": {"test_limit": 100},
             "protegi": {"n_gradients": 2, "errors_per_gradient": 3, "mc_samples": 1},
             "rewrite": {"samples_per_parent": 2, "mc_samples": 1}, "improve": {"samples_per_parent": 2, "mc_samples": 1},
             "abo": {"init_samples": 2, "revise_samples": 2, "errors_per_revision": 3, "work_tokens": 96}},
    "paper": {},
}


def preset_values(name: str, proposer: str) -> dict:
    if name not in PRESETS:
        raise ApoError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})")
    keep = set(_PROPOSER_KNOBS.get(proposer, {}))
    return {k: v for k, v in copy.deepcopy(PRESETS[name]).items() if k not in METHOD_SECTIONS or k in keep}


def flag_help() -> dict[str, str]:
    """Every config key's one-line meaning, its allowed values (when a fixed set) and its default."""
    out = {}
    for section, field in RunConfig.model_fields.items():
        sub = field.annotation
        leaves = sub.model_fields.items() if isinstance(sub, type) and issubclass(sub, BaseModel) else [(None, field)]
        for leaf, f in leaves:
            choices = [a for a in get_args(f.annotation) if isinstance(a, str)] if get_origin(f.annotation) is Literal \
                else []
            default = ("unset" if f.default is None else f.default if isinstance(f.default, str)
                       else yaml.safe_dump(f.default).strip().removesuffix("...").strip())
            text = (f.description or "").rstrip(".")
            if choices and " | ".join(choices) not in text:
                text += f" ({' | '.join(choices)})"
            out[f"{section}.{leaf}" if leaf else section] = f"{text} [default: {default}]"
    return out


def flag_names() -> dict[str, str]:
    """Every leaf key as a CLI flag: ``search.rounds`` -> ``rounds``, ``target.model`` -> ``target-model``."""
    flags: dict[str, str] = {}
    prefixed = {"target", "optimizer", "meta_prompts", "scoring", "feedback", "rewrite", "improve", "abo"}
    for section, field in RunConfig.model_fields.items():
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            for leaf in sub.model_fields:
                name = f"{section}_{leaf}" if section in prefixed else leaf
                flags[f"{section}.{leaf}"] = name.replace("_", "-")
        else:
            flags[section] = section.replace("_", "-")
    assert len(set(flags.values())) == len(flags), "CLI flag names must be unique"
    return flags
