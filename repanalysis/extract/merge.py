"""Joining the shards of one extraction into the Dump a single run gives (``repanalysis merge-dumps``).

The shards (``extract(..., shard=(i, n))`` on several machines, or the ranks of a ``torchrun`` run) are checked
to come from one run (same checkpoint, data, transform, precision, features: the run fingerprint each records)
and to cover every row exactly once (:func:`repanalysis.dump.shards.check_cover` names each gap and overlap);
their rows are then copied in order into one Dump through :class:`DumpWriter`, so a merge that is interrupted
resumes where it stopped, and the Dump it makes records the run's fingerprint: ``extract`` recognises it as a
complete Dump of that run.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from repanalysis.dump import Dump, load_dump, release_pages
from repanalysis.dump.shards import check_cover, shard_info
from repanalysis.errors import DataError, DumpError
from repanalysis.extract.store import DumpWriter
from repanalysis.paths import as_path

ROW_ARRAYS = ("logits", "labels", "features", "ids")
_CHUNK_BYTES = 64 << 20
# meta fields that differ from shard to shard, or that the writer sets for the merged Dump itself
_PER_SHARD = ("shard", "progress", "complete", "completed", "created", "format", "version", "num_samples", "arrays",
              "nonfinite_logit_rows", "fingerprint", "device", "name")


def merge_dumps(shards: Sequence, output: str | os.PathLike, *, overwrite: bool = False,
                remove_shards: bool = False, extra_meta: dict | None = None, log=None) -> Dump:
    """Merge the shard Dumps ``shards`` (paths or Dumps, any order) of one extraction into ``output``.

    Refuses (DumpError, one line) a Dump that is no shard or is incomplete, shards of different runs (naming
    what differs), and shards that leave rows out or hold rows twice (naming them). The merged Dump holds the
    rows in the data set's order, the shards' arrays and static arrays, and the meta of a single run of the
    extraction (its fingerprint, class names, data, transform, ...) plus ``merged_from``: each shard's index,
    rows, device and timing. ``output`` may end in ``.pt`` (the seed format, logits and labels only).
    ``remove_shards``: delete the shard folders once the merged Dump is complete. Returns the merged Dump.
    """
    from repanalysis.extract.runner import _finish_seed_pt, _writing

    output = as_path(output, "output")
    if not shards:
        raise DataError("no shards given; expected the Dumps of every shard of one extraction")
    dumps = [s if isinstance(s, Dump) else load_dump(s) for s in shards]
    labels = [str(d.path or d.name) for d in dumps]
    infos = []
    for d, label in zip(dumps, labels):
        info = shard_info(d.meta)
        if info is None:
            raise DumpError(f"{label} is not a shard: its meta.json records no shard; expected the Dumps written by "
                            "`repanalysis extract --shard i/n` (or by the ranks of a torchrun run)")
        if info["stop"] - info["start"] != d.num_samples:
            raise DumpError(f"{label} records rows {info['start']}-{info['stop'] - 1} but holds {d.num_samples} rows; "
                            "the Dump is damaged")
        infos.append(info)
    total = check_cover(list(zip(labels, infos)), [d.meta for d in dumps])
    order = sorted(range(len(dumps)), key=lambda i: infos[i]["start"])
    dumps, labels, infos = [dumps[i] for i in order], [labels[i] for i in order], [infos[i] for i in order]
    first = dumps[0]
    for d, label in zip(dumps, labels):
        if d.path is not None and output.exists() and d.path.resolve() == output.resolve():
            raise DumpError(f"output {output} is one of the shards; expected a new folder for the merged Dump")
        _check_same_arrays(first, labels[0], d, label)
    specs = {k: (tuple(first.array(k).shape[1:]), first.array(k).dtype) for k in ROW_ARRAYS if first.has(k)}
    static = {k: np.asarray(first.array(k)) for k in ("classifier_weight", "classifier_bias") if first.has(k)}
    meta = {k: v for k, v in first.meta.items() if k not in _PER_SHARD}
    devices = list(dict.fromkeys(str(d.meta.get("device")) for d in dumps))
    meta.update(name=first.meta.get("name") or first.name, fingerprint=infos[0].get("run"),
                device=devices[0] if len(devices) == 1 else ", ".join(devices),
                merged_from=[{**{k: info[k] for k in ("index", "count", "start", "stop")},
                              "device": d.meta.get("device"), "created": d.meta.get("created"),
                              "completed": d.meta.get("completed")} for d, info in zip(dumps, infos)],
                **(extra_meta or {}))
    seed_pt = output.suffix == ".pt"
    target = output.with_name(output.name + ".partial") if seed_pt else output
    if seed_pt and output.exists() and not overwrite:
        raise DumpError(f"output {output} already exists; pass --overwrite to replace it")
    with _writing(output):
        writer = DumpWriter(target, total, specs, meta, overwrite=overwrite and not seed_pt, static_arrays=static,
                            sample_names=_sample_names(first), for_file=output if seed_pt else None)
    if writer.done and log:
        log(f"resuming the merge into {writer.path} at row {writer.done} of {total}")
    try:
        with _writing(output):
            _copy_rows(dumps, infos, writer, tuple(specs))
            nonfinite = sum(_nonfinite_rows(d) for d in dumps)
            writer.finalize({"nonfinite_logit_rows": nonfinite})
    except BaseException:
        writer.discard()
        raise
    if seed_pt:
        merged = _finish_seed_pt(target, output, overwrite)
    else:
        merged = load_dump(target)
    if remove_shards:
        for d in dumps:
            if d.path is not None and d.path.is_dir():
                shutil.rmtree(d.path)
    return merged


def _check_same_arrays(first: Dump, first_label: str, d: Dump, label: str) -> None:
    """DumpError unless ``d`` holds the arrays ``first`` holds, of the same row shape and dtype, and the same
    classifier weights (shards of one run always do: this catches a shard of a damaged or edited Dump)."""
    for key in ROW_ARRAYS:
        if first.has(key) != d.has(key):
            has, lacks = (first_label, label) if first.has(key) else (label, first_label)
            raise DumpError(f"{has} holds {key} but {lacks} does not; expected shards of one extraction")
        if first.has(key) and (first.array(key).shape[1:] != d.array(key).shape[1:]
                               or first.array(key).dtype != d.array(key).dtype):
            raise DumpError(f"{key} of {label} is {d.array(key).dtype} {d.array(key).shape[1:]} but {first_label}'s "
                            f"is {first.array(key).dtype} {first.array(key).shape[1:]}; expected shards of one "
                            "extraction")
    for key in ("classifier_weight", "classifier_bias"):
        if first.has(key) != d.has(key) or (first.has(key) and not np.array_equal(first.array(key), d.array(key))):
            raise DumpError(f"{label} and {first_label} hold different {key}; expected shards of one extraction")


def _sample_names(dump: Dump) -> list[str] | None:
    """Every line of the shard's samples.txt (each shard holds the whole data set's list; ids index into it)."""
    file = dump.path / "samples.txt" if dump.path is not None and dump.path.is_dir() else None
    if file is None or not file.exists():
        return None
    return file.read_text(encoding="utf-8", errors="surrogateescape").splitlines()


def _copy_rows(dumps: Sequence[Dump], infos: Sequence[dict], writer: DumpWriter, keys: tuple[str, ...]) -> None:
    """Copy each shard's rows to its place in the merged Dump, from the writer's first missing row on, a
    chunk of about 64 MiB at a time (committed after each, so an interrupted merge resumes)."""
    for d, info in zip(dumps, infos):
        start, stop = info["start"], info["stop"]
        if writer.done >= stop:
            continue
        arrays = {k: d.array(k) for k in keys}
        row_bytes = sum(a.dtype.itemsize * int(np.prod(a.shape[1:], dtype=np.int64)) for a in arrays.values())
        rows = max(1, _CHUNK_BYTES // max(1, row_bytes))
        chunks = ((s, {k: np.asarray(a[s:s + rows]) for k, a in arrays.items()})
                  for s in range(max(0, writer.done - start), stop - start, rows))
        for s, chunk in release_pages(chunks, arrays.values()):
            writer.write(start + s, chunk)
            writer.commit(start + s + len(chunk["labels"]))


def _nonfinite_rows(dump: Dump) -> int:
    """The shard's count of rows with NaN or inf logits (recorded by extract; counted when it is not)."""
    from repanalysis.extract.runner import count_nonfinite

    value = dump.meta.get("nonfinite_logit_rows")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return count_nonfinite(dump.logits)


def shard_paths(folder: str | os.PathLike) -> list[Path]:
    """The shard Dump folders directly inside ``folder`` (those whose meta.json records a shard), sorted."""
    from repanalysis.extract.store import _read_meta

    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_dir() and (_read_meta(p) or {}).get("shard") is not None)
