"""2-D embeddings (UMAP, t-SNE) of the penultimate features of chosen classes, seeded.

umap-learn compiles with numba on first use in each process (seconds); it is imported inside
:func:`embed_features` only, so importing repanalysis stays fast. t-SNE is scikit-learn's.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from repanalysis.arrays import check_number
from repanalysis.analyze.projection import check_features_labels, class_indices, sample_per_class
from repanalysis.errors import DataError
from repanalysis.progress import track

METHODS = ("umap", "tsne")
# distances both UMAP and scikit-learn's t-SNE take by these names
METRICS = ("cosine", "euclidean", "l2", "manhattan", "l1", "chebyshev", "correlation", "canberra", "braycurtis")


@dataclass
class EmbeddingResult:
    """coords (n, 2); labels (n,) class index; sample_index (n,) source rows; classes / class_names."""

    coords: np.ndarray
    labels: np.ndarray
    sample_index: np.ndarray
    classes: list[int]
    class_names: list[str]
    method: str
    seed: int
    name: str | None = None
    params: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"name": self.name, "method": self.method, "seed": self.seed, "classes": self.classes,
                "class_names": self.class_names, "params": self.params, "coords": self.coords.tolist(),
                "labels": self.labels.tolist(), "sample_index": self.sample_index.tolist()}

    def to_rows(self) -> list[dict]:
        names = dict(zip(self.classes, self.class_names))
        return [{"model": self.name, "sample": int(i), "label": int(y), "class": names[int(y)],
                 "x": float(a), "y": float(b)} for i, y, (a, b) in zip(self.sample_index, self.labels, self.coords)]

    def to_frame(self):
        """Tidy pandas DataFrame of the coordinates, one row per point (not per metric: an embedding holds no
        scalars): columns model, sample, label, class (name), x, y, as :meth:`to_rows`."""
        from repanalysis.frames import points_frame

        return points_frame(self.name, self.coords, self.labels, self.sample_index, self.classes, self.class_names)


def embed_features(features, labels, classes=None, *, method: str = "umap", samples_per_class: int | None = 300,
                   seed: int = 0, metric: str = "cosine", n_neighbors: int = 15, min_dist: float = 0.1,
                   perplexity: float = 30.0, class_names: list[str] | None = None,
                   name: str | None = None) -> EmbeddingResult:
    """Embed the features of ``classes`` (default: all present) in 2-D with UMAP or t-SNE.

    features: (N, D); labels: (N,) class indices; classes: class indices (a list or '0,1,2').
    samples_per_class: random samples per class (seeded; a positive integer, None = all). metric: distance for
    the neighbour graph, one of :data:`METRICS` ("cosine" matches the separation metric). n_neighbors (>= 2)
    / min_dist (in [0, 1]): UMAP; perplexity (> 0): t-SNE (clipped to n - 1). Returns an :class:`EmbeddingResult`.
    """
    if method not in METHODS:
        raise DataError(f"unknown embedding method {method!r}; expected one of {', '.join(METHODS)}")
    if metric not in METRICS:
        raise DataError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
    seed = check_number(seed, "seed", integer=True, minimum=0, maximum=2**32 - 1)
    if method == "umap":
        n_neighbors = check_number(n_neighbors, "n_neighbors", integer=True, minimum=2)
        min_dist = check_number(min_dist, "min_dist", minimum=0, maximum=1)
    else:
        perplexity = check_number(perplexity, "perplexity", minimum=0, above=True)
    if features is None:
        raise DataError("embeddings need penultimate features; re-run `repanalysis extract` with features")
    features, labels_np = check_features_labels(features, labels)
    classes = np.unique(labels_np).tolist() if classes is None else class_indices(classes)
    if len(classes) < 2:
        raise DataError(f"an embedding needs at least 2 classes; got {len(classes)}")
    if len(set(classes)) != len(classes):
        raise DataError(f"classes must be distinct; got {classes}")
    rows = sample_per_class(labels_np, classes, samples_per_class, seed)
    x = np.asarray(features[rows], dtype=np.float32)
    if not np.isfinite(x).all():
        raise DataError("features of the chosen samples contain NaN or inf; expected finite features")
    n = len(x)
    if n < 5:
        raise DataError(f"an embedding needs at least 5 samples; got {n}")
    # identical rows (or spread below float32 resolution) crash t-SNE's PCA start (segfault) and give UMAP nonsense
    if float(x.astype(np.float64).var(axis=0).sum()) < np.finfo(np.float32).tiny:
        raise DataError(f"the chosen samples' features have no spread (all rows identical) in {n} samples of classes "
                        f"{classes}; expected features that differ between samples")
    if method == "umap":
        import umap  # lazy: numba compiles on first use

        params = {"n_neighbors": min(n_neighbors, n - 1), "min_dist": min_dist, "metric": metric}
        reducer = umap.UMAP(n_components=2, random_state=seed, n_jobs=1, **params)
        coords = reducer.fit_transform(x)
    else:
        from sklearn.manifold import TSNE

        params = {"perplexity": float(min(perplexity, n - 1)), "metric": metric}
        coords = TSNE(n_components=2, random_state=seed, init="pca", **params).fit_transform(x)
    names = [str(class_names[c]) if class_names and c < len(class_names) else str(c) for c in classes]
    return EmbeddingResult(coords=np.asarray(coords, dtype=np.float64), labels=labels_np[rows], sample_index=rows,
                           classes=classes, class_names=names, method=method, seed=seed, name=name, params=params)


def embed_dump(dump, classes=None, **kwargs) -> EmbeddingResult:
    """:func:`embed_features` on a Dump (features, labels and class names from it).

    classes: None (all), or class names, WordNet ids or indices, or 'auto', resolved as the CLI does."""
    from repanalysis.data.class_resolution import class_label, resolve_for_dumps

    if dump.features is None:
        dump.array("features")
    if classes is not None:
        classes = resolve_for_dumps(classes, [dump], count=None)
    names = [class_label(i, dump.num_classes, dump.class_names) for i in range(dump.num_classes)] \
        if dump.class_names or dump.num_classes == 1000 else None
    kwargs.setdefault("name", dump.name)
    return embed_features(dump.features, dump.labels, classes, class_names=names, **kwargs)


def embed_dumps(dumps, classes=None, *, names=None, progress: bool = True, **kwargs) -> list[EmbeddingResult]:
    """:func:`embed_dump` for several models on the same classes, one result (panel) per Dump.

    ``classes`` (None: all) is resolved once for all the Dumps (``'auto'``: the triplet they confuse most
    together). The Dumps must have the same number of classes and ``names`` (default: the Dumps' names) must
    be distinct. ``progress``: a bar over the models (models/s) on stderr when it is a terminal. ``kwargs`` go
    to :func:`embed_features` (method, samples_per_class, seed, metric, ...)."""
    from repanalysis.arrays import model_names
    from repanalysis.analyze.projection import _same_task
    from repanalysis.data.class_resolution import resolve_for_dumps

    dumps = _same_task(dumps)
    names = model_names(dumps, names)
    chosen = None if classes is None else resolve_for_dumps(classes, dumps, count=None)
    method = kwargs.get("method", "umap")
    return [embed_dump(d, chosen, name=n, **kwargs)
            for d, n in track(list(zip(dumps, names)), desc=f"embed ({method})", unit="model", enabled=progress)]
