"""Logit statistics of one or more models: near-zero logits, top-1 probability, LS error-enhancement split.

Example: ``repanalysis analyze-logits runs/ce runs/ls runs/maxsup --names CE,LS,MaxSup --threshold 0.01``
prints one row per model and writes logit_analysis, logit_comparison, ls_split (.png/.pdf) and
logit_stats.json to --out.
"""
from __future__ import annotations

import click

from repanalysis.cli.common import (device_option, echo_json, json_option, load_inputs, names_option, out_option,
                                    split_names)
from repanalysis.errors import RepanalysisError


def _parse_range(value: str) -> tuple[float, float]:
    parts = split_names(value) or []
    try:
        lo, hi = (float(p) for p in parts)
    except ValueError:
        raise RepanalysisError(f"--kde-range must be two numbers LO,HI (e.g. -4,4); got {value!r}") from None
    return lo, hi


@click.command("analyze-logits")
@click.argument("inputs", nargs=-1, metavar="[INPUT ...]")
@names_option
@click.option("--threshold", type=float, default=0.01, show_default=True,
              help="Near-zero cut: a logit counts when |z| < threshold (strict).")
@click.option("--alpha", type=float, default=0.1, show_default=True,
              help="Strength of the LS / MaxSup terms in the loss split.")
@click.option("--kde-samples", type=int, default=10_000, show_default=True,
              help="Rows whose flattened logits feed the KDE (the first ones).")
@click.option("--kde-range", default="-4,4", show_default=True, help="x-range LO,HI of the logit KDE.")
@device_option()
@out_option("repanalysis-out/logits")
@json_option
def command(inputs, names, threshold, alpha, kde_samples, kde_range, device, out, as_json):
    """Near-zero logits, top-1 probability and the LS error-enhancement split (MaxSup Figures 2-3)."""
    from repanalysis.dump.provenance import with_provenance
    from repanalysis.outputs import output_set
    from repanalysis.analyze.logits import TABLE_HEADERS, compare_logits, comparison_dict, comparison_table
    from repanalysis.plot.logits import save_logit_figures
    from repanalysis.report import format_table, write_json_atomic

    dumps = load_inputs(inputs, names)
    results = compare_logits(dumps, threshold=threshold, alpha=alpha, kde_samples=kde_samples,
                             kde_range=_parse_range(kde_range), device=device)
    out.mkdir(parents=True, exist_ok=True)
    payload = comparison_dict(results)
    with output_set():                       # the JSON and the figures replace the last run's together
        write_json_atomic(out / "logit_stats.json", with_provenance(payload, dumps))
        written = save_logit_figures(results, out)
    if as_json:
        echo_json(payload)
    else:
        click.echo(format_table(comparison_table(results), headers=TABLE_HEADERS))
    for path in [out / "logit_stats.json", *written]:
        click.echo(f"wrote {path}", err=True)
