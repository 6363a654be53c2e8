"""Shards of one extraction: which rows of the full run a shard Dump holds, and whether a set of shards covers
every row exactly once.

A shard is an ordinary, complete Dump of a contiguous range of the data set's order (``repanalysis extract
--shard i/n``, or one rank of a ``torchrun`` run). Its ``meta.json`` records::

    "shard": {"index": i, "count": n, "start": s, "stop": e, "total": N, "run": "<fingerprint of the full run>"}

``run`` identifies the whole extraction (checkpoint, data, transform, precision, features, ...: the fingerprint a
single-process run of it records), so shards of one run agree on it and shards of different runs do not. Row r of
the shard is row ``s + r`` of the full run. Used by ``merge-dumps`` (extract floor) and by the mergeable analyses
over shards (analyze floor), so it lives below both.
"""
from __future__ import annotations

import json
import re
from typing import Mapping, Sequence

from repanalysis.errors import DataError, DumpError

# what each run differs in, by meta field: (field, key inside it or None, how a message names it)
RUN_FIELDS = (("checkpoint", "sha256", "checkpoint"), ("dataset", None, "data"), ("split", None, "split"),
              ("transform", None, "transform"), ("precision", None, "precision"),
              ("feature_layer", None, "feature layer"), ("arch", None, "architecture"))


def run_differences(a: Mapping, b: Mapping) -> list[str]:
    """What two Dump metas differ in among RUN_FIELDS ('checkpoint', 'data', ...), fields either lacks skipped."""
    def value(m, field, key):          # as JSON text: a tuple in one meta equals the list meta.json reads back
        v = m.get(field)
        v = (v.get(key) if isinstance(v, dict) else None) if key is not None else v
        return None if v is None else json.dumps(v, sort_keys=True, default=str)

    return [label for field, key, label in RUN_FIELDS
            if None not in (value(a, field, key), value(b, field, key)) and value(a, field, key) != value(b, field, key)]


def parse_shard(text) -> tuple[int, int]:
    """'i/n' or (i, n), with 0 <= i < n, -> (i, n); DataError naming the form expected otherwise."""
    if isinstance(text, (tuple, list)) and len(text) == 2:
        text = f"{text[0]}/{text[1]}"           # the check below then applies to both forms
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if m is None or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
        raise DataError(f"shard {text!r} is not of the form i/n with 0 <= i < n (e.g. 0/4 for the first of four)")
    return int(m.group(1)), int(m.group(2))


def shard_rows(index: int, count: int, total: int, batch_size: int = 1) -> tuple[int, int]:
    """Rows ``[start, stop)`` of shard ``index`` of ``count`` over ``total`` rows: contiguous, no padding, every
    row in one shard. Shards are made of whole batches of ``batch_size`` (the batches of a single-process run,
    so each batch holds the same images as there), shared out as evenly as whole batches allow."""
    batches = -(-total // batch_size)
    first, last = index * batches // count, (index + 1) * batches // count
    return min(total, first * batch_size), min(total, last * batch_size)


def shard_info(meta: Mapping) -> dict | None:
    """The ``shard`` record of a Dump's meta (checked), or None for a Dump that is no shard."""
    info = meta.get("shard")
    if info is None:
        return None
    keys = ("index", "count", "start", "stop", "total")
    if not isinstance(info, Mapping) or any(not isinstance(info.get(k), int) or isinstance(info.get(k), bool)
                                             for k in keys) or not 0 <= info["start"] <= info["stop"] <= info["total"]:
        raise DumpError(f"meta.json 'shard' is {info!r}; expected index, count, start <= stop <= total as integers; "
                        "the Dump is damaged")
    return dict(info)


def whole_run(meta: Mapping, num_samples: int) -> dict:
    """The shard record of any Dump: its own when it is a shard, else one shard 0/1 holding every row."""
    info = shard_info(meta)
    if info is not None:
        return info
    return {"index": 0, "count": 1, "start": 0, "stop": int(num_samples), "total": int(num_samples),
            "run": meta.get("fingerprint")}


def _span(a: int, b: int) -> str:
    return f"row {a}" if b - a == 1 else f"rows {a}-{b - 1}"


def _are(span: str) -> str:
    return f"{span} {'is' if span.startswith('row ') else 'are'}"


def check_cover(shards: Sequence[tuple[str, Mapping]], metas: Sequence[Mapping] | None = None) -> int:
    """Check that ``shards`` ([(label, shard record)], e.g. from :func:`whole_run`) are of one run and cover each
    of its rows exactly once; return the run's number of rows. ``metas`` (the Dumps' meta, same order) let a
    refusal name what differs between two runs (checkpoint, data, transform, ...). DumpError naming the shards,
    and every gap and overlap (up to five of each), otherwise."""
    if not shards:
        raise DataError("no shards given; expected the Dumps of every shard of one extraction")
    label0, first = shards[0]
    for i, (label, info) in enumerate(shards[1:], 1):
        if info.get("run") != first.get("run") or info["total"] != first["total"]:
            differs = run_differences(metas[0], metas[i]) if metas is not None else []
            what = f": other {', '.join(differs)}" if differs else (
                f" ({info['total']} rows vs {first['total']})" if info["total"] != first["total"] else "")
            raise DumpError(f"{label} and {label0} are not shards of one extraction{what}; expected shards of the "
                            "same checkpoint, data and transform")
    total = first["total"]
    order = sorted(range(len(shards)), key=lambda i: (shards[i][1]["start"], shards[i][1]["stop"]))
    gaps, overlaps, covered, last = [], [], 0, None
    for i in order:
        label, info = shards[i]
        start, stop = info["start"], info["stop"]
        if start > covered:
            gaps.append(_are(_span(covered, start)))
        elif start < covered and stop > start:
            overlaps.append(f"{_are(_span(start, min(stop, covered)))} in both {last} and {label}")
        if stop > covered:
            covered, last = stop, label
    if covered < total:
        gaps.append(_are(_span(covered, total)))
    if gaps or overlaps:
        parts = []
        if gaps:
            parts.append(f"{', '.join(gaps[:5])}{' and more' if len(gaps) > 5 else ''} in no shard")
        if overlaps:
            parts.append("; ".join(overlaps[:5]) + (" and more" if len(overlaps) > 5 else ""))
        raise DumpError(f"the shards do not cover the {total} rows exactly once: {'; '.join(parts)}; expected every "
                        "shard of the extraction, each once")
    return total
