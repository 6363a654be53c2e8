"""Training dynamics: the analyses of each checkpoint of a training run, epoch by epoch, and what changes per sample.

Input: ``{run: [(epoch, Dump), ...]}``, one Dump per checkpoint of each run, all Dumps of a run on the same samples
in the same order (``repanalysis.extract.series`` makes them from a glob of checkpoints). Per run and epoch, each
number comes from the existing analysis, called as it is (nothing is re-implemented here):

- accuracy, NLL, ECE, O-ECE, U-ECE: :func:`repanalysis.analyze.calibration.calibration_report` (15 equal-width bins);
- mean near-zero logit fraction: :func:`repanalysis.analyze.logits.logit_stats_dump` (``|z_k| < threshold``);
- mean logit gap, max_l z_l - z_k over k and samples (FedLaS Eq. 5): :func:`repanalysis.analyze.logits.logit_gap`;
- mean feature L1 norm: :func:`repanalysis.analyze.confidence.feature_l1_norm`;
- d_within, d_total, R^2: :func:`repanalysis.analyze.geometry.class_separation`, on the train Dumps when given, else
  on the evaluation Dumps.

Per sample and epoch (the ``(T, N)`` matrices of :class:`RunDynamics`):

- calibration state: a sample is over-confident when its confidence bin b (the same 15 equal-width ``(lo, hi]``
  bins, :func:`~repanalysis.analyze.calibration.equal_width_bin`) has conf_b > acc_b, under-confident otherwise.
  Per epoch: the proportion of each state, and the state flip rate (the share of samples whose state differs from
  the previous epoch's). These are the quantities of FedLaS Fig. 3a/b, but measured from the model's own outputs:
  FedLaS reads the states from its gating network, which a plain checkpoint does not have.
- prediction flips (the predicted class changes between consecutive epochs) and forgetting events (Toneva et al.
  2019, "An Empirical Study of Example Forgetting during Deep Neural Network Learning"): a sample is forgotten at
  epoch t when it was classified correctly at epoch t-1 and wrongly at t; learned when the reverse. Per epoch: the
  number of events; per sample: how many times it was forgotten over the run, with the never-learned samples
  (never correct at any epoch) counted apart.

"Consecutive epochs" are consecutive checkpoints of the series (epochs 5, 10, 15 when every fifth was saved).
Rows with NaN or infinite logits (a diverged epoch) count as wrong, have no prediction and no calibration state,
and a transition is counted over the samples defined at both epochs.

Example::

    >>> res = dynamics_of_runs({"CE": [(1, ce1), (2, ce2)], "LS": [(1, ls1), (2, ls2)]})
    >>> res.to_frame().query("metric == 'ece'")        # model, epoch, metric, value, n
    >>> res.run("CE").forgetting_distribution()        # {'never_learned': 12, 'counts': {0: 950, 1: 30, ...}}
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch

from repanalysis.errors import DataError

# The per-epoch numbers, in table / figure order.
METRICS = ("accuracy", "nll", "ece", "oece", "uece", "near_zero_fraction", "logit_gap", "feature_l1_norm",
           "d_within", "d_total", "r2", "over_confident", "under_confident", "state_flip_rate",
           "prediction_flip_rate", "forgetting_events", "learning_events")
# States of a sample in the (T, N) ``states`` matrix.
UNDER, OVER, UNDEFINED = 0, 1, -1
_CHUNK_ELEMENTS = 1 << 22


# --- the per-sample quantities (pure functions of the (T, N) matrices) ------------------------------------------
def calibration_states(confidence, correct=None, n_bins: int = 15, *, bins=None) -> np.ndarray:
    """Over- (1) or under-confident (0) state of each sample from its equal-width confidence bin.

    confidence (N,) max softmax probabilities; correct (N,) bool, used to make the bins when ``bins`` (a
    :class:`~repanalysis.analyze.calibration.BinStats` of equal-width bins, e.g. ``calibration_report(...).bins``)
    is not given. A sample in bin b is over-confident when conf_b > acc_b (the bin's mean confidence above its
    accuracy), else under-confident. Returns (N,) int8; -1 for a confidence in no bin (NaN, <= 0 or > 1).
    """
    from repanalysis.analyze.calibration import bin_statistics, equal_width_bin, equal_width_edges

    conf = torch.as_tensor(np.asarray(confidence, dtype=np.float64))
    if conf.ndim != 1:
        raise DataError(f"confidence must be 1-D (one value per sample); got shape {tuple(conf.shape)}")
    if bins is None:
        if correct is None:
            raise DataError("calibration_states needs either the samples' correctness or the bins")
        bins = bin_statistics(conf, np.asarray(correct, dtype=bool), equal_width_edges(n_bins), rule="equal-width")
    m = len(bins.counts)
    b = equal_width_bin(conf, m).numpy()
    with np.errstate(invalid="ignore"):
        over_bin = np.append(bins.confidence > bins.accuracy, False)     # index m: in no bin
    states = np.where(over_bin[b], OVER, UNDER).astype(np.int8)
    states[b == m] = UNDEFINED
    return states


def state_proportions(states) -> tuple[np.ndarray, np.ndarray]:
    """(over, under): per epoch, the share of over- and under-confident samples among those with a state.

    states (T, N) of 1 / 0 / -1 -> two (T,) float arrays (NaN for an epoch where no sample has a state)."""
    s = _matrix(states, "states")
    defined = (s != UNDEFINED).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (s == OVER).sum(1) / defined, (s == UNDER).sum(1) / defined


def flip_rate(values, missing: int | None = UNDEFINED) -> np.ndarray:
    """Per epoch t, the share of samples whose value differs from epoch t-1, over the samples defined (not
    ``missing``) at both. values (T, N) (calibration states, predicted classes) -> (T,) float, NaN at t = 0."""
    v = _matrix(values, "values")
    out = np.full(v.shape[0], np.nan)
    for t in range(1, v.shape[0]):
        both = np.ones(v.shape[1], dtype=bool) if missing is None else (v[t] != missing) & (v[t - 1] != missing)
        if both.any():
            out[t] = float((v[t][both] != v[t - 1][both]).mean())
    return out


def forgetting_events(correct) -> np.ndarray:
    """Per epoch t, the number of samples forgotten (correct at t-1, wrong at t; Toneva et al. 2019).

    correct (T, N) bool -> (T,) float, NaN at t = 0 (no previous epoch)."""
    c = _matrix(correct, "correct").astype(bool)
    out = np.full(c.shape[0], np.nan)
    out[1:] = (c[:-1] & ~c[1:]).sum(1)
    return out


def learning_events(correct) -> np.ndarray:
    """Per epoch t, the number of samples learned (wrong at t-1, correct at t). (T, N) -> (T,), NaN at t = 0."""
    c = _matrix(correct, "correct").astype(bool)
    out = np.full(c.shape[0], np.nan)
    out[1:] = (~c[:-1] & c[1:]).sum(1)
    return out


def forgetting_counts(correct) -> np.ndarray:
    """Per sample, how many forgetting events it had over the run. correct (T, N) bool -> (N,) int64."""
    c = _matrix(correct, "correct").astype(bool)
    return (c[:-1] & ~c[1:]).sum(0).astype(np.int64)


def never_learned(correct) -> np.ndarray:
    """Per sample, True when it is classified correctly at no epoch. correct (T, N) bool -> (N,) bool."""
    return ~_matrix(correct, "correct").astype(bool).any(0)


def forgetting_distribution(correct) -> dict:
    """How many samples were forgotten 0, 1, 2, ... times, the never-learned samples apart.

    correct (T, N) bool -> ``{"never_learned": n, "learned": N - n, "counts": {k: samples forgotten k times}}``
    (``counts`` over the learned samples only, every k from 0 to the largest)."""
    counts = forgetting_counts(correct)
    never = never_learned(correct)
    hist = np.bincount(counts[~never], minlength=1)
    return {"never_learned": int(never.sum()), "learned": int((~never).sum()),
            "counts": {int(k): int(n) for k, n in enumerate(hist)}}


def _matrix(values, what: str) -> np.ndarray:
    a = np.asarray(values)
    if a.ndim != 2 or a.shape[0] < 1:
        raise DataError(f"{what} must be a (T, N) matrix, one row per epoch; got shape {a.shape}")
    return a


# --- results ----------------------------------------------------------------------------------------------------
@dataclass
class RunDynamics:
    """One run's dynamics: per-epoch numbers and per-sample matrices.

    ``epochs`` (T,) int; ``metrics``: name (of METRICS) -> (T,) float (NaN where it does not apply: transitions at
    the first epoch, feature metrics without features); ``correct`` (T, N) bool; ``predictions`` (T, N) int32 (-1
    for a row with non-finite logits); ``states`` (T, N) int8 (1 over-, 0 under-confident, -1 none).
    ``separation_data``: "train" or "evaluation", the Dumps d_within / R^2 were computed on.
    """

    name: str
    epochs: np.ndarray
    metrics: dict[str, np.ndarray]
    correct: np.ndarray
    predictions: np.ndarray
    states: np.ndarray
    num_samples: int
    split: str | None = None
    separation_data: str = "evaluation"

    def metric(self, name: str) -> np.ndarray:
        if name not in self.metrics:
            raise DataError(f"unknown dynamics metric {name!r}; expected one of {', '.join(self.metrics)}")
        return self.metrics[name]

    def forgetting_counts(self) -> np.ndarray:
        return forgetting_counts(self.correct)

    def never_learned(self) -> np.ndarray:
        return never_learned(self.correct)

    def forgetting_distribution(self) -> dict:
        return forgetting_distribution(self.correct)

    def rows(self) -> list[dict]:
        """One dict per epoch: epoch and every metric (for tables)."""
        return [{"epoch": int(e), **{m: float(v[t]) for m, v in self.metrics.items()}}
                for t, e in enumerate(self.epochs)]

    def to_dict(self, per_sample: bool = False) -> dict:
        dist = self.forgetting_distribution()
        counts = self.forgetting_counts()[~self.never_learned()]
        out = {"name": self.name, "num_samples": self.num_samples, "split": self.split,
               "separation_data": self.separation_data, "epochs": [int(e) for e in self.epochs],
               "metrics": {m: [_none(x) for x in v.tolist()] for m, v in self.metrics.items()},
               "forgetting": {**{k: v for k, v in dist.items() if k != "counts"},
                              "counts": {str(k): v for k, v in dist["counts"].items()},
                              "mean_events_per_learned_sample": _none(float(counts.mean())) if counts.size else None,
                              "total_events": int(self.forgetting_counts().sum())}}
        if per_sample:
            out["per_sample"] = {"correct": self.correct.astype(int).tolist(), "predictions": self.predictions.tolist(),
                                 "states": self.states.tolist(), "forgetting_counts": self.forgetting_counts().tolist()}
        return out


@dataclass
class DynamicsResult:
    """The dynamics of several runs (:func:`dynamics_of_runs`): ``runs`` in the order given."""

    runs: list[RunDynamics]
    n_bins: int = 15
    threshold: float = 0.01
    notes: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.runs]

    def run(self, name: str) -> RunDynamics:
        for r in self.runs:
            if r.name == name:
                return r
        raise DataError(f"no run named {name!r}; expected one of {', '.join(self.names)}")

    def to_dict(self, per_sample: bool = False) -> dict:
        return {"analysis": "dynamics", "n_bins": self.n_bins, "near_zero_threshold": self.threshold,
                "metrics": list(METRICS), "calibration_state": STATE_NOTE, "forgetting": FORGETTING_NOTE,
                "runs": [r.to_dict(per_sample=per_sample) for r in self.runs]}

    def frame_rows(self) -> list[dict]:
        """The rows of :meth:`to_frame` as dicts."""
        from repanalysis.frames import tidy_rows

        return [row for r in self.runs for t, e in enumerate(r.epochs)
                for row in tidy_rows(r.name, {m: v[t] for m, v in r.metrics.items()}, n=r.num_samples, epoch=int(e))]

    def to_frame(self):
        """Tidy pandas DataFrame, one row per run, epoch and metric: columns model (the run), epoch, metric, value,
        n (samples)."""
        from repanalysis.frames import rows_frame

        return rows_frame(self.frame_rows())


STATE_NOTE = ("per-sample calibration state from the model's outputs (not a gating network as in FedLaS Fig. 3): "
              "over-confident when the sample's equal-width confidence bin has mean confidence above its accuracy, "
              "else under-confident")
FORGETTING_NOTE = ("forgetting event (Toneva et al. 2019): correct at the previous checkpoint, wrong at this one; "
                   "never-learned samples (correct at no checkpoint) are counted apart")


def _none(x):
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


# --- the analysis -------------------------------------------------------------------------------------------------
def _ordered(name: str, items, what: str) -> list[tuple[int, object]]:
    from repanalysis.dump import Dump

    items = list(items)
    if not items:
        raise DataError(f"run {name!r}: no {what}; expected [(epoch, Dump), ...] with at least one checkpoint")
    for item in items:
        if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[1], Dump)
                and isinstance(item[0], (int, np.integer)) and not isinstance(item[0], bool)):
            raise DataError(f"run {name!r}: expected (epoch, Dump) pairs with an integer epoch; got {item!r:.80}")
    items = sorted(((int(e), d) for e, d in items), key=lambda t: t[0])
    epochs = [e for e, _ in items]
    dup = next((e for i, e in enumerate(epochs) if e in epochs[:i]), None)
    if dup is not None:
        raise DataError(f"run {name!r}: epoch {dup} is given twice in its {what}; expected one Dump per epoch")
    return items


def _per_sample(dump) -> tuple[np.ndarray, np.ndarray]:
    """(predicted class, row in calibration) per sample: argmax z (-1 for a row with a non-finite logit), and
    whether calibration keeps the row (no NaN or +inf logit, a finite logit at the label)."""
    n, k = dump.logits.shape
    pred = np.empty(n, dtype=np.int32)
    kept = np.empty(n, dtype=bool)
    for start, chunk in dump.iter_chunks(("logits", "labels"), chunk_size=max(1, _CHUNK_ELEMENTS // max(k, 1))):
        z = torch.as_tensor(np.asarray(chunk["logits"]))
        y = torch.as_tensor(np.asarray(chunk["labels"], dtype=np.int64))
        stop = start + len(y)
        finite = torch.isfinite(z).all(1)
        pred[start:stop] = torch.where(finite, z.argmax(1), -1).numpy()
        z_y = z.gather(1, y[:, None].clamp(0, k - 1))[:, 0]
        kept[start:stop] = (~(torch.isnan(z).any(1) | torch.isposinf(z).any(1) | torch.isneginf(z_y)
                              | torch.isneginf(z).all(1))).numpy()
    return pred, kept


def _mean_l1(dump, device) -> float:
    """Mean over samples of the feature L1 norm (:func:`feature_l1_norm`), streamed in row chunks."""
    from repanalysis.analyze.confidence import feature_l1_norm

    d = dump.feature_dim or 1
    total = 0.0
    for _, chunk in dump.iter_chunks(("features",), chunk_size=max(1, _CHUNK_ELEMENTS // d)):
        total += float(feature_l1_norm(chunk["features"], device=device).sum())
    return total / dump.num_samples


def _epoch(name: str, dump, train_dump, *, n_bins: int, threshold: float, device) -> tuple:
    """One checkpoint: its numbers and its per-sample correctness, prediction and calibration state."""
    from repanalysis.analyze.calibration import calibration_report
    from repanalysis.analyze.geometry import class_separation
    from repanalysis.analyze.logits import logit_gap, logit_stats_dump

    n = dump.num_samples
    cal = calibration_report(dump.logits, dump.labels, n_bins, num_classes=dump.num_classes, name=name,
                             device=device, progress=False)
    stats = logit_stats_dump(dump, threshold=threshold, kde_samples=0, name=name, device=device)
    gaps = logit_gap(dump.logits, device=device)
    correct = np.zeros(n, dtype=bool)
    correct[np.setdiff1d(np.arange(n), stats.excluded)] = stats.correct
    pred, kept = _per_sample(dump)
    states = np.full(n, UNDEFINED, dtype=np.int8)
    if int(kept.sum()) == cal.num_samples:
        states[kept] = calibration_states(cal.confidence, bins=cal.bins)
    else:          # not expected: the rows calibration kept are not known here, so no state this epoch
        warnings.warn(f"{name}: cannot align the calibration states with the samples ({cal.num_samples} rows kept "
                      f"by calibration, {int(kept.sum())} expected); no calibration state at this epoch",
                      RuntimeWarning, stacklevel=3)
    values = {"accuracy": cal.accuracy, "nll": cal.nll, "ece": cal.ece, "oece": cal.oece, "uece": cal.uece,
              "near_zero_fraction": stats.mean("near_zero_fraction"),
              "logit_gap": float(np.mean(gaps[np.isfinite(gaps)])) if np.isfinite(gaps).any() else math.nan,
              "feature_l1_norm": math.nan, "d_within": math.nan, "d_total": math.nan, "r2": math.nan}
    if dump.features is not None:
        values["feature_l1_norm"] = _mean_l1(dump, device)
    geometry_dump = train_dump if train_dump is not None else dump
    if geometry_dump.features is not None:
        sep = class_separation(geometry_dump, device=device)
        values.update(d_within=sep.d_within, d_total=sep.d_total, r2=sep.r2)
    return values, correct, pred, states


def run_dynamics_of(name: str, dumps: Sequence[tuple[int, object]], train: Sequence[tuple[int, object]] | None = None,
                    *, n_bins: int = 15, threshold: float = 0.01, device=None) -> RunDynamics:
    """:class:`RunDynamics` of one run from its [(epoch, Dump), ...] (any order; sorted by epoch) and, optionally,
    the [(epoch, Dump), ...] of the same checkpoints on the training data (for d_within / R^2)."""
    from repanalysis.analyze.calibration.binning import _check_bins
    from repanalysis.analyze.geometry import split_of
    from repanalysis.dump.pairs import check_same_samples

    _check_bins(n_bins)
    items = _ordered(name, dumps, "Dumps")
    epochs = [e for e, _ in items]
    check_same_samples([d for _, d in items], f"dynamics of run {name!r}")
    train_by_epoch = None
    if train is not None:
        train_items = _ordered(name, train, "train Dumps")
        if [e for e, _ in train_items] != epochs:
            raise DataError(f"run {name!r}: the train Dumps are of epochs {[e for e, _ in train_items]} but the "
                            f"evaluation Dumps of epochs {epochs}; expected one train Dump per checkpoint")
        train_by_epoch = dict(train_items)
    values, correct, preds, states = [], [], [], []
    for epoch, dump in items:
        v, c, p, s = _epoch(name, dump, None if train_by_epoch is None else train_by_epoch[epoch], n_bins=n_bins,
                            threshold=threshold, device=device)
        values.append(v)
        correct.append(c)
        preds.append(p)
        states.append(s)
    correct, preds, states = np.stack(correct), np.stack(preds), np.stack(states)
    metrics = {m: np.array([v[m] for v in values], dtype=np.float64) for m in values[0]}
    metrics["over_confident"], metrics["under_confident"] = state_proportions(states)
    metrics["state_flip_rate"] = flip_rate(states)
    metrics["prediction_flip_rate"] = flip_rate(preds, missing=-1)
    metrics["forgetting_events"] = forgetting_events(correct)
    metrics["learning_events"] = learning_events(correct)
    return RunDynamics(name=name, epochs=np.array(epochs, dtype=np.int64), metrics={m: metrics[m] for m in METRICS},
                       correct=correct, predictions=preds, states=states, num_samples=items[0][1].num_samples,
                       split=split_of(items[0][1]), separation_data="train" if train is not None else "evaluation")


def dynamics_of_runs(runs: Mapping[str, Sequence[tuple[int, object]]],
                     train: Mapping[str, Sequence[tuple[int, object]]] | None = None, *, n_bins: int = 15,
                     threshold: float = 0.01, device=None) -> DynamicsResult:
    """Training dynamics of several runs: ``{run name: [(epoch, Dump), ...]}`` -> :class:`DynamicsResult`.

    Each run's Dumps hold the same samples in the same order (DataError naming the first difference); ``train``:
    ``{run name: [(epoch, Dump of the training data), ...]}`` for the same epochs, on which d_within / d_total / R^2
    are computed (else on the evaluation Dumps). n_bins: the equal-width confidence bins of ECE and of the
    calibration states; threshold: the near-zero logit cut; device: None (CPU), "auto" or a torch device.
    """
    from repanalysis.arrays import check_number

    if not isinstance(runs, Mapping) or not runs:
        raise DataError(f"dynamics_of_runs takes {{run name: [(epoch, Dump), ...]}} with at least one run; got "
                        f"{type(runs).__name__}")
    threshold = check_number(threshold, "near-zero threshold", minimum=0)
    if train is not None:
        if not isinstance(train, Mapping) or set(train) != set(runs):
            raise DataError(f"train must map the same run names as the runs ({', '.join(map(str, runs))}); got "
                            f"{', '.join(map(str, train)) if isinstance(train, Mapping) else type(train).__name__}")
    out = [run_dynamics_of(str(name), items, None if train is None else train[name], n_bins=n_bins,
                           threshold=threshold, device=device) for name, items in runs.items()]
    return DynamicsResult(runs=out, n_bins=int(n_bins), threshold=float(threshold))
