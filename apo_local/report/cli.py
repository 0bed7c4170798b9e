"""``apo-local report RUN_DIR | SWEEP_DIR | COMPARE_DIR``."""

from __future__ import annotations

import click


@click.command("report")
@click.argument("path", type=click.Path(file_okay=False))
@click.option(
    "--cells/--no-cells",
    default=True,
    show_default=True,
    help="For a sweep directory: also write each cell's own report (linked from the table).",
)
def report_command(path, cells):
    """Write report.html (self-contained, opens offline) and PNG plots for a run or a sweep directory (for a
    compare directory: one per run)."""
    from apo_local.report import write_report

    written = write_report(path, cells=cells)
    for page in written if isinstance(written, list) else [written]:
        click.echo(str(page))
