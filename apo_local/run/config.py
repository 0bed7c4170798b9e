"""Run configuration: one validated tree, loaded from YAML, overridable by CLI flags.

Every key is also a command-line flag (see ``flag_names``): ``search.rounds`` is ``--rounds``,
``target.model`` is ``--target-model``. Validation is pydantic's (unknown keys and wrong types
are refused); errors become one line naming the key.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from apo_local.config.presets import PRESETS
from apo_local.config.schema import (  # noqa: F401  (the schema is re-exported: one import for callers)
    SELECTOR_NAMES,
    ABOConfig,
    BudgetConfig,
    EngineConfig,
    EvaluationConfig,
    FeedbackConfig,
    FewShotConfig,
    MetaPromptConfig,
    OptimizerConfig,
    ProTeGiConfig,
    RunConfig,
    SamplingConfig,
    ScoringConfig,
    SearchConfig,
    SelectionConfig,
)
from apo_local.run.config_migrate import keep_earlier_selection, migrate_flat_keys, refuse_moved
from apo_local.search.proposers import METHOD_SECTIONS, METHODS, method_of
from apo_local.support.errors import ApoError


def _one_line(err: ValidationError, origin: str, sources: dict[str, str] | None = None) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{_where(key, origin, sources)}: {msg}{more}"


def _where(key: str, origin: str, sources: dict[str, str] | None) -> str:
    """How an error names a key: the flag it came from (``--rounds (search.rounds)``), else the file's key."""
    flag = (sources or {}).get(key)
    return f"{flag} ({key})" if flag else f"{origin}: {key}"


def build_config(
    data: dict | None = None,
    overrides: dict[str, Any] | None = None,
    origin: str = "config",
    *,
    preset: str | None = None,
    resume: bool = False,
    sources: dict[str, str] | None = None,
) -> RunConfig:
    """Validate ``data`` (nested dict) with dotted-key ``overrides`` applied on top, and a size ``preset``
    (``PRESETS``) underneath. A method knob set for a method that ignores it, or a key of the earlier flat
    layout, is refused with one line; ``resume=True`` (a run directory's own config) migrates old keys.
    ``sources``: where overrides came from (dotted key -> e.g. ``--rounds``): their errors name it, not ``origin``."""
    data = _merged(data or {}, overrides or {})
    if resume:
        data = keep_earlier_selection(migrate_flat_keys(data))
    else:
        refuse_moved(data, origin)
    if preset is not None:
        data = deep_merge(preset_values(preset, (data.get("search") or {}).get("proposer", "protegi")), data)
    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as err:
        raise ApoError(_one_line(err, origin, sources)) from None
    if not resume:
        _refuse_unused(cfg, origin, sources)
        bad = contradiction(cfg)
        if bad:
            raise ApoError(f"{origin}: {bad}")
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


def deep_merge(base: dict, top: dict | None) -> dict:
    """``top`` laid over ``base`` section by section (nested mappings merge, anything else replaces); both are
    left as they were."""
    out = copy.deepcopy(base)
    for key, value in (top or {}).items():
        out[key] = (
            deep_merge(out[key], value)
            if isinstance(value, dict) and isinstance(out.get(key), dict)
            else copy.deepcopy(value)
        )
    return out


def _refuse_unused(cfg: RunConfig, origin: str, sources: dict[str, str] | None = None) -> None:
    s = cfg.selection
    for section, unused in unused_knobs(cfg).items():
        bad = sorted(getattr(cfg, section).model_fields_set & unused)
        if bad:
            method = (
                f"proposer {cfg.search.proposer}"
                if section in (*METHOD_SECTIONS, "scoring")
                else f"selector {s.selector} with acceptance {s.acceptance}"
            )
            raise ApoError(f"{_where(f'{section}.{bad[0]}', origin, sources)}: not used by {method}; remove it")


def contradiction(cfg: RunConfig) -> str | None:
    """The first pair of settings that cannot both hold (one line), or None."""
    f, sel, method = cfg.feedback, cfg.selection, METHODS.get(cfg.search.proposer)
    if method is None:
        return None  # refused by name where the proposer is made
    shown = [
        k
        for k, on in (
            ("labels: wrong", f.labels == "wrong"),
            ("errors: pseudo", f.errors == "pseudo"),
            ("show_evaluation: false", not f.show_evaluation),
        )
        if on
    ]
    data_free = method.data_free(cfg)
    if f.errors == "pseudo" and not f.show_evaluation:
        return (
            "feedback.errors: pseudo shows fabricated errors, feedback.show_evaluation: false hides which rows "
            "are errors; set one of them"
        )
    if shown and data_free:
        return f"feedback.{shown[0]}: {data_free} shows the optimizer no data (data-free); remove it"
    refused = method.refuse(cfg)
    if refused:
        return refused
    if method.answer is None and cfg.scoring.parse != "label" and cfg.scoring.mode != "generate":
        return f"scoring.parse: {cfg.scoring.parse} reads generated replies; set scoring.mode: generate"
    if sel.acceptance == "naive":
        return _naive_contradiction(cfg)
    if sel.acceptance == "validated":
        return _update_only(cfg, "validated")
    return None


def _naive_contradiction(cfg: RunConfig) -> str | None:
    if cfg.feedback.selection_labels == "wrong":
        return "feedback.selection_labels: wrong: naive acceptance scores nothing; remove it"
    return _update_only(cfg, "naive")


def _update_only(cfg: RunConfig, rule: str) -> str | None:
    """Naive and validated acceptance choose among the same pool, the round's updates (never a paraphrase:
    ``acceptance/pool.py``): a proposer that makes none is refused, and so are Monte-Carlo paraphrases, which
    would only be made to be thrown away."""
    method = method_of(cfg.search.proposer)
    if not method.makes_updates(cfg):
        return f"selection.acceptance: {rule} accepts an update, and this proposer makes none (paraphrases only)"
    knob = method.paraphrase_knob(cfg)
    if knob:
        return f"{knob}: {rule} acceptance accepts an update itself, never a paraphrase; set {knob}: 0"
    return None


def method_knobs(proposer: str, selector: str, acceptance: str) -> dict[str, set[str]]:
    """Per method-specific section, the keys a run with this proposer / selector / acceptance uses."""
    used: dict[str, set[str]] = {section: set() for section in METHOD_SECTIONS}
    method = METHODS.get(proposer)  # an unknown proposer is refused by name later
    used.update({section: set(keys) for section, keys in (method.knobs if method else {}).items()})
    generic = set(SelectionConfig.model_fields) - {
        "ucb_c",
        "ucb_t",
        "warmup",
        "ucb_e_a",
        "validation_k",
        "validation_size",
    }
    used["selection"] = (
        generic
        | ({"ucb_c", "ucb_t"} if selector == "ucb" else set())
        | ({"warmup"} if selector in ("ucb", "ucb-e") else set())
        | ({"ucb_e_a"} if selector == "ucb-e" else set())
        | ({"validation_k", "validation_size"} if acceptance == "validated" else set())
    )
    decides_answer = method is not None and method.answer is not None  # its own section says how the target answers
    used["scoring"] = set(ScoringConfig.model_fields) - ({"mode", "parse"} if decides_answer else set())
    return used


def unused_knobs(cfg: RunConfig) -> dict[str, set[str]]:
    """Per section, the keys this run's proposer, selector or acceptance rule ignores."""
    used = method_knobs(cfg.search.proposer, cfg.selection.selector, cfg.selection.acceptance)
    return {section: set(type(getattr(cfg, section)).model_fields) - keys for section, keys in used.items()}


def flatten_keys(data: dict, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as dotted keys (``{"search": {"rounds": 2}}`` -> ``{"search.rounds": 2}``)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(flatten_keys(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


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


def read_run_config(path: str | Path, what: str = "config file", _seen: tuple[Path, ...] = ()) -> dict:
    """A run config file as one mapping, its ``extends:`` resolved: ``extends: base.yaml`` (a path relative to
    this file) reads that run config first (its own ``extends`` too) and lays this file's keys over it, section
    by section. A method knob the base sets for a method this file's run does not use (the base's
    ``protegi:`` under ``proposer: improve``, its ``ucb_c`` under ``selector: uniform``) is left out; the
    file's own keys are kept as written (an unused one is refused as usual). No ``extends`` key remains."""
    p = Path(path)
    data = read_yaml_mapping(p, what)
    base_name = data.pop("extends", None)
    if base_name is None:
        return data
    if not isinstance(base_name, str) or not base_name.strip():
        raise ApoError(f"{p}: extends: expected the path of a run config file")
    base_path = (p.parent / base_name).resolve()
    if base_path in _seen or base_path == p.resolve():
        raise ApoError(f"{p}: extends: {base_name} extends this file again (a circle)")
    base = read_run_config(base_path, "run config", (*_seen, p.resolve()))
    return inherit(base, data)


def inherit(base: dict, own: dict | None) -> dict:
    """``own`` laid over ``base`` as ``extends:`` does (and a compare method over the compare's base): a method
    knob of ``base`` that ``own``'s proposer, selector and acceptance do not use is left out; ``own``'s keys stay
    as written."""
    own = own or {}
    return _without_unused_inherited(deep_merge(base, own), own)


def _without_unused_inherited(merged: dict, own: dict) -> dict:
    """``merged`` less the method knobs inherited (not in ``own``) that its proposer, selector and acceptance
    do not use."""
    s, sel = merged.get("search") or {}, merged.get("selection") or {}
    used = method_knobs(s.get("proposer", "protegi"), sel.get("selector", "ucb"), sel.get("acceptance", "bandit"))
    for section, keys in used.items():
        node, mine = merged.get(section), own.get(section) or {}
        if not isinstance(node, dict):
            continue
        for key in [k for k in node if k not in keys and k not in mine]:
            del node[key]
        if not node and section not in own:
            del merged[section]
    return merged


def load_config(
    path: str | Path | None,
    overrides: dict[str, Any] | None = None,
    *,
    preset: str | None = None,
    resume: bool = False,
    sources: dict[str, str] | None = None,
) -> RunConfig:
    data = read_run_config(path) if path is not None else {}
    return build_config(data, overrides, origin=str(path or "config"), preset=preset, resume=resume, sources=sources)


def dump_config(cfg: RunConfig) -> str:
    """The resolved config as YAML, without the knobs this run's methods ignore (so it loads back as is)."""
    data = cfg.model_dump(mode="json")
    for section, unused in unused_knobs(cfg).items():
        for key in unused:
            data[section].pop(key, None)
        if not data[section]:
            del data[section]
    return yaml.safe_dump(data, sort_keys=False)


def preset_values(name: str, proposer: str) -> dict:
    if name not in PRESETS:
        raise ApoError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})")
    method = METHODS.get(proposer)
    return copy.deepcopy({**PRESETS[name], **(method.presets.get(name, {}) if method else {})})


def flag_help() -> dict[str, str]:
    """Every config key's one-line meaning, its allowed values (when a fixed set) and its default."""
    out = {}
    for section, field in RunConfig.model_fields.items():
        sub = field.annotation
        leaves = sub.model_fields.items() if isinstance(sub, type) and issubclass(sub, BaseModel) else [(None, field)]
        for leaf, f in leaves:
            choices = (
                [a for a in get_args(f.annotation) if isinstance(a, str)] if get_origin(f.annotation) is Literal else []
            )
            default = (
                "unset"
                if f.default is None
                else f.default
                if isinstance(f.default, str)
                else yaml.safe_dump(f.default).strip().removesuffix("...").strip()
            )
            text = (f.description or "").rstrip(".")
            if choices and " | ".join(choices) not in text:
                text += f" ({' | '.join(choices)})"
            if (section, leaf) == ("search", "proposer"):
                text += f" ({' | '.join(METHODS)})"
            out[f"{section}.{leaf}" if leaf else section] = f"{text} [default: {default}]"
    return out


def flag_names() -> dict[str, str]:
    """Every leaf key as a CLI flag: ``search.rounds`` -> ``rounds``, ``target.model`` -> ``target-model``."""
    flags: dict[str, str] = {}
    prefixed = {
        "target",
        "optimizer",
        "meta_prompts",
        "scoring",
        "feedback",
        "rewrite",
        "improve",
        "abo",
        "fewshot",
        "tracking",
    }
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
