"""Bootstrap resamples as multiplicity weights: one stream of draws for every analysis, so that two models
(or two analyses) seeded alike see the same resampled samples (a paired bootstrap).

Resample r draws N indices uniformly with replacement; it is held as the (N,) vector of multiplicities w
(how often each original sample was drawn, sum N), so a statistic of the resample is a weighted statistic of
the original samples: no loop over samples and no copy of the data per replicate. Replicates come in blocks
of ``block_size(n)`` rows, drawn in order from one seeded ``torch.Generator`` on the given device: the
draws depend on (seed, N, n_boot, device) only, never on the statistic or the model.
"""
from __future__ import annotations

from typing import Iterator

import torch

BOOT_ELEMENTS = 1 << 22           # replicates per block: block * N entries at once (32 MiB of float64 weights)


def block_size(n: int, n_boot: int) -> int:
    """Replicates per block for N samples (fixed by N and n_boot, so every caller draws the same stream)."""
    return max(1, min(n_boot, BOOT_ELEMENTS // max(n, 1)))


def bootstrap_weights(n: int, n_boot: int, seed: int, device=None) -> Iterator[torch.Tensor]:
    """Yield (b, N) float64 multiplicity weights, blocks of replicates in order, n_boot rows in all.

    Each row is one resample of N indices drawn uniformly with replacement (``torch.randint`` from a generator
    seeded with ``seed`` on ``device``). The rows sum to N. Example::

        >>> w = torch.cat(list(bootstrap_weights(5, 3, seed=0)))
        >>> w.shape, w.sum(1).tolist()
        (torch.Size([3, 5]), [5.0, 5.0, 5.0])
    """
    dev = torch.device("cpu") if device is None else torch.device(device)
    gen = torch.Generator(device=dev).manual_seed(int(seed))
    bsz = block_size(n, n_boot)
    for done in range(0, n_boot, bsz):
        b = min(bsz, n_boot - done)
        idx = torch.randint(n, (b, n), generator=gen, device=dev)
        flat = (idx + torch.arange(b, device=dev)[:, None] * n).reshape(-1)
        yield torch.bincount(flat, minlength=b * n).view(b, n).to(torch.float64)


def weighted_means(values: torch.Tensor, n_boot: int, seed: int) -> torch.Tensor:
    """(n_boot, M) bootstrap replicates of the column means of ``values`` (N, M) (any float dtype, as float64).

    Replicate r is the mean over resample r (:func:`bootstrap_weights`, on the values' device):
    ``sum_i w_ri v_i / sum_i w_ri`` over the finite entries of each column (NaN marks "undefined for this
    sample", as in ``np.nanmean``; a replicate with no finite entry in a column is NaN there).
    """
    v = values.to(torch.float64)
    n = v.shape[0]
    finite = torch.isfinite(v)
    v0 = torch.where(finite, v, 0.0)
    f = finite.to(torch.float64)
    parts = []
    for w in bootstrap_weights(n, n_boot, seed, v.device):
        parts.append((w @ v0) / (w @ f))           # 0 / 0 = NaN where a column has no finite entry drawn
    return torch.cat(parts) if parts else v.new_zeros((0, v.shape[1]))
