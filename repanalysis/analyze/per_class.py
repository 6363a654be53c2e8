"""Per-class views of models compared on the same images: accuracy per class, its paired difference against a
baseline, each class's top confusions, and the confidence of the wrong predictions.

For every model (rows with NaN/inf logits have no prediction: they are left out of that model's numbers, with
a warning giving their count):

- ``accuracy[k] = #{i : y_i = k, pred_i = k} / #{i : y_i = k}``, pred = argmax z (the first maximal index);
  NaN for a class without samples;
- the paired difference ``accuracy_model[k] - accuracy_baseline[k]`` with a paired bootstrap interval: resample
  r draws the same N image indices for every model (:func:`repanalysis.analyze.resample.bootstrap_weights`),
  held as multiplicities w_r, and replicate r of a class's accuracy is
  ``sum_{i: y_i = k} w_ri c_i / sum_{i: y_i = k} w_ri`` (one index_add per block of replicates, no loop over
  samples). A class that resample r does not draw has an undefined (NaN) replicate: it is left out of the
  percentile interval, which is NaN when more than half of the replicates are undefined (the rule of
  :func:`repanalysis.analyze.paired.paired_differences`; a class of one image in N is absent from about 37% of
  the resamples). Rows come as :class:`~repanalysis.analyze.paired.PairedDifference` (analysis "per_class",
  metric = the class name);
- the top confusions of each class: the other classes its samples are most often predicted as (from the
  confusion matrix, :func:`repanalysis.data.class_resolution.confusion_counts`), with counts, their share of
  the class's samples and their share of the class's errors;
- the confidence of the misclassified samples (MaxSup: label smoothing makes wrong predictions more confident):
  max softmax ``1 / sum_k exp(z_k - z_max)`` over the errors (chunked over rows), mean, quantiles and a
  histogram on [0, 1]. The errors differ between models, so each model's mean gets a plain bootstrap interval
  (the mean over the errors that resample r draws, ``sum_i w_ri e_i p_i / sum_i w_ri e_i``), not a paired one.

Example::

    >>> from repanalysis.analyze.per_class import per_class_report
    >>> res = per_class_report([ce, ls], names=["CE", "LS"], n_boot=1000)
    >>> [(d.metric, d.difference, d.excludes_zero) for d in res.sorted_differences("LS")[:3]]
    >>> res.error_confidence["LS"].mean, res.top_confusions["CE"][7][0].predicted_name
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
import torch

from repanalysis.analyze.confidence import confidence_scores
from repanalysis.analyze.paired import PairedDifference, paired_differences
from repanalysis.analyze.resample import bootstrap_weights, weighted_means
from repanalysis.arrays import as_labels, check_number, model_names, pick_device, refuse_probabilities
from repanalysis.data.class_resolution import class_label, confusion_counts
from repanalysis.errors import DataError

ANALYSIS = "per_class"
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
HIST_BINS = 20                       # equal-width bins of the error-confidence histogram on [0, 1]
_CHUNK_ELEMENTS = 1 << 22            # logits per chunk (rows = this // K): 32 MiB as float64
# Columns of the printed difference table, with their display headers.
TABLE_HEADERS = {"model": "model", "class": "class", "value": "accuracy", "baseline_value": "baseline acc.",
                 "difference": "difference", "ci_low": "CI low", "ci_high": "CI high", "excludes_zero": "excludes 0",
                 "n": "samples"}


@dataclass
class TopConfusion:
    """One class that samples of a true class are predicted as: ``count`` of them, ``share`` of the true class's
    samples and ``error_share`` of its errors."""

    predicted: int
    predicted_name: str
    count: int
    share: float
    error_share: float


@dataclass
class ErrorConfidence:
    """Max-softmax confidence of one model's misclassified samples.

    mean, ci_low, ci_high: the mean over the errors and its plain bootstrap percentile interval (NaN without
    errors or without resamples); quantiles: {"q05", "q25", "q50", "q75", "q95"}; hist_edges (HIST_BINS + 1,)
    on [0, 1] and hist_counts (HIST_BINS,): the errors per bin (the last bin closed); mean_correct: the mean
    confidence of the correct predictions, for reference; values: the (num_errors,) confidences themselves.
    """

    model: str
    num_errors: int
    num_samples: int
    mean: float
    ci_low: float
    ci_high: float
    median: float
    quantiles: dict[str, float]
    hist_edges: np.ndarray
    hist_counts: np.ndarray
    mean_correct: float
    values: np.ndarray = field(repr=False)

    def to_dict(self) -> dict:
        return {"model": self.model, "num_errors": self.num_errors, "num_samples": self.num_samples,
                "mean": self.mean, "ci": [self.ci_low, self.ci_high], "median": self.median,
                "quantiles": dict(self.quantiles), "mean_correct": self.mean_correct,
                "histogram": {"edges": self.hist_edges.tolist(), "counts": self.hist_counts.tolist()}}


@dataclass
class PerClassResult:
    """Per-class accuracy, paired differences, top confusions and error confidence of models on the same images.

    classes: K display names (distinct: a name two classes share gets " (index)"); models: names, in order;
    baseline: the model the others are compared against. Per model (dicts keyed by model name):
    accuracy (K,) float (NaN for a class without samples), accuracy_ci (K, 2) the model's own percentile
    interval, class_counts / correct_counts (K,) int (rows with finite logits), num_excluded (rows with NaN/inf
    logits), confusion (K, K) int (row = true, column = predicted), top_confusions (K lists of
    :class:`TopConfusion`, most frequent first), error_confidence (:class:`ErrorConfidence`).
    differences: model -> K :class:`PairedDifference` rows in class order, for every model but the baseline.
    """

    classes: list[str]
    models: list[str]
    baseline: str
    num_samples: int
    n_boot: int
    seed: int
    ci_level: float
    top_k: int
    split: str | None
    accuracy: dict[str, np.ndarray]
    accuracy_ci: dict[str, np.ndarray]
    class_counts: dict[str, np.ndarray]
    correct_counts: dict[str, np.ndarray]
    num_excluded: dict[str, int]
    confusion: dict[str, np.ndarray] = field(repr=False)
    top_confusions: dict[str, list[list[TopConfusion]]] = field(repr=False)
    differences: dict[str, list[PairedDifference]] = field(repr=False)
    error_confidence: dict[str, ErrorConfidence] = field(repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def paired_rows(self) -> list[PairedDifference]:
        """Every paired difference, model by model, in class order."""
        return [row for model in self.differences for row in self.differences[model]]

    def sorted_differences(self, model: str | None = None) -> list[PairedDifference]:
        """The differences of ``model`` (None: every non-baseline model, one after the other), largest gain over
        the baseline first; classes whose difference is undefined (NaN) last."""
        models = list(self.differences) if model is None else [self._compared(model)]
        out = []
        for m in models:
            rows = self.differences[m]
            out += sorted(rows, key=lambda r: (math.isnan(r.difference), -r.difference if not math.isnan(
                r.difference) else 0.0))
        return out

    def significant(self, model: str | None = None) -> list[PairedDifference]:
        """The sorted differences whose interval excludes 0."""
        return [r for r in self.sorted_differences(model) if r.excludes_zero]

    def difference_table(self, model: str | None = None) -> list[dict]:
        """Rows of the sorted difference table (columns of :data:`TABLE_HEADERS`)."""
        index = {c: k for k, c in enumerate(self.classes)}
        return [{"model": r.model, "class": r.metric, "value": r.value, "baseline_value": r.baseline_value,
                 "difference": r.difference, "ci_low": r.ci_low, "ci_high": r.ci_high,
                 "excludes_zero": "yes" if r.excludes_zero else "", "n": int(self.class_counts[r.model][index[r.metric]])}
                for r in self.sorted_differences(model)]

    def to_dict(self, include_confusion: bool = False) -> dict:
        """JSON-ready: settings, classes, per model its per-class numbers, top confusions and error confidence,
        and the sorted paired differences (``include_confusion`` adds each (K, K) confusion matrix)."""
        index = {c: k for k, c in enumerate(self.classes)}
        per_model = {}
        for m in self.models:
            entry = {"accuracy": self.accuracy[m].tolist(), "accuracy_ci": self.accuracy_ci[m].tolist(),
                     "class_counts": self.class_counts[m].tolist(), "correct_counts": self.correct_counts[m].tolist(),
                     "num_excluded_nonfinite": self.num_excluded[m],
                     "top_confusions": {c: [asdict(t) for t in self.top_confusions[m][k]]
                                        for k, c in enumerate(self.classes)},
                     "error_confidence": self.error_confidence[m].to_dict()}
            if include_confusion:
                entry["confusion"] = self.confusion[m].tolist()
            per_model[m] = entry
        return {"analysis": ANALYSIS, "models": list(self.models), "baseline": self.baseline, "split": self.split,
                "num_samples": self.num_samples, "n_boot": self.n_boot, "ci_level": self.ci_level, "seed": self.seed,
                "top_k": self.top_k, "classes": list(self.classes),
                "method": "per-class accuracy; paired bootstrap of the images (the same resampled indices for every "
                          "model), percentile interval of the per-replicate differences; a class not drawn in a "
                          "resample has no replicate there (NaN interval when more than half are missing); error "
                          "confidence: max softmax over the misclassified samples, plain bootstrap interval",
                "per_model": per_model,
                "differences": [{**r.row(), "class_index": index[r.metric]} for r in self.sorted_differences()]}

    def to_frame(self):
        """Tidy pandas frame: columns model, class, metric, value, ci_low, ci_high, n. Per model and class:
        ``accuracy`` (the model's own interval; n = samples of the class) and, for every model but the baseline,
        ``accuracy_difference`` (model - baseline, paired interval); per model (class None):
        ``error_confidence_mean`` (bootstrap interval; n = errors), ``error_confidence_median``,
        ``mean_confidence_correct``."""
        from repanalysis.frames import rows_frame, tidy_rows

        index = {c: k for k, c in enumerate(self.classes)}
        rows = []
        for m in self.models:
            for k, c in enumerate(self.classes):
                n = int(self.class_counts[m][k])
                rows += tidy_rows(m, {"accuracy": self.accuracy[m][k]}, {"accuracy": tuple(self.accuracy_ci[m][k])},
                                  n=n, **{"class": c})
            for r in self.differences.get(m, []):
                n = int(self.class_counts[m][index[r.metric]])
                rows += tidy_rows(m, {"accuracy_difference": r.difference},
                                  {"accuracy_difference": (r.ci_low, r.ci_high)}, n=n, **{"class": r.metric})
            e = self.error_confidence[m]
            rows += tidy_rows(m, {"error_confidence_mean": e.mean, "error_confidence_median": e.median,
                                  "mean_confidence_correct": e.mean_correct},
                              {"error_confidence_mean": (e.ci_low, e.ci_high)}, n=e.num_errors, **{"class": None})
        return rows_frame(rows)

    def confusions_frame(self):
        """Tidy pandas frame of the top confusions: model, class, rank (1 = most frequent), predicted, count,
        share (of the class's samples), error_share (of its errors)."""
        from repanalysis.frames import rows_frame

        return rows_frame({"model": m, "class": c, "rank": j + 1, "predicted": t.predicted_name, "count": t.count,
                           "share": t.share, "error_share": t.error_share}
                          for m in self.models for k, c in enumerate(self.classes)
                          for j, t in enumerate(self.top_confusions[m][k]))

    def _compared(self, model: str) -> str:
        if model not in self.differences:
            raise DataError(f"{model!r} has no differences; expected one of the models compared with the baseline "
                            f"{self.baseline!r} ({', '.join(self.differences) or 'none'})")
        return model


# --- pieces ----------------------------------------------------------------------------------------------------
def distinct_class_names(num_classes: int, class_names: Sequence[str] | None = None) -> list[str]:
    """K display names (:func:`class_label`); a name several classes share gets its index, "crane (134)"."""
    names = [class_label(k, num_classes, class_names) for k in range(num_classes)]
    seen: dict[str, int] = {}
    for n in names:
        seen[n] = seen.get(n, 0) + 1
    return [f"{n} ({k})" if seen[n] > 1 else n for k, n in enumerate(names)]


def percentile_interval(replicates: np.ndarray, ci_level: float) -> np.ndarray:
    """(..., 2) percentile interval over the first axis of ``replicates`` (n_boot, ...), NaN replicates left
    out; NaN where fewer than half of the replicates are defined (the rule of paired_differences)."""
    reps = np.asarray(replicates, dtype=np.float64)
    out = np.full(reps.shape[1:] + (2,), np.nan)
    if reps.shape[0] == 0:
        return out
    lo_q, hi_q = 100 * (1 - ci_level) / 2, 100 * (1 - (1 - ci_level) / 2)
    enough = np.isfinite(reps).sum(axis=0) >= reps.shape[0] / 2
    if enough.any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)          # all-NaN columns (masked out below)
            q = np.nanpercentile(reps, [lo_q, hi_q], axis=0)          # (2, ...)
        out[enough] = np.moveaxis(q, 0, -1)[enough]
    return out


def top_confusions(confusion: np.ndarray, top_k: int, classes: Sequence[str]) -> list[list[TopConfusion]]:
    """Per true class (row of ``confusion``), its ``top_k`` most frequent wrong predictions with a count > 0,
    most frequent first (ties: lower class index first)."""
    conf = np.asarray(confusion, dtype=np.int64)
    k = conf.shape[0]
    off = conf.copy()
    np.fill_diagonal(off, 0)
    totals, errors = conf.sum(axis=1), off.sum(axis=1)
    order = np.argsort(-off, axis=1, kind="stable")[:, :top_k]
    out = []
    for t in range(k):
        out.append([TopConfusion(int(j), classes[j], int(off[t, j]), float(off[t, j] / totals[t]),
                                 float(off[t, j] / errors[t])) for j in order[t] if off[t, j] > 0])
    return out


def _model_pass(dump, name: str, y: torch.Tensor, dev: torch.device) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One chunked pass over a Dump's logits -> (pred (N,) int64, max softmax (N,) float64, keep (N,) bool)."""
    n, k = dump.num_samples, dump.num_classes
    pred = np.zeros(n, dtype=np.int64)
    conf = np.full(n, np.nan)
    keep = np.ones(n, dtype=bool)
    rows = max(1, _CHUNK_ELEMENTS // max(k, 1))
    for start, chunk in dump.iter_chunks(("logits",), chunk_size=rows):
        z = torch.as_tensor(chunk["logits"]).to(dev, torch.float64)
        if z.ndim != 2 or z.shape[1] != k:
            raise DataError(f"{name}: logits must be [N, {k}]; got rows of shape {tuple(z.shape)}")
        if start == 0:
            refuse_probabilities(z, f"{name}'s logits")
        stop = start + z.shape[0]
        finite = torch.isfinite(z).all(dim=1)
        keep[start:stop] = finite.cpu().numpy()
        pred[start:stop] = torch.where(finite, z.argmax(dim=1), 0).cpu().numpy()
        conf[start:stop] = confidence_scores(z, device=dev)["max_softmax"].cpu().numpy()
    n_bad = int((~keep).sum())
    if n_bad == n:
        raise DataError(f"{name}: all {n} samples have NaN or inf logits; nothing to analyse")
    if n_bad:
        warnings.warn(f"{name}: {n_bad} of {n} samples have NaN or inf logits; they are excluded from its per-class "
                      "numbers", RuntimeWarning, stacklevel=3)
    return pred, conf, keep


def _accuracy_replicates(y: torch.Tensor, correct: Sequence[np.ndarray], keep: Sequence[np.ndarray], k: int,
                         n_boot: int, seed: int, dev: torch.device) -> list[np.ndarray]:
    """Per model, (n_boot, K) bootstrap replicates of the per-class accuracy, every model on the same resamples:
    ``sum_{i: y_i = k} w_ri c_i / sum_{i: y_i = k} w_ri`` (NaN where resample r draws no sample of class k)."""
    n = y.numel()
    cs = [torch.from_numpy(c.astype(np.float64)).to(dev) for c in correct]
    ks = [None if kp.all() else torch.from_numpy(kp.astype(np.float64)).to(dev) for kp in keep]
    parts: list[list[torch.Tensor]] = [[] for _ in cs]
    for w in bootstrap_weights(n, n_boot, seed, dev):
        b = w.shape[0]
        all_counts = torch.zeros(b, k, dtype=torch.float64, device=dev).index_add_(1, y, w)
        for m, (c, kp) in enumerate(zip(cs, ks)):
            counts = all_counts if kp is None else torch.zeros_like(all_counts).index_add_(1, y, w * kp)
            hits = torch.zeros_like(all_counts).index_add_(1, y, w * c)      # c is 0 on excluded rows
            parts[m].append(hits / counts)                                    # 0 / 0 = NaN: class not drawn
    return [torch.cat(p).cpu().numpy() if p else np.zeros((0, k)) for p in parts]


def _error_confidence(name: str, conf: np.ndarray, correct: np.ndarray, keep: np.ndarray,
                      reps: np.ndarray, ci_level: float) -> ErrorConfidence:
    errors = keep & ~correct
    values = conf[errors]
    edges = np.linspace(0.0, 1.0, HIST_BINS + 1)
    counts = np.histogram(np.clip(values, 0.0, 1.0), bins=edges)[0]
    if values.size:
        qs = np.quantile(values, QUANTILES)
        mean, median = float(values.mean()), float(np.median(values))
    else:
        qs, mean, median = np.full(len(QUANTILES), np.nan), math.nan, math.nan
    ci_low, ci_high = (float(v) for v in percentile_interval(reps[:, None], ci_level)[0])
    right = conf[keep & correct]
    return ErrorConfidence(model=name, num_errors=int(values.size), num_samples=int(keep.sum()), mean=mean,
                           ci_low=ci_low, ci_high=ci_high, median=median,
                           quantiles={f"q{round(100 * q):02d}": float(v) for q, v in zip(QUANTILES, qs)},
                           hist_edges=edges, hist_counts=counts.astype(np.int64),
                           mean_correct=float(right.mean()) if right.size else math.nan, values=values)


# --- the analysis --------------------------------------------------------------------------------------------
def per_class_report(dumps: Sequence, names: Sequence[str] | str | None = None, baseline: str | None = None,
                     n_boot: int = 1000, seed: int = 0, ci_level: float = 0.95, top_k: int = 3, device=None,
                     split: str | None = None) -> PerClassResult:
    """Per-class accuracy, paired per-class differences against ``baseline``, top confusions and the confidence
    of the wrong predictions of one Dump per model, all on the same images.

    dumps: Dumps holding the same samples in the same order (checked: same classes, labels and sample names);
    names: display names (default the Dumps' own); baseline: the model the others are compared against
    (default the first); n_boot: bootstrap resamples (0: no intervals); seed: of the resample stream (the same
    seed gives every model, and every other analysis, the same resamples); ci_level: of the percentile
    intervals; top_k: confusions kept per class; device: where the passes and resamples run (None: CPU; the
    resamples depend on the device); split: a label for the rows (e.g. "val"). Example::

        >>> res = per_class_report([ce, ls, maxsup], names=["CE", "LS", "MaxSup"], n_boot=200)
        >>> res.accuracy["LS"][3], res.significant("LS")
    """
    from repanalysis.dump.pairs import check_same_samples

    dumps = list(dumps)
    models = model_names(dumps, names)
    check_same_samples(dumps, "per-class")
    n_boot = check_number(n_boot, "n_boot", integer=True, minimum=0)
    seed = check_number(seed, "seed", integer=True)
    ci_level = check_number(ci_level, "ci_level", minimum=0.0, maximum=1.0)
    if not 0 < ci_level < 1:
        raise DataError(f"ci_level must lie strictly between 0 and 1; got {ci_level}")
    top_k = check_number(top_k, "top_k", integer=True, minimum=0)
    baseline = models[0] if baseline is None else str(baseline)
    if baseline not in models:
        raise DataError(f"baseline {baseline!r} is not one of the models ({', '.join(models)}); expected one of "
                        "their names")
    first = dumps[0]
    n, k = first.num_samples, first.num_classes
    if n == 0:
        raise DataError(f"{models[0]}: the Dump has no samples; expected a Dump with samples")
    dev = pick_device(device) if device is not None else torch.device("cpu")
    y = as_labels(np.asarray(first.labels), n, num_classes=k, device=dev)
    y_np = y.cpu().numpy()
    classes = distinct_class_names(k, first.class_names)

    preds, confs, keeps, corrects = [], [], [], []
    for d, m in zip(dumps, models):
        pred, conf, keep = _model_pass(d, m, y, dev)
        preds.append(pred)
        confs.append(conf)
        keeps.append(keep)
        corrects.append(keep & (pred == y_np))

    # point estimates
    accuracy, class_counts, correct_counts, confusion, tops = {}, {}, {}, {}, {}
    for m, pred, keep in zip(models, preds, keeps):
        conf_m = confusion_counts(y_np[keep], pred[keep], k)
        confusion[m] = conf_m
        class_counts[m] = conf_m.sum(axis=1)
        correct_counts[m] = np.diagonal(conf_m).copy()
        with np.errstate(invalid="ignore", divide="ignore"):
            accuracy[m] = np.where(class_counts[m] > 0, correct_counts[m] / np.maximum(class_counts[m], 1), np.nan)
        tops[m] = top_confusions(conf_m, top_k, classes)

    # bootstrap: every model on the same resamples
    reps = _accuracy_replicates(y, corrects, keeps, k, n_boot, seed, dev)
    accuracy_ci = {m: percentile_interval(r, ci_level) for m, r in zip(models, reps)}
    err_values = np.stack([np.where(kp & ~c, cf, np.nan) for kp, c, cf in zip(keeps, corrects, confs)], axis=1)
    err_reps = weighted_means(torch.from_numpy(err_values).to(dev), n_boot, seed).cpu().numpy()   # (n_boot, M)
    error_confidence = {m: _error_confidence(m, confs[j], corrects[j], keeps[j], err_reps[:, j], ci_level)
                        for j, m in enumerate(models)}

    estimates = {m: dict(zip(classes, accuracy[m].tolist())) for m in models}
    replicates = {m: {c: r[:, i] for i, c in enumerate(classes)} for m, r in zip(models, reps)}
    rows = paired_differences(estimates, replicates, baseline, analysis=ANALYSIS, split=split, n=n,
                              ci_level=ci_level, metrics=classes)
    differences = {m: [r for r in rows if r.model == m] for m in models if m != baseline}
    return PerClassResult(classes=classes, models=models, baseline=baseline, num_samples=n, n_boot=n_boot, seed=seed,
                          ci_level=ci_level, top_k=top_k, split=split, accuracy=accuracy, accuracy_ci=accuracy_ci,
                          class_counts=class_counts, correct_counts=correct_counts,
                          num_excluded={m: int((~kp).sum()) for m, kp in zip(models, keeps)}, confusion=confusion,
                          top_confusions=tops, differences=differences, error_confidence=error_confidence)


__all__ = ["per_class_report", "PerClassResult", "ErrorConfidence", "TopConfusion", "top_confusions",
           "percentile_interval", "distinct_class_names", "TABLE_HEADERS", "QUANTILES", "HIST_BINS"]
