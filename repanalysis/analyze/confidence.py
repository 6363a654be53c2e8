"""Confidence scores: feature-norm confidence (FedLaS NCI), misclassification AUROC and OOD detection.

Scores (higher = more confident / more in-distribution), REFERENCE.md "Feature norm as confidence":

- ``max_softmax``: max_k softmax(z)_k (Hendrycks & Gimpel 2017)
- ``max_logit``: max_k z_k (Hendrycks et al. 2022)
- ``energy``: logsumexp_k z_k, the negative free energy at T = 1 (Liu et al. 2020)
- ``feature_l1``: ||h||_1 of the penultimate features (FedLaS)

NCI is the L1 norm standardised by the population mean and std (ddof = 0) of the same set of samples.
AUROC and the ROC curve come from scikit-learn (``roc_auc_score``, ``roc_curve``); FPR at 95% TPR is the FPR
at the first ROC point whose TPR reaches 0.95. Correct predictions (misclassification task) and
in-distribution samples (OOD task) are the positive class.

Example::

    >>> from repanalysis.analyze.confidence import misclassification_scores, ood_detection
    >>> res = misclassification_scores(dump.logits, dump.labels, dump.features)
    >>> res.auroc["feature_l1"]
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from repanalysis.arrays import as_tensor, check_logits_labels, model_names, refuse_probabilities
from repanalysis.errors import DataError

SCORES = ("max_softmax", "max_logit", "energy", "feature_l1")
TPR_LEVEL = 0.95


@dataclass
class MisclassificationResult:
    """How well each score separates correct (positive) from wrong predictions, for one model.

    auroc: score name -> AUROC (NaN when every prediction is right or every one is wrong).
    scores: score name -> (N,) values. nci (N,) standardised L1 feature norm (None without features).
    correct (N,) bool. accuracy, name, n_excluded (rows with non-finite logits or features).
    """

    name: str
    auroc: dict[str, float]
    scores: dict[str, np.ndarray]
    nci: np.ndarray | None
    correct: np.ndarray
    accuracy: float
    n_excluded: int = 0

    def to_dict(self, per_sample: bool = False) -> dict:
        out = {"name": self.name, "accuracy": self.accuracy, "n_excluded": self.n_excluded,
               "num_samples": int(self.correct.size), "auroc": {k: _num(v) for k, v in self.auroc.items()}}
        if per_sample:
            out["scores"] = {k: v.tolist() for k, v in self.scores.items()}
            out["nci"] = None if self.nci is None else self.nci.tolist()
            out["correct"] = self.correct.astype(int).tolist()
        return out

    def to_frame(self):
        """Tidy pandas DataFrame: an ``accuracy`` row (score None), then one ``auroc`` row per score; columns
        model, score, metric, value, n (samples)."""
        from repanalysis.frames import rows_frame, tidy_rows

        n = int(self.correct.size)
        rows = tidy_rows(self.name, {"accuracy": self.accuracy}, n=n, score=None)
        for score, value in self.auroc.items():
            rows += tidy_rows(self.name, {"auroc": value}, n=n, score=score)
        return rows_frame(rows)


@dataclass
class OODResult:
    """In- vs out-of-distribution separation of each score, for one model.

    auroc / fpr_at_95_tpr: score name -> float. roc: score name -> (fpr, tpr) arrays for plotting.
    num_in, num_ood: sample counts used (finite rows only). aupr_in / aupr_out: score name -> average
    precision with the in-distribution (resp. OOD, score negated) samples as the positive class.
    """

    name: str
    auroc: dict[str, float]
    fpr_at_95_tpr: dict[str, float]
    roc: dict[str, tuple[np.ndarray, np.ndarray]] = field(repr=False)
    num_in: int
    num_ood: int
    n_excluded: int = 0
    aupr_in: dict[str, float] = field(default_factory=dict)
    aupr_out: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"name": self.name, "num_in": self.num_in, "num_ood": self.num_ood, "n_excluded": self.n_excluded,
                "auroc": {k: _num(v) for k, v in self.auroc.items()},
                "fpr_at_95_tpr": {k: _num(v) for k, v in self.fpr_at_95_tpr.items()},
                "aupr_in": {k: _num(v) for k, v in self.aupr_in.items()},
                "aupr_out": {k: _num(v) for k, v in self.aupr_out.items()}}

    def to_frame(self, aupr: bool = False):
        """Tidy pandas DataFrame, rows ``auroc`` and ``fpr_at_95_tpr`` (with ``aupr``, also ``aupr_in`` and
        ``aupr_out``) for each score: columns model, score, metric, value, n (in-distribution + OOD samples),
        n_in, n_ood."""
        from repanalysis.frames import rows_frame, tidy_rows

        def values(score):
            out = {"auroc": self.auroc[score], "fpr_at_95_tpr": self.fpr_at_95_tpr.get(score)}
            for metric, d in (("aupr_in", self.aupr_in), ("aupr_out", self.aupr_out)):
                if aupr and score in d:
                    out[metric] = d[score]
            return out

        return rows_frame(row for score in self.auroc for row in tidy_rows(
            self.name, values(score), n=self.num_in + self.num_ood, score=score, n_in=self.num_in,
            n_ood=self.num_ood))


def _num(v: float):
    return None if not math.isfinite(v) else float(v)


# --- scores --------------------------------------------------------------------------------------------
def feature_l1_norm(features, device=None) -> torch.Tensor:
    """||h_i||_1 per sample. features (N, D) -> (N,) float64."""
    h = as_tensor(features, device=device)
    if h.ndim != 2:
        raise DataError(f"features must be 2-D [N, D]; got shape {tuple(h.shape)}")
    return h.to(torch.float64).abs().sum(1)


def feature_norm_confidence(features, device=None) -> np.ndarray:
    """FedLaS NCI: standardised L1 norm (||h||_1 - mean) / std over the given samples (population std).

    features (N, D) -> (N,). Raises DataError when every sample has the same norm (std = 0).
    """
    l1 = feature_l1_norm(features, device)
    return _standardise(l1).cpu().numpy()


def _standardise(x: torch.Tensor) -> torch.Tensor:
    if x.numel() < 2:
        raise DataError(f"NCI (standardised feature norm) needs at least 2 samples; got {x.numel()}")
    if not bool(torch.isfinite(x).all()):
        raise DataError(f"{int((~torch.isfinite(x)).sum())} of {x.numel()} samples have NaN or inf features; "
                        "NCI needs finite features (drop those rows first)")
    std = x.std(correction=0)
    if not bool(std > 0):
        raise DataError("all samples have the same feature L1 norm; NCI (standardised norm) is undefined")
    return (x - x.mean()) / std                              # NCI = (||h||_1 - mu) / sigma (FedLaS)


def confidence_scores(logits, features=None, device=None) -> dict[str, torch.Tensor]:
    """The four scores per sample: logits (N, K), features (N, D) or None -> {name: (N,) float64}."""
    z = as_tensor(logits, device=device)
    if z.ndim != 2 or z.shape[1] == 0:
        raise DataError(f"logits must be 2-D [N, K] with K >= 1; got shape {tuple(z.shape)}")
    z = z.to(torch.float64)
    zmax = z.amax(1)
    s = torch.exp(z - zmax[:, None]).sum(1)                  # sum_k exp(z_k - z_max), in [1, K]
    # max_k p_k = 1 / s: shift-invariant to the last bit wherever z - z_max is exact (so logits that differ by
    # a constant tie, as their softmaxes do), unlike exp(z_max - logsumexp z)
    out = {"max_softmax": s.reciprocal(),
           "max_logit": zmax,
           "energy": zmax + torch.log(s)}                    # -E(x; T=1) = logsumexp_k z_k (Liu 2020, eq. 4)
    if features is not None:
        h = as_tensor(features, device=device)
        if h.ndim != 2 or h.shape[0] != z.shape[0]:
            raise DataError(f"features must be [N, D] with N = {z.shape[0]} rows like the logits; "
                            f"got shape {tuple(h.shape)}")
        out["feature_l1"] = feature_l1_norm(h)
    return out


def _finite_rows(scores: dict[str, torch.Tensor]) -> torch.Tensor:
    ok = None
    for v in scores.values():
        f = torch.isfinite(v)
        ok = f if ok is None else ok & f
    return ok


def _auroc(pos_scores: np.ndarray, neg_scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if pos_scores.size == 0 or neg_scores.size == 0:
        return float("nan")
    y = np.r_[np.ones(pos_scores.size), np.zeros(neg_scores.size)]
    return float(roc_auc_score(y, np.r_[pos_scores, neg_scores]))


def fpr_at_tpr(pos_scores: np.ndarray, neg_scores: np.ndarray, tpr_level: float = TPR_LEVEL):
    """FPR at the first ROC threshold whose TPR reaches ``tpr_level``; also returns (fpr, tpr) of the curve.

    pos_scores: scores of the positives (in-distribution), neg_scores: of the negatives; each needs >= 1."""
    from sklearn.metrics import roc_curve

    pos_scores, neg_scores = np.asarray(pos_scores, dtype=np.float64), np.asarray(neg_scores, dtype=np.float64)
    if pos_scores.size == 0 or neg_scores.size == 0:
        raise DataError(f"FPR at {tpr_level:.0%} TPR needs positive and negative scores; got {pos_scores.size} "
                        f"positive and {neg_scores.size} negative")

    y = np.r_[np.ones(pos_scores.size), np.zeros(neg_scores.size)]
    fpr, tpr, _ = roc_curve(y, np.r_[pos_scores, neg_scores], drop_intermediate=False)
    i = int(np.searchsorted(tpr, tpr_level, side="left"))
    return float(fpr[min(i, fpr.size - 1)]), fpr, tpr


def aupr_in_out(pos_scores: np.ndarray, neg_scores: np.ndarray) -> tuple[float, float]:
    """(AUPR-in, AUPR-out): scikit-learn's average_precision_score with the positives (in-distribution) as the
    positive class, then with the negatives (OOD) as the positive class and the scores negated."""
    from sklearn.metrics import average_precision_score

    if pos_scores.size == 0 or neg_scores.size == 0:
        return float("nan"), float("nan")
    y = np.r_[np.ones(pos_scores.size), np.zeros(neg_scores.size)]
    s = np.r_[pos_scores, neg_scores].astype(np.float64)
    return float(average_precision_score(y, s)), float(average_precision_score(1 - y, -s))


def ood_metrics(pos: dict[str, np.ndarray], neg: dict[str, np.ndarray], *, name: str, n_excluded: int = 0
                ) -> OODResult:
    """An OODResult from per-score arrays of in-distribution (positive) and OOD samples (finite values)."""
    auroc, fpr95, roc, ain, aout = {}, {}, {}, {}, {}
    for key in pos:
        auroc[key] = _auroc(pos[key], neg[key])
        fpr95[key], fpr, tpr = fpr_at_tpr(pos[key], neg[key])
        roc[key] = (fpr, tpr)
        ain[key], aout[key] = aupr_in_out(pos[key], neg[key])
    first = next(iter(pos.values()))
    return OODResult(name=name, auroc=auroc, fpr_at_95_tpr=fpr95, roc=roc, num_in=int(first.size),
                     num_ood=int(next(iter(neg.values())).size), n_excluded=n_excluded, aupr_in=ain, aupr_out=aout)


# --- analyses ------------------------------------------------------------------------------------------
def misclassification_scores(logits, labels, features=None, *, num_classes: int | None = None,
                             name: str = "model", device=None) -> MisclassificationResult:
    """AUROC of max softmax, max logit, energy and feature L1 norm for telling correct from wrong predictions.

    logits (N, K), labels (N,), features (N, D) or None (then no feature_l1 / NCI). Rows with non-finite
    logits or features are excluded with a warning naming the count.
    """
    z, y = check_logits_labels(as_tensor(logits), as_tensor(labels), num_classes, device=device)
    if z.shape[0] == 0:
        raise DataError("no samples: logits have 0 rows; expected at least one sample")
    scores = confidence_scores(z, features, device=device)
    ok = _finite_rows(scores)
    n_bad = int((~ok).sum())
    if n_bad:
        if n_bad == ok.numel():
            raise DataError(f"all {n_bad} samples have NaN or inf logits/features; nothing to analyse")
        what = "logits" if features is None else "logits or features"
        warnings.warn(f"{name}: {n_bad} of {ok.numel()} samples have NaN or inf {what}; they are excluded from the "
                      "confidence scores", RuntimeWarning, stacklevel=2)
        scores = {k: v[ok] for k, v in scores.items()}
        z, y = z[ok], y[ok]
    correct = (z.argmax(1) == y).cpu().numpy()
    if correct.all() or not correct.any():
        warnings.warn("every prediction is " + ("right" if correct.all() else "wrong") +
                      "; misclassification AUROC is undefined (NaN)", RuntimeWarning, stacklevel=2)
    np_scores = {k: v.cpu().numpy() for k, v in scores.items()}
    auroc = {k: _auroc(v[correct], v[~correct]) for k, v in np_scores.items()}
    nci = None
    if "feature_l1" in scores:
        try:
            nci = _standardise(scores["feature_l1"]).cpu().numpy()
        except DataError as err:        # one sample, or one norm for all: the AUROCs stand, NCI does not
            warnings.warn(f"{name}: {err}; the NCI is skipped", RuntimeWarning, stacklevel=2)
    return MisclassificationResult(name=name, auroc=auroc, scores=np_scores, nci=nci, correct=correct,
                                   accuracy=float(correct.mean()), n_excluded=n_bad)


def ood_detection(in_logits, ood_logits, in_features=None, ood_features=None, *, name: str = "model",
                  device=None) -> OODResult:
    """AUROC, FPR at 95% TPR and AUPR-in/out of each score for in-distribution (positive) vs OOD samples.

    in_logits (N_in, K), ood_logits (N_ood, K) from the same model; features (N, D) for both or neither.
    """
    zi, zo = as_tensor(in_logits, device=device), as_tensor(ood_logits, device=device)
    if zi.ndim != 2 or zo.ndim != 2 or zi.shape[1] != zo.shape[1]:
        raise DataError(f"in-distribution and OOD logits must be [N, K] with the same K (same model); got "
                        f"{tuple(zi.shape)} and {tuple(zo.shape)}")
    if zi.shape[1] < 2:
        raise DataError(f"OOD scores need at least 2 classes; the logits have {zi.shape[1]} column")
    for z, which in ((zi, "in-distribution"), (zo, "OOD")):
        refuse_probabilities(z, f"the {which} logits")
    if zi.shape == zo.shape and torch.equal(zi, zo):
        raise DataError(f"{name}: the OOD logits are the in-distribution logits themselves; expected the logits "
                        "of out-of-distribution samples")
    if (in_features is None) != (ood_features is None):
        which = "in-distribution" if ood_features is None else "OOD"
        warnings.warn(f"{name}: features given for the {which} samples only; the feature_l1 score is skipped",
                      RuntimeWarning, stacklevel=2)
        in_features = ood_features = None
    if in_features is not None:
        hi, ho = as_tensor(in_features), as_tensor(ood_features)
        if hi.ndim != 2 or ho.ndim != 2 or hi.shape[1] != ho.shape[1]:
            raise DataError(f"in-distribution and OOD features must have the same width; got "
                            f"{tuple(hi.shape)} and {tuple(ho.shape)}")
    si = confidence_scores(zi, in_features, device=device)
    so = confidence_scores(zo, ood_features, device=device)
    oki, oko = _finite_rows(si), _finite_rows(so)
    bad = {which: int((~ok).sum()) for which, ok in (("in-distribution", oki), ("OOD", oko))}
    n_bad = sum(bad.values())
    if n_bad:
        parts = ", ".join(f"{n} of {ok.numel()} {which}" for (which, n), ok in zip(bad.items(), (oki, oko)) if n)
        warnings.warn(f"{parts} samples have NaN or inf logits or features; they are excluded", RuntimeWarning,
                      stacklevel=2)
    si = {k: v[oki].cpu().numpy() for k, v in si.items()}
    so = {k: v[oko].cpu().numpy() for k, v in so.items()}
    if min(next(iter(si.values())).size, next(iter(so.values())).size) == 0:
        raise DataError("OOD detection needs at least one finite in-distribution and one OOD sample")
    return ood_metrics(si, so, name=name, n_excluded=n_bad)


# --- Dumps ---------------------------------------------------------------------------------------------
def confidence_dumps(dumps, *, names=None, device=None) -> list[MisclassificationResult]:
    """:func:`misclassification_scores` of each Dump (its logits, labels, features and name, or ``names``).

    A Dump without features (logits only) gets a warning: its feature_l1 AUROC and NCI are skipped."""
    dumps = list(dumps)
    names = model_names(dumps, names)
    out = []
    for d, name in zip(dumps, names):
        if d.features is None:
            warnings.warn(f"{name} has no features (a logits-only Dump): its feature_l1 AUROC and NCI scatter are "
                          "skipped", RuntimeWarning, stacklevel=2)
        out.append(misclassification_scores(d.logits, d.labels, d.features, num_classes=d.num_classes, name=name,
                                            device=device))
    return out


def ood_dumps(in_dumps, ood_dumps, *, names=None, device=None) -> list[OODResult]:
    """:func:`ood_detection` for pairs of Dumps (in-distribution, OOD), one pair per model, in order.

    Each pair must come from the same checkpoint (the sha256 both Dumps record) and hold different samples
    (not the same Dump, nor two Dumps of one extraction run); DataError otherwise."""
    from repanalysis.dump.pairs import check_different_data, check_same_model

    ins, oods = list(in_dumps), list(ood_dumps)
    if len(ins) != len(oods):
        raise DataError(f"{len(ins)} in-distribution but {len(oods)} OOD Dumps; expected one OOD Dump per "
                        "in-distribution Dump")
    names = model_names(ins, names)
    out = []
    for i, o, name in zip(ins, oods, names):
        check_same_model(o, i, "--ood")
        check_different_data(i, o, "--ood")
        if i.num_classes != o.num_classes:
            raise DataError(f"{name}: the in-distribution Dump has {i.num_classes} classes and the OOD Dump "
                            f"{o.num_classes}; expected Dumps of the same model")
        out.append(ood_detection(i.logits, o.logits, i.features, o.features, name=name, device=device))
    return out

