"""Training dynamics over checkpoint series: accuracy, calibration, logits, geometry, calibration-state flips and
forgetting events per epoch, one line per run.

Example: ``repanalysis dynamics --checkpoint 'ckpts/ce/epoch_*.pth' --checkpoint 'ckpts/ls/epoch_*.pth'
--names CE,LS --data VAL --train-data TRAIN --out runs/dynamics`` orders each run's checkpoints by the epoch they
record (else by the number in their file names), extracts each once (complete Dumps under runs/dynamics/dumps/ are
reused), prints a table per run and writes dynamics.json, dynamics.csv and the figures (see
:func:`repanalysis.compare.dynamics.run_dynamics`).
"""
from __future__ import annotations

import math

import click

from repanalysis.cli.common import device_option, echo_json, json_option, names_option, out_option, quiet_option

# the table's columns: metric -> (header, display scale)
_COLUMNS = {"accuracy": ("acc %", 100), "nll": ("NLL", 1), "ece": ("ECE %", 100), "oece": ("O-ECE %", 100),
            "uece": ("U-ECE %", 100), "near_zero_fraction": ("near-0 %", 100), "logit_gap": ("gap", 1),
            "feature_l1_norm": ("|h|_1", 1), "d_within": ("d_within", 1), "r2": ("R^2", 1),
            "over_confident": ("over %", 100), "state_flip_rate": ("state flips %", 100),
            "prediction_flip_rate": ("pred flips %", 100), "forgetting_events": ("forgotten", 1)}


@click.command("dynamics")
@click.option("--checkpoint", "checkpoints", multiple=True, required=True, metavar="GLOB",
              help="One run's checkpoints: a quoted glob ('ckpts/ce/epoch_*.pth'), a folder or a file; give it once "
              "per run.")
@names_option
@click.option("--data", default=None, help="Evaluation data set (default: data.root from `repanalysis config`).")
@click.option("--train-data", default=None, help="Training data set: d_within and R^2 are computed on it (else on "
              "--data).")
@click.option("--bins", "n_bins", type=click.IntRange(min=1), default=15, show_default=True,
              help="Equal-width confidence bins of the ECE family and of the calibration states.")
@click.option("--threshold", type=click.FloatRange(min=0), default=0.01, show_default=True,
              help="Near-zero logit threshold t (|z| < t).")
@click.option("--arch", default=None, help="torchvision or timm model name (inferred when omitted).")
@click.option("--layout", default="auto", help="Data layout (auto, imagefolder, imagenet-val, cifar10, mnist, npz...).")
@click.option("--split", default=None, help="Split of the evaluation data set, for data sets that have several.")
@click.option("--batch-size", default=128, show_default=True, type=click.IntRange(1))
@click.option("--workers", default=None, type=click.IntRange(0), help="DataLoader workers.")
@click.option("--trust-checkpoint", is_flag=True, help="Allow pickled code / TorchScript checkpoints.")
@click.option("--no-figures", is_flag=True, help="Write the JSON and CSV only.")
@device_option()
@out_option("runs/dynamics")
@json_option
@quiet_option
def command(checkpoints, names, data, train_data, n_bins, threshold, arch, layout, split, batch_size, workers,
            trust_checkpoint, no_figures, device, out, as_json, quiet):
    """Training dynamics of checkpoint series: calibration, logits, geometry, state flips, forgetting per epoch."""
    from repanalysis.compare.dynamics import run_dynamics
    from repanalysis.report import format_table

    log = (lambda m: None) if quiet else (lambda m: click.echo(m, err=True))
    res = run_dynamics(list(checkpoints), names=names, data=data, train_data=train_data, out=out, n_bins=n_bins,
                       threshold=threshold, device=device, arch=arch, trust=trust_checkpoint, layout=layout,
                       split=split, batch_size=batch_size, workers=workers, progress=not quiet, log=log,
                       figures=not no_figures)
    if as_json:
        echo_json(res.result.to_dict())
    else:
        for run in res.result.runs:
            # a column without any value in this run (feature metrics of a logits-only Dump) is left out
            shown = {m: c for m, c in _COLUMNS.items() if any(math.isfinite(v) for v in run.metrics[m])}
            rows = [{"epoch": r["epoch"], **{h: _shown(r[m], scale, integer=m == "forgetting_events")
                                             for m, (h, scale) in shown.items()}}
                    for r in run.rows()]
            dist = run.forgetting_distribution()
            click.echo(f"\n{run.name} ({run.num_samples} samples; d_within / R^2 on the {run.separation_data} data)")
            click.echo(format_table(rows, digits=3))
            counts = ", ".join(f"{k}: {v}" for k, v in dist["counts"].items())
            click.echo(f"forgetting events per learned sample (count: samples) {counts}; never learned: "
                       f"{dist['never_learned']}")
    click.echo(f"\n{len(res.extracted)} Dumps extracted, "
               f"{sum(len(s.checkpoints) for s in res.series) * (1 + (train_data is not None)) - len(res.extracted)} "
               f"reused ({res.seconds:.1f}s)", err=True)
    for path in res.files:
        click.echo(f"wrote {path}", err=True)


def _shown(value: float, scale: float, integer: bool = False):
    """A table cell: None for NaN (printed as "-"), a count as an int, a fraction scaled to %."""
    if not math.isfinite(value):
        return None
    return int(value) if integer else value * scale
