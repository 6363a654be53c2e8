"""Gather the Dumps an analysis needs: from Dump paths, from checkpoints (extracted into their run folder when
missing, reused when complete for the same run), or from the run folder of the current project.

Used by the geometry commands and the demo; a notebook can call :func:`gather_dumps` directly::

    from repanalysis.extract.gather import gather_dumps
    models = gather_dumps([], ["ce.pth", "ls.pth"], "CE,LS", data="/data/imagenet/val")
"""
from __future__ import annotations

from pathlib import Path

from repanalysis.errors import RepanalysisError
from repanalysis.text import display_text


def split_names(value, option: str = "--names", expected: str = "one non-empty name per input") -> list[str] | None:
    """'a,b , c' (or a list) -> ['a', 'b', 'c']; None stays None. ``option`` and ``expected`` word the
    error for an empty entry."""
    if value is None:
        return None
    if not isinstance(value, str):
        return [display_text(v) for v in value]
    parts = [part.strip() for part in display_text(value).split(",")]
    if not all(parts):
        raise RepanalysisError(f"{option} {value!r} has an empty entry; expected {expected}, separated by commas")
    return parts


def extract_features_cached(checkpoint, data, *, layout=None, split=None, class_order=None, name=None,
                            device="auto", batch_size=128, overwrite=False, log=None):
    """Features Dump of a checkpoint in its run folder (runs/<stem>/features/), reused when it is a complete Dump
    of this same run (by the run fingerprint: the checkpoint's sha256, the data set's content, split, transform,
    precision), resumed when incomplete; a Dump of another run there (another checkpoint of the same file name,
    other data) is replaced only with ``overwrite``, as any existing Dump; ``overwrite`` extracts again in any
    case (as ``features --overwrite`` says)."""
    import repanalysis as ra
    from repanalysis import config
    from repanalysis.paths import as_path

    output = config.default_output(as_path(checkpoint, "checkpoint"), "features")
    if data is None:
        d = _default_data_for(output)
        data, layout = d["spec"], layout or d["layout"]
        split, class_order = split or d["split"], class_order or d["class_order"]
    if log:
        log(f"features of {checkpoint}: {output}")
    dump = ra.extract(checkpoint, data, output, features=True, layout=layout or "auto", split=split,
                      class_order=class_order, device=device, batch_size=batch_size, overwrite=overwrite,
                      reuse=not overwrite, progress=log is not None, log=log)
    if name is not None:      # a display name of this call only: the cached Dump keeps its checkpoint's name
        dump.name = name
    return dump


def _default_data_for(output: Path) -> dict:
    """The data set to extract into ``output`` when none is given: the configured one, else the one the Dump
    already there records (so that Dump is checked as a whole against this run and reused when it matches).
    ConfigError (no data set given, none configured) when there is neither."""
    from repanalysis import config
    from repanalysis.data.datasets import BY_MODEL_CLASS_NAMES
    from repanalysis.errors import ConfigError
    from repanalysis.extract.store import _read_meta

    try:
        return config.default_data()
    except ConfigError:
        ds = (_read_meta(output) or {}).get("dataset")
        if not isinstance(ds, dict) or not ds.get("root"):
            raise
    order = None if ds.get("class_order") == BY_MODEL_CLASS_NAMES else ds.get("class_order")
    return {"spec": ds["root"], "layout": ds.get("layout") or "auto", "split": ds.get("split"),
            "class_order": order}


def gather_dumps(dumps, checkpoints, names, data=None, *, layout=None, split=None, device="auto", batch_size=128,
                 need_features=True, overwrite=False, log=None):
    """Dumps from --dump paths and/or --checkpoint paths (extracted as needed), else from the run folder.

    A run-folder Dump that holds only logits is re-extracted with features from the checkpoint and data
    recorded in its meta.json. Returns a list of Dumps named by --names when given.
    """
    import repanalysis as ra
    from repanalysis.data.datasets import BY_MODEL_CLASS_NAMES

    inputs = [("dump", p) for p in dumps] + [("checkpoint", p) for p in checkpoints]
    name_list = split_names(names)
    if inputs and name_list is not None and len(name_list) != len(inputs):
        raise RepanalysisError(f"--names has {len(name_list)} names but {len(inputs)} inputs were given; "
                               "expected one name per --dump/--checkpoint")
    out = []
    if inputs:
        for i, (kind, path) in enumerate(inputs):
            name = name_list[i] if name_list else None
            if kind == "dump":
                out.append(ra.load_dump(path, name=name))
            else:
                out.append(extract_features_cached(path, data, layout=layout, split=split, name=name,
                                                   device=device, batch_size=batch_size, overwrite=overwrite,
                                                   log=log))
        return out
    for run_name, dump in named_run_dumps(name_list):
        name = dump.name
        if dump.features is None and need_features:
            ckpt = (dump.meta.get("checkpoint") or {}).get("path")
            ds = dump.meta.get("dataset") or {}
            if not ckpt or not Path(ckpt).exists():
                raise RepanalysisError(f"run {run_name} has logits only and its checkpoint {ckpt} is not found; "
                                       f"run `repanalysis extract --checkpoint MODEL.pth` for it")
            # folders relabelled by the model's class names are relabelled again by extract, not read as a file
            order = None if ds.get("class_order") == BY_MODEL_CLASS_NAMES else ds.get("class_order")
            dump = extract_features_cached(ckpt, data or ds.get("root"), layout=layout or ds.get("layout"),
                                           split=split or ds.get("split"), class_order=order,
                                           name=name, device=device, batch_size=batch_size, log=log)
        out.append(dump)
    check_one_data_set(out, data, split)
    return out


def named_run_dumps(name_list: list[str] | None, require_features: bool = False) -> list:
    """The run folder's complete Dumps as [(run name, Dump)], each Dump named by --names (one per run, in run
    order) or else by its run (see :func:`repanalysis.config.default_dumps`)."""
    from repanalysis import config

    found = config.default_dumps(require_features=require_features)
    if name_list is not None and len(name_list) != len(found):
        raise RepanalysisError(f"--names has {len(name_list)} names but the run folder holds {len(found)} models "
                               f"({', '.join(n for n, _ in found)})")
    for i, (run_name, dump) in enumerate(found):
        dump.name = name_list[i] if name_list else run_name
    return found


def _resolved(path) -> str:
    return str(Path(str(path)).expanduser().resolve())


def _roots_of(data, split, layout="auto") -> set[str]:
    """The resolved roots a Dump of the data set ``data`` (split ``split``, ``layout``) may record: the path given,
    and the file or folder opening it reads (``FOLDER/test.npz`` of a folder of npz files, a split sub-folder,
    ...)."""
    from repanalysis.data.datasets import data_root
    from repanalysis.errors import DataError

    roots = {_resolved(data)}
    try:
        roots.add(_resolved(data_root(data, layout=layout, split=split)))
    except DataError:
        pass            # not a data set opened as is: only the path itself
    return roots


def _data_set_of(dump) -> tuple[str, str | None]:
    """(resolved data root, split) a Dump was extracted from; root "?" when its meta does not say."""
    ds = dump.meta.get("dataset") or {}
    root = ds.get("root")
    return (_resolved(root) if root else "?"), ds.get("split")


def check_one_data_set(dumps, data, split) -> None:
    """Run-folder Dumps compared side by side must come from one data set: the one asked for (``data``, else
    the configured default) when there is one. RepanalysisError naming each run's data set otherwise."""
    from repanalysis import config
    from repanalysis.errors import ConfigError

    if data is None:
        try:
            d = config.default_data()
            data, split = d["spec"], split or d["split"]
        except ConfigError:
            pass
    sets = [_data_set_of(d) for d in dumps]
    listing = ", ".join(f"{d.name}: {root}" + (f" ({s})" if s else "") for d, (root, s) in zip(dumps, sets))
    if data is not None:
        layouts = [(d.meta.get("dataset") or {}).get("layout") or "auto" for d in dumps]
        if any(root not in _roots_of(data, split or s, layout) or (split and s not in (split, None))
               for (root, s), layout in zip(sets, layouts)):
            raise RepanalysisError(f"the run folder's Dumps are not all of the data set {data} ({listing}); "
                                   "extract them on it with `repanalysis extract --checkpoint MODEL.pth --data "
                                   f"{data} --overwrite`, or give the Dumps explicitly")
    elif len(set(sets)) > 1:
        raise RepanalysisError(f"the run folder holds Dumps of different data sets ({listing}); give the Dumps "
                               "explicitly, or re-extract them all on one data set (--data ... --overwrite)")
