"""Mergeable analyses over the shards of one extraction: separation, calibration, logit statistics, accuracy.

Each shard of a large extraction (``repanalysis extract --shard i/n``, or the ranks of a torchrun run) is a
Dump of its own rows. Its statistics are small sums (per-class feature sums, calibration bin sums, logit
moments, confusion counts), so each machine computes those of its own shard, and the sums of all shards give
the numbers the analyses give on the merged Dump (up to float rounding), without moving the arrays.

Per machine: ``repanalysis shard-stats --shards runs/r50/shard-3 --save stats-3.npz``. Then anywhere:
``repanalysis shard-stats --shards stats-0.npz stats-1.npz ... --out results`` (Dumps and .npz files may be
mixed). The inputs must be of one run and cover every row once (gaps and overlaps are refused, naming the
rows). Prints d_within / d_total / R^2, calibration (ECE, MCE, O-/U-ECE, classwise ECE, NLL, Brier), logit
means and accuracy, and writes shard_stats.json to --out. Left out, as not mergeable: adaptive ECE, AUROC,
bootstrap intervals, quantiles / medians / KDE of the logits.
"""
from __future__ import annotations

import click

from repanalysis.cli.common import device_option, echo_json, json_option, out_option
from repanalysis.errors import DataError


@click.command("shard-stats")
@click.option("--shards", "shards", multiple=True, metavar="INPUT",
              help="A shard Dump (folder) or saved statistics (.npz); give several after one --shards "
              "(--shards A B C) or repeat it.")
@click.argument("more", nargs=-1, metavar="[INPUT ...]")
@click.option("--save", "save", type=click.Path(dir_okay=False), default=None, metavar="FILE.npz",
              help="Write the statistics of the one input to FILE.npz (the per-machine step) and stop.")
@click.option("--bins", "n_bins", type=click.IntRange(min=1), default=None,
              help="Equal-width calibration bins (default 15; saved statistics keep theirs).")
@click.option("--threshold", type=float, default=None,
              help="Near-zero logit cut |z| < t (default 0.01; saved statistics keep theirs).")
@click.option("--alpha", type=float, default=None,
              help="LS / MaxSup strength of the logit loss terms (default 0.1; saved statistics keep theirs).")
@click.option("--chunk-size", type=click.IntRange(1), default=8192, show_default=True,
              help="Rows streamed at a time (memory stays bounded).")
@device_option()
@out_option("repanalysis-out/shard-stats")
@json_option
def command(shards, more, save, n_bins, threshold, alpha, chunk_size, device, out, as_json):
    """Separation, calibration, logit statistics and accuracy over the shards of one extraction (mergeable).

    Each INPUT is a shard Dump (folder) or statistics saved with --save (.npz). The statistics are sums, so
    those of all shards combine to the numbers of the merged Dump (to float rounding); the inputs must be of
    one run and cover every row once.

    \b
    Per machine:  repanalysis shard-stats --shards runs/r50/shard-3 --save stats-3.npz
    Then:         repanalysis shard-stats --shards stats-*.npz --out results

    Prints d_within / d_total / R^2, calibration (ECE, MCE, O-/U-ECE, classwise ECE, NLL, Brier), logit means
    and accuracy; writes shard_stats.json to --out. Not mergeable, left out: adaptive ECE, AUROC, bootstrap
    intervals, logit quantiles and KDE.
    """
    from pathlib import Path

    from repanalysis.analyze.logits import TABLE_HEADERS
    from repanalysis.analyze.mergeable import merge_statistics, shard_statistics, statistics_of
    from repanalysis.arrays import pick_device
    from repanalysis.dump import load_dump
    from repanalysis.dump.provenance import with_provenance
    from repanalysis.outputs import output_set
    from repanalysis.report import format_table, write_json_atomic

    inputs = [*shards, *more]
    if not inputs:
        raise DataError("no inputs; expected --shards INPUT... (shard Dump folders or saved .npz statistics)")
    if save is not None:
        if len(inputs) != 1:
            raise DataError(f"--save writes the statistics of one input; got {len(inputs)} inputs (save each "
                            "shard's on its own, then combine the .npz files)")
        if not save.lower().endswith(".npz"):
            raise DataError(f"--save {save}: expected a file name ending in .npz")
    settings = {"n_bins": 15 if n_bins is None else n_bins, "threshold": 0.01 if threshold is None else threshold,
                "alpha": 0.1 if alpha is None else alpha}
    given = {k: v for k, v in (("n_bins", n_bins), ("threshold", threshold), ("alpha", alpha)) if v is not None}
    dev = pick_device(device)
    stats, dumps, records = [], [], []
    for path in inputs:
        if Path(path).suffix.lower() == ".npz":
            st = statistics_of(path, **given)          # saved statistics keep their settings unless told
            records.append({"name": st.name, "dump": None, "statistics": str(path), "shard": st.shard,
                            **{k: st.meta.get(k) for k in ("checkpoint", "dataset", "split", "arch")}})
        else:
            dump = load_dump(path)
            st = shard_statistics(dump, **settings, device=dev, chunk_size=chunk_size)
            dumps.append(dump)
        stats.append(st)
    if save is not None:
        written = stats[0].save(save)
        click.echo(f"wrote {written} (statistics of {stats[0].label}, rows {stats[0].shard['start']}-"
                   f"{stats[0].shard['stop'] - 1} of {stats[0].shard['total']})", err=True)
        return
    result = merge_statistics(stats).compute()
    payload = {"analysis": "shard-stats", **result.to_dict(),
               "inputs": [{"source": st.source, "shard": st.shard} for st in stats]}
    out.mkdir(parents=True, exist_ok=True)
    with output_set():
        write_json_atomic(out / "shard_stats.json", with_provenance(payload, dumps, inputs=records))
    if as_json:
        echo_json(payload)
    else:
        tables = result.table_rows()
        titles = {"separation": "Class separation", "calibration": "Calibration (equal-width bins; fractions)",
                  "logits": "Logit statistics (means)", "accuracy": "Accuracy (confusion counts)"}
        blocks = [f"{titles[key]}\n{format_table(rows, headers=TABLE_HEADERS if key == 'logits' else None)}"
                  for key, rows in tables.items()]
        click.echo("\n\n".join(blocks))
        click.echo(f"{len(stats)} input(s), {result.num_samples} rows; not mergeable, left out: adaptive ECE, AUROC, "
                   "intervals, logit quantiles and KDE", err=True)
    click.echo(f"wrote {out / 'shard_stats.json'}", err=True)
