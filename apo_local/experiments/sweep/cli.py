"""``apo-local sweep --config SWEEP.yaml --out DIR [--ray] [--dry-run] [--report]``."""

from __future__ import annotations

from pathlib import Path

import click

from apo_local.experiments.sweep.cell import initial_status
from apo_local.experiments.sweep.engines import order_for_engines
from apo_local.experiments.sweep.grid import expand
from apo_local.experiments.sweep.run import SweepResult, run_sweep
from apo_local.experiments.sweep.spec import load_sweep
from apo_local.support.errors import ApoError


@click.command("sweep", context_settings={"max_content_width": 120})
@click.option(
    "--config",
    "config_file",
    required=True,
    type=click.Path(dir_okay=False),
    help="Sweep config YAML (base, grid, methods, ray); see configs/sweep-example.yaml.",
)
@click.option(
    "--out", required=True, type=click.Path(file_okay=False), help="Sweep directory (one run directory per cell)."
)
@click.option("--ray", "use_ray", is_flag=True, help="Run every cell as a Ray task (local instance, or ray.address).")
@click.option("--ray-address", help="Connect to this Ray cluster (overrides ray.address; implies --ray).")
@click.option("--dry-run", is_flag=True, help="List the cells and their state; run nothing.")
@click.option("--report", "with_report", is_flag=True, help="Write DIR/report.html (and each cell's) at the end.")
def sweep_command(config_file, out, use_ray, ray_address, dry_run, with_report):
    """Run a grid of optimizations; resumable; writes results.csv and results.md."""
    spec, base = load_sweep(config_file)
    if ray_address:
        spec.ray.address, use_ray = ray_address, True
    if dry_run:
        cells = order_for_engines(expand(spec, base, str(config_file)))
        for c in cells:
            click.echo(
                f"{initial_status(Path(out) / c.id):<12} {c.id}  "
                + " ".join(f"{k}={v}" for k, v in c.overrides.items())
            )
        click.echo(f"{len(cells)} cells")
        return
    try:
        result = run_sweep(spec, base, out, use_ray=use_ray, origin=str(config_file))
    except KeyboardInterrupt:
        click.echo("interrupted; run the same command again to resume the sweep", err=True)
        raise SystemExit(130) from None
    _print_outcome(result, Path(out))
    if with_report:
        _run_report_command(out)
    if result.failed:
        raise SystemExit(1)


def _print_outcome(result: SweepResult, out: Path) -> None:
    counts: dict[str, int] = {}
    for s in result.status.values():
        counts[s.split(":")[0]] = counts.get(s.split(":")[0], 0) + 1
    click.echo(f"{len(result.cells)} cells: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    for cid in result.failed:
        click.echo(f"  {cid}: {result.status[cid]}", err=True)
    click.echo(f"results: {out / 'results.md'}  {out / 'results.csv'}")


def _run_report_command(out: str) -> None:
    """``apo-local report DIR`` (with the cells' reports), looked up on the command group: sweep/ sits
    below report/ and never imports it."""
    ctx = click.get_current_context()
    report = ctx.find_root().command.get_command(ctx, "report") if ctx.find_root() is not ctx else None
    if report is None:
        raise ApoError("--report needs the apo-local command group (run: apo-local report DIR)")
    click.echo("report: ", nl=False)
    ctx.invoke(report, path=str(out), cells=True)
