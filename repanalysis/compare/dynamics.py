"""``dynamics``: training runs given as checkpoint series, each checkpoint extracted once, the dynamics analysed
(:mod:`repanalysis.analyze.dynamics`), figures and JSON written as one set (``repanalysis dynamics``).

Three lines in a notebook::

    from repanalysis.compare.dynamics import run_dynamics
    res = run_dynamics(["ckpts/ce/epoch_*.pth", "ckpts/ls/epoch_*.pth"], names="CE,LS", data="val/")
    res.to_frame()       # model (the run), epoch, metric, value, n

This floor composes extraction (checkpoints need models), the analysis and the figures, as ``compare`` does.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from repanalysis.errors import DataError

JSON_NAME = "dynamics.json"
CSV_NAME = "dynamics.csv"


@dataclass
class DynamicsRun:
    """What :func:`run_dynamics` made: the :class:`~repanalysis.analyze.dynamics.DynamicsResult`, the checkpoint
    series, the files written and the Dumps this call extracted (empty when every one was reused)."""

    result: object
    series: list
    out: Path
    files: list[Path] = field(default_factory=list)
    extracted: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_frame(self):
        return self.result.to_frame()


def run_dynamics(checkpoints: Sequence, *, names=None, data=None, train_data=None, out="runs/dynamics",
                 dumps_dir=None, n_bins: int = 15, threshold: float = 0.01, device="auto", arch: str | None = None,
                 trust: bool = False, layout: str = "auto", split: str | None = None, class_order=None,
                 batch_size: int = 128, workers: int | None = None, progress: bool = True, log=None,
                 command: str | None = None, figures: bool = True) -> DynamicsRun:
    """The training dynamics of one or more runs, each a series of checkpoints.

    checkpoints: one entry per run: a glob pattern (``"ckpts/ce/epoch_*.pth"``), a folder, a list of paths or a
    :class:`~repanalysis.extract.series.CheckpointSeries`; each run's checkpoints are ordered by the epoch they
    record, else by the number in their file names (DataError naming the files when neither orders them).
    names: one display name per run ("CE,LS" or a list; default: each run's folder name). data: the evaluation data
    set (default: the configured one); train_data: the training data set, on which d_within / R^2 are computed (else
    on ``data``). Every checkpoint is extracted once into ``dumps_dir/<run>/<stem>-<val|train>`` (default
    ``out/dumps``): complete Dumps of the same run are reused, interrupted ones resumed. Writes into ``out``, as one
    set: ``dynamics.json`` (per run and epoch every number, the forgetting distribution, the series, provenance),
    ``dynamics.csv`` (the tidy frame) and, with ``figures``, ``dynamics.png|pdf`` and ``forgetting.png|pdf``.
    """
    from repanalysis.analyze.dynamics import dynamics_of_runs
    from repanalysis.arrays import check_number, pick_device
    from repanalysis.compare.run import _check_names
    from repanalysis.dump.provenance import with_provenance
    from repanalysis.extract.series import CheckpointSeries, checkpoint_series, extract_series
    from repanalysis.outputs import output_set, write_csv_atomic, write_json_atomic
    from repanalysis.paths import as_path

    start = time.perf_counter()
    log = log or (lambda message: None)
    out = as_path(out, "out")
    dumps_dir = out / "dumps" if dumps_dir is None else as_path(dumps_dir, "dumps_dir")
    n_bins = check_number(n_bins, "n_bins (confidence bins)", integer=True, minimum=1)
    if isinstance(checkpoints, (str, CheckpointSeries)) or not isinstance(checkpoints, Sequence) or not checkpoints:
        raise DataError("dynamics takes a list of runs, one entry per run (a glob such as 'ckpts/ce/epoch_*.pth', a "
                        f"folder or a list of checkpoint paths); got {checkpoints!r:.100}")
    names = _check_names(names, len(checkpoints), "runs")
    series = [c if isinstance(c, CheckpointSeries) else checkpoint_series(c, None if names is None else names[i],
                                                                            trust=trust)
              for i, c in enumerate(checkpoints)]
    if names is not None:
        for s, name in zip(series, names):
            s.name = name
    seen: dict[str, str] = {}
    for s in series:
        if s.name in seen:
            raise DataError(f"runs {seen[s.name]!r} and {s.source or s.name!r} are both named {s.name!r} (their folder "
                            "name); expected distinct runs: name them with --names (names=)")
        seen[s.name] = s.source or s.name
    for s in series:
        log(f"{s.name}: {len(s.checkpoints)} checkpoints ordered by {s.ordered_by} (epochs "
            f"{_epoch_list(s.epochs)})")
    dev = pick_device(device)
    if data is None:
        from repanalysis import config

        default = config.default_data()
        data, layout = default["spec"], layout if layout != "auto" else (default["layout"] or "auto")
        split, class_order = split or default["split"], class_order or default["class_order"]
    opts = {"arch": arch, "trust": trust, "device": dev, "batch_size": batch_size, "workers": workers,
            "layout": layout, "class_order": class_order, "progress": progress, "log": log}
    extracted: list[str] = []
    val = {s.name: extract_series(s, data, dumps_dir, tag="val", split=split, extracted=extracted, **opts)
           for s in series}
    train = None
    if train_data is not None:
        train = {s.name: extract_series(s, train_data, dumps_dir, tag="train", extracted=extracted, **opts)
                 for s in series}
    result = dynamics_of_runs(val, train, n_bins=n_bins, threshold=threshold, device=dev)
    dumps = [d for group in (val, train or {}) for items in group.values() for _, d in items]
    payload = {**result.to_dict(), "series": [s.to_dict() for s in series], "data": str(data),
               "train_data": None if train_data is None else str(train_data)}
    files = [out / JSON_NAME, out / CSV_NAME]
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot write {out}: {exc.strerror or exc}; expected a folder for the results") from None
    with output_set() as outputs:            # the JSON, the CSV and the figures replace the last run's together
        write_json_atomic(out / JSON_NAME, with_provenance(payload, dumps, command=command))
        write_csv_atomic(out / CSV_NAME, result.frame_rows())
        if figures:
            from repanalysis.plot.dynamics import save_dynamics_figures

            files += save_dynamics_figures(out, result)
        else:
            outputs.discard(*(out / f"{stem}.{ext}" for stem in ("dynamics", "forgetting") for ext in ("png", "pdf")))
    return DynamicsRun(result=result, series=series, out=out, files=files, extracted=extracted,
                       seconds=time.perf_counter() - start)


def _epoch_list(epochs: Sequence[int]) -> str:
    """1, 2, ..., 20 for a long list."""
    shown = [str(e) for e in epochs]
    return ", ".join(shown) if len(shown) <= 6 else f"{', '.join(shown[:3])}, ..., {shown[-1]}"
