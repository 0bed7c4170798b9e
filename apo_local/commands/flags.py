"""How config keys become command-line flags (a value name from each key's type, a heading per config section in
``--help``, dotted-key overrides that remember their flag), and the -v/--verbose every command takes."""

from __future__ import annotations

import logging
import os
import sys

import click
import yaml

from apo_local.run.config import RunConfig, flag_help, flag_names


class SectionOption(click.Option):
    """An option listed under a heading of its own in ``--help`` (``SectionedCommand``)."""

    def __init__(self, *args, section: str = "Options", **kwargs):
        super().__init__(*args, **kwargs)
        self.section = section


class SectionedCommand(click.Command):
    """``--help`` with the options grouped under their sections' headings, in the order they first appear (an option
    without a section, such as --help, under the run options)."""

    def format_options(self, ctx, formatter) -> None:
        groups: dict[str, list] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None:
                groups.setdefault(getattr(param, "section", RUN_OPTIONS), []).append(record)  # --help: the first
        for title, rows in groups.items():
            with formatter.section(title):
                formatter.write_dl(rows)


RUN_OPTIONS = "Run: config, run directory, size"

# Value names for config flags of type str whose meaning the type does not show (by the key's last part).
_STR_METAVARS = {
    "model": "ALIAS|DIR",
    "base_url": "URL",
    "cache": "FILE|off",
    "task": "NAME|FILE",
    "initial_prompt": "TEXT",
    "dtype": "DTYPE",
    "proposer": "NAME",
    "selector": "NAME",
    "device": "DEVICE",
    "test_split": "SPLIT",
    "validation_split": "SPLIT|auto|none",
    "dir": "DIR",
    "experiment": "NAME",
}


def config_metavar(dotted: str, annotation) -> str:
    """The value name ``--help`` shows for a config flag, from its type: the choices of a small fixed set,
    N (integer), X (number), true|false, a YAML mapping, or what a text key holds (ALIAS|DIR, FILE, ...)."""
    from typing import Annotated, Literal, Union, get_args, get_origin

    while get_origin(annotation) in (Union, Annotated):  # Optional[X], Annotated[X, constraint] -> X
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    if get_origin(annotation) is Literal:
        choices = "|".join(str(a) for a in get_args(annotation))
        return choices if len(choices) <= 28 else "CHOICE"
    leaf = dotted.rsplit(".", 1)[-1]
    if annotation is bool:
        return "true|false"
    if annotation is int:
        return "N"
    if annotation is float:
        return "X"
    if get_origin(annotation) is dict or annotation is dict:
        return "YAML"
    if dotted.startswith("meta_prompts.") or leaf.endswith(("_file", "_dir", "_path")):
        return "FILE"
    return _STR_METAVARS.get(leaf, "TEXT")


def config_types() -> dict[str, object]:
    from pydantic import BaseModel

    out = {}
    for section, field in RunConfig.model_fields.items():
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            out.update({f"{section}.{leaf}": f.annotation for leaf, f in sub.model_fields.items()})
        else:
            out[section] = sub
    return out


def config_flags(fn):
    """Every config key as a flag (``--rounds``, ``--target-model``, ...), under its section's heading in
    ``--help``, with a value name from its type; values parse as YAML scalars."""
    helps, types = flag_help(), config_types()
    for dotted, flag in reversed(list(flag_names().items())):
        section = f"{dotted.split('.')[0]} (config section)" if "." in dotted else RUN_OPTIONS
        fn = click.option(
            f"--{flag}",
            f"cfg__{dotted.replace('.', '__')}",
            default=None,
            cls=SectionOption,
            section=section,
            metavar=config_metavar(dotted, types[dotted]),
            help=f"{helps[dotted]} ({dotted})",
        )(fn)
    return fn


def flag_overrides(flags: dict) -> tuple[dict, dict]:
    """The config flags given (``cfg__search__rounds``) as dotted-key overrides (values parsed as YAML scalars;
    text that is not valid YAML stays text), and where each came from (``search.rounds`` -> ``--rounds``)."""
    names = flag_names()
    overrides, sources = {}, {}
    for k, v in flags.items():
        if v is None:
            continue
        dotted = k[5:].replace("__", ".")
        try:
            overrides[dotted] = yaml.safe_load(v)
        except yaml.YAMLError:
            overrides[dotted] = v
        sources[dotted] = f"--{names[dotted]}"
    return overrides, sources


def setup_logging(verbose: bool) -> None:
    """stdout carries results only; logs, progress and (with --verbose) engine logs go to stderr."""
    from apo_local.support.quiet import set_verbosity

    set_verbosity(verbose)  # before vLLM / transformers are imported: they read the environment then
    logging.basicConfig(level=logging.INFO if not verbose else logging.DEBUG, format="%(message)s", stream=sys.stderr)
    if verbose:  # also after a quiet set-up (--verbose given after the command: the group set up quiet first)
        import warnings

        logging.getLogger().setLevel(logging.DEBUG)
        warnings.resetwarnings()
        if os.environ.get("PYTHONWARNINGS") == "ignore":
            os.environ.pop("PYTHONWARNINGS")
        for noisy in ("vllm", "transformers", "torch", "datasets", "httpx"):
            logging.getLogger(noisy).setLevel(logging.INFO)


def accept_verbose(group: click.Group, on_verbose) -> None:
    """``-v/--verbose`` after the command too (``apo-local optimize --verbose ...``), for every command."""
    for command in group.commands.values():
        if isinstance(command, click.Group):
            accept_verbose(command, on_verbose)
        if not any("--verbose" in p.opts for p in command.params):
            command.params.append(
                click.Option(
                    ["-v", "--verbose"],
                    is_flag=True,
                    expose_value=False,
                    is_eager=True,
                    callback=lambda ctx, param, value: on_verbose() if value else None,
                    help="Show engine logs and third-party warnings (on stderr).",
                )
            )
