"""Options and helpers shared by sub-commands (parsing only; all computing happens in the library)."""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Sequence

import click

from repanalysis.errors import RepanalysisError
from repanalysis.extract.gather import split_names  # noqa: F401  (one parser for --names)


def load_inputs(paths: Sequence[str], names: str | None = None, *, distinct: bool = True,
                need_features: bool = False):
    """The DUMP arguments of an analysis command (:func:`load_dumps`), or without any, the run folder's Dumps
    (:func:`run_folder_dumps`; ``need_features``: features Dumps only)."""
    if paths:
        return load_dumps(paths, names, distinct=distinct)
    return run_folder_dumps(split_names(names), need_features)


def load_dumps(paths: Sequence[str], names: str | None = None, *, distinct: bool = True):
    """Open each input (Dump directory or seed .pt) with its display name from --names.

    ``distinct``: the display names must differ (each input is a model of its own); otherwise only the same
    Dump given twice under one name is refused (``separation`` pairs a train and a test Dump by name)."""
    from repanalysis.dump import load_dump

    name_list = split_names(names)
    if name_list is not None and len(name_list) != len(paths):
        raise RepanalysisError(f"--names has {len(name_list)} names but {len(paths)} inputs were given; "
                               "expected one name per input")
    dumps = [load_dump(p, name=(name_list[i] if name_list else None)) for i, p in enumerate(paths)]
    check_distinct_names([d.name for d in dumps], paths, from_names=name_list is not None, same_path_only=not distinct)
    return dumps


def run_folder_dumps(name_list: list[str] | None, need_features: bool = False):
    """The run folder's complete Dumps (``runs/<checkpoint>/{features,logits}``), all of one data set; with
    ``need_features``, runs that hold logits only are left out with a warning naming them."""
    from repanalysis import config
    from repanalysis.extract.gather import check_one_data_set, named_run_dumps

    found = named_run_dumps(name_list, require_features=need_features)
    if need_features:
        have = {n for n, _ in found}
        logits_only = [n for n, _ in config.default_dumps() if n not in have] if have else []
        if logits_only:
            warnings.warn(f"run(s) {', '.join(logits_only)} have no complete features Dump and are left out (this "
                          "command needs features; `repanalysis extract --checkpoint MODEL.pth` makes them)",
                          RuntimeWarning, stacklevel=2)
    dumps = [dump for _, dump in found]
    check_distinct_names([d.name for d in dumps], [d.path for d in dumps], from_names=name_list is not None)
    check_one_data_set(dumps, None, None)
    return dumps


def check_distinct_names(names: Sequence[str], paths: Sequence, *, from_names: bool = False,
                         same_path_only: bool = False) -> None:
    """One line naming the first repeated display name (results would be merged under it)."""
    seen = {}
    for name, path in zip(names, paths):
        key = (name, Path(str(path)).expanduser().resolve()) if same_path_only else name
        if key in seen:
            if same_path_only:
                raise RepanalysisError(f"{path} is given twice under the name {name!r}; expected distinct Dumps, "
                                       "or distinct --names")
            if from_names:
                raise RepanalysisError(f"--names gives {name!r} twice; expected one distinct name per input")
            raise RepanalysisError(f"two inputs are named {name!r} ({seen[key]} and {path}; the same one given "
                                   "twice?); expected distinct inputs, or distinct --names")
        seen[key] = path


def data_or_configured(data, layout, split, class_order):
    """(data, layout, split, class_order): the arguments as given, or, with no --data, the configured data set
    (`repanalysis config`) filling the ones not given (layout only when it is "auto")."""
    if data is not None:
        return data, layout, split, class_order
    from repanalysis import config

    d = config.default_data()
    return (d["spec"], d["layout"] if layout == "auto" else layout, split or d["split"],
            class_order or d["class_order"])


def default_workers(workers: int | None) -> int:
    """DataLoader workers: the value given, else one per core but one (at most 8; see extract's default)."""
    from repanalysis.extract.runner import default_workers as default

    return workers if workers is not None else default()


def echo_json(obj) -> None:
    from repanalysis.outputs import json_text

    click.echo(json_text(obj))


def _check_out(ctx, param, value: Path) -> Path:
    """--out must be a folder this user can make or write in: checked before any work, not after it."""
    broken = next((p for p in (value, *value.parents) if p.is_symlink() and not p.exists()), None)
    if broken is not None:
        raise click.BadParameter(f"{broken} is a broken symbolic link; expected a folder (or a new path)")
    folder = next(p for p in (value, *value.parents) if p.exists())       # "." at the latest
    if not folder.is_dir():
        raise click.BadParameter(f"{folder} is a file; expected a folder (or a new path) for the results")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise click.BadParameter(f"cannot write in {folder}; expected a folder this user can write to")
    return value


def out_option(default: str):
    return click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=default,
                        show_default=True, help="Folder for figures and JSON.", callback=_check_out)


def _check_device(ctx, param, value):
    from repanalysis.arrays import pick_device

    pick_device(value)        # an unknown or absent device stops here, before any work
    return value


def device_option(help: str = "auto (CUDA when present), cpu, cuda or cuda:N."):
    return click.option("--device", default="auto", show_default=True, help=help, callback=_check_device)


names_option = click.option("--names", default=None, help="Comma-separated display names, one per input.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout.")
def bootstrap_options(fn=None, *, what: str = "the confidence intervals"):
    """--bootstrap (resamples, 0: none), --ci (level) and --seed, the options of every command with bootstrap
    intervals (calibration, per-class, compare); ``what`` completes --bootstrap's help."""
    def add(f):
        for option in reversed([
            click.option("--bootstrap", "n_boot", type=click.IntRange(min=0), default=1000, show_default=True,
                         help=f"Bootstrap resamples of the images for {what} (0: none)."),
            click.option("--ci", "ci_level", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.95,
                         show_default=True, help="Confidence level of the bootstrap intervals."),
            click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap resampling."),
        ]):
            f = option(f)
        return f
    return add(fn) if fn is not None else add


quiet_option = click.option("--quiet", is_flag=True, help="No progress bar (none is drawn when stderr is not a terminal).")


def _numbers(ctx, param, value):
    """'0.5,0.4,0.3' -> (0.5, 0.4, 0.3) at parse time (None stays None)."""
    if value is None:
        return None
    try:
        return tuple(float(x) for x in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {value!r}") from None


# The eval-transform flags of every command that feeds images to a model (extract, logits, gradcam): one set.
TRANSFORM_OPTIONS = [
    click.option("--resolution", default=None, type=click.IntRange(1), help="Override: crop size fed to the model."),
    click.option("--crop-ratio", default=None, type=click.FloatRange(0, 1, min_open=True),
                 help="Override: resolution / resize size (e.g. 0.875)."),
    click.option("--interpolation", default=None,
                 type=click.Choice(["bilinear", "bicubic", "nearest", "lanczos", "box", "hamming"]),
                 help="Override: resize interpolation."),
    click.option("--mean", default=None, callback=_numbers,
                 help="Override: comma-separated channel means (1 value: grayscale input)."),
    click.option("--std", default=None, callback=_numbers,
                 help="Override: comma-separated channel stds (as many as --mean)."),
]


def transform_options(fn):
    """Add the transform flags (:data:`TRANSFORM_OPTIONS`) to a command."""
    for option in reversed(TRANSFORM_OPTIONS):
        fn = option(fn)
    return fn


def transform_overrides(opts: dict) -> dict:
    """The transform flags' parsed values in ``opts`` -> the overrides given, checked (one-line DataError for
    e.g. --mean with 2 values and --std with 3), for :func:`repanalysis.data.transforms.override_transform`."""
    from repanalysis.data.transforms import TRANSFORM_OVERRIDES, check_transform_overrides

    return check_transform_overrides(**{key: opts.get(key) for key in TRANSFORM_OVERRIDES})
