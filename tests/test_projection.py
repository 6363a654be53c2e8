"""Müller 3-class projection: exact linearity in logit differences, decision regions, centroid variant."""
import numpy as np
import torch
import pytest

import repanalysis  # noqa: F401
from repanalysis.analyze.projection import project_classes, project_dump, sample_per_class
from repanalysis.errors import DataError, DumpError
from repanalysis.extract.store import Dump


def _toy(seed=0, n=300, d=9, k=5):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    feats = rng.normal(size=(k, d))[labels] * 2 + rng.normal(size=(n, d))
    w, b = rng.normal(size=(k, d)), rng.normal(size=k)
    return feats, labels, w, b


def test_template_coords_linear_in_logit_differences():
    feats, labels, w, b = _toy()
    classes = [3, 0, 4]
    r = project_classes(feats, labels, classes, classifier_weight=w, classifier_bias=b, samples_per_class=40)
    z = feats[r.sample_index] @ w.T + b
    diffs = np.stack([z[:, classes[1]] - z[:, classes[0]], z[:, classes[2]] - z[:, classes[0]]], axis=1)
    # coords = diffs @ A for a fixed invertible 2x2 A (no intercept): least squares must fit exactly
    a, *_ = np.linalg.lstsq(diffs, r.coords, rcond=None)
    np.testing.assert_allclose(diffs @ a, r.coords, atol=1e-9)
    assert abs(np.linalg.det(a)) > 1e-9
    # and the stored decision weights reproduce the logit differences themselves
    t = r.decision_weights
    np.testing.assert_allclose(r.coords @ (t[1] - t[0]), diffs[:, 0], atol=1e-9)
    np.testing.assert_allclose(r.coords @ (t[2] - t[0]), diffs[:, 1], atol=1e-9)
    # three-class predictions from the plane equal argmax of the real logits over those classes
    want = np.asarray(classes)[z[:, classes].argmax(axis=1)]
    np.testing.assert_array_equal(r.predict(r.coords), want)
    # orthonormal basis
    np.testing.assert_allclose(r.basis @ r.basis.T, np.eye(2), atol=1e-12)


def test_sampling_is_seeded_and_per_class():
    feats, labels, w, b = _toy(n=500)
    r1 = project_classes(feats, labels, [0, 1, 2], classifier_weight=w, classifier_bias=b, samples_per_class=30,
                         seed=7)
    r2 = project_classes(feats, labels, [0, 1, 2], classifier_weight=w, classifier_bias=b, samples_per_class=30,
                         seed=7)
    np.testing.assert_array_equal(r1.sample_index, r2.sample_index)
    np.testing.assert_array_equal(np.bincount(r1.labels, minlength=3)[:3], [30, 30, 30])
    assert np.all(labels[r1.sample_index] == r1.labels)
    r3 = project_classes(feats, labels, [0, 1, 2], classifier_weight=w, classifier_bias=b, samples_per_class=30,
                         seed=8)
    assert not np.array_equal(r1.sample_index, r3.sample_index)


def test_centroid_method_matches_numpy_svd():
    feats, labels, _, _ = _toy(seed=2)
    classes = [1, 2, 3]
    r = project_classes(feats, labels, classes, method="centroid", samples_per_class=None)
    h = feats[r.sample_index]
    mu = np.stack([h[r.labels == k].mean(0) for k in classes])
    _, _, vt = np.linalg.svd(mu - mu.mean(0))
    coords = (h - h.mean(0)) @ vt[:2].T
    # same plane up to a rotation/reflection: Gram matrices agree
    anchors = (mu - h.mean(0)) @ vt[:2].T
    ours, ref = np.vstack([r.coords, r.anchors]), np.vstack([coords, anchors])
    np.testing.assert_allclose(ours @ ours.T, ref @ ref.T, atol=1e-8)
    with pytest.raises(DataError, match="template method"):
        r.predict(r.coords)


def test_errors():
    feats, labels, w, b = _toy()
    with pytest.raises(DataError, match="method='centroid'"):
        project_classes(feats, labels, [0, 1, 2])
    with pytest.raises(DataError, match="three distinct"):
        project_classes(feats, labels, [0, 1, 1], classifier_weight=w, classifier_bias=b)
    with pytest.raises(DataError, match="unknown projection method"):
        project_classes(feats, labels, [0, 1, 2], method="pca")
    with pytest.raises(DataError, match="no samples"):
        sample_per_class(labels, [0, 7], 5)
    w_bad = w.copy()
    w_bad[2] = 2 * w[1] - w[0]
    with pytest.raises(DataError, match="collinear"):
        project_classes(feats, labels, [0, 1, 2], classifier_weight=w_bad, classifier_bias=np.zeros(5))
    dump = Dump.from_arrays(feats @ w.T, labels, feats, class_names=list("abcde"))
    with pytest.raises(DataError, match="--method centroid"):
        project_dump(dump, [0, 1, 2])
    with pytest.raises(DumpError, match="features"):
        project_dump(Dump.from_arrays(feats @ w.T, labels), [0, 1, 2], method="centroid")


def test_project_dump_uses_names_and_weights():
    feats, labels, w, b = _toy()
    dump = Dump.from_arrays(feats @ w.T + b, labels, feats, class_names=list("abcde"), classifier_weight=w,
                            classifier_bias=b, name="CE")
    with pytest.warns(RuntimeWarning, match="fewer than 100 samples"):
        r = project_dump(dump, [4, 2, 0], samples_per_class=100)
    assert r.class_names == ["e", "c", "a"] and r.name == "CE"
    rows = r.to_rows()
    assert rows[0].keys() == {"model", "sample", "label", "class", "x", "y"}


def test_project_dump_takes_class_names_like_the_cli():
    feats, labels, w, b = _toy()
    dump = Dump.from_arrays(feats @ w.T + b, labels, feats, class_names=["zero", "one", "two", "three", "four"],
                            classifier_weight=w, classifier_bias=b, name="CE")
    by_index = project_dump(dump, [4, 2, 0], samples_per_class=10)
    for spec in (["four", "two", "zero"], "four,two,zero", ["4", "TWO", 0]):
        r = project_dump(dump, spec, samples_per_class=10)
        assert r.classes == [4, 2, 0] and r.class_names == ["four", "two", "zero"]
        np.testing.assert_array_equal(r.coords, by_index.coords)
    with pytest.raises(DataError, match="unknown class name 'fuor'; did you mean 'four'"):
        project_dump(dump, ["fuor", "two", "zero"])
    with pytest.raises(DataError, match="expected 3 classes; got 2"):
        project_dump(dump, ["four", "two"])


def test_accepted_spellings_give_the_same_projection():
    feats, labels, w, b = _toy()
    ref = project_classes(feats, labels, [3, 0, 4], classifier_weight=w, classifier_bias=b, samples_per_class=20)
    # features / weights as lists (TypeError before), classes as '3,0,4' (ValueError before), float labels
    for r in (project_classes(feats.tolist(), labels, [3, 0, 4], classifier_weight=w.tolist(),
                              classifier_bias=b.tolist(), samples_per_class=20),
              project_classes(feats, labels, "3, 0, 4", classifier_weight=w, classifier_bias=b, samples_per_class=20),
              project_classes(feats, labels.astype(np.float32), np.array([3, 0, 4]), classifier_weight=w,
                              classifier_bias=b, samples_per_class=20)):
        assert r.classes == [3, 0, 4]
        np.testing.assert_array_equal(r.sample_index, ref.sample_index)
        np.testing.assert_allclose(r.coords, ref.coords, rtol=0, atol=1e-12)


@pytest.mark.parametrize("make, message", [
    (lambda f, y, w, b: ((f, y, [0, 1, 2]), {"classifier_bias": b[:3]}),
     r"classifier bias \(3,\) does not fit the weight \(5, 9\); expected \(5,\)"),
    (lambda f, y, w, b: ((f, y, [0, 1, 2]), {"classifier_bias": b[:, None]}), r"classifier bias \(5, 1\) does not fit"),
    (lambda f, y, w, b: ((f, y, [0, 1, 2]), {"samples_per_class": -1}),
     "samples_per_class must be a positive integer or None .*; got -1"),
    (lambda f, y, w, b: ((f, y, [0, 1, 2]), {"samples_per_class": 2.5}),
     "samples_per_class must be a positive integer or None .*; got 2.5"),
    # 0 gave a LinAlgError with centroid and, silently, a projection of no points with template
    (lambda f, y, w, b: ((f, y, [0, 1, 2]), {"samples_per_class": 0}), "samples_per_class must be a positive integer"),
    (lambda f, y, w, b: ((f, y, [0, 1, 2]), {"samples_per_class": 0, "method": "centroid"}),
     "samples_per_class must be a positive integer"),
    (lambda f, y, w, b: ((f, y, [0, 1, 2]), {"seed": -1}), "seed must be an integer >= 0; got -1"),
    (lambda f, y, w, b: ((f, y[:, None], [0, 1, 2]), {}), r"labels must be 1-D with one class index per sample"),
    (lambda f, y, w, b: ((f, y + 0.5, [0, 1, 2]), {}), "labels must be integer class indices; got non-integer"),
    (lambda f, y, w, b: ((f, y, "a,b,c"), {}), "classes must be class indices .*got 'a,b,c'.*project_dump"),
    (lambda f, y, w, b: ((f, y, [0, -1, 2]), {}), "classes must be class indices >= 0; found -1"),
    (lambda f, y, w, b: ((f, y, [0, 1.5, 2]), {}), "classes must be integer class indices"),
    (lambda f, y, w, b: ((f.astype(str), y, [0, 1, 2]), {}), "features must be numbers"),
    (lambda f, y, w, b: (([[1.0, 2.0], [3.0]], [0, 1], [0, 1, 2]), {}), "features must be an array of numbers"),
])
def test_bad_input_raises_one_line_data_errors(make, message):
    feats, labels, w, b = _toy()
    args, kwargs = make(feats, labels, w, b)
    with pytest.raises(DataError, match=message) as err:
        project_classes(*args, **{"classifier_weight": w, "classifier_bias": b, **kwargs})
    assert "\n" not in str(err.value)


def test_predict_needs_points_of_the_plane():
    feats, labels, w, b = _toy()
    r = project_classes(feats, labels, [0, 1, 2], classifier_weight=w, classifier_bias=b, samples_per_class=10)
    np.testing.assert_array_equal(r.predict(r.coords[:1].tolist()), r.predict(r.coords[:1]))
    for bad in (np.zeros(2), np.zeros((4, 3))):
        with pytest.raises(DataError, match=r"coords must be plane points \[m, 2\]; got shape"):
            r.predict(bad)


def test_project_dump_takes_a_tensor_or_array_of_indices():
    feats, labels, w, b = _toy()
    dump = Dump.from_arrays(feats @ w.T + b, labels, feats, classifier_weight=w, classifier_bias=b, name="CE")
    ref = project_dump(dump, [4, 2, 0], samples_per_class=10)
    for spec in (torch.tensor([4, 2, 0]), np.array([4, 2, 0])):
        np.testing.assert_array_equal(project_dump(dump, spec, samples_per_class=10).coords, ref.coords)


def _rows_by_class(rows, labels):
    return {int(k): rows[labels[rows] == k].tolist() for k in np.unique(labels[rows])}


def test_sample_of_a_class_does_not_depend_on_the_other_classes():
    # one generator per class, default_rng([seed, k]): before, one generator ran class by class, so the
    # sample of "seven" changed with the order ("four,seven,nine" vs "seven,four,nine") and with the set
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 6, 900)
    want = {k: np.sort(np.random.default_rng([11, k]).choice(np.flatnonzero(labels == k), 40, replace=False))
            for k in range(6)}
    for classes in ([4, 1, 5], [1, 5, 4], [5, 4, 1], [0, 1, 2, 3, 4, 5], [2, 1]):
        rows = sample_per_class(labels, classes, 40, seed=11)
        assert len(rows) == 40 * len(classes)
        np.testing.assert_array_equal(labels[rows], np.repeat(classes, 40))       # class blocks in the given order
        for k, picked in _rows_by_class(rows, labels).items():
            assert picked == want[k].tolist(), (classes, k)
    feats, labels, w, b = _toy(n=500)
    a = project_classes(feats, labels, [4, 2, 0], classifier_weight=w, classifier_bias=b, samples_per_class=30)
    c = project_classes(feats, labels, [2, 0, 1], classifier_weight=w, classifier_bias=b, samples_per_class=30)
    assert _rows_by_class(a.sample_index, labels)[2] == _rows_by_class(c.sample_index, labels)[2]
    assert _rows_by_class(a.sample_index, labels)[0] == _rows_by_class(c.sample_index, labels)[0]


def _gram_schmidt(t):
    """Hand Gram-Schmidt of the template differences (t: (3, D+1) rows w~_1, w~_2, w~_3) -> (2, D+1)."""
    d1, d2 = t[1] - t[0], t[2] - t[0]
    e1 = d1 / np.linalg.norm(d1)
    v = d2 - (d2 @ e1) * e1
    return np.stack([e1, v / np.linalg.norm(v)])


@pytest.mark.parametrize("seed", range(6))
def test_template_basis_is_gram_schmidt_in_the_given_class_order(seed):
    # LAPACK's QR left each axis's sign arbitrary (the coordinates equalled Gram-Schmidt up to a sign per axis)
    feats, labels, w, b = _toy(seed=seed)
    for classes in ([0, 1, 2], [3, 0, 4], [4, 3, 0], [2, 4, 1]):
        r = project_classes(feats, labels, classes, classifier_weight=w, classifier_bias=b, samples_per_class=15)
        t = np.concatenate([w[classes], b[classes, None]], axis=1)
        basis = _gram_schmidt(t)
        np.testing.assert_allclose(r.basis, basis, rtol=0, atol=1e-12)
        h1 = np.concatenate([feats[r.sample_index], np.ones((len(r.sample_index), 1))], axis=1)
        np.testing.assert_allclose(r.coords, h1 @ basis.T, rtol=0, atol=1e-10)
        np.testing.assert_allclose(r.anchors, t @ basis.T, rtol=0, atol=1e-10)
        # the documented orientation: template 2 right of template 1 on axis 1, template 3 above it on axis 2
        assert r.anchors[1, 0] > r.anchors[0, 0] and r.anchors[1, 1] == pytest.approx(r.anchors[0, 1], abs=1e-10)
        assert r.anchors[2, 1] > r.anchors[0, 1]
