"""Bootstrap percentile intervals for every calibration scalar: replicates as multiplicity weights over the
original samples, in blocks (no loop over samples, no copy of the logits per replicate)."""
from __future__ import annotations

import warnings

import numpy as np
import torch

from repanalysis.analyze.calibration._fused import _Scan
from repanalysis.analyze.calibration.binning import _adaptive_sums, _errors_from_sums, _prefix, equal_width_bin
from repanalysis.analyze.calibration.results import SCALARS
from repanalysis.analyze.resample import bootstrap_weights
_DENSE_DESIGN_ELEMENTS = 1 << 23  # classwise bootstrap: dense (N, 2KM) design up to 64 MiB, else sparse


def _bootstrap(z, sc: _Scan, order, n_bins, n_boot, seed, close_first, *, progress: bool = False,
               name: str = "model") -> dict[str, np.ndarray]:
    """Every scalar on n_boot resamples of the N samples -> {name: (n_boot,) array}.

    Resample r draws N indices uniformly with replacement (:func:`repanalysis.analyze.resample.bootstrap_weights`:
    the stream every analysis draws, so models seeded alike are resampled alike); each is a row of multiplicity
    weights w (B, N) so every metric is a weighted sum over the original samples: no loop over samples and no copy of the logits per replicate. The progress
    bar (``progress``) advances once per block of replicates.
    """
    from repanalysis.progress import progress_bar

    n = sc.conf.numel()
    k = sc.num_classes
    dev = sc.conf.device
    a = sc.correct.to(torch.float64)
    ew_bin = equal_width_bin(sc.conf, n_bins, float32_values=z.dtype != torch.float64)
    per_sample = torch.stack([a, sc.conf, sc.nll, sc.brier], 1)              # (N, 4)
    sorted_conf, a_sorted = sc.conf[order], a[order]
    cw_design = _classwise_design(z, sc, n_bins)                             # CSR (N, 2KM)
    if n * cw_design.shape[1] <= _DENSE_DESIGN_ELEMENTS:
        cw_dense, cw_t = cw_design.to_dense(), None                          # small: plain GEMM
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")                                  # torch's sparse-beta notice
            cw_dense, cw_t = None, cw_design.to_sparse_coo().t().coalesce().to_sparse_csr()
    out = {key: [] for key in SCALARS}
    bin_accuracy = []                    # (b, M) per block: each equal-width bin's accuracy in each replicate
    with progress_bar(n_boot, desc=f"bootstrap {name}", unit="replicate", enabled=progress) as bar:
        for w in bootstrap_weights(n, n_boot, seed, dev):     # (b, N) multiplicities, the stream every analysis draws
            b = w.shape[0]
            means = (w @ per_sample) / n
            for j, key in enumerate(("accuracy", "mean_confidence", "nll", "brier")):
                out[key].append(means[:, j])
            bins = ew_bin.expand(b, n)
            sums = [torch.zeros(b, n_bins + 1, dtype=torch.float64, device=dev).scatter_add_(1, bins, v)
                    for v in (w, w * sc.conf, w * a)]
            ece, oece, uece, mce = _errors_from_sums(*(s[:, :n_bins] for s in sums), n)
            bin_accuracy.append(sums[2][:, :n_bins] / sums[0][:, :n_bins])       # 0 / 0 = NaN: bin not drawn
            out["ece"].append(ece)
            out["oece"].append(oece)
            out["uece"].append(uece)
            out["mce"].append(mce)
            w_sorted = w[:, order]
            _, ac, acs, aas = _adaptive_sums(sorted_conf, w_sorted, _prefix(w_sorted, sorted_conf, a_sorted),
                                             n_bins, close_first, n)
            out["aece"].append(_errors_from_sums(ac, acs, aas, n)[0])
            cells = (w @ cw_dense if cw_t is None else (cw_t @ w.T).T).reshape(b, 2, k, n_bins)
            # classwise ECE (Kull 2019) per replicate: mean_k sum_b |S_hit,kb - S_p,kb| / N
            out["classwise_ece"].append(((cells[:, 1] - cells[:, 0]).abs().sum(-1) / n).mean(-1))
            bar.update(b)                                                    # once per block
    reps = {key: torch.cat(parts).cpu().numpy() for key, parts in out.items()}
    reps[BIN_ACCURACY] = torch.cat(bin_accuracy).cpu().numpy()
    return reps


BIN_ACCURACY = "bin_accuracy"    # replicates key of the (n_boot, M) per-bin accuracies (not a scalar: no CI entry)


def bin_accuracy_band(replicates: np.ndarray, ci_level: float) -> np.ndarray:
    """(2, M) percentile band of each equal-width bin's accuracy over the bootstrap replicates (n_boot, M): rows
    low and high at (1 -/+ ci_level) / 2, over the replicates that drew samples into the bin (NaN when fewer
    than half did)."""
    lo_q, hi_q = 100 * (1 - ci_level) / 2, 100 * (1 - (1 - ci_level) / 2)
    reps = np.asarray(replicates, dtype=np.float64)
    drawn = np.isfinite(reps).sum(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)          # all-NaN columns: empty bins
        band = np.nanpercentile(reps, [lo_q, hi_q], axis=0) if reps.size else np.full((2, reps.shape[1]), np.nan)
    band[:, drawn < max(1, reps.shape[0] / 2)] = np.nan
    return band


def _percentile_ci(replicates: dict, ci_level: float) -> dict:
    lo_q, hi_q = 100 * (1 - ci_level) / 2, 100 * (1 - (1 - ci_level) / 2)
    return {key: (float(np.percentile(v, lo_q)), float(np.percentile(v, hi_q))) for key, v in replicates.items()
            if key in SCALARS}


def _classwise_design(z, sc: _Scan, n_bins: int) -> torch.Tensor:
    """CSR (N, 2*K*M): per sample, p_k at column (k, bin of p_k) and 1 at column K*M + (y, bin of p_y).

    ``w @ A`` then gives, per replicate, the classwise bin sums of p_k and of 1[y = k] (only these two
    enter the classwise ECE: sum_b |S_hit - S_p|). Columns are increasing within each row by construction,
    so the CSR is built directly (no sort).
    """
    n, k = sc.conf.numel(), sc.num_classes
    dev = sc.conf.device
    zz = z if sc.keep is None else z[sc.keep]
    p = torch.softmax(zz, 1)                       # the kernel and dtype of _scan's classwise pass, bit for bit
    narrow = p.dtype != torch.float64
    p = p.to(torch.float64)
    bin_id = equal_width_bin(p, n_bins, float32_values=narrow, close_first=True)   # (N, K) as in _scan; M: none
    ok = bin_id < n_bins
    km = k * n_bins
    cols_p = torch.arange(k, device=dev) * n_bins + bin_id.clamp(0, n_bins - 1)
    vals_p = torch.where(ok, p, 0.0)
    rows = torch.arange(n, device=dev)
    bin_y = bin_id[rows, sc.labels]
    col_y = km + sc.labels * n_bins + bin_y.clamp(0, n_bins - 1)
    val_y = ok[rows, sc.labels].to(torch.float64)
    cols = torch.cat([cols_p, col_y[:, None]], 1).reshape(-1)
    vals = torch.cat([vals_p, val_y[:, None]], 1).reshape(-1)
    crow = torch.arange(0, n * (k + 1) + 1, k + 1, device=dev)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                                      # torch's sparse-beta notice
        return torch.sparse_csr_tensor(crow, cols, vals, (n, 2 * km), check_invariants=False)
