"""Demo step: training dynamics of CE / LS / MaxSup, a checkpoint per epoch (``repanalysis dynamics``).

The demo trains its models keeping a checkpoint per epoch beside each final one (``make_demo_checkpoints(...,
save_every_epoch=True)``: ``checkpoints/ce_e8_n4000_s0/epoch_<k>.pth``), so this step follows the very models the
other steps analyse; their Dumps are cached under ``dumps/dynamics/``, so a second demo run extracts nothing.
Every checkpoint is evaluated on the demo's whole test split, d_within / R^2 on its training split. The per-sample
calibration states (over-/under-confident, FedLaS Fig. 3a/b) are measured from the models' outputs, not from a
gating network as in FedLaS.
"""
from __future__ import annotations

ORDER = 60
TITLE = ("Training dynamics: calibration, logits, geometry, calibration-state flips and forgetting events per "
         "epoch (FedLaS Fig. 3, Toneva et al. 2019)")


def run(ctx) -> None:
    """Run the dynamics of the per-epoch series and write dynamics.json / .csv and the figures
    under ``ctx.out / 'dynamics'``."""
    import numpy as np

    from repanalysis.compare.dynamics import run_dynamics
    from repanalysis.report import format_table
    from repanalysis.train.trainer import epoch_folder

    folders, names = [], []
    for name, ckpt in ctx.checkpoints.items():
        folder = epoch_folder(ckpt)
        if not folder.is_dir():
            ctx.log(f"{name}: no per-epoch checkpoints beside {ckpt}; left out of the dynamics")
            continue
        folders.append(folder)
        names.append(name)
    ctx.log(f"{len(folders)} runs, a checkpoint per epoch")
    res = run_dynamics(folders, names=names, data=ctx.data["test"], train_data=ctx.data["train"],
                       out=ctx.out / "dynamics", dumps_dir=ctx.out / "dumps" / "dynamics", device=ctx.device,
                       batch_size=256, workers=0, progress=False,
                       log=lambda m: None if "reusing" in m or "extracted" in m else ctx.log(m))
    ctx.log(f"{len(res.extracted)} Dumps extracted, the others reused")
    # shown column -> (metric, scale): fractions in %
    columns = {"acc %": ("accuracy", 100), "ECE %": ("ece", 100), "O-ECE %": ("oece", 100), "U-ECE %": ("uece", 100),
               "over-confident %": ("over_confident", 100), "state flips %": ("state_flip_rate", 100),
               "forgotten": ("forgetting_events", 1)}
    for run in res.result.runs:
        rows = [{"epoch": r["epoch"], **{c: (None if np.isnan(r[m]) else int(r[m]) if m == "forgetting_events"
                                             else r[m] * k) for c, (m, k) in columns.items()}}
                for r in run.rows()]
        dist = run.forgetting_distribution()
        ctx.log(f"{run.name}:\n{format_table(rows, digits=3)}\n  forgotten k times (k: samples) "
                f"{dist['counts']}, never learned {dist['never_learned']}")
    ctx.log(f"wrote {len(res.files)} files to {ctx.out / 'dynamics'}")
