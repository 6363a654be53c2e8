"""Gather the Dumps an analysis needs: from Dump paths, from checkpoints (extracted into their run folder when
missing, reused when complete for the same data), or from the run folder of the current project.

Used by the geometry commands and the demo; a notebook can call :func:`gather_dumps` directly::

    from repanalysis.extract.gather import gather_dumps
    models = gather_dumps([], ["ce.pth", "ls.pth"], "CE,LS", data="/data/imagenet/val")
"""
from __future__ import annotations

from pathlib import Path

from repanalysis.errors import RepanalysisError
from repanalysis.text import display_text


def split_names(value) -> list[str] | None:
    """'a,b , c' (or a list) -> ['a', 'b', 'c']; None stays None."""
    if value is None:
        return None
    if not isinstance(value, str):
        return [display_text(v) for v in value]
    parts = [part.strip() for part in display_text(value).split(",")]
    if not all(parts):
        raise RepanalysisError(f"--names {value!r} has an empty entry; expected one non-empty name per input, "
                               "separated by commas")
    return parts


def complete_feature_dump(path: Path):
    """The complete Dump with features at ``path``, or None."""
    from repanalysis.extract.store import load_dump

    if not (path / "meta.json").exists():
        return None
    dump = load_dump(path, allow_incomplete=True)
    return dump if dump.complete and dump.features is not None else None


def extract_features_cached(checkpoint, data, *, layout=None, split=None, class_order=None, name=None,
                            device="auto", batch_size=128, overwrite=False, log=None):
    """Features Dump of a checkpoint in its run folder (runs/<stem>/features/), reused when already complete
    for the same data set; a Dump of other data there is replaced only with ``overwrite``."""
    import repanalysis as ra
    from repanalysis import config
    from repanalysis.paths import as_path

    output = config.default_output(as_path(checkpoint, "checkpoint"), "features")
    found = None if overwrite else complete_feature_dump(output)
    same_data = found is not None and (data is None or _data_set_of(found)[0] == _resolved(data))
    if same_data:
        return found if name is None else ra.load_dump(output, name=name)
    if data is None:
        d = config.default_data()
        data, layout = d["spec"], layout or d["layout"]
        split, class_order = split or d["split"], class_order or d["class_order"]
    if log:
        log(f"extracting features of {checkpoint} into {output}")
    return ra.extract(checkpoint, data, output, features=True, layout=layout or "auto", split=split,
                      class_order=class_order, device=device, batch_size=batch_size, name=name,
                      overwrite=overwrite, progress=log is not None, log=log)


def gather_dumps(dumps, checkpoints, names, data=None, *, layout=None, split=None, device="auto", batch_size=128,
                 need_features=True, overwrite=False, log=None):
    """Dumps from --dump paths and/or --checkpoint paths (extracted as needed), else from the run folder.

    A run-folder Dump that holds only logits is re-extracted with features from the checkpoint and data
    recorded in its meta.json. Returns a list of Dumps named by --names when given.
    """
    import repanalysis as ra
    from repanalysis import config
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
    found = config.default_dumps()
    if name_list is not None and len(name_list) != len(found):
        raise RepanalysisError(f"--names has {len(name_list)} names but the run folder holds {len(found)} models "
                               f"({', '.join(n for n, _ in found)})")
    for i, (run_name, dump) in enumerate(found):
        name = name_list[i] if name_list else run_name
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
        else:
            dump.name = name
        out.append(dump)
    _check_one_data_set(out, data, split)
    return out


def _resolved(path) -> str:
    return str(Path(str(path)).expanduser().resolve())


def _data_set_of(dump) -> tuple[str, str | None]:
    """(resolved data root, split) a Dump was extracted from; root "?" when its meta does not say."""
    ds = dump.meta.get("dataset") or {}
    root = ds.get("root")
    return (_resolved(root) if root else "?"), ds.get("split")


def _check_one_data_set(dumps, data, split) -> None:
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
        want = _resolved(data)
        if any(root != want or (split and s not in (split, None)) for root, s in sets):
            raise RepanalysisError(f"the run folder's Dumps are not all of the data set {data} ({listing}); "
                                   "extract them on it with `repanalysis extract --checkpoint MODEL.pth --data "
                                   f"{data} --overwrite`, or give the Dumps explicitly")
    elif len(set(sets)) > 1:
        raise RepanalysisError(f"the run folder holds Dumps of different data sets ({listing}); give the Dumps "
                               "explicitly, or re-extract them all on one data set (--data ... --overwrite)")
