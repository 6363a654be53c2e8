"""Provenance of results: which checkpoints, data, transform and tool made them, recorded in every JSON the tool
writes and at the bottom of the HTML report (read from each input Dump's meta.json)."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Sequence

from repanalysis._version import __version__

COMMAND: str | None = None      # the command line being run, set by the `repanalysis` entry point
_FIELDS = ("arch", "split", "transform", "created", "tool_version", "precision", "feature_layer")


def dump_provenance(dump) -> dict:
    """What one Dump records about its making: name, path, checkpoint (path, sha256, ema), arch, data set
    description, split, transform, created, tool version. Fields a Dump does not record (arrays wrapped in
    memory, the seed tool's .pt) are None."""
    meta = dump.meta if isinstance(dump.meta, dict) else {}
    ck = meta.get("checkpoint") if isinstance(meta.get("checkpoint"), dict) else {}
    return {"name": dump.name, "dump": None if dump.path is None else str(dump.path),
            "checkpoint": {"path": ck.get("path"), "sha256": ck.get("sha256"), "ema": bool(ck.get("ema", False))},
            "data": meta.get("dataset"), "num_samples": dump.num_samples,
            **{key: meta.get(key) for key in _FIELDS}}


def provenance(dumps: Sequence = (), *, command: str | None = None, extra: dict | None = None) -> dict:
    """The ``provenance`` block of a result JSON: tool, version, when written, the command line (default: the one
    the ``repanalysis`` entry point recorded in :data:`COMMAND`; None from the Python API), and
    :func:`dump_provenance` of each input Dump."""
    if command is None:
        command = COMMAND
    out = {"tool": "repanalysis", "version": __version__,
           "written": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": command,
           "inputs": [dump_provenance(d) for d in dumps]}
    if extra:
        out.update(extra)
    return out


def with_provenance(payload, dumps: Sequence = (), *, command: str | None = None, inputs: list | None = None) -> dict:
    """A result JSON's payload with its ``provenance`` (:func:`provenance` of ``dumps``; ``inputs``: further input
    records, e.g. checkpoints analysed without a Dump). A list payload becomes ``{"results": [...], ...}``."""
    prov = provenance(dumps, command=command)
    if inputs:
        prov["inputs"] += list(inputs)
    body = dict(payload) if isinstance(payload, dict) else {"results": list(payload)}
    body["provenance"] = prov
    return body


def checkpoint_inputs(checkpoints: Sequence, names: Sequence[str], data, transform=None, ema: bool = False) -> list:
    """Input records for results made from checkpoints directly (Grad-CAM): name, checkpoint path and sha256
    (read from the file), the data set and the transform overrides."""
    import hashlib
    from pathlib import Path

    out = []
    for path, name in zip(checkpoints, names):
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        out.append({"name": name, "dump": None,
                    "checkpoint": {"path": str(Path(path).resolve()), "sha256": h.hexdigest(), "ema": bool(ema)},
                    "data": {"root": str(data)}, "transform": dict(transform or {}) or None})
    return out
