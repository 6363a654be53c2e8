"""ShardStatistics: computing them from a Dump, saving and loading them, merging those of several shards."""
from __future__ import annotations


import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from repanalysis.analyze.calibration._fused import _scan, _work_dtype, single_threaded
from repanalysis.analyze.calibration.binning import _check_bins
from repanalysis.analyze.geometry import SeparationAccumulator, check_chunk_size
from repanalysis.analyze.logits import PER_SAMPLE_STATS, _chunk_stats, _readonly_tensor
from repanalysis.arrays import check_logits_labels, check_number, pick_device, refuse_probabilities
from repanalysis.dump.shards import RUN_FIELDS, check_cover, whole_run
from repanalysis.errors import DataError, DumpError
from repanalysis.analyze.mergeable.results import MergedAnalyses, MergedConfusion
from repanalysis.analyze.mergeable.sums import CalibrationSums, LogitSums

FORMAT = "repanalysis-shard-statistics"
VERSION = 1
DEFAULT_CHUNK = 8192
# the meta fields of a run that a refusal to merge may name (check_cover's ``metas``)
RUN_META_FIELDS = tuple(dict.fromkeys(f for f, _, _ in RUN_FIELDS))


# --- the statistics of one shard ------------------------------------------------------------------------
@dataclass
class ShardStatistics:
    """The sufficient statistics of one shard (or of several merged): identity plus the four parts.

    Identity: ``name``, ``num_classes``, ``class_names``, ``shard`` (the record of
    :func:`repanalysis.dump.shards.whole_run`: index, count, start, stop, total, run), ``meta`` (the run's meta
    fields that a refusal to merge names: checkpoint, dataset, split, transform, precision, feature_layer,
    arch), ``source`` (the Dump or file they came from, for messages), ``n_bins``, ``threshold``, ``alpha``.
    Parts: ``separation`` (a SeparationAccumulator, None without features), ``calibration``
    (:class:`CalibrationSums`), ``logits`` (:class:`LogitSums`), ``confusion`` (K, K) int64.
    """

    name: str
    num_classes: int
    class_names: list[str]
    shard: dict
    meta: dict
    n_bins: int
    threshold: float
    alpha: float
    calibration: CalibrationSums
    logits: LogitSums
    confusion: np.ndarray
    separation: SeparationAccumulator | None = None
    source: str | None = None
    shards: list[dict] = field(default_factory=list)     # the shard records merged into this one

    @property
    def num_samples(self) -> int:
        """Rows of the shard (kept and excluded)."""
        return int(self.shard["stop"] - self.shard["start"])

    @property
    def label(self) -> str:
        """How messages name these statistics: the shard and its source."""
        s = self.shard
        where = f" ({self.source})" if self.source else ""
        return f"shard {s['index']}/{s['count']}{where}"

    def compute(self) -> MergedAnalyses:
        """The analyses from these sums (of a whole run after :func:`merge_statistics`, or of one shard)."""
        data = self.meta.get("dataset")
        split = self.meta.get("split") or (data.get("split") if isinstance(data, dict) else None)
        sep = None
        if self.separation is not None:
            sep = self.separation.compute(name=self.name, split=None if split is None else str(split))
        return MergedAnalyses(
            name=self.name, num_samples=self.num_samples, num_classes=self.num_classes,
            class_names=list(self.class_names), shards=[dict(s) for s in (self.shards or [self.shard])],
            separation=sep, calibration=self.calibration.compute(self.name),
            logits=self.logits.compute(self.name, self.num_classes),
            confusion=MergedConfusion(self.name, self.confusion.copy(), self._names()))

    def _names(self) -> list[str]:
        names = list(self.class_names)
        return names + [str(k) for k in range(len(names), self.num_classes)]

    def _identity(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "name": self.name, "num_classes": self.num_classes,
                "class_names": list(self.class_names), "shard": self.shard, "shards": self.shards,
                "meta": self.meta, "n_bins": self.n_bins, "threshold": self.threshold, "alpha": self.alpha,
                "stats": list(PER_SAMPLE_STATS), "has_features": self.separation is not None}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the statistics to one ``.npz`` (no pickle: the identity is JSON in a string array), atomically;
        returns the path."""
        from repanalysis.outputs import write_binary_atomic

        path = Path(path)
        c, g = self.calibration, self.logits
        arrays = {"identity": np.array(json.dumps(self._identity(), default=str)),
                  "cal_bins": np.stack([c.bin_counts, c.bin_conf, c.bin_acc]),
                  "cal_cells": np.stack([c.cw_counts, c.cw_psum, c.cw_hits]),
                  "cal_sums": np.array([c.conf_sum, c.nll_sum, c.brier_sum], dtype=np.float64),
                  "cal_counts": np.array([c.num_samples, c.n_excluded, c.n_correct], dtype=np.int64),
                  "logit_moments": np.stack([g.total, g.m2, g.low, g.high]),
                  "logit_sums": np.array([g.ee_active_sum, g.ee_abs_sum], dtype=np.float64),
                  "logit_counts": np.array([g.num_samples, g.n_excluded, g.n_correct, g.n_active], dtype=np.int64),
                  "confusion": self.confusion.astype(np.int64)}
        if self.separation is not None:
            st = self.separation.state()
            arrays.update(sep_values=st["values"], sep_sums=st["sums"], sep_counts=st["counts"],
                          sep_excluded=np.array([st["n_excluded"], st["n_nonfinite"]], dtype=np.int64))
        write_binary_atomic(path, lambda fh: np.savez(fh, **arrays))
        return path


def load_statistics(path: str | os.PathLike) -> ShardStatistics:
    """Read statistics written by :meth:`ShardStatistics.save` (no pickle); DumpError (one line) for a file that
    is not one."""
    path = Path(path)
    expected = "expected a .npz written by ShardStatistics.save or `repanalysis shard-stats --save`"
    if not path.is_file():
        raise DumpError(f"{path} is not a file; {expected}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        ident = json.loads(str(arrays["identity"]))
    except (OSError, ValueError, KeyError, EOFError, TypeError) as e:
        raise DumpError(f"{path} is not a shard statistics file ({type(e).__name__}); {expected}") from None
    except Exception as e:      # zipfile.BadZipFile and the like from a damaged archive
        raise DumpError(f"{path} is not a shard statistics file ({type(e).__name__}); {expected}") from None
    if not isinstance(ident, dict) or ident.get("format") != FORMAT:
        raise DumpError(f"{path} is not a shard statistics file (no {FORMAT!r} identity); {expected}")
    if ident.get("version") != VERSION:
        raise DumpError(f"{path} holds shard statistics of format version {ident.get('version')!r}; this "
                        f"repanalysis reads version {VERSION}; recompute them with this version")
    try:
        k, m = int(ident["num_classes"]), int(ident["n_bins"])
        if list(ident["stats"]) != list(PER_SAMPLE_STATS):
            raise ValueError("logit statistics differ")
        shapes = {"cal_bins": (3, m), "cal_cells": (3, k, m), "cal_sums": (3,), "cal_counts": (3,),
                  "logit_moments": (4, len(PER_SAMPLE_STATS)), "logit_sums": (2,), "logit_counts": (4,),
                  "confusion": (k, k)}
        for key, shape in shapes.items():
            if arrays[key].shape != shape:
                raise ValueError(f"{key} has shape {arrays[key].shape}, expected {shape}")
        cb, cc = arrays["cal_bins"].astype(np.float64), arrays["cal_cells"].astype(np.float64)
        cs, ci = arrays["cal_sums"].astype(np.float64), arrays["cal_counts"].astype(np.int64)
        cal = CalibrationSums(m, cb[0], cb[1], cb[2], cc[0], cc[1], cc[2], float(cs[0]), float(cs[1]), float(cs[2]),
                              int(ci[0]), int(ci[1]), int(ci[2]))
        lm, ls, lc = (arrays[key] for key in ("logit_moments", "logit_sums", "logit_counts"))
        lm = lm.astype(np.float64)
        lg = LogitSums(float(ident["threshold"]), float(ident["alpha"]), lm[0], lm[1], lm[2], lm[3], int(lc[0]),
                       int(lc[1]), int(lc[2]), int(lc[3]), float(ls[0]), float(ls[1]))
        sep = None
        if ident.get("has_features"):
            sep = SeparationAccumulator.from_state(
                {"values": arrays["sep_values"], "sums": arrays["sep_sums"], "counts": arrays["sep_counts"],
                 "n_excluded": int(arrays["sep_excluded"][0]), "n_nonfinite": int(arrays["sep_excluded"][1]),
                 "num_classes": k})
        shard = dict(ident["shard"])
        for key in ("index", "count", "start", "stop", "total"):
            if not isinstance(shard.get(key), int) or isinstance(shard.get(key), bool):
                raise ValueError(f"shard {key} is {shard.get(key)!r}")
        return ShardStatistics(name=str(ident["name"]), num_classes=k, class_names=list(ident["class_names"]),
                               shard=shard, meta=dict(ident.get("meta") or {}), n_bins=m,
                               threshold=float(ident["threshold"]), alpha=float(ident["alpha"]), calibration=cal,
                               logits=lg, confusion=arrays["confusion"].astype(np.int64), separation=sep,
                               source=str(path), shards=[dict(s) for s in ident.get("shards") or []])
    except (KeyError, ValueError, TypeError, IndexError, DataError) as e:
        raise DumpError(f"{path} is a damaged shard statistics file ({e}); {expected}") from None


@single_threaded
def _calibration_chunk(z: torch.Tensor, y: torch.Tensor, n_bins: int) -> CalibrationSums:
    """The calibration sums of one chunk of logits by the fused pass ``_scan`` (its exclusions included)."""
    k = z.shape[1]
    with warnings.catch_warnings():           # the shard's exclusions are reported once, by shard_statistics
        warnings.filterwarnings("ignore", message=r".*have NaN or inf logits")
        try:
            sc = _scan(z, y, n_bins=n_bins, want_classwise=True)
        except DataError:
            if bool(torch.isfinite(z).all(1).any()):   # _scan refuses a chunk only when every row is excluded
                raise
            out = CalibrationSums.zeros(k, n_bins)
            out.n_excluded = z.shape[0]
            return out
    np64 = lambda t: t.to(torch.float64).cpu().numpy()       # noqa: E731
    return CalibrationSums(n_bins, np64(sc.bin_counts), np64(sc.bin_conf), np64(sc.bin_acc), np64(sc.cw_counts),
                           np64(sc.cw_psum), np64(sc.cw_hits), float(sc.conf.sum()), float(sc.nll.sum()),
                           float(sc.brier.sum()), sc.num_samples, sc.n_excluded, int(sc.correct.sum()))


def shard_statistics(dump, *, n_bins: int = 15, threshold: float = 0.01, alpha: float = 0.1, device=None,
                     chunk_size: int = DEFAULT_CHUNK) -> ShardStatistics:
    """The mergeable statistics of one Dump (a shard, or any Dump: then it is shard 0/1 of itself).

    dump: a Dump or the path of one. n_bins: equal-width calibration bins M. threshold / alpha: the near-zero
    cut and the LS / MaxSup strength of the logit statistics. device: None (CPU), "auto", "cpu", "cuda[:N]".
    chunk_size: rows streamed at a time (``Dump.iter_chunks``, which releases memory-mapped pages): one pass
    over the logits for calibration, logit statistics and confusion counts, and one over the features (when
    the Dump has them) for separation. Memory: a chunk plus K x D + K x M + K x K numbers.

    Example::

        >>> st = shard_statistics(dump); st.save("stats-0.npz")
        >>> merge_statistics([st, load_statistics("stats-1.npz")]).compute().calibration.ece
    """
    from repanalysis.dump import Dump, load_dump

    if not isinstance(dump, Dump):
        dump = load_dump(dump)
    _check_bins(n_bins)
    check_number(threshold, "near-zero threshold", minimum=0)
    check_number(alpha, "alpha")
    chunk_size = check_chunk_size(chunk_size)
    dev = pick_device(device) if device is not None else torch.device("cpu")
    k = int(dump.num_classes)
    if k < 2:
        raise DataError(f"{dump.name}: the analyses need at least 2 classes; the logits have {k} column")
    n = dump.num_samples
    cal = CalibrationSums.zeros(k, n_bins)
    lg = LogitSums.zeros(threshold, alpha)
    confusion = torch.zeros(k * k, dtype=torch.int64, device=dev)
    for start, chunk in dump.iter_chunks(("logits", "labels"), chunk_size=chunk_size):
        raw = _readonly_tensor(chunk["logits"])
        if not raw.is_floating_point():
            raw = raw.to(torch.float32)
        labels = _readonly_tensor(chunk["labels"])
        # calibration: its working dtype (float64 logits stay float64), as calibration_report
        z, y = check_logits_labels(raw, labels, k, device=dev, dtype=_work_dtype(raw.dtype))
        if start == 0:
            refuse_probabilities(z, f"{dump.name}'s logits")
        cal = cal.merge(_calibration_chunk(z, y, n_bins))
        # logit statistics and confusion: float32 and finite rows, as logit_stats' _stream
        z = z.to(torch.float32)
        finite = torch.isfinite(z).all(dim=1)
        n_bad = int((~finite).sum())
        if n_bad:
            z, y = z[finite], y[finite]
            lg.n_excluded += n_bad
        if z.shape[0]:
            lg = lg.add_chunk(_chunk_stats(z, y, threshold, alpha))
            confusion += torch.bincount(y * k + z.argmax(dim=1), minlength=k * k)  # argmax: first index on ties
    if cal.n_excluded or lg.n_excluded:
        warnings.warn(f"{dump.name}: samples with NaN or inf logits are excluded: {cal.n_excluded} of {n} from "
                      f"calibration, {lg.n_excluded} from the logit statistics and confusion counts",
                      RuntimeWarning, stacklevel=2)
    sep = None
    if dump.features is not None:
        sep = SeparationAccumulator(num_classes=k, device=dev)
        for _, chunk in dump.iter_chunks(("features", "labels"), chunk_size=chunk_size):
            sep.update(chunk["features"], chunk["labels"])
    meta = dump.meta if isinstance(dump.meta, dict) else {}
    shard = whole_run(meta, n)
    if shard["stop"] - shard["start"] != n:
        raise DumpError(f"{dump.path or dump.name}: meta.json 'shard' says rows {shard['start']}-{shard['stop'] - 1}"
                        f" ({shard['stop'] - shard['start']} rows) but the Dump holds {n}; the Dump is damaged")
    run_meta = json.loads(json.dumps({f: meta.get(f) for f in RUN_META_FIELDS if meta.get(f) is not None},
                                     default=str))
    return ShardStatistics(name=dump.name, num_classes=k, class_names=list(dump.class_names or []), shard=shard,
                           meta=run_meta, n_bins=int(n_bins), threshold=float(threshold), alpha=float(alpha),
                           calibration=cal, logits=lg, confusion=confusion.view(k, k).cpu().numpy(),
                           separation=None if sep is None else _to_cpu(sep),
                           source=None if dump.path is None else str(dump.path), shards=[shard])


def _to_cpu(acc: SeparationAccumulator) -> SeparationAccumulator:
    return SeparationAccumulator.from_state(acc.state())


def merge_statistics(statistics: Sequence[ShardStatistics]) -> ShardStatistics:
    """The statistics of a whole run from those of its shards: checks that they are of one run and cover every
    row once (:func:`~repanalysis.dump.shards.check_cover`: DumpError naming gaps, overlaps or what differs),
    and were made with the same classes, bins, threshold and alpha, and all with or all without features;
    then adds the parts. The result's ``shard`` covers the whole run (0/1); ``.compute()`` gives the analyses.
    """
    stats = list(statistics)
    if not stats:
        raise DataError("no shard statistics given; expected those of every shard of one extraction")
    for s in stats:
        if not isinstance(s, ShardStatistics):
            raise DataError(f"merge_statistics takes ShardStatistics; got {type(s).__name__}")
    total = check_cover([(s.label, s.shard) for s in stats], [s.meta for s in stats])
    first = stats[0]
    for s in stats[1:]:
        for what, a, b in (("classes", first.num_classes, s.num_classes), ("bins", first.n_bins, s.n_bins),
                           ("near-zero threshold", first.threshold, s.threshold), ("alpha", first.alpha, s.alpha),
                           ("features", first.separation is not None, s.separation is not None)):
            if a != b:
                shown = (lambda v: "present" if v else "absent") if what == "features" else repr
                raise DataError(f"{s.label} and {first.label} differ in {what} ({shown(b)} vs {shown(a)}); expected "
                                "the statistics of every shard made with the same settings")
    order = sorted(stats, key=lambda s: s.shard["start"])
    cal, lg, confusion, sep = order[0].calibration, order[0].logits, order[0].confusion.copy(), None
    if first.separation is not None:
        sep = SeparationAccumulator.from_state(order[0].separation.state())
    for s in order[1:]:
        cal, lg = cal.merge(s.calibration), lg.merge(s.logits)
        confusion += s.confusion
        if sep is not None:
            sep.merge(s.separation)
    head = order[0]
    shard = {"index": 0, "count": 1, "start": 0, "stop": total, "total": total, "run": head.shard.get("run")}
    return ShardStatistics(name=head.name, num_classes=head.num_classes, class_names=list(head.class_names),
                           shard=shard, meta=dict(head.meta), n_bins=head.n_bins, threshold=head.threshold,
                           alpha=head.alpha, calibration=cal, logits=lg, confusion=confusion, separation=sep,
                           source=None, shards=[dict(r) for s in order for r in (s.shards or [s.shard])])


def analyse_shards(inputs: Sequence, **kwargs) -> MergedAnalyses:
    """The mergeable analyses of a run from its shards: each input a Dump, a Dump's path, a saved statistics
    ``.npz`` path or ShardStatistics. ``kwargs`` go to :func:`shard_statistics` (n_bins, threshold, alpha,
    device, chunk_size)."""
    return merge_statistics([statistics_of(x, **kwargs) for x in inputs]).compute()


def statistics_of(source, **kwargs) -> ShardStatistics:
    """ShardStatistics of one input: itself, a loaded ``.npz`` (a path ending in .npz), or computed from a Dump
    (a Dump or a Dump's path)."""
    if isinstance(source, ShardStatistics):
        return source
    if isinstance(source, (str, os.PathLike)) and Path(source).suffix.lower() == ".npz":
        st = load_statistics(source)
        for key in ("n_bins", "threshold", "alpha"):
            if key in kwargs and kwargs[key] is not None and getattr(st, key) != kwargs[key]:
                raise DataError(f"{source} holds statistics made with {key} = {getattr(st, key)!r}, not "
                                f"{kwargs[key]!r}; recompute them with the settings asked for")
        return st
    return shard_statistics(source, **kwargs)
