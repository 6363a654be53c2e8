"""Representation similarity: linear CKA between the features of several models, or of layers of two models.

Linear CKA (Kornblith et al. 2019, "Similarity of Neural Network Representations Revisited", Eq. for linear
CKA; REFERENCE.md): with X (n x p) and Y (n x q) centred column-wise,
``CKA(X, Y) = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)``. It is 1 for Y = cXQ + b (Q orthogonal, c != 0), in
[0, 1] always, and not invariant to an arbitrary invertible linear map.

Two estimators, both streamed over row chunks so that memory never holds an N x N matrix:

- ``method="linear"`` (exact, :func:`linear_cka`): one pass accumulating, in float64, the column sums and the
  feature-space products X^T X, Y^T Y and X^T Y (p x p, q x q, p x q: memory grows with the feature widths,
  never with N); centring is the closed form X_c^T Y_c = X^T Y - s_x s_y^T / n (s the column sums). Each
  set is first shifted by the column mean of its first chunk (centring is shift-invariant), so a large mean
  costs no precision in that subtraction.
- ``method="minibatch"`` (:func:`minibatch_cka`; Nguyen, Raghu & Kornblith 2021, "Do Wide and Deep Networks Learn
  the Same Things?", Sec. 3.1): the unbiased HSIC estimator of Song et al. 2012 on the linear-kernel Gram
  matrices of each minibatch (batch_size x batch_size), averaged over the minibatches:
  ``CKA = mean_b HSIC_1(K_b, L_b) / sqrt(mean_b HSIC_1(K_b, K_b) * mean_b HSIC_1(L_b, L_b))``. Memory grows
  with batch_size^2 and the widths, never with N. The minibatches are the consecutive ``batch_size``-row groups
  of ``np.random.default_rng(seed).permutation(N)`` (rows in their stored order when ``seed`` is None), and
  the last ``N mod batch_size`` rows of that order are left out (``CKAResult.n`` counts the rows used).

Every function takes numpy arrays (memory maps included), torch tensors or Dumps (their ``features``, streamed
with ``Dump.iter_chunks``), runs the same torch code on CPU or GPU (``device``: None = CPU, "auto", "cpu",
"cuda", "cuda:N"; on the CPU the exact method's chunk products go through numpy's BLAS, which computes X^T X as
a symmetric rank-k update), and excludes rows with NaN/inf features (in any of the sets, so rows stay paired)
with one warning giving their count.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch

from repanalysis.arrays import as_tensor, check_number, pick_device
from repanalysis.errors import DataError

METHODS = ("linear", "minibatch")
# dtype of the exact method's chunk products; the accumulators are float64 either way
PRECISIONS = {"float64": torch.float64, "float32": torch.float32}
DEFAULT_CHUNK = 8192          # rows per streamed chunk of the exact method
DEFAULT_BATCH = 256           # rows per minibatch of the minibatch method


# --- the estimators on one pass of paired chunks ----------------------------------------------------------------
def _all_pairs(n_sets: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(n_sets) for j in range(i + 1, n_sets)]


def _check_pairs(pairs, n_sets: int | None) -> list[tuple[int, int]] | None:
    if pairs is None:
        return None
    out = []
    for p in pairs:
        i, j = (int(v) for v in p)
        if i < 0 or j < 0 or (n_sets is not None and max(i, j) >= n_sets):
            raise DataError(f"pair {p!r} names a feature set that does not exist; expected indices in "
                            f"[0, {n_sets - 1}]")
        if i != j:
            out.append((min(i, j), max(i, j)))
    return sorted(set(out))


class LinearCKAAccumulator:
    """Exact linear CKA, streamed: ``update(x_chunk, y_chunk, ...)`` (one chunk of the same rows per feature set)
    any number of times, then ``compute()`` -> (S, S) matrix with 1 on the diagonal.

    Keeps per set, in float64 on ``device``: the shift (first chunk's column means), the column sums of the
    shifted features and their product X^T X; per pair in ``pairs`` (default: every pair) the cross product
    X_i^T X_j. A pair not computed is NaN in the matrix. precision: "float64" (default: every product in float64)
    or "float32" (each chunk's products in float32, about 1.5x faster on a CPU and far faster on a GPU with slow
    float64, added into the float64 accumulators; the shift keeps the chunks nearly centred, so the error stays
    near float32 rounding of centred sums, ~1e-6 of the value).
    """

    def __init__(self, pairs: Iterable[tuple[int, int]] | None = None, device: str | torch.device | None = None,
                 precision: str = "float64"):
        self.device = pick_device(device) if device is not None else torch.device("cpu")
        self.dtype = _check_precision(precision)
        self._pairs_arg = pairs
        self.pairs: list[tuple[int, int]] | None = None
        self.n = 0
        self.shift: list[torch.Tensor] = []
        self.sums: list[torch.Tensor] = []
        self.gram: list[torch.Tensor] = []
        self.cross: dict[tuple[int, int], torch.Tensor] = {}

    def update(self, *chunks) -> None:
        ts = [_float64(c, self.device, f"feature set {i}") for i, c in enumerate(chunks)]
        if not self.shift:
            self.pairs = _check_pairs(self._pairs_arg, len(ts)) if self._pairs_arg is not None \
                else _all_pairs(len(ts))
            if ts[0].shape[0] == 0:
                return
            self.shift = [t.mean(dim=0) for t in ts]
            self.sums = [torch.zeros(t.shape[1], dtype=torch.float64, device=self.device) for t in ts]
            self.gram = [torch.zeros(t.shape[1], t.shape[1], dtype=torch.float64, device=self.device) for t in ts]
            self.cross = {(i, j): torch.zeros(ts[i].shape[1], ts[j].shape[1], dtype=torch.float64,
                                              device=self.device) for i, j in self.pairs}
        _check_chunks(ts, [s.shape[0] for s in self.shift])
        if ts[0].shape[0] == 0:
            return
        for i, t in enumerate(ts):
            t.sub_(self.shift[i])
            self.sums[i] += t.sum(dim=0)
        if self.dtype != torch.float64:
            ts = [t.to(self.dtype) for t in ts]
        for i, t in enumerate(ts):
            _add_product(self.gram[i], t, t)
        for (i, j), acc in self.cross.items():
            _add_product(acc, ts[i], ts[j])
        self.n += ts[0].shape[0]

    def compute(self) -> np.ndarray:
        if self.n < 2:
            raise DataError(f"linear CKA needs at least 2 rows with finite features; got {self.n}")
        n = float(self.n)
        # Kornblith et al. 2019: centred X_c^T Y_c = X^T Y - s_x s_y^T / n (s: column sums of the shifted rows)
        self_norm = [torch.linalg.matrix_norm(g - torch.outer(s, s) / n) for g, s in zip(self.gram, self.sums)]
        m = len(self.gram)
        out = np.full((m, m), np.nan)
        for i in range(m):
            out[i, i] = 1.0 if float(self_norm[i]) > 0 else np.nan
        for (i, j), acc in self.cross.items():
            c = acc - torch.outer(self.sums[i], self.sums[j]) / n
            # Kornblith et al. 2019, linear CKA = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F), X and Y centred
            value = float((c * c).sum() / (self_norm[i] * self_norm[j]))
            out[i, j] = out[j, i] = value
        _warn_constant(self_norm)
        return out


def _add_product(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """acc += a^T b, the product in a's dtype (float64 or float32), summed into acc (float64).

    On the CPU the product goes through numpy's BLAS: for a^T a it calls a symmetric rank-k update (syrk), half
    the arithmetic of a general product (measured 1.8x faster here), which torch does not expose."""
    if a.device.type == "cpu":
        an = a.numpy()
        acc += torch.from_numpy(an.T @ (an if b is a else b.numpy()))
    elif a.dtype == acc.dtype:
        acc.addmm_(a.T, b)
    else:
        acc += (a.T @ b).to(acc.dtype)


def hsic1(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    """The unbiased HSIC estimator (Song et al. 2012, Eq. 5; Nguyen et al. 2021, Eq. 3) of two n x n Gram
    matrices (n >= 4), with K~, L~ the Grams with a zero diagonal:
    ``[tr(K~ L~) + 1^T K~ 1 1^T L~ 1 / ((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1] / (n(n-3))``."""
    return _hsic1_parts(_gram_parts(k.clone()), _gram_parts(l.clone()))


def _gram_parts(gram: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(K~, K~ 1): the Gram matrix with its diagonal zeroed (in place) and its row sums."""
    gram.fill_diagonal_(0)
    return gram, gram.sum(dim=1)


def _hsic1_parts(a, b) -> torch.Tensor:
    (k, rk), (l, rl) = a, b
    n = k.shape[0]
    sk, sl = rk.sum(), rl.sum()
    # Song et al. 2012, Eq. 5 (unbiased HSIC); K~ symmetric, so tr(K~ L~) = <K~, L~> and 1^T K~ L~ 1 = (K~ 1).(L~ 1)
    return (torch.dot(k.flatten(), l.flatten()) + sk * sl / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * torch.dot(rk, rl)) / (n * (n - 3))


class MinibatchCKAAccumulator:
    """Minibatch CKA, streamed: ``update(x_batch, y_batch, ...)`` once per minibatch (the same rows of every
    feature set, at least 4), then ``compute()`` -> (S, S) matrix with 1 on the diagonal.

    Keeps, in float64 on ``device``, the sum over minibatches of the unbiased HSIC of each set with itself and of
    each pair in ``pairs`` (default: every pair). Each batch is centred by its own column means before its Gram
    matrix is formed: the unbiased HSIC of linear kernels is unchanged by a translation of the features, and the
    Gram entries stay small.
    """

    def __init__(self, pairs: Iterable[tuple[int, int]] | None = None, device: str | torch.device | None = None):
        self.device = pick_device(device) if device is not None else torch.device("cpu")
        self._pairs_arg = pairs
        self.pairs: list[tuple[int, int]] | None = None
        self.widths: list[int] | None = None
        self.n = 0
        self.n_batches = 0
        self.self_hsic: torch.Tensor | None = None
        self.cross_hsic: dict[tuple[int, int], torch.Tensor] = {}

    def update(self, *batches) -> None:
        ts = [_float64(b, self.device, f"feature set {i}") for i, b in enumerate(batches)]
        if self.widths is None:
            self.widths = [t.shape[1] for t in ts]
            self.pairs = _check_pairs(self._pairs_arg, len(ts)) if self._pairs_arg is not None \
                else _all_pairs(len(ts))
            self.self_hsic = torch.zeros(len(ts), dtype=torch.float64, device=self.device)
            self.cross_hsic = {p: torch.zeros((), dtype=torch.float64, device=self.device) for p in self.pairs}
        _check_chunks(ts, self.widths)
        b = ts[0].shape[0]
        if b < 4:
            raise DataError(f"the unbiased HSIC needs minibatches of at least 4 rows; got {b}")
        parts = []
        for t in ts:
            t = t - t.mean(dim=0)
            parts.append(_gram_parts(t @ t.T))
        for i, g in enumerate(parts):
            self.self_hsic[i] += _hsic1_parts(g, g)
        for (i, j), acc in self.cross_hsic.items():
            acc += _hsic1_parts(parts[i], parts[j])
        self.n += b
        self.n_batches += 1

    def compute(self) -> np.ndarray:
        if self.n_batches == 0:
            raise DataError("minibatch CKA got no minibatch; expected at least batch_size rows with finite "
                            "features")
        # Nguyen et al. 2021, Eq. 2-3: CKA = mean HSIC_1(K, L) / sqrt(mean HSIC_1(K, K) mean HSIC_1(L, L))
        self_h = self.self_hsic.cpu().numpy()
        m = len(self_h)
        out = np.full((m, m), np.nan)
        for i in range(m):
            out[i, i] = 1.0 if self_h[i] > 0 else np.nan
        for (i, j), acc in self.cross_hsic.items():
            denom = math.sqrt(self_h[i] * self_h[j]) if self_h[i] > 0 and self_h[j] > 0 else float("nan")
            out[i, j] = out[j, i] = float(acc) / denom
        _warn_constant(self_h)
        return out


def _warn_constant(self_values) -> None:
    bad = [i for i, v in enumerate(self_values) if not float(v) > 0]
    if bad:
        warnings.warn(f"feature set(s) {', '.join(str(i) for i in bad)} do not vary across the rows (all rows "
                      "equal after centring): their CKA is undefined and reported as NaN", RuntimeWarning,
                      stacklevel=3)


def _float64(x, device: torch.device, what: str) -> torch.Tensor:
    t = as_tensor(x)
    if t.ndim != 2:
        raise DataError(f"{what}: features must be 2-D [N, D]; got shape {tuple(t.shape)}")
    return t.to(device=device, dtype=torch.float64, copy=True)


def _check_chunks(ts: Sequence[torch.Tensor], widths: Sequence[int]) -> None:
    if len(ts) != len(widths):
        raise DataError(f"got {len(ts)} feature sets in a chunk but {len(widths)} before; expected the same sets")
    for i, (t, w) in enumerate(zip(ts, widths)):
        if t.shape[1] != w:
            raise DataError(f"feature set {i}: width changed between chunks: {w} then {t.shape[1]}")
        if t.shape[0] != ts[0].shape[0]:
            raise DataError(f"feature set {i} has {t.shape[0]} rows in a chunk where set 0 has {ts[0].shape[0]}; "
                            "expected the same rows of every set")


# --- reading feature sets in paired chunks ------------------------------------------------------------------------
def _rows_of(source, what: str):
    """(array-like (N, D) to slice rows of, its Dump or None) of one feature set."""
    from repanalysis.dump import Dump

    if isinstance(source, Dump):
        return source.array("features"), source     # DumpError with the re-extract hint when it has none
    if isinstance(source, torch.Tensor):
        a = source.detach()
    elif isinstance(source, np.ndarray):
        a = source
    else:
        try:
            a = np.asarray(source)
        except (TypeError, ValueError):
            raise DataError(f"{what}: expected an (N, D) array, tensor or Dump; got {type(source).__name__}") \
                from None
    if a.ndim != 2:
        raise DataError(f"{what}: features must be 2-D [N, D]; got shape {tuple(a.shape)}")
    if not isinstance(a, torch.Tensor) and a.dtype.kind not in "biuf":
        raise DataError(f"{what}: expected an array of numbers; got {a.dtype} values")
    return a, None


def _open_sets(sources: Sequence, names: Sequence[str]) -> tuple[list, list, int]:
    """(arrays to read rows of, the Dump of each or None, N), the Dumps checked to hold the same samples."""
    from repanalysis.dump.pairs import check_same_samples

    rows = [_rows_of(s, name) for s, name in zip(sources, names)]
    dumps = [d for _, d in rows if d is not None]
    if len(dumps) > 1:
        check_same_samples(dumps, "cka")       # same images, same order: otherwise CKA compares nothing
    n = {len(a) for a, _ in rows}
    if len(n) > 1:
        got = ", ".join(f"{name}: {len(a)}" for (a, _), name in zip(rows, names))
        raise DataError(f"cka: the feature sets have different numbers of rows ({got}); expected the features of "
                        "the same samples, row i of every set from the same image")
    return [a for a, _ in rows], [d for _, d in rows], n.pop()


def _release(arrays):
    from repanalysis.dump import release_pages

    return lambda chunks: release_pages(chunks, [a for a in arrays if isinstance(a, np.ndarray)])


def _sequential_chunks(arrays, dumps, n: int, chunk_size: int) -> Iterator[tuple]:
    """Paired row chunks [start, start + chunk_size) of every set: a Dump's through ``Dump.iter_chunks``, an
    array's by slicing (pages of memory maps released as read, as ``iter_chunks`` does)."""
    def one(a, dump):
        if dump is not None:
            return (chunk["features"] for _, chunk in dump.iter_chunks(("features",), chunk_size=chunk_size))
        return _release([a])(_take(a, slice(s, s + chunk_size)) for s in range(0, n, chunk_size))

    return zip(*(one(a, d) for a, d in zip(arrays, dumps)))


def _take(a, index):
    if isinstance(a, torch.Tensor):
        return a[torch.as_tensor(index)] if not isinstance(index, slice) else a[index]
    return np.asarray(a[index])


def _permuted_batches(arrays, n: int, batch_size: int, seed: int) -> Iterator[tuple]:
    """Paired minibatches of the rows ``permutation(N)[b*B:(b+1)*B]`` (read in increasing row order)."""
    order = np.random.default_rng(seed).permutation(n)
    for b in range(n // batch_size):
        idx = np.sort(order[b * batch_size:(b + 1) * batch_size])
        yield tuple(_take(a, idx) for a in arrays)


def _finite_rows(chunks: Iterable[tuple], counter: list) -> Iterator[tuple]:
    """Chunks without the rows that hold NaN/inf in any set (counted in ``counter[0]``)."""
    for chunk in chunks:
        ok = None
        for c in chunk:
            f = torch.isfinite(c).all(dim=1) if isinstance(c, torch.Tensor) else np.isfinite(c).all(axis=1)
            f = f.cpu().numpy() if isinstance(f, torch.Tensor) else f
            ok = f if ok is None else ok & f
        if ok is not None and not ok.all():
            counter[0] += int((~ok).sum())
            chunk = tuple(_take(c, np.flatnonzero(ok)) for c in chunk)
        yield chunk


def _rebatch(chunks: Iterable[tuple], batch_size: int) -> Iterator[tuple]:
    """Regroup paired chunks into minibatches of exactly ``batch_size`` rows; the last < batch_size rows are
    left out."""
    pending: list[tuple] = []
    have = 0
    for chunk in chunks:
        pending.append(chunk)
        have += len(chunk[0])
        while have >= batch_size:
            parts = list(zip(*pending))
            merged = tuple(_cat(p) for p in parts)
            yield tuple(m[:batch_size] for m in merged)
            rest = tuple(m[batch_size:] for m in merged)
            have -= batch_size
            pending = [rest] if have else []


def _cat(parts):
    if len(parts) == 1:
        return parts[0]
    if isinstance(parts[0], torch.Tensor):
        return torch.cat(list(parts))
    return np.concatenate(parts)


def _check_precision(precision: str) -> torch.dtype:
    if precision not in PRECISIONS:
        raise DataError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    return PRECISIONS[precision]


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise DataError(f"unknown CKA method {method!r}; expected one of {', '.join(METHODS)}")
    return method


def _check_options(method, batch_size, seed, chunk_size):
    _check_method(method)
    chunk_size = check_number(chunk_size, "chunk_size (rows per chunk)", integer=True, minimum=1)
    batch_size = check_number(batch_size, "batch_size (rows per minibatch)", integer=True, minimum=4)
    if seed is not None:
        seed = check_number(seed, "seed", integer=True, minimum=0)
    return batch_size, seed, chunk_size


def _run(sources, names, *, method, batch_size, seed, chunk_size, device, pairs=None, precision="float64"):
    """(matrix, rows used, minibatches or None, rows excluded) of the feature sets ``sources``."""
    batch_size, seed, chunk_size = _check_options(method, batch_size, seed, chunk_size)
    _check_precision(precision)
    arrays, dumps, n = _open_sets(sources, names)
    excluded = [0]
    dev = pick_device(device) if device is not None else torch.device("cpu")
    if method == "linear":
        acc = LinearCKAAccumulator(pairs, device=dev, precision=precision)
        for chunk in _finite_rows(_sequential_chunks(arrays, dumps, n, chunk_size), excluded):
            acc.update(*chunk)
        n_batches = None
    else:
        if n < batch_size:
            raise DataError(f"minibatch CKA with batch_size {batch_size} needs at least that many rows; got {n} "
                            "(use a smaller batch_size, or the exact method)")
        acc = MinibatchCKAAccumulator(pairs, device=dev)
        chunks = (_sequential_chunks(arrays, dumps, n, max(chunk_size, batch_size)) if seed is None
                  else _release(arrays)(_permuted_batches(arrays, n, batch_size, seed)))
        for batch in _rebatch(_finite_rows(chunks, excluded), batch_size):
            acc.update(*batch)
        n_batches = acc.n_batches
    if excluded[0]:
        warnings.warn(f"{excluded[0]} of {n} rows have NaN or inf features in at least one set; they are excluded "
                      "from every set's CKA (rows stay paired)", RuntimeWarning, stacklevel=3)
    return acc.compute(), acc.n, n_batches, excluded[0]


# --- public functions -----------------------------------------------------------------------------------------------
def linear_cka(x, y, *, chunk_size: int = DEFAULT_CHUNK, device: str | torch.device | None = None,
               precision: str = "float64") -> float:
    """Exact linear CKA of two feature sets of the same samples (Kornblith et al. 2019).

    x: (N, p), y: (N, q) arrays, memory maps, tensors or Dumps (their features; two Dumps must hold the same
    images in the same order). Streams ``chunk_size`` rows at a time into float64 feature-space accumulators
    (memory O(p^2 + q^2 + pq), never N x N). precision: "float64" (default) or "float32" chunk products (see
    :class:`LinearCKAAccumulator`). Returns a float in [0, 1]; NaN when a set is constant.

    Example::

        >>> x = np.random.default_rng(0).normal(size=(500, 8))
        >>> q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(8, 8)))
        >>> round(linear_cka(x, 3 * x @ q + 1), 6)
        1.0
    """
    matrix, *_ = _run([x, y], ["x", "y"], method="linear", batch_size=DEFAULT_BATCH, seed=None,
                      chunk_size=chunk_size, device=device, precision=precision)
    return float(matrix[0, 1])


def minibatch_cka(x, y, *, batch_size: int = DEFAULT_BATCH, seed: int | None = 0, chunk_size: int = DEFAULT_CHUNK,
                  device: str | torch.device | None = None) -> float:
    """Minibatch CKA (Nguyen et al. 2021) of two feature sets: the unbiased HSIC (Song et al. 2012) averaged over
    minibatches of ``batch_size`` rows (>= 4), then normalised.

    The minibatches are the consecutive ``batch_size``-row groups of ``np.random.default_rng(seed).permutation(N)``
    (of the stored row order when ``seed`` is None); the last ``N mod batch_size`` rows of that order are left out.
    x, y: as :func:`linear_cka`. Memory O(batch_size^2 + batch_size (p + q)). Close to :func:`linear_cka` for
    large batches (the estimator of the population HSIC is unbiased; the ratio is consistent).

    Example::

        >>> x = np.random.default_rng(0).normal(size=(2048, 8))
        >>> round(minibatch_cka(x, 2 * x, batch_size=512), 6)
        1.0
    """
    matrix, *_ = _run([x, y], ["x", "y"], method="minibatch", batch_size=batch_size, seed=seed,
                      chunk_size=chunk_size, device=device)
    return float(matrix[0, 1])


@dataclass
class CKAResult:
    """Linear CKA between every pair of models' penultimate features on the same samples.

    matrix: (M, M) symmetric, 1 on the diagonal (NaN for a model whose features are constant); names: the M
    model names, in matrix order; method: "linear" (exact) or "minibatch"; n: rows used; batch_size, seed,
    n_batches: the minibatch settings (None for the exact method); n_excluded: rows left out for NaN/inf features;
    precision: the exact method's chunk-product dtype (None for minibatch).
    """

    matrix: np.ndarray
    names: list[str]
    method: str
    n: int
    batch_size: int | None = None
    seed: int | None = None
    n_batches: int | None = None
    n_excluded: int = 0
    precision: str | None = None

    def to_dict(self) -> dict:
        return {"metric": "linear_cka", "method": self.method, "names": list(self.names),
                "matrix": np.asarray(self.matrix, dtype=float).tolist(), "n": int(self.n),
                "batch_size": self.batch_size, "seed": self.seed, "n_batches": self.n_batches,
                "n_excluded": int(self.n_excluded), "precision": self.precision}

    def to_frame(self):
        """Tidy pandas DataFrame, one row per ordered pair of models (the diagonal included): columns model_a,
        model_b, metric ("cka"), value, method, n."""
        from repanalysis.frames import rows_frame

        m = np.asarray(self.matrix, dtype=float)
        return rows_frame({"model_a": a, "model_b": b, "metric": "cka", "value": float(m[i, j]),
                           "method": self.method, "n": int(self.n)}
                          for i, a in enumerate(self.names) for j, b in enumerate(self.names))


def cka_matrix(dumps: Sequence, names: Sequence[str] | None = None, *, method: str = "linear",
               batch_size: int = DEFAULT_BATCH, seed: int | None = 0, chunk_size: int = DEFAULT_CHUNK,
               device: str | torch.device | None = None, precision: str = "float64") -> CKAResult:
    """Linear CKA between every pair of models' penultimate features on the same images.

    dumps: two or more Dumps (or (N, D_i) feature arrays) of the same samples: Dumps of different images, sample
    counts, labels or class orders are refused (DataError from ``check_same_samples``). names: display names
    (default: each Dump's name). method: "linear" (exact, streamed; each model's X^T X is computed once and
    shared by all its pairs; ``precision`` of its chunk products: "float64" or "float32") or "minibatch"
    (``batch_size``, ``seed``: see :func:`minibatch_cka`).
    Returns a :class:`CKAResult`.

    Example::

        >>> r = cka_matrix([ce_dump, ls_dump, maxsup_dump])          # doctest: +SKIP
        >>> r.matrix.round(3), r.to_frame()                          # doctest: +SKIP
    """
    dumps = list(dumps)
    if len(dumps) < 2:
        raise DataError(f"cka compares models: got {len(dumps)} feature set(s); expected at least 2")
    if names is None:
        names = [getattr(d, "name", None) or f"model {i + 1}" for i, d in enumerate(dumps)]
    names = [str(n) for n in names]
    if len(names) != len(dumps):
        raise DataError(f"{len(names)} names for {len(dumps)} inputs; expected one name per input")
    matrix, n, n_batches, excluded = _run(dumps, names, method=method, batch_size=batch_size, seed=seed,
                                          chunk_size=chunk_size, device=device, precision=precision)
    minibatch = method == "minibatch"
    return CKAResult(matrix=matrix, names=names, method=method, n=n, batch_size=batch_size if minibatch else None,
                     seed=seed if minibatch else None, n_batches=n_batches, n_excluded=excluded,
                     precision=None if minibatch else precision)


# --- layer by layer --------------------------------------------------------------------------------------------------
@dataclass
class LayerCKAResult:
    """Linear CKA between the layers of two models on the same images.

    matrix: (L_a, L_b), entry [i, j] = CKA(model_a's layers_a[i], model_b's layers_b[j]); for a model against
    itself it is symmetric with 1 on the diagonal. method, n, batch_size, seed, n_batches, n_excluded: as
    :class:`CKAResult`. pooling: how each layer's output became one vector per image.
    """

    matrix: np.ndarray
    model_a: str
    model_b: str
    layers_a: list[str]
    layers_b: list[str]
    method: str
    n: int
    batch_size: int | None = None
    seed: int | None = None
    n_batches: int | None = None
    n_excluded: int = 0
    pooling: str = "global average over spatial positions (or tokens) per channel"
    precision: str | None = None

    def to_dict(self) -> dict:
        return {"metric": "linear_cka", "method": self.method, "model_a": self.model_a, "model_b": self.model_b,
                "layers_a": list(self.layers_a), "layers_b": list(self.layers_b),
                "matrix": np.asarray(self.matrix, dtype=float).tolist(), "n": int(self.n),
                "batch_size": self.batch_size, "seed": self.seed, "n_batches": self.n_batches,
                "n_excluded": int(self.n_excluded), "pooling": self.pooling, "precision": self.precision}

    def to_frame(self):
        """Tidy pandas DataFrame, one row per (layer of model_a, layer of model_b): columns model_a, layer_a,
        model_b, layer_b, metric ("cka"), value, method, n."""
        from repanalysis.frames import rows_frame

        m = np.asarray(self.matrix, dtype=float)
        return rows_frame({"model_a": self.model_a, "layer_a": la, "model_b": self.model_b, "layer_b": lb,
                           "metric": "cka", "value": float(m[i, j]), "method": self.method, "n": int(self.n)}
                          for i, la in enumerate(self.layers_a) for j, lb in enumerate(self.layers_b))


def _layer_pairs(la: int, lb: int) -> list[tuple[int, int]]:
    return [(i, la + j) for i in range(la) for j in range(lb)]


def layer_cka(features_a: Mapping[str, object], features_b: Mapping[str, object], *, names=("A", "B"),
              method: str = "linear", batch_size: int = DEFAULT_BATCH, seed: int | None = 0,
              chunk_size: int = DEFAULT_CHUNK, device: str | torch.device | None = None,
              precision: str = "float64") -> LayerCKAResult:
    """CKA between every layer of one model and every layer of another, on the same images.

    features_a / features_b: {layer name: (N, C) array}, row i of every array from image i (as
    :func:`repanalysis.extract.layers.layer_features` gives them). names: the two models' display names.
    method / batch_size / seed / chunk_size / device / precision: as :func:`cka_matrix`. Returns a
    :class:`LayerCKAResult`.
    """
    la, lb = list(features_a), list(features_b)
    if not la or not lb:
        raise DataError("layer_cka needs at least one layer of each model")
    sources = [features_a[k] for k in la] + [features_b[k] for k in lb]
    labels = [f"{names[0]}:{k}" for k in la] + [f"{names[1]}:{k}" for k in lb]
    matrix, n, n_batches, excluded = _run(sources, labels, method=method, batch_size=batch_size, seed=seed,
                                          chunk_size=chunk_size, device=device, pairs=_layer_pairs(len(la), len(lb)),
                                          precision=precision)
    return _layer_result(matrix, names, la, lb, method, n, batch_size, seed, n_batches, excluded, precision)


def layer_cka_batches(batches: Iterable[tuple[Mapping, Mapping]], *, names=("A", "B"), method: str = "linear",
                      batch_size: int = DEFAULT_BATCH, device: str | torch.device | None = None,
                      precision: str = "float64") -> LayerCKAResult:
    """:func:`layer_cka` from a stream: ``batches`` yields ``(features_a, features_b)`` per batch of images,
    each {layer name: (b, C) array} (as :func:`repanalysis.extract.layers.iter_layer_features` does), so that
    memory stays bounded at any number of images. With ``method="minibatch"`` the images are regrouped into
    minibatches of ``batch_size`` in the order they come (shuffle them upstream: that function's ``seed``)."""
    batch_size, _, _ = _check_options(method, batch_size, None, DEFAULT_CHUNK)
    _check_precision(precision)
    dev = pick_device(device) if device is not None else torch.device("cpu")
    keys: list | None = None
    excluded = [0]

    def chunks():
        nonlocal keys
        for fa, fb in batches:
            if keys is None:
                keys = (list(fa), list(fb))
                if not keys[0] or not keys[1]:
                    raise DataError("layer_cka_batches needs at least one layer of each model")
            yield tuple(fa[k] for k in keys[0]) + tuple(fb[k] for k in keys[1])

    stream = _finite_rows(chunks(), excluded)
    first = next(stream, None)
    if first is None:
        raise DataError("layer_cka_batches got no batch; expected at least one batch of images")
    la, lb = len(keys[0]), len(keys[1])
    pairs = _layer_pairs(la, lb)

    def again():
        yield first
        yield from stream

    if method == "linear":
        acc = LinearCKAAccumulator(pairs, device=dev, precision=precision)
        for chunk in again():
            acc.update(*chunk)
    else:
        acc = MinibatchCKAAccumulator(pairs, device=dev)
        for batch in _rebatch(again(), batch_size):
            acc.update(*batch)
    if excluded[0]:
        warnings.warn(f"{excluded[0]} images have NaN or inf features in at least one layer; they are excluded",
                      RuntimeWarning, stacklevel=2)
    minibatch = method == "minibatch"
    return _layer_result(acc.compute(), names, keys[0], keys[1], method, acc.n, batch_size, None,
                         acc.n_batches if minibatch else None, excluded[0], precision)


def _layer_result(matrix, names, la, lb, method, n, batch_size, seed, n_batches, excluded,
                  precision) -> LayerCKAResult:
    minibatch = method == "minibatch"
    m = len(la)
    return LayerCKAResult(matrix=np.asarray(matrix)[:m, m:], model_a=str(names[0]), model_b=str(names[1]),
                          layers_a=[str(k) for k in la], layers_b=[str(k) for k in lb], method=method, n=n,
                          batch_size=batch_size if minibatch else None, seed=seed if minibatch else None,
                          n_batches=n_batches, n_excluded=excluded, precision=None if minibatch else precision)
