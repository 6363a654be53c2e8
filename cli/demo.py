"""Run the demo: real CE / LS / MaxSup checkpoints on real MNIST digits, then every analysis."""
from __future__ import annotations

from pathlib import Path

import click

from repanalysis.cli.common import device_option, quiet_option, split_names


@click.command("demo")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("figures/demo"),
              show_default=True, help="Output folder (checkpoints and Dumps are cached inside it).")
@click.option("--epochs", default=8, show_default=True, type=click.IntRange(1))
@device_option()
@click.option("--only", default=None, help="Comma-separated demo steps to run (e.g. logits,calibration).")
@click.option("--alpha-schedule", type=click.Choice(["linear", "constant"]), default="linear", show_default=True,
              help="LS and MaxSup alpha: linear 0.1 -> 0.2 over training (the MaxSup paper's default) or constant 0.1.")
@quiet_option
def command(out, epochs, device, only, alpha_schedule, quiet):
    """Run the demo on real data shipped with the packages (CE vs LS vs MaxSup)."""
    from repanalysis.demo import check_steps, run_steps, step_names
    from repanalysis.demo.build import build_context, summary_rows
    from repanalysis.report import format_table

    steps = check_steps(split_names(only, "--only", f"some of {', '.join(step_names())}"))   # before any training
    ctx = build_context(out, epochs=epochs, device=device, log=click.echo, alpha_schedule=alpha_schedule,
                        progress=not quiet)
    click.echo("\n== Models and Dumps ==")
    click.echo(format_table(summary_rows(ctx)))
    run_steps(ctx, only=steps)
    click.echo(f"\ndemo outputs in {out}/")
