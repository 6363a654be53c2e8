"""Per-class views of models on the same images: accuracy per class, paired differences, confusions, error confidence.

Example: ``repanalysis per-class runs/ce/logits runs/ls/logits runs/maxsup/logits --names CE,LS,MaxSup
--bootstrap 1000`` prints, per model compared with the baseline (the first, or --baseline), the per-class
accuracy differences sorted with their paired bootstrap intervals (classes whose interval excludes 0 marked),
and the confidence of each model's wrong predictions; writes per_class.json, per_class.csv and the
per_class_difference, per_class_accuracy and error_confidence figures to --out.
"""
from __future__ import annotations

import click

from repanalysis.cli.common import (bootstrap_options, device_option, echo_json, json_option, load_inputs,
                                    names_option, out_option)


def _shown(rows: list, limit: int) -> tuple[list, int]:
    """All rows, or the limit // 2 first and last (the largest gains and losses) with the count left out."""
    if not limit or len(rows) <= limit:
        return rows, 0
    head = (limit + 1) // 2
    tail = limit - head
    gap = [{key: ("..." if i == 0 else "") for i, key in enumerate(rows[0])}]
    return rows[:head] + gap + rows[len(rows) - tail:], len(rows) - limit


@click.command("per-class")
@click.argument("inputs", nargs=-1, metavar="[DUMP ...]")
@names_option
@click.option("--baseline", default=None, help="The model the others are compared against (default: the first).")
@bootstrap_options(what="the paired intervals")
@click.option("--top-k", "top_k", type=click.IntRange(min=0), default=3, show_default=True,
              help="Top confusions kept per class.")
@click.option("--show", "show", type=click.IntRange(min=0), default=20, show_default=True,
              help="Rows of the difference table printed per model: with more classes, the largest gains and "
                   "losses (0: all). per_class.csv holds every row.")
@device_option()
@out_option("repanalysis-out/per_class")
@json_option
def command(inputs, names, baseline, n_boot, ci_level, seed, top_k, show, device, out, as_json):
    """Per-class accuracy, paired per-class differences vs a baseline, top confusions, confidence of errors."""
    from repanalysis.analyze.per_class import TABLE_HEADERS, per_class_report
    from repanalysis.arrays import pick_device
    from repanalysis.dump.provenance import with_provenance
    from repanalysis.outputs import output_set
    from repanalysis.plot.per_class import save_per_class_figures
    from repanalysis.report import format_table, write_csv_atomic, write_json_atomic

    dumps = load_inputs(inputs, names)
    result = per_class_report(dumps, names=[d.name for d in dumps], baseline=baseline, n_boot=n_boot, seed=seed,
                              ci_level=ci_level, top_k=top_k, device=pick_device(device))
    payload = result.to_dict()
    out.mkdir(parents=True, exist_ok=True)
    with output_set():                       # the JSON, the CSV and the figures replace the last run's together
        write_json_atomic(out / "per_class.json", with_provenance(payload, dumps))
        write_csv_atomic(out / "per_class.csv", result.to_frame().to_dict("records"))
        written = save_per_class_figures(result, out)
    if as_json:
        echo_json(payload)
    else:
        for model in result.differences:
            rows = result.difference_table(model)
            shown, left = _shown(rows, show)
            n_sig = len(result.significant(model))
            click.echo(f"{model} - {result.baseline}: per-class accuracy, largest gain first "
                       f"({n_sig} of {len(rows)} classes' intervals exclude 0)")
            click.echo(format_table(shown, columns=list(TABLE_HEADERS), headers=TABLE_HEADERS))
            if left:
                click.echo(f"[{left} rows not shown (...); all in per_class.csv]")
            click.echo("")
        if not result.differences:
            only = result.models[0]
            rows = sorted(({"class": c, "accuracy": result.accuracy[only][k], "n": int(result.class_counts[only][k])}
                           for k, c in enumerate(result.classes)), key=lambda r: (r["accuracy"] != r["accuracy"], r["accuracy"]))
            shown, left = _shown(rows, show)
            click.echo(f"{only}: per-class accuracy, lowest first")
            click.echo(format_table(shown))
            if left:
                click.echo(f"[{left} rows not shown (...); all in per_class.csv]")
            click.echo("")
        click.echo("Confidence (max softmax) on misclassified samples:")
        click.echo(format_table([{"model": m, "errors": e.num_errors, "mean": e.mean, "CI low": e.ci_low,
                                  "CI high": e.ci_high, "median": e.median, "mean when correct": e.mean_correct}
                                 for m, e in result.error_confidence.items()]))
        if n_boot:
            paired = "; differences paired: the same resampled images for every model" if result.differences else ""
            click.echo(f"[{100 * ci_level:g}% bootstrap intervals, {n_boot} resamples, seed {seed}{paired}]")
    for path in [out / "per_class.json", out / "per_class.csv", *written]:
        click.echo(f"wrote {path}", err=True)
