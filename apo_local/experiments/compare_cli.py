"""``apo-local compare``: a comparison's YAML, narrowed or resized by flags (``--seeds``, ``--methods``, sizes),
run by ``compare.compare``."""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import Path

import click

from apo_local.experiments.compare import CompareSpec, compare, load_spec
from apo_local.run.config import build_config, deep_merge
from apo_local.support.errors import ApoError

log = logging.getLogger("apo_local")


def with_overrides(
    spec: CompareSpec,
    *,
    n_seeds: int | None = None,
    methods: Sequence[str] | None = None,
    base: dict | None = None,
    sources: dict[str, str] | None = None,
) -> CompareSpec:
    """``spec`` narrowed or resized from the command line: ``n_seeds`` seeds from its first (s, s+1, ...), only
    ``methods`` (the baseline always kept), and dotted-key ``base`` overrides (``search.rounds``: the base's
    value; a method that sets the key itself keeps its own, since that setting is what the method is). A bad
    value is one line naming its flag (``sources``: dotted key -> flag)."""
    spec = copy.deepcopy(spec)
    if n_seeds is not None:
        spec.seeds = [spec.seeds[0] + i for i in range(n_seeds)]
    if methods:
        unknown = [m for m in methods if m not in spec.methods]
        if unknown:
            raise ApoError(f"--methods: unknown method {unknown[0]!r} (the config's: {', '.join(spec.methods)})")
        if spec.baseline not in methods:
            log.info("compare: the baseline %s runs too (every method is compared with it)", spec.baseline)
        spec.methods = {m: v for m, v in spec.methods.items() if m in methods or m == spec.baseline}
    if base:
        first = deep_merge(spec.base, spec.methods[spec.baseline])
        build_config(first, base, origin="compare config base", sources=sources)  # a bad flag value names the flag
        nested: dict = {}
        for dotted, value in base.items():
            node = nested
            *parents, leaf = dotted.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = value
        spec.base = deep_merge(spec.base, nested)
    for m in spec.methods:  # every cell's config still valid
        spec.config(m, spec.seeds[0])
    return spec


# The base config keys compare takes as flags (the sizes a first look shrinks), as optimize names them.
SIZE_FLAGS = {
    "rounds": "search.rounds",
    "beam-size": "search.beam_size",
    "minibatch-size": "search.minibatch_size",
    "budget": "selection.budget",
    "test-limit": "evaluation.test_limit",
    "train-limit": "train_limit",
}


def _size_flags(fn):
    for flag, dotted in reversed(list(SIZE_FLAGS.items())):
        fn = click.option(
            f"--{flag}",
            f"size__{flag.replace('-', '_')}",
            type=int,
            default=None,
            metavar="N",
            help=f"{dotted} of the base config (a method that sets it keeps its own).",
        )(fn)
    return fn


@click.command("compare")
@click.option(
    "--config",
    "config_file",
    required=True,
    type=click.Path(dir_okay=False),
    help="Comparison YAML: base, methods, seeds, budget (see configs/compare-liar.yaml).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder for the run directories and the tables (re-run to continue; use another folder when "
    "changing sizes: finished cells are not run again).",
)
@click.option(
    "--seeds",
    "n_seeds",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Run N seeds, from the config's first (s, s+1, ...), instead of the config's list.",
)
@click.option(
    "--methods",
    default=None,
    metavar="A,B,...",
    help="Run only these of the config's methods (comma-separated; the baseline always runs).",
)
@_size_flags
def compare_command(config_file, out, n_seeds, methods, **sizes):
    """Run several methods on one task with the same budget over N seeds; write results.csv / results.md.

    Seeds, methods and sizes come from the config; the flags override them (e.g. a first look:
    --seeds 1 --rounds 1 --methods protegi,mc --test-limit 50)."""
    chosen = [m.strip() for m in methods.split(",") if m.strip()] if methods else None
    base = {SIZE_FLAGS[k[6:].replace("_", "-")]: v for k, v in sizes.items() if v is not None}
    sources = {dotted: f"--{flag}" for flag, dotted in SIZE_FLAGS.items()}
    spec = with_overrides(load_spec(config_file), n_seeds=n_seeds, methods=chosen, base=base, sources=sources)
    rows = compare(spec, out)
    click.echo((Path(out) / "results.md").read_text())
    click.echo(f"tables: {Path(out) / 'results.csv'}  {Path(out) / 'results.md'}  {Path(out) / 'runs.csv'}")
    for r in rows:  # the last lines: one plain-word verdict per method against the baseline
        if r.get("verdict_line"):
            click.echo(r["verdict_line"])
