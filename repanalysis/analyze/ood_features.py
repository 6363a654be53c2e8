"""OOD detection on penultimate features, fitted on an in-distribution TRAIN Dump of the same model.

Scores (higher = more in-distribution), all streamed over row chunks with float64 statistics:

- ``mahalanobis``: max_k -(h - mu_k)^T S^+ (h - mu_k), class means mu_k and the shared (tied) covariance
  S = 1/N sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T of the training features (Lee et al. 2018, Eqs. 1-2).
- ``relative_mahalanobis``: -min_k [MD_k(h) - MD_0(h)], MD_0 the distance to one Gaussian N(mu_0, S_0) fitted
  on all training features regardless of class (Ren et al. 2021, "A Simple Fix to Mahalanobis Distance", Sec. 3).
- ``knn``: minus the Euclidean distance from h / ||h|| to its k-th nearest neighbour among the L2-normalised
  training features (Sun et al. 2022, "Out-of-distribution detection with deep nearest neighbors", Sec. 3).
  The training bank is held in float32; distances are computed in blocks of (query chunk x bank chunk) with a
  running torch.topk (never an N x N matrix), and the k-th distance is recomputed exactly in float64 from
  the selected neighbour, so it does not depend on the chunk sizes.
- ``vim``: Virtual-logit Matching (Wang et al. 2022, Sec. 3). Origin u = -W^+ b; principal space P = the
  eigenvectors of the ``vim_dim`` largest eigenvalues of 1/N sum_i (h_i - u)(h_i - u)^T (training features);
  residual x^{P_perp} = (h - u) projected on the orthogonal complement; virtual logit l_0 = alpha ||x^{P_perp}||
  with alpha = sum_i max_j l_ij / sum_i ||x_i^{P_perp}|| over the training set; the paper's
  ViM(x) = e^{l_0} / (e^{l_0} + sum_j e^{l_j}) is the OOD probability, and the score reported is
  logsumexp_j l_j - l_0 = log((1 - ViM(x)) / ViM(x)), a decreasing function of it (same AUROC, the official
  code's score). Logits are l = h W^T + b with the Dump's classifier.
  Default ``vim_dim`` (the paper's rule, Sec. 4): 1000 if D >= 1500, 512 if D >= 768, else D / 2.
- ``react_energy``: energy (logsumexp) of the logits recomputed from activations clipped at c, the p-th
  percentile of all training activations: logsumexp(min(h, c) W^T + b) (Sun et al. 2021, ReAct, Eq. 1-2).
  The percentile (numpy's default linear interpolation) is found exactly by streaming histogram refinement.

Example::

    >>> from repanalysis.analyze.ood_features import ood_feature_detection
    >>> res = ood_feature_detection(train_dump, test_dump, svhn_dump, name="CE")
    >>> res.auroc["knn"], res.aupr_in["vim"]
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, fields
from typing import Iterator, Sequence

import numpy as np
import torch

from repanalysis.analyze.confidence import OODResult, ood_metrics
from repanalysis.arrays import check_number, model_names
from repanalysis.errors import DataError

FEATURE_SCORES = ("mahalanobis", "relative_mahalanobis", "knn", "vim", "react_energy")
CHUNK = 8192
_GATHER_LIMIT = 1 << 20        # order statistics: gather the candidate values once at most this many remain


@dataclass
class FeatureOODResult(OODResult):
    """An :class:`~repanalysis.analyze.confidence.OODResult` of feature scores (possibly merged with the logit
    scores): auroc, fpr_at_95_tpr, aupr_in, aupr_out, roc per score. Its frame has AUPR rows by default."""

    def to_frame(self, aupr: bool = True):
        return super().to_frame(aupr=aupr)


# --- helpers ---------------------------------------------------------------------------------------------
def _chunks(dump, keys: Sequence[str], chunk_size: int, device) -> Iterator[dict[str, torch.Tensor]]:
    for _, c in dump.iter_chunks(keys, chunk_size=chunk_size):
        yield {k: torch.as_tensor(v).to(device) for k, v in c.items()}


def _features(c: dict, dtype=torch.float64) -> torch.Tensor:
    return c["features"].to(dtype)


def _classifier(dump, where: str, device):
    w, b = dump.classifier_weight, dump.classifier_bias
    if w is None:
        raise DataError(f"{where}: the train Dump has no classifier_weight; ViM and ReAct need the classifier "
                        "W, b (extract with features and classifier, or use Dump.from_arrays(classifier_weight=...))")
    w = torch.as_tensor(np.asarray(w), device=device).to(torch.float64)
    b = (torch.zeros(w.shape[0], dtype=torch.float64, device=device) if b is None
         else torch.as_tensor(np.asarray(b), device=device).to(torch.float64))
    if w.ndim != 2 or w.shape[1] != dump.feature_dim or b.shape != (w.shape[0],):
        raise DataError(f"{where}: classifier_weight must be [K, D] with D = {dump.feature_dim} (the feature "
                        f"width) and bias [K]; got {tuple(w.shape)} and {tuple(b.shape)}")
    return w, b


def default_vim_dim(feature_dim: int) -> int:
    """The ViM paper's principal-space dimension: 1000 if D >= 1500, 512 if D >= 768, else D // 2."""
    return 1000 if feature_dim >= 1500 else 512 if feature_dim >= 768 else max(1, feature_dim // 2)


# --- Mahalanobis and relative Mahalanobis ----------------------------------------------------------------
class MahalanobisFit:
    """Class means, shared covariance and background Gaussian of training features (two streaming passes)."""

    def __init__(self, train, *, chunk_size: int = CHUNK, device=None):
        k, d = train.num_classes, train.feature_dim
        sums = torch.zeros(k, d, dtype=torch.float64, device=device)
        counts = torch.zeros(k, dtype=torch.float64, device=device)
        for c in _chunks(train, ("features", "labels"), chunk_size, device):
            h, y = _features(c), c["labels"].long()
            sums.index_add_(0, y, h)
            counts += torch.bincount(y, minlength=k).to(torch.float64)
        present = counts > 0
        if int(present.sum()) < 1:
            raise DataError("Mahalanobis: the train Dump has no samples")
        n = counts.sum()
        self.means = sums[present] / counts[present, None]           # (K', D) classes seen in training
        mu0 = sums.sum(0) / n
        idx = torch.full((k,), -1, dtype=torch.long, device=device)
        idx[present] = torch.arange(int(present.sum()), device=device)
        within = torch.zeros(d, d, dtype=torch.float64, device=device)
        for c in _chunks(train, ("features", "labels"), chunk_size, device):
            r = _features(c) - self.means[idx[c["labels"].long()]]
            within.addmm_(r.T, r)
        cov = within / n                                             # tied covariance (Lee 2018, Eq. 1)
        dm = self.means - mu0
        cov0 = cov + (dm.T * counts[present]) @ dm / n              # total = within + between scatter
        self.precision = torch.linalg.pinv(cov, hermitian=True)
        self.precision0 = torch.linalg.pinv(cov0, hermitian=True)
        self.mu0 = mu0
        self._pm = self.precision @ self.means.T                     # (D, K')
        self._mpm = (self.means @ self._pm).diagonal()               # mu_k^T S^+ mu_k

    def distances(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, K') squared Mahalanobis distances to the class means and (N,) to the background mean."""
        quad = ((h @ self.precision) * h).sum(1)
        md = (quad[:, None] - 2 * h @ self._pm + self._mpm).clamp_min(0)
        r0 = h - self.mu0
        md0 = ((r0 @ self.precision0) * r0).sum(1)
        return md, md0

    def score(self, h: torch.Tensor) -> dict[str, torch.Tensor]:
        md, md0 = self.distances(h)
        return {"mahalanobis": -md.amin(1),                            # M(x) = max_k -MD_k (Lee 2018, Eq. 2)
                "relative_mahalanobis": -(md - md0[:, None]).amin(1)}  # -min_k RMD_k (Ren 2021)


# --- KNN ---------------------------------------------------------------------------------------------------
def _normalise(h: torch.Tensor) -> torch.Tensor:
    return h / h.norm(dim=1, keepdim=True).clamp_min(1e-12)


class KNNFit:
    """L2-normalised training features held as a float32 bank (N, D) on ``device``."""

    def __init__(self, train, k: int = 50, *, chunk_size: int = CHUNK, device=None):
        check_number(k, "knn k", integer=True, minimum=1)
        if k > train.num_samples:
            raise DataError(f"KNN: k = {k} exceeds the {train.num_samples} training samples; expected k <= N")
        self.k = int(k)
        self.bank = torch.empty(train.num_samples, train.feature_dim, dtype=torch.float32, device=device)
        start = 0
        for c in _chunks(train, ("features",), chunk_size, device):
            h = _normalise(_features(c))
            self.bank[start:start + h.shape[0]] = h.to(torch.float32)
            start += h.shape[0]
        self.chunk_size = chunk_size

    def score(self, h: torch.Tensor, bank_chunk: int | None = None, query_chunk: int = 1024) -> torch.Tensor:
        """(N,) minus the distance to the k-th nearest bank row (Sun 2022: S = -||z* - z_(k)||).

        Blocks of query_chunk x bank_chunk distances; each block's k smallest are merged into a running top-k."""
        bank_chunk = max(bank_chunk or self.chunk_size, self.k)
        out = []
        for qs in range(0, h.shape[0], query_chunk):
            q64 = _normalise(h[qs:qs + query_chunk].to(torch.float64))
            q = q64.to(torch.float32)
            best_d = torch.empty(q.shape[0], 0, dtype=torch.float32, device=q.device)
            best_i = torch.empty(q.shape[0], 0, dtype=torch.long, device=q.device)
            for s in range(0, self.bank.shape[0], bank_chunk):
                d2 = (2 - 2 * q @ self.bank[s:s + bank_chunk].T).clamp_min_(0)   # ||q - b||^2 of unit vectors
                bd, bi = torch.topk(d2, min(self.k, d2.shape[1]), dim=1, largest=False, sorted=False)
                cand_d, cand_i = torch.cat([best_d, bd], 1), torch.cat([best_i, bi + s], 1)
                best_d, pos = torch.topk(cand_d, min(self.k, cand_d.shape[1]), dim=1, largest=False, sorted=True)
                best_i = cand_i.gather(1, pos)
            kth = self.bank[best_i[:, -1]].to(torch.float64)       # the k-th neighbour, distance recomputed
            out.append(-(q64 - kth).norm(dim=1))
        return torch.cat(out) if out else torch.empty(0, dtype=torch.float64, device=h.device)


# --- ViM ---------------------------------------------------------------------------------------------------
class ViMFit:
    """Origin u, residual (non-principal) basis R and alpha of Virtual-logit Matching (Wang et al. 2022)."""

    def __init__(self, train, dim: int | None = None, *, chunk_size: int = CHUNK, device=None):
        self.w, self.b = _classifier(train, "ViM", device)
        d = self.w.shape[1]
        dim = default_vim_dim(d) if dim is None else dim
        check_number(dim, "ViM principal dimension", integer=True, minimum=1)
        if dim >= d:
            raise DataError(f"ViM: the principal dimension {dim} must be smaller than the feature width {d}")
        self.dim = int(dim)
        self.u = -(torch.linalg.pinv(self.w) @ self.b)                # origin o = -(W^T)^+ b
        cov = torch.zeros(d, d, dtype=torch.float64, device=device)
        n = 0
        for c in _chunks(train, ("features",), chunk_size, device):
            x = _features(c) - self.u
            cov.addmm_(x.T, x)
            n += x.shape[0]
        _, vecs = torch.linalg.eigh(cov / n)                         # ascending eigenvalues
        self.residual_basis = vecs[:, :d - self.dim].contiguous()    # complement of the top-`dim` space
        max_logit_sum, vnorm_sum = 0.0, 0.0
        for c in _chunks(train, ("features",), chunk_size, device):
            h = _features(c)
            max_logit_sum += float((h @ self.w.T + self.b).amax(1).sum())
            vnorm_sum += float(((h - self.u) @ self.residual_basis).norm(dim=1).sum())
        if not vnorm_sum > 0:
            raise DataError("ViM: the training features lie entirely in the principal space (zero residual); "
                            "choose a smaller --vim-dim")
        self.alpha = max_logit_sum / vnorm_sum                      # alpha = sum max_j l_ij / sum ||x_i^P_perp||

    def virtual_logit(self, h: torch.Tensor) -> torch.Tensor:
        return self.alpha * ((h - self.u) @ self.residual_basis).norm(dim=1)

    def score(self, h: torch.Tensor) -> torch.Tensor:
        energy = torch.logsumexp(h @ self.w.T + self.b, dim=1)
        return energy - self.virtual_logit(h)                        # log((1 - ViM(x)) / ViM(x))


# --- ReAct ---------------------------------------------------------------------------------------------------
def _order_statistic(train, r: int, lo: float, hi: float, chunk_size: int, device, bins: int = 1024) -> float:
    """The r-th smallest (0-based) of all training activations, by histogram refinement (bounded memory)."""
    below, in_range = 0, train.num_samples * train.feature_dim
    closed = True                                                    # the range is [lo, hi] (else [lo, hi))
    while True:
        if lo == hi:
            return lo

        def members(c):
            v = _features(c).flatten()
            return v[(v >= lo) & ((v <= hi) if closed else (v < hi))]

        if in_range <= _GATHER_LIMIT:
            vals = torch.cat([members(c) for c in _chunks(train, ("features",), chunk_size, device)])
            return float(vals.sort().values[r - below])
        edges = torch.linspace(lo, hi, bins + 1, dtype=torch.float64, device=device)
        counts = torch.zeros(bins, dtype=torch.long, device=device)
        vmin, vmax = math.inf, -math.inf
        for c in _chunks(train, ("features",), chunk_size, device):
            v = members(c)
            if v.numel():
                counts += torch.bincount(torch.bucketize(v, edges[1:-1], right=True), minlength=bins)
                vmin, vmax = min(vmin, float(v.min())), max(vmax, float(v.max()))
        if vmin == vmax:
            return vmin
        cum = counts.cumsum(0)
        j = int(torch.searchsorted(cum, torch.tensor(r - below + 1, device=device)))
        below += int(cum[j - 1]) if j else 0
        in_range = int(counts[j])
        lo, new_hi = float(edges[j]), float(edges[j + 1])
        closed = closed and j == bins - 1
        hi = new_hi if j < bins - 1 else hi


def activation_percentile(train, percentile: float, *, chunk_size: int = CHUNK, device=None) -> float:
    """numpy.percentile(train.features, percentile) (linear interpolation) computed by streaming."""
    check_number(percentile, "ReAct percentile", minimum=0, maximum=100)
    n = train.num_samples * train.feature_dim
    lo, hi = math.inf, -math.inf
    for c in _chunks(train, ("features",), chunk_size, device):
        h = _features(c)
        if not bool(torch.isfinite(h).all()):
            raise DataError("ReAct: the training features hold NaN or inf; the percentile is undefined")
        lo, hi = min(lo, float(h.min())), max(hi, float(h.max()))
    pos = (n - 1) * float(percentile) / 100
    r0 = int(math.floor(pos))
    v0 = _order_statistic(train, r0, lo, hi, chunk_size, device)
    if pos == r0:
        return v0
    v1 = _order_statistic(train, r0 + 1, lo, hi, chunk_size, device)
    return v0 + (pos - r0) * (v1 - v0)


class ReActFit:
    """Clipping threshold c (p-th percentile of the training activations) and classifier W, b."""

    def __init__(self, train, percentile: float = 90, *, chunk_size: int = CHUNK, device=None):
        self.w, self.b = _classifier(train, "ReAct", device)
        self.percentile = float(percentile)
        self.threshold = activation_percentile(train, percentile, chunk_size=chunk_size, device=device)

    def score(self, h: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(h.clamp(max=self.threshold) @ self.w.T + self.b, dim=1)  # ReAct + energy


# --- fitting and scoring ---------------------------------------------------------------------------------
class FeatureOOD:
    """The fitted feature scores of one model. ``fit`` on the train Dump, then ``score(dump)``.

    scores: any of FEATURE_SCORES. knn_k: neighbours (paper: 50 on CIFAR-10). vim_dim: principal dimension
    (None = the paper's rule). react_percentile: clipping percentile p (paper: 90)."""

    def __init__(self, scores: Sequence[str] = FEATURE_SCORES, *, knn_k: int = 50, vim_dim: int | None = None,
                 react_percentile: float = 90, chunk_size: int = CHUNK, device=None):
        unknown = [s for s in scores if s not in FEATURE_SCORES]
        if unknown or not scores:
            raise DataError(f"unknown feature OOD score(s) {unknown}; expected some of {', '.join(FEATURE_SCORES)}")
        check_number(chunk_size, "chunk_size", integer=True, minimum=1)
        self.scores, self.knn_k, self.vim_dim = tuple(scores), knn_k, vim_dim
        self.react_percentile, self.chunk_size = react_percentile, int(chunk_size)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.fits: dict = {}

    def fit(self, train) -> "FeatureOOD":
        if train.features is None:
            raise DataError(f"{train.name}: the train Dump has no features; feature OOD scores need them")
        kw = {"chunk_size": self.chunk_size, "device": self.device}
        if {"mahalanobis", "relative_mahalanobis"} & set(self.scores):
            self.fits["mahalanobis"] = MahalanobisFit(train, **kw)
        if "knn" in self.scores:
            self.fits["knn"] = KNNFit(train, self.knn_k, **kw)
        if "vim" in self.scores:
            self.fits["vim"] = ViMFit(train, self.vim_dim, **kw)
        if "react_energy" in self.scores:
            self.fits["react_energy"] = ReActFit(train, self.react_percentile, **kw)
        self.feature_dim = train.feature_dim
        return self

    def score(self, dump) -> dict[str, np.ndarray]:
        """{score: (N,) float64} for every row of ``dump`` (features [N, D] with the train Dump's D)."""
        if not self.fits:
            raise DataError("FeatureOOD.score before fit: call fit(train_dump) first")
        if dump.features is None or dump.feature_dim != self.feature_dim:
            raise DataError(f"{dump.name}: expected features of width {self.feature_dim} (the train Dump's); got "
                            f"{None if dump.features is None else dump.feature_dim}")
        parts: dict[str, list] = {s: [] for s in self.scores}
        for c in _chunks(dump, ("features",), self.chunk_size, self.device):
            h = _features(c)
            out = {}
            if "mahalanobis" in self.fits:
                out.update(self.fits["mahalanobis"].score(h))
            for key in ("knn", "vim", "react_energy"):
                if key in self.fits:
                    out[key] = self.fits[key].score(h)
            for s in self.scores:
                parts[s].append(out[s].cpu())
        return {s: torch.cat(v).numpy() for s, v in parts.items()}


def ood_feature_detection(train, in_dump, ood_dump, *, scores: Sequence[str] = FEATURE_SCORES, knn_k: int = 50,
                          vim_dim: int | None = None, react_percentile: float = 90, name: str | None = None,
                          chunk_size: int = CHUNK, device=None) -> FeatureOODResult:
    """AUROC, AUPR-in, AUPR-out and FPR at 95% TPR of the feature scores for one model.

    train: in-distribution TRAIN Dump (features, labels; classifier W, b for vim / react_energy). in_dump,
    ood_dump: in-distribution test and OOD Dumps of the same checkpoint. Rows with non-finite scores are
    excluded with a warning."""
    from repanalysis.dump.pairs import check_different_data, check_same_model

    name = name or in_dump.name
    check_same_model(train, in_dump, "--train")
    check_same_model(ood_dump, in_dump, "--ood")
    check_different_data(in_dump, ood_dump, "--ood")
    det = FeatureOOD(scores, knn_k=knn_k, vim_dim=vim_dim, react_percentile=react_percentile,
                     chunk_size=chunk_size, device=device).fit(train)
    si, so = det.score(in_dump), det.score(ood_dump)
    oki = np.logical_and.reduce([np.isfinite(v) for v in si.values()])
    oko = np.logical_and.reduce([np.isfinite(v) for v in so.values()])
    n_bad = int((~oki).sum() + (~oko).sum())
    if n_bad:
        warnings.warn(f"{name}: {n_bad} samples have NaN or inf feature scores; they are excluded",
                      RuntimeWarning, stacklevel=2)
    if not oki.any() or not oko.any():
        raise DataError("feature OOD detection needs at least one finite in-distribution and one OOD sample")
    res = ood_metrics({k: v[oki] for k, v in si.items()}, {k: v[oko] for k, v in so.items()}, name=name,
                      n_excluded=n_bad)
    return FeatureOODResult(**{f.name: getattr(res, f.name) for f in fields(OODResult)})


def merge_ood_results(a: OODResult, b: OODResult) -> FeatureOODResult:
    """One OODResult holding the scores of both (same model; b's sample counts must match a's)."""
    if (a.num_in, a.num_ood) != (b.num_in, b.num_ood):
        warnings.warn(f"{a.name}: the logit scores use {a.num_in} + {a.num_ood} samples and the feature scores "
                      f"{b.num_in} + {b.num_ood} (non-finite rows excluded differently)", RuntimeWarning,
                      stacklevel=2)
    return FeatureOODResult(name=a.name, auroc={**a.auroc, **b.auroc}, fpr_at_95_tpr={**a.fpr_at_95_tpr, **b.fpr_at_95_tpr},
                     roc={**a.roc, **b.roc}, num_in=a.num_in, num_ood=a.num_ood,
                     n_excluded=max(a.n_excluded, b.n_excluded), aupr_in={**a.aupr_in, **b.aupr_in},
                     aupr_out={**a.aupr_out, **b.aupr_out})


def ood_feature_dumps(train_dumps, in_dumps, ood_dumps, *, names=None, **kwargs) -> list[FeatureOODResult]:
    """:func:`ood_feature_detection` per model: one train, in-distribution and OOD Dump each, in order."""
    trains, ins, oods = list(train_dumps), list(in_dumps), list(ood_dumps)
    if not len(trains) == len(ins) == len(oods):
        raise DataError(f"{len(trains)} train, {len(ins)} in-distribution and {len(oods)} OOD Dumps; expected one "
                        "of each per model")
    names = model_names(ins, names)
    return [ood_feature_detection(t, i, o, name=n, **kwargs) for t, i, o, n in zip(trains, ins, oods, names)]
