"""Müller-style 3-class projections of penultimate features (Müller et al. 2019; MaxSup Appendix G).

template (default): templates are the classifier rows of the three classes with the bias appended,
w~_k = [W_k, b_k]; features get a 1 appended, h~ = [h, 1]. An orthonormal basis Q (D+1, 2) of
span(w~_2 - w~_1, w~_3 - w~_1) comes from a QR decomposition, and coordinates are h~ Q. Q is oriented as
Gram-Schmidt in the given class order (R with a positive diagonal): axis 1 runs from template 1 towards
template 2, and template 3 lies above template 1 on axis 2 (anchors[2, 1] > anchors[0, 1]). Because the
template differences lie in that plane, z_k - z_1 = (w~_k - w~_1) . h~ = (Q^T (w~_k - w~_1)) . coords exactly: the
coordinates are a linear (invertible) function of the logit differences z_2 - z_1, z_3 - z_1, and the
three-class decision regions are exact in the plane.

centroid (the MaxSup code's variant): the basis is the top-2 right singular vectors of the three class
centroids minus their mean; features are centred by their global mean (over the sampled points) first.
It needs no classifier weights.
"""
from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from repanalysis.arrays import as_labels, as_tensor, check_number, model_names
from repanalysis.errors import DataError

METHODS = ("template", "centroid")


@dataclass
class ProjectionResult:
    """Projected samples of three classes for one model.

    coords: (n, 2) plane coordinates; labels: (n,) class index of each point; sample_index: (n,) row of
    each point in the source features. classes: the three class indices; class_names: their display names.
    basis: (2, D+1) for template, (2, D) for centroid; origin: (D,) global mean for centroid, else None.
    anchors: (3, 2) projected templates (template) or projected class centroids (centroid).
    decision_weights: (3, 2) for the template method: among the three classes the model predicts
    argmax_k decision_weights[k] . coords (exact); None for centroid.
    """

    coords: np.ndarray
    labels: np.ndarray
    sample_index: np.ndarray
    classes: list[int]
    class_names: list[str]
    method: str
    basis: np.ndarray
    anchors: np.ndarray
    origin: np.ndarray | None = None
    decision_weights: np.ndarray | None = None
    name: str | None = None
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"name": self.name, "method": self.method, "classes": list(self.classes),
                "class_names": list(self.class_names), "coords": self.coords.tolist(),
                "labels": self.labels.tolist(), "sample_index": self.sample_index.tolist(),
                "anchors": self.anchors.tolist(),
                "decision_weights": None if self.decision_weights is None else self.decision_weights.tolist()}

    def to_rows(self) -> list[dict]:
        """One dict per point (model, sample index, class index, class name, x, y) for a CSV file."""
        names = dict(zip(self.classes, self.class_names))
        return [{"model": self.name, "sample": int(i), "label": int(y), "class": names[int(y)],
                 "x": float(x0), "y": float(x1)}
                for i, y, (x0, x1) in zip(self.sample_index, self.labels, self.coords)]

    def to_frame(self):
        """Tidy pandas DataFrame of the coordinates, one row per point (not per metric: a projection holds no
        scalars): columns model, sample, label, class (name), x, y, as :meth:`to_rows`."""
        from repanalysis.frames import points_frame

        return points_frame(self.name, self.coords, self.labels, self.sample_index, self.classes, self.class_names)

    def predict(self, coords) -> np.ndarray:
        """Class index predicted by the model among the three classes at plane points (m, 2) (template only)."""
        if self.decision_weights is None:
            raise DataError("decision regions need the template method (classifier weights); this projection "
                            "used the centroid method")
        points = as_tensor(coords, dtype=torch.float64).detach().cpu().numpy()
        if points.ndim != 2 or points.shape[1] != 2:
            raise DataError(f"coords must be plane points [m, 2]; got shape {points.shape}")
        scores = points @ self.decision_weights.T
        return np.asarray(self.classes)[scores.argmax(axis=1)]


def check_features_labels(features, labels) -> tuple[np.ndarray, np.ndarray]:
    """(features [N, D] as a numpy array or memory map, labels [N] int64); DataError unless features are a 2-D
    array of numbers (list, numpy or tensor) and labels one integer class index >= 0 per row."""
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().numpy()
    elif not isinstance(features, np.ndarray):
        try:
            features = as_tensor(features).numpy()  # lists; text refused
        except (TypeError, ValueError):  # ragged nested lists
            raise DataError("features must be an array of numbers [N, D]; got rows of different lengths or "
                            f"something else ({type(features).__name__})") from None
    if features.dtype.kind not in "biuf":
        raise DataError(f"features must be numbers [N, D]; got {features.dtype} values of shape {features.shape}")
    n_labels = np.shape(labels)[0] if np.ndim(labels) else 0
    if features.ndim != 2 or features.shape[0] != n_labels:
        raise DataError(f"expected features [N, D] and labels [N]; got {features.shape} and {np.shape(labels)}")
    return features, as_labels(labels, features.shape[0]).cpu().numpy()


def class_indices(classes) -> list[int]:
    """Class indices from a list of integers or a comma-separated string of them ('0,3,7'); DataError
    otherwise (class names are resolved by :func:`project_dump` / ``embed_dump``, which know them)."""
    parts = [p.strip() for p in classes.split(",") if p.strip()] if isinstance(classes, str) else classes
    try:
        parts = np.asarray([int(p) if isinstance(p, str) else p for p in parts])
    except (TypeError, ValueError):  # a class name, or not a sequence at all
        parts = None
    if parts is None or (parts.size and parts.dtype.kind not in "biuf"):
        raise DataError(f"classes must be class indices (a list of integers or '0,1,2'); got {classes!r} "
                        "(class names need the Dump: use project_dump / embed_dump)")
    return as_labels(parts, what="classes").tolist()


def sample_per_class(labels, classes, samples_per_class: int | None = 80, seed: int = 0) -> np.ndarray:
    """Row indices of up to ``samples_per_class`` random samples of each class (seeded), sorted per class.

    Each class draws from its own generator, ``numpy.random.default_rng([seed, k])`` for class index k, so
    the sample of a class is the same whichever other classes are asked for, and in whatever order.
    A class with fewer samples contributes all of them (with a warning); a class with none is an error.
    samples_per_class: a positive integer or None (all); seed: an integer >= 0.
    """
    count = samples_per_class
    if count is not None and (not isinstance(count, numbers.Integral) or isinstance(count, (bool, np.bool_))
                              or count < 1):
        raise DataError(f"samples_per_class must be a positive integer or None (all samples); got {count!r}")
    seed = check_number(seed, "seed", integer=True, minimum=0)
    labels = np.asarray(labels)
    order = np.argsort(labels, kind="stable")  # rows grouped by class, increasing within each class
    grouped = labels[order]
    lo, hi = np.searchsorted(grouped, classes, side="left"), np.searchsorted(grouped, classes, side="right")
    empty = [int(k) for k, a, b in zip(classes, lo, hi) if a == b]
    if empty:
        raise DataError(f"class {empty[0]} has no samples in this data; expected classes present in the labels")
    picked = [_draw(order[a:b], count, seed, int(k)) for k, a, b in zip(classes, lo, hi)]
    short = [f"{k} ({b - a})" for k, a, b in zip(classes, lo, hi) if count is not None and b - a < count]
    if short:
        warnings.warn(f"{len(short)} class(es) have fewer than {count} samples; all of theirs are used: "
                      f"{', '.join(short[:10])}{' ...' if len(short) > 10 else ''}", RuntimeWarning, stacklevel=2)
    return np.concatenate(picked)


def _draw(rows: np.ndarray, count: int | None, seed: int, k: int) -> np.ndarray:
    """``count`` of the sorted ``rows`` of class k, drawn without replacement by the class's own generator
    ``default_rng([seed, k])`` and sorted (all rows when there are not more than ``count`` or count is None)."""
    if count is None or len(rows) <= count:
        return rows
    return np.sort(np.random.default_rng([seed, k]).choice(rows, size=count, replace=False))


def template_basis(classifier_weight, classifier_bias, classes) -> tuple[torch.Tensor, torch.Tensor]:
    """(Q (D+1, 2) orthonormal basis of the template plane, templates (3, D+1)) in float64.

    Orientation (deterministic): Q is Gram-Schmidt of (w~_2 - w~_1, w~_3 - w~_1) in the given class order, i.e.
    axis 1 points from template 1 towards template 2, and axis 2 along the part of w~_3 - w~_1 orthogonal to
    axis 1 (the QR factor R has a positive diagonal)."""
    w = as_tensor(classifier_weight, dtype=torch.float64).detach().cpu()
    b = as_tensor(classifier_bias, dtype=torch.float64).detach().cpu()
    if w.ndim != 2 or b.shape != w.shape[:1]:
        raise DataError(f"classifier weight {tuple(w.shape)} and bias {tuple(b.shape)} do not fit; expected "
                        "weight (K, D) and bias (K,)")
    templates = torch.cat([w[list(classes)], b[list(classes), None]], dim=1)  # w~_k = [W_k, b_k]
    # Müller et al. 2019 / MaxSup App. G: plane through the three templates, span(w~_2 - w~_1, w~_3 - w~_1)
    diffs = (templates[1:] - templates[0]).T  # (D+1, 2)
    q, r = torch.linalg.qr(diffs)
    diag = torch.diagonal(r)
    if float(torch.abs(diag).min()) <= 1e-12 * float(torch.abs(r).max()):
        raise DataError(f"the templates of classes {list(classes)} are collinear; no plane through them")
    # LAPACK's Householder QR leaves each axis's sign arbitrary: flip so that diag(R) > 0 (= Gram-Schmidt)
    return q * torch.sign(diag), templates


def project_classes(features, labels, classes, *, method: str = "template", classifier_weight=None,
                    classifier_bias=None, samples_per_class: int | None = 80, seed: int = 0,
                    class_names: list[str] | None = None, name: str | None = None) -> ProjectionResult:
    """Project samples of three classes onto a plane (Müller et al. 2019).

    features: (N, D); labels: (N,); classes: three class indices (a list or '0,1,2'). classifier_weight (K, D) and
    classifier_bias (K,) are required by method="template" (bias may be None: taken as zeros).
    samples_per_class: random samples per class (seeded; None = all). class_names: names of all K classes
    (for display). Returns a :class:`ProjectionResult`.
    """
    if method not in METHODS:
        raise DataError(f"unknown projection method {method!r}; expected one of {', '.join(METHODS)}")
    classes = class_indices(classes)
    if len(classes) != 3 or len(set(classes)) != 3:
        raise DataError(f"a 3-class projection needs three distinct classes; got {classes}")
    if features is None:
        raise DataError("the projection needs penultimate features; re-run `repanalysis extract` with features")
    features, labels_np = check_features_labels(features, labels)
    rows = sample_per_class(labels_np, classes, samples_per_class, seed)
    h = torch.as_tensor(np.asarray(features[rows], dtype=np.float64))
    if not torch.isfinite(h).all():
        raise DataError("features of the chosen samples contain NaN or inf; expected finite features")
    y = labels_np[rows]
    names = [str(class_names[c]) if class_names and c < len(class_names) else str(c) for c in classes]
    if method == "template":
        if classifier_weight is None:
            raise DataError("the template method needs the classifier weights W and b, which this Dump lacks; "
                            "use method='centroid' (--method centroid) or re-extract with classifier weights")
        w = as_tensor(classifier_weight, dtype=torch.float64).detach().cpu().numpy()
        if w.ndim != 2 or w.shape[1] != h.shape[1] or max(classes) >= w.shape[0]:
            raise DataError(f"classifier weight {w.shape} does not fit features of width {h.shape[1]} and "
                            f"classes {classes}; expected (K, {h.shape[1]})")
        bias = (np.zeros(w.shape[0]) if classifier_bias is None
                else as_tensor(classifier_bias, dtype=torch.float64).detach().cpu().numpy())
        if bias.shape != (w.shape[0],):
            raise DataError(f"classifier bias {bias.shape} does not fit the weight {w.shape}; expected "
                            f"({w.shape[0]},), one entry per class")
        if not (np.isfinite(w[classes]).all() and np.isfinite(bias[classes]).all()):
            raise DataError(f"the classifier weights or bias of classes {classes} contain NaN or inf; expected a "
                            "finite classifier (use --method centroid to project by the class means instead)")
        q, templates = template_basis(w, bias, classes)
        h1 = torch.cat([h, torch.ones(len(h), 1, dtype=h.dtype)], dim=1)  # h~ = [h, 1]
        coords = h1 @ q
        anchors = templates @ q
        return ProjectionResult(coords=coords.numpy(), labels=y, sample_index=rows, classes=classes,
                                class_names=names, method=method, basis=q.T.numpy(), anchors=anchors.numpy(),
                                decision_weights=anchors.numpy(), name=name)
    # MaxSup code's variant: SVD of the centroids minus their mean; features centred by the global mean
    centroids = torch.stack([h[torch.as_tensor(y == k)].mean(dim=0) for k in classes])  # (3, D)
    _, s, vh = torch.linalg.svd(centroids - centroids.mean(dim=0), full_matrices=False)
    if float(s[1]) <= 1e-12 * max(float(s[0]), 1e-300):
        raise DataError(f"the centroids of classes {classes} are collinear; no plane through them")
    basis = vh[:2]  # (2, D)
    origin = h.mean(dim=0)
    coords = (h - origin) @ basis.T
    anchors = (centroids - origin) @ basis.T
    return ProjectionResult(coords=coords.numpy(), labels=y, sample_index=rows, classes=classes, class_names=names,
                            method=method, basis=basis.numpy(), anchors=anchors.numpy(), origin=origin.numpy(),
                            name=name)


def project_dump(dump, classes, *, method: str = "template", samples_per_class: int | None = 80, seed: int = 0,
                 name: str | None = None) -> ProjectionResult:
    """:func:`project_classes` on a Dump (features, labels, classifier weights and class names from it).

    classes: three class names, WordNet ids or indices (a list, or 'four,seven,nine'), or 'auto' (the Dump's
    most confused triplet), resolved as ``repanalysis features --classes`` does."""
    from repanalysis.data.class_resolution import class_label, resolve_for_dumps

    if dump.features is None:
        dump.array("features")  # DumpError with the re-extract hint
    classes = resolve_for_dumps(classes, [dump], count=3)
    if method == "template" and dump.classifier_weight is None:
        raise DataError(f"dump {dump.name} has no classifier weights, which the template method needs; use "
                        "--method centroid, or re-extract so that W and b are stored")
    names = [class_label(i, dump.num_classes, dump.class_names) for i in range(dump.num_classes)] \
        if dump.class_names or dump.num_classes == 1000 else None
    return project_classes(dump.features, dump.labels, classes, method=method,
                           classifier_weight=dump.classifier_weight, classifier_bias=dump.classifier_bias,
                           samples_per_class=samples_per_class, seed=seed, class_names=names,
                           name=name or dump.name)


def project_dumps(dumps, classes="auto", *, names=None, **kwargs) -> list[ProjectionResult]:
    """:func:`project_dump` for several models on one class triplet, one result (panel) per Dump.

    ``classes`` is resolved once for all the Dumps: ``'auto'`` picks the triplet they confuse most together
    (their confusion matrices summed), so every panel shows the same three classes. The Dumps must have the
    same number of classes, and ``names`` (default: the Dumps' names) must be distinct. ``kwargs`` go to
    :func:`project_dump` (method, samples_per_class, seed)."""
    from repanalysis.data.class_resolution import resolve_for_dumps

    dumps = _same_task(dumps)
    names = model_names(dumps, names)
    chosen = resolve_for_dumps(classes, dumps)
    return [project_dump(d, chosen, name=n, **kwargs) for d, n in zip(dumps, names)]


def _same_task(dumps) -> list:
    """The Dumps as a list; DataError when there are none or their numbers of classes differ."""
    dumps = list(dumps)
    if not dumps:
        raise DataError("no models given; expected at least one Dump")
    ks = sorted({d.num_classes for d in dumps})
    if len(ks) > 1:
        raise DataError(f"the models have different numbers of classes ({ks}); expected models of the same task")
    return dumps
