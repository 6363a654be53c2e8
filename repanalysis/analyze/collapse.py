"""Neural collapse NC1-NC4 (Papyan et al. 2020), variability collapse VCI (Xu & Liu 2023), feature norms per class.

Conventions (REFERENCE.md "Neural collapse"; Papyan et al.'s reference code where the text is silent):
- class means mu_k over the samples of class k; global mean mu_G = mean_k mu_k (class-balanced, as that code);
- S_W = (1/N) sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T; S_B = (1/C) sum_k (mu_k - mu_G)(mu_k - mu_G)^T,
  with C the number of classes present; S_T = S_W + S_B;
- pseudo-inverses keep the eigen/singular values above max * max(D, C) * eps(float64);
- standard deviations use the unbiased estimator (torch.std), as the reference code does.
Two streaming passes over chunks (class sums, then S_W and NC4) in float64, so a memory-mapped Dump works.
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np
import torch

from repanalysis.analyze._arrays import pick_device
from repanalysis.errors import DataError

DEFAULT_CHUNK = 8192


@dataclass
class CollapseResult:
    """Neural-collapse statistics of one feature set (lower = more collapsed for every NC number and VCI).

    nc1: Tr(S_W S_B^+) / C. nc2_equinorm: std/mean of ||mu_k - mu_G||. nc2_equiangular: std of the
    off-diagonal cosines of the centred means. nc2_max_angle: mean |cos + 1/(C-1)| over them.
    nc3: ||W/||W||_F - M/||M||_F||_F^2 (None without W). nc4: fraction of samples whose classifier prediction
    differs from the nearest-class-mean prediction (None without W or logits). vci: 1 - Tr(S_T^+ S_B)/rank(S_B).
    classes (C,), counts (C,), and per class the mean/std of the L1 and L2 feature norms (C,) each.
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


def _chunks(source, arrays: dict, chunk_size: int):
    from repanalysis.extract.store import Dump, release_pages

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
    return torch.from_numpy(np.array(x, dtype=np.float64)).to(device)


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
                    device: str | torch.device | None = None, name: str | None = None) -> CollapseResult:
    """NC1-NC4, VCI and per-class feature-norm statistics.

    features: (N, D) array/memmap/tensor, or a Dump (labels, W, b, logits and name then come from it).
    labels: (N,). classifier_weight (K, D) / classifier_bias (K,): for NC3 and NC4. logits (N, K): used
    for NC4 when W is absent. Needs at least 2 classes with samples. device: where the float64 work runs
    (None: CPU; "auto": CUDA when present; S_W costs N * D^2, the part a GPU speeds up). Returns a
    :class:`CollapseResult`.
    """
    from repanalysis.extract.store import Dump

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
            if len(logits) != len(labels):
                raise DataError(f"logits have {len(logits)} rows but labels have {len(labels)}")
            arrays["logits"] = logits
    dev = pick_device(device) if device is not None else torch.device("cpu")
    d = int(np.shape(features.features if source is not None else features)[1])
    w = b = None
    if classifier_weight is not None:
        w = _f64(classifier_weight, dev)
        if w.ndim != 2 or w.shape[1] != d:
            raise DataError(f"classifier weight has shape {tuple(w.shape)}; expected (K, {d}) for {d}-wide features")
        b = (_f64(classifier_bias, dev) if classifier_bias is not None
             else torch.zeros(w.shape[0], dtype=torch.float64, device=dev))

    # pass 1: per-class sums of features and of their L1 / L2 norms (and squares, for std)
    k_max = int(num_classes or 0)
    sums = torch.zeros(max(k_max, 1), d, dtype=torch.float64, device=dev)
    counts = torch.zeros(max(k_max, 1), dtype=torch.int64, device=dev)
    norm_acc = torch.zeros(max(k_max, 1), 4, dtype=torch.float64, device=dev)  # sum l1, sum l1^2, sum l2, sum l2^2
    for chunk in _chunks(source, arrays, chunk_size):
        h, y = _f64(chunk["features"], dev), _long(chunk["labels"], dev)
        if not torch.isfinite(h).all():
            raise DataError("features contain NaN or inf; expected finite features for neural-collapse metrics")
        if len(y) and int(y.min()) < 0:
            raise DataError(f"labels must be class indices >= 0; found {int(y.min())}")
        if len(y) and int(y.max()) >= sums.shape[0]:
            if num_classes:
                raise DataError(f"labels must lie in [0, {num_classes - 1}]; found {int(y.max())}")
            extra = int(y.max()) + 1 - sums.shape[0]
            sums = torch.cat([sums, sums.new_zeros(extra, d)])
            counts = torch.cat([counts, counts.new_zeros(extra)])
            norm_acc = torch.cat([norm_acc, norm_acc.new_zeros(extra, 4)])
        sums.index_add_(0, y, h)
        counts += torch.bincount(y, minlength=sums.shape[0])
        l1, l2 = h.abs().sum(dim=1), torch.linalg.vector_norm(h, dim=1)
        norm_acc.index_add_(0, y, torch.stack([l1, l1 * l1, l2, l2 * l2], dim=1))
    classes = torch.nonzero(counts > 0).flatten()
    c = int(classes.numel())
    if c < 2:
        raise DataError(f"neural-collapse metrics need at least 2 classes with samples; found {c}")
    n = int(counts.sum())
    cnt = counts[classes].to(torch.float64)
    means_all = torch.zeros_like(sums)
    means_all[classes] = sums[classes] / cnt[:, None]
    mu = means_all[classes]                          # (C, D)
    mu_g = mu.mean(dim=0)                            # class-balanced global mean
    m = mu - mu_g                                    # centred class means (rows)

    # pass 2: S_W and the two predictions for NC4
    s_w = torch.zeros(d, d, dtype=torch.float64, device=dev)
    mismatched = 0
    have_pred = w is not None or "logits" in arrays
    mu_sq = (mu * mu).sum(dim=1)
    for chunk in _chunks(source, arrays, chunk_size):
        h, y = _f64(chunk["features"], dev), _long(chunk["labels"], dev)
        centred = h - means_all[y]
        s_w += centred.T @ centred
        if have_pred:
            z = h @ w.T + b if w is not None else _f64(chunk["logits"], dev)
            ncc = classes[(h @ mu.T * -2 + mu_sq).argmin(dim=1)]  # nearest class mean, squared Euclidean
            mismatched += int((z.argmax(dim=1) != ncc).sum())
    s_w /= n
    s_b = m.T @ m / c

    # Papyan et al. 2020, NC1: Tr(S_W S_B^+) / C
    s_b_pinv, rank_sb = _pinv_sym(s_b)
    nc1 = float(torch.trace(s_w @ s_b_pinv)) / c
    # Papyan et al. 2020, NC2: equinorm std/mean of ||mu_k - mu_G||, equiangularity of centred means
    norms = torch.linalg.vector_norm(m, dim=1)
    equinorm = float(norms.std() / norms.mean())
    cos = (m / norms[:, None]) @ (m / norms[:, None]).T
    off = cos[~torch.eye(c, dtype=torch.bool, device=dev)]
    equiangular = float(off.std())
    max_angle = float((off + 1.0 / (c - 1)).abs().mean())
    # Papyan et al. 2020, NC3: || W/||W||_F - M/||M||_F ||_F^2 (rows of the classes present)
    nc3 = None
    if w is not None:
        if w.shape[0] <= int(classes.max()):
            raise DataError(f"classifier has {w.shape[0]} rows but labels reach class {int(classes.max())}")
        wc = w[classes]
        nc3 = float(((wc / torch.linalg.norm(wc) - m / torch.linalg.norm(m)) ** 2).sum())
    # Papyan et al. 2020, NC4: classifier prediction vs nearest class mean
    nc4 = mismatched / n if have_pred else None
    # Xu & Liu 2023: VCI = 1 - Tr(S_T^+ S_B) / rank(S_B), S_T = S_W + S_B
    s_t_pinv, _ = _pinv_sym(s_w + s_b)
    vci = 1.0 - float(torch.trace(s_t_pinv @ s_b)) / rank_sb
    single = int((counts[classes] == 1).sum())
    if single:
        warnings.warn(f"{single} class(es) have a single sample: they add nothing to S_W", RuntimeWarning,
                      stacklevel=2)

    acc = norm_acc[classes]
    def _mean_std(s1, s2):  # unbiased std from running sums
        mean = s1 / cnt
        var = torch.where(cnt > 1, (s2 - cnt * mean * mean) / (cnt - 1).clamp(min=1), torch.zeros_like(mean))
        return mean.cpu().numpy(), var.clamp(min=0).sqrt().cpu().numpy()
    l1m, l1s = _mean_std(acc[:, 0], acc[:, 1])
    l2m, l2s = _mean_std(acc[:, 2], acc[:, 3])
    return CollapseResult(nc1=nc1, nc2_equinorm=equinorm, nc2_equiangular=equiangular, nc2_max_angle=max_angle,
                          nc3=nc3, nc4=nc4, vci=vci, rank_sb=rank_sb, classes=classes.cpu().numpy(),
                          counts=counts[classes].cpu().numpy(), norm_l1_mean=l1m, norm_l1_std=l1s, norm_l2_mean=l2m,
                          norm_l2_std=l2s, n_samples=n, name=name)
