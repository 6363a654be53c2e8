"""Neural collapse NC1-NC4 (Papyan et al. 2020), variability collapse VCI (Xu & Liu 2023), feature norms per class.

Conventions (REFERENCE.md "Neural collapse"; Papyan et al.'s reference code where the text is silent):
- class means mu_k over the samples of class k; global mean mu_G = mean_k mu_k (class-balanced, as that code);
- S_W = (1/N) sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T; S_B = (1/C) sum_k (mu_k - mu_G)(mu_k - mu_G)^T,
  with C the number of classes present;
- S_T (VCI, Xu & Liu 2023) is by default the sample total covariance (1/N) sum_i (h_i - h_bar)(h_i - h_bar)^T,
  h_bar the sample mean, obtained without another pass as S_W + sum_k (N_k/N)(mu_k - h_bar)(mu_k - h_bar)^T
  (law of total covariance); it equals S_W + S_B only when the classes are balanced, the older convention
  kept as ``vci_total="balanced"``;
- pseudo-inverses keep the eigen/singular values above max * max(D, C) * eps(float64);
- standard deviations use the unbiased estimator (torch.std), as the reference code does.
Two streaming passes over chunks (class sums, then S_W and NC4) in float64, so a memory-mapped Dump works.
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np
import torch

from repanalysis.arrays import as_labels, as_tensor, check_number, pick_device
from repanalysis.analyze.geometry import add_classes, check_chunk_size
from repanalysis.errors import DataError

DEFAULT_CHUNK = 8192
VCI_TOTALS = ("sample", "balanced")   # S_T of the VCI: sample total covariance (default), or S_W + S_B


@dataclass
class CollapseResult:
    """Neural-collapse statistics of one feature set (lower = more collapsed for every NC number and VCI).

    nc1: Tr(S_W S_B^+) / C. nc2_equinorm: std/mean of ||mu_k - mu_G||. nc2_equiangular: std of the
    off-diagonal cosines of the centred means. nc2_max_angle: mean |cos + 1/(C-1)| over them.
    nc3: ||W/||W||_F - M/||M||_F||_F^2 (None without W). nc4: fraction of samples whose classifier prediction
    differs from the nearest-class-mean prediction (None without W or logits). vci: 1 - Tr(S_T^+ S_B)/rank(S_B)
    (Xu & Liu 2023), with S_T as ``vci_total`` says: "sample" (the sample total covariance of the features) or
    "balanced" (S_W + S_B). classes (C,), counts (C,), and per class the mean/std of the L1 and L2 feature norms
    (C,) each.
    """

    nc1: float
    nc2_equinorm: float
    nc2_equiangular: float
    nc2_max_angle: float
    nc3: float | None
    nc4: float | None
    vci: float
    rank_sb: int
    classes: np.ndarray
    counts: np.ndarray
    norm_l1_mean: np.ndarray
    norm_l1_std: np.ndarray
    norm_l2_mean: np.ndarray
    norm_l2_std: np.ndarray
    n_samples: int
    name: str | None = None
    vci_total: str = "sample"

    def to_dict(self) -> dict:
        out = asdict(self)
        for k, v in out.items():
            if isinstance(v, np.ndarray):
                out[k] = v.tolist()
        return out

    def summary(self) -> dict:
        """The scalar numbers only (one table row)."""
        return {"model": self.name, "NC1": self.nc1, "NC2 equinorm": self.nc2_equinorm,
                "NC2 equiangular": self.nc2_equiangular, "NC2 max-angle": self.nc2_max_angle, "NC3": self.nc3,
                "NC4": self.nc4, "VCI": self.vci, "mean L2 norm": float(np.average(self.norm_l2_mean,
                                                                               weights=self.counts))}

    def to_frame(self):
        """Tidy pandas DataFrame of the :meth:`summary` scalars under their attribute names (nc1, nc2_equinorm,
        nc2_equiangular, nc2_max_angle, nc3, nc4, vci, mean_l2_norm; NaN for nc3 / nc4 without W): columns
        model, metric, value, n (samples)."""
        from repanalysis.frames import tidy_frame

        s = self.summary()
        return tidy_frame(self.name, {"nc1": self.nc1, "nc2_equinorm": self.nc2_equinorm,
                                      "nc2_equiangular": self.nc2_equiangular, "nc2_max_angle": self.nc2_max_angle,
                                      "nc3": self.nc3, "nc4": self.nc4, "vci": self.vci,
                                      "mean_l2_norm": s["mean L2 norm"]}, n=self.n_samples)


def _chunks(source, arrays: dict, chunk_size: int):
    from repanalysis.dump import Dump, release_pages

    if isinstance(source, Dump):
        for _, chunk in source.iter_chunks(tuple(arrays), chunk_size=chunk_size):   # releases pages
            yield chunk
        return
    n = len(arrays["labels"])
    yield from release_pages(({k: v[start:start + chunk_size] for k, v in arrays.items()}
                              for start in range(0, n, chunk_size)), arrays.values())


def _f64(x, device=None) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to(device=device, dtype=torch.float64)
    return as_tensor(x, dtype=torch.float64).to(device)  # DataError for text / object arrays


def _long(x, device=None) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to(device=device, dtype=torch.int64)
    return torch.from_numpy(np.array(x, dtype=np.int64)).to(device)


def _pinv_sym(mat: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Pseudo-inverse and numerical rank of a symmetric PSD matrix (eigenvalues > max * dim * eps kept)."""
    evals, evecs = torch.linalg.eigh(mat)
    tol = float(evals.abs().max()) * mat.shape[0] * torch.finfo(torch.float64).eps
    keep = evals > tol
    inv = (evecs[:, keep] / evals[keep]) @ evecs[:, keep].T
    return inv, int(keep.sum())


def neural_collapse(features, labels=None, *, classifier_weight=None, classifier_bias=None, logits=None,
                    num_classes: int | None = None, chunk_size: int = DEFAULT_CHUNK,
                    device: str | torch.device | None = None, name: str | None = None,
                    vci_total: str = "sample") -> CollapseResult:
    """NC1-NC4, VCI and per-class feature-norm statistics.

    features: (N, D) array/memmap/tensor, or a Dump (labels, W, b, logits and name then come from it).
    labels: (N,) integer class indices (floats only with integral values). classifier_weight (K, D) /
    classifier_bias (K,): for NC3 and NC4. logits (N, K): used for NC4 when W is absent. W, b and logits must
    be finite. When K is known (num_classes, the rows of W, else the columns of logits; they must agree) labels
    must lie in [0, K); otherwise only the label values present get a row (sparse values such as 10**9 are
    compacted, ``classes`` keeps the values). Needs at least 2 classes with samples whose means differ.
    chunk_size: a positive integer. device: where the float64 work runs (None: CPU; "auto": CUDA when present;
    S_W costs N * D^2, the part a GPU speeds up). vci_total: the total covariance S_T in the VCI,
    1 - Tr(S_T^+ S_B) / rank(S_B) (Xu & Liu 2023, "Quantifying the Variability Collapse of Neural Networks",
    ICML 2023): "sample" (default, the paper's definition) is the sample total covariance of the features,
    (1/N) sum_i (h_i - h_bar)(h_i - h_bar)^T; "balanced" is S_W + S_B with the class-balanced S_B, the same
    thing on balanced classes only. S_B weighs every class alike and S_T every sample, so on strongly
    imbalanced classes Tr(S_T^+ S_B) can exceed rank(S_B) and the "sample" VCI fall below 0 (the rare classes'
    mean offsets are large next to the spread they add to S_T). Returns a :class:`CollapseResult`.
    """
    from repanalysis.dump import Dump

    chunk_size = check_chunk_size(chunk_size)
    if vci_total not in VCI_TOTALS:
        raise DataError(f"unknown vci_total {vci_total!r}; expected one of {', '.join(VCI_TOTALS)}")
    if isinstance(features, Dump):
        dump = features
        if dump.features is None:
            dump.array("features")
        classifier_weight = dump.classifier_weight if classifier_weight is None else classifier_weight
        classifier_bias = dump.classifier_bias if classifier_bias is None else classifier_bias
        num_classes = num_classes or dump.num_classes
        name = name or dump.name
        keys = {"features": None, "labels": None}
        if classifier_weight is None:
            keys["logits"] = None
        source, arrays = dump, keys
    else:
        if labels is None:
            raise DataError("labels are required with a features array; expected neural_collapse(features, labels)")
        if np.ndim(features) != 2 or np.ndim(labels) != 1 or len(features) != len(labels):
            raise DataError(f"expected features [N, D] and labels [N]; got {tuple(np.shape(features))} and "
                            f"{tuple(np.shape(labels))}")
        source, arrays = None, {"features": features, "labels": labels}
        if logits is not None and classifier_weight is None:
            if np.ndim(logits) != 2 or len(logits) != len(labels):
                raise DataError(f"logits must be 2-D [N, K] with one row per label ({len(labels)}); "
                                f"got shape {tuple(np.shape(logits))}")
            arrays["logits"] = logits
    dev = pick_device(device) if device is not None else torch.device("cpu")
    d = int(np.shape(features.features if source is not None else features)[1])
    k, k_from = None, None
    if num_classes is not None:
        k, k_from = check_number(num_classes, "num_classes", integer=True, minimum=1), f"num_classes is {num_classes}"
    w = b = None
    if classifier_weight is not None:
        w = _f64(classifier_weight, dev)
        if w.ndim != 2 or w.shape[1] != d:
            raise DataError(f"classifier weight has shape {tuple(w.shape)}; expected (K, {d}) for {d}-wide features")
        if not torch.isfinite(w).all():
            raise DataError("classifier weight contains NaN or inf; expected finite weights for NC3/NC4")
        b = (_f64(classifier_bias, dev) if classifier_bias is not None
             else torch.zeros(w.shape[0], dtype=torch.float64, device=dev))
        if tuple(b.shape) != (w.shape[0],):
            raise DataError(f"classifier bias has shape {tuple(b.shape)}; expected ({w.shape[0]},), one per "
                            "classifier weight row")
        if not torch.isfinite(b).all():
            raise DataError("classifier bias contains NaN or inf; expected finite values for NC4")
        if k is not None and w.shape[0] != k:
            raise DataError(f"classifier weight has {w.shape[0]} rows but {k_from}; expected one row per class")
        k, k_from = w.shape[0], f"the classifier weight has {w.shape[0]} rows"
    elif "logits" in arrays:
        k_logits = int(np.shape(source.array("logits") if source is not None else logits)[1])
        if k is not None and k_logits != k:
            raise DataError(f"logits have {k_logits} columns but {k_from}; expected one column per class")
        k, k_from = k_logits, f"the logits have {k_logits} columns"

    # pass 1: per-class sums of features and of their L1 / L2 norms (and squares, for std); one row per class
    # when K is known, else one per label value present (``values``)
    values = torch.arange(k or 0, device=dev)
    sums = torch.zeros(len(values), d, dtype=torch.float64, device=dev)
    counts = torch.zeros(len(values), dtype=torch.int64, device=dev)
    norm_acc = torch.zeros(len(values), 4, dtype=torch.float64, device=dev)  # sum l1, sum l1^2, sum l2, sum l2^2
    for chunk in _chunks(source, arrays, chunk_size):
        h = _f64(chunk["features"], dev)
        y = as_labels(chunk["labels"], len(h), device=dev)
        if not torch.isfinite(h).all():
            raise DataError("features contain NaN or inf; expected finite features for neural-collapse metrics")
        if k is not None and len(y) and int(y.max()) >= k:
            raise DataError(f"labels reach class {int(y.max())} but {k_from}; expected labels in [0, {k - 1}]")
        values, (sums, counts, norm_acc), row = add_classes(values, y, sums, counts, norm_acc)
        sums.index_add_(0, row, h)
        counts += torch.bincount(row, minlength=sums.shape[0])
        l1, l2 = h.abs().sum(dim=1), torch.linalg.vector_norm(h, dim=1)
        norm_acc.index_add_(0, row, torch.stack([l1, l1 * l1, l2, l2 * l2], dim=1))
    rows = torch.nonzero(counts > 0).flatten()
    classes = values[rows]                           # label values present
    c = int(classes.numel())
    if c < 2:
        raise DataError(f"neural-collapse metrics need at least 2 classes with samples; found {c}")
    n = int(counts.sum())
    cnt = counts[rows].to(torch.float64)
    means_all = torch.zeros_like(sums)
    means_all[rows] = sums[rows] / cnt[:, None]
    mu = means_all[rows]                             # (C, D)
    mu_g = mu.mean(dim=0)                            # class-balanced global mean
    m = mu - mu_g                                    # centred class means (rows)
    norms = torch.linalg.vector_norm(m, dim=1)
    # equal means up to the rounding of the sums (e.g. constant features): S_B = 0, nothing to compare against
    if float(norms.max()) <= float(torch.linalg.vector_norm(mu, dim=1).max()) * n * torch.finfo(torch.float64).eps:
        raise DataError(f"the class means coincide (all {c} classes have the same mean feature, e.g. constant "
                        "features); expected classes with distinct mean features")

    # pass 2: S_W and the two predictions for NC4
    s_w = torch.zeros(d, d, dtype=torch.float64, device=dev)
    mismatched = 0
    have_pred = w is not None or "logits" in arrays
    mu_sq = (mu * mu).sum(dim=1)
    for chunk in _chunks(source, arrays, chunk_size):
        h, y = _f64(chunk["features"], dev), _long(chunk["labels"], dev)
        centred = h - means_all[torch.searchsorted(values, y)]
        s_w += centred.T @ centred
        if have_pred:
            z = h @ w.T + b if w is not None else _f64(chunk["logits"], dev)
            if not torch.isfinite(z).all():
                raise DataError("logits contain NaN or inf; expected finite logits for NC4")
            ncc = classes[(h @ mu.T * -2 + mu_sq).argmin(dim=1)]  # nearest class mean, squared Euclidean
            mismatched += int((z.argmax(dim=1) != ncc).sum())
    s_w /= n
    s_b = m.T @ m / c

    # Papyan et al. 2020, NC1: Tr(S_W S_B^+) / C
    s_b_pinv, rank_sb = _pinv_sym(s_b)
    nc1 = float(torch.trace(s_w @ s_b_pinv)) / c
    # Papyan et al. 2020, NC2: equinorm std/mean of ||mu_k - mu_G||, equiangularity of centred means
    equinorm = float(norms.std() / norms.mean())
    # a class whose mean is the global mean (up to rounding) has no direction: its cosines are left out
    has_dir = norms > norms.max() * 1e-9
    if not bool(has_dir.all()):
        warnings.warn(f"class(es) {classes[~has_dir].tolist()} have their mean at the global mean; their NC2 "
                      "cosines are undefined and left out", RuntimeWarning, stacklevel=2)
    u = m[has_dir] / norms[has_dir, None]
    off = (u @ u.T)[~torch.eye(u.shape[0], dtype=torch.bool, device=dev)]
    equiangular = float(off.std())
    max_angle = float((off + 1.0 / (c - 1)).abs().mean())
    # Papyan et al. 2020, NC3: || W/||W||_F - M/||M||_F ||_F^2 (rows of the classes present)
    nc3 = None
    if w is not None:
        wc = w[classes]
        nc3 = float(((wc / torch.linalg.norm(wc) - m / torch.linalg.norm(m)) ** 2).sum())
    # Papyan et al. 2020, NC4: classifier prediction vs nearest class mean
    nc4 = mismatched / n if have_pred else None
    # Xu & Liu 2023: VCI = 1 - Tr(S_T^+ S_B) / rank(S_B), S_T the sample total covariance of the features:
    # S_T = S_W + sum_k (N_k/N)(mu_k - h_bar)(mu_k - h_bar)^T exactly (S_W + S_B only for balanced classes)
    if vci_total == "sample":
        share = cnt / n
        dev_mean = mu - share @ mu                   # class means about the sample mean h_bar
        s_t = s_w + (dev_mean * share[:, None]).T @ dev_mean
    else:
        s_t = s_w + s_b
    s_t_pinv, _ = _pinv_sym(s_t)
    vci = 1.0 - float(torch.trace(s_t_pinv @ s_b)) / rank_sb
    single = int((counts[rows] == 1).sum())
    if single:
        warnings.warn(f"{single} class(es) have a single sample: they add nothing to S_W", RuntimeWarning,
                      stacklevel=2)

    acc = norm_acc[rows]
    def _mean_std(s1, s2):  # unbiased std from running sums
        mean = s1 / cnt
        var = torch.where(cnt > 1, (s2 - cnt * mean * mean) / (cnt - 1).clamp(min=1), torch.zeros_like(mean))
        return mean.cpu().numpy(), var.clamp(min=0).sqrt().cpu().numpy()
    l1m, l1s = _mean_std(acc[:, 0], acc[:, 1])
    l2m, l2s = _mean_std(acc[:, 2], acc[:, 3])
    return CollapseResult(nc1=nc1, nc2_equinorm=equinorm, nc2_equiangular=equiangular, nc2_max_angle=max_angle,
                          nc3=nc3, nc4=nc4, vci=vci, rank_sb=rank_sb, classes=classes.cpu().numpy(),
                          counts=counts[rows].cpu().numpy(), norm_l1_mean=l1m, norm_l1_std=l1s, norm_l2_mean=l2m,
                          norm_l2_std=l2s, n_samples=n, name=name, vci_total=vci_total)
