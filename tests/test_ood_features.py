"""Feature OOD scores (Mahalanobis, relative Mahalanobis, KNN, ViM, ReAct energy) against pytorch-ood and
brute-force numpy / scikit-learn references, and the ``ood --train`` command on real Dumps."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from repanalysis import Dump
from repanalysis.analyze import ood_features as F
from repanalysis.errors import DataError

K, D = 5, 32


def _dump(n, seed, name="m", shift=0.0):
    rng = np.random.default_rng(seed)
    g = np.random.default_rng(0)                        # the same "model" (class means, classifier) for all
    means, w, b = g.standard_normal((K, D)) * 2, g.standard_normal((K, D)), g.standard_normal(K)
    y = rng.integers(0, K, n)
    h = np.maximum(means[y] + rng.standard_normal((n, D)) + shift, 0).astype(np.float32)
    w, b = w.astype(np.float32), b.astype(np.float32)
    return Dump.from_arrays(h @ w.T + b, y, h, classifier_weight=w, classifier_bias=b, name=name)


@pytest.fixture(scope="module")
def data():
    return _dump(600, 1), _dump(200, 2), _dump(150, 3, shift=1.5)


@pytest.fixture(scope="module")
def scores(data):
    train, test, _ = data
    return F.FeatureOOD(knn_k=10, chunk_size=97).fit(train).score(test)


def _np(d):
    return np.asarray(d.features, np.float64), np.asarray(d.labels), np.asarray(d.classifier_weight, np.float64), \
        np.asarray(d.classifier_bias, np.float64)


# --- brute-force references (numpy / scikit-learn) -------------------------------------------------------------
def test_mahalanobis_against_numpy(data, scores):
    (h, y, _, _), (ht, _, _, _) = _np(data[0]), _np(data[1])
    mu = np.stack([h[y == k].mean(0) for k in range(K)])
    cov = sum((h[y == k] - mu[k]).T @ (h[y == k] - mu[k]) for k in range(K)) / len(h)
    p, p0 = np.linalg.pinv(cov), np.linalg.pinv(np.cov(h.T, bias=True))
    md = np.stack([np.einsum("nd,de,ne->n", ht - mu[k], p, ht - mu[k]) for k in range(K)], 1)
    md0 = np.einsum("nd,de,ne->n", ht - h.mean(0), p0, ht - h.mean(0))
    np.testing.assert_allclose(scores["mahalanobis"], -md.min(1), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(scores["relative_mahalanobis"], -(md - md0[:, None]).min(1), rtol=1e-8, atol=1e-8)


def test_knn_against_sklearn_and_chunked_equals_brute_force(data, scores):
    from sklearn.neighbors import NearestNeighbors

    (h, *_), (ht, *_) = _np(data[0]), _np(data[1])
    nrm = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    dist, _ = NearestNeighbors(n_neighbors=10, algorithm="brute").fit(nrm(h)).kneighbors(nrm(ht))
    np.testing.assert_allclose(scores["knn"], -dist[:, -1], rtol=0, atol=1e-6)
    fit = F.KNNFit(data[0], k=10)
    x = torch.as_tensor(np.asarray(data[1].features))
    whole = fit.score(x, bank_chunk=10_000, query_chunk=10_000)        # one block: the full N x M matrix
    for bank_chunk, query_chunk in ((10, 7), (33, 200), (600, 1)):
        assert torch.equal(fit.score(x, bank_chunk=bank_chunk, query_chunk=query_chunk), whole)
    assert np.array_equal(scores["knn"], whole.numpy())


def test_vim_against_numpy(data, scores):
    (h, _, w, b), (ht, *_) = _np(data[0]), _np(data[1])
    dim = F.default_vim_dim(D)
    assert dim == D // 2 and F.default_vim_dim(2048) == 1000 and F.default_vim_dim(768) == 512
    u = -np.linalg.pinv(w) @ b
    vals, vecs = np.linalg.eigh((h - u).T @ (h - u) / len(h))
    ns = vecs[:, np.argsort(vals)[::-1][dim:]]
    alpha = (h @ w.T + b).max(1).sum() / np.linalg.norm((h - u) @ ns, axis=1).sum()
    z = ht @ w.T + b
    energy = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)
    ref = energy - alpha * np.linalg.norm((ht - u) @ ns, axis=1)
    np.testing.assert_allclose(scores["vim"], ref, rtol=1e-9, atol=1e-9)


def test_react_percentile_and_energy_against_numpy(data, scores, monkeypatch):
    (h, _, w, b), (ht, *_) = _np(data[0]), _np(data[1])
    c = np.percentile(h, 90)
    z = np.minimum(ht, c) @ w.T + b
    np.testing.assert_allclose(scores["react_energy"], np.log(np.exp(z).sum(1)), rtol=1e-12)
    monkeypatch.setattr(F, "_GATHER_LIMIT", 40)         # force the histogram refinement, several rounds
    for p in (0, 5, 37.3, 60, 90, 99.9, 100):
        got = F.activation_percentile(data[0], p, chunk_size=97)
        assert got == pytest.approx(np.percentile(h, p), rel=1e-12, abs=1e-12), p


def test_react_percentile_100_is_plain_energy(data):
    from repanalysis.analyze.confidence import confidence_scores

    train, test, _ = data
    assert np.asarray(test.features).max() <= np.asarray(train.features).max()
    s = F.FeatureOOD(["react_energy"], react_percentile=100).fit(train).score(test)["react_energy"]
    plain = confidence_scores(np.asarray(test.logits, np.float64))["energy"].numpy()
    np.testing.assert_allclose(s, plain, rtol=1e-5)    # the Dump's logits are float32


def test_metrics_and_aupr_against_sklearn(data):
    from sklearn.metrics import average_precision_score, roc_auc_score

    train, test, ood = data
    res = F.ood_feature_detection(train, test, ood, knn_k=10, name="m")
    det = F.FeatureOOD(knn_k=10).fit(train)
    si, so = det.score(test), det.score(ood)
    y = np.r_[np.ones(len(test.labels)), np.zeros(len(ood.labels))]
    for k in F.FEATURE_SCORES:
        s = np.r_[si[k], so[k]]
        assert res.auroc[k] == pytest.approx(roc_auc_score(y, s))
        assert res.aupr_in[k] == pytest.approx(average_precision_score(y, s))
        assert res.aupr_out[k] == pytest.approx(average_precision_score(1 - y, -s))
        assert 0 <= res.fpr_at_95_tpr[k] <= 1
    assert res.auroc["mahalanobis"] > 0.9               # the shifted set is far from the training classes
    d = res.to_dict()
    assert set(d["aupr_in"]) == set(F.FEATURE_SCORES)
    frame = res.to_frame()
    assert set(frame.metric) == {"auroc", "fpr_at_95_tpr", "aupr_in", "aupr_out"}
    assert len(frame) == 4 * len(F.FEATURE_SCORES)
    from repanalysis.analyze.confidence import SCORES, ood_detection

    logit = ood_detection(test.logits, ood.logits, test.features, ood.features, name="m")
    assert len(logit.to_frame()) == 2 * len(SCORES) and len(logit.to_frame(aupr=True)) == 4 * len(SCORES)
    merged = F.merge_ood_results(logit, res)
    assert set(merged.auroc) == {*SCORES, *F.FEATURE_SCORES} and len(merged.to_frame()) == 4 * len(merged.auroc)
    assert merged.aupr_out["knn"] == res.aupr_out["knn"] and merged.aupr_in["energy"] == logit.aupr_in["energy"]


def test_bad_inputs(data):
    train, test, ood = data
    with pytest.raises(DataError, match="exceeds"):
        F.FeatureOOD(["knn"], knn_k=10_000).fit(train)
    with pytest.raises(DataError, match="unknown feature OOD"):
        F.FeatureOOD(["odin"])
    with pytest.raises(DataError, match="principal dimension"):
        F.FeatureOOD(["vim"], vim_dim=D).fit(train)
    no_w = Dump.from_arrays(train.logits, train.labels, train.features)
    with pytest.raises(DataError, match="classifier_weight"):
        F.FeatureOOD(["vim"]).fit(no_w)
    with pytest.raises(DataError, match="percentile"):
        F.FeatureOOD(["react_energy"], react_percentile=101).fit(train)


# --- pytorch-ood ---------------------------------------------------------------------------------------------
def test_against_pytorch_ood(data, scores):
    det = pytest.importorskip("pytorch_ood.detector")
    train, test, _ = data
    h, y = torch.as_tensor(np.asarray(train.features)), torch.as_tensor(np.asarray(train.labels))
    ht = torch.as_tensor(np.asarray(test.features))
    w, b = torch.as_tensor(train.classifier_weight), torch.as_tensor(train.classifier_bias)
    n = len(h)
    # pytorch-ood's covariance is the scatter sum (not / N) and its outlier score -max_k(-MD_k / 2): ours = -2N x
    m = det.Mahalanobis(None).fit_features(h, y)
    np.testing.assert_allclose(scores["mahalanobis"], -2 * n * m.predict_features(ht).double().numpy(), rtol=1e-4)
    r = det.RMD(None).fit_features(h, y)
    np.testing.assert_allclose(scores["relative_mahalanobis"], -n * r.predict_features(ht).double().numpy(),
                               rtol=1e-4, atol=1e-3)
    k = det.KNN(None, k=10).fit_features(h, y)
    np.testing.assert_allclose(scores["knn"], -k.predict_features(ht).numpy(), atol=1e-6)
    v = det.ViM(None, d=F.default_vim_dim(D), w=w, b=b).fit_features(h, y)
    np.testing.assert_allclose(scores["vim"], -v.predict_features(ht).double().numpy(), rtol=1e-4, atol=1e-3)
    head = lambda x: x @ w.double().T + b.double()  # noqa: E731
    rc = det.ReAct(backbone=None, head=head, percentile=0.9).fit_feature_maps(h, y)
    np.testing.assert_allclose(scores["react_energy"], -rc.predict_feature_maps(ht.double()).numpy(),
                               rtol=1e-6, atol=1e-6)      # its threshold is np.percentile in float32


# --- the command on real Dumps -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_ood_dump(real_checkpoints, tmp_path_factory):
    """The CE checkpoint on scikit-learn's load_digits (8x8, upscaled to 28x28): a Dump of the same model on
    other images."""
    import repanalysis as ra
    from sklearn.datasets import load_digits
    from repanalysis.train.trainer import write_npz

    folder = tmp_path_factory.mktemp("digits_ood")
    dg = load_digits()
    img = np.kron(dg.images[:400], np.ones((3, 3)))                      # 24 x 24
    img = np.pad(img, ((0, 0), (2, 2), (2, 2))) * (255 / 16)
    path = write_npz(folder / "digits.npz", img.astype(np.uint8), dg.target[:400].astype(np.int64),
                     [str(i) for i in range(10)])
    lm = ra.load_model(real_checkpoints["CE"])
    return ra.extract(lm, path, folder / "dump", progress=False, workers=0, batch_size=256, name="CE")


@pytest.mark.slow
def test_cli_ood_with_train_on_real_dumps(real_dumps, digits_ood_dump, tmp_path, capsys):
    from tests._cli import run_cli
    from repanalysis import load_dump

    train, test = real_dumps["CE"]["train"], real_dumps["CE"]["test"]
    out = tmp_path / "out"
    code, stdout, stderr = run_cli(["ood", "--in", str(test.path), "--ood", str(digits_ood_dump.path), "--train",
                                    str(train.path), "--knn-k", "20", "--out", str(out)], capsys)
    assert code == 0, stderr
    assert "AUPR-in" in stdout and "relative_mahalanobis" in stdout
    got = json.loads((out / "ood.json").read_text())["models"][0]
    assert set(got["auroc"]) == {"max_softmax", "max_logit", "energy", "feature_l1", *F.FEATURE_SCORES}
    assert (out / "ood_roc.png").exists()
    ref = F.ood_feature_detection(load_dump(train.path), load_dump(test.path), load_dump(digits_ood_dump.path),
                                  knn_k=20)
    # the reference: the brute-force numpy Mahalanobis and sklearn KNN on the same real features
    from sklearn.metrics import roc_auc_score
    from sklearn.neighbors import NearestNeighbors

    h, y = np.asarray(train.features, np.float64), np.asarray(train.labels)
    hi, ho = (np.asarray(d.features, np.float64) for d in (test, digits_ood_dump))
    mu = np.stack([h[y == k].mean(0) for k in np.unique(y)])
    p = np.linalg.pinv(sum((h[y == k] - mu[i]).T @ (h[y == k] - mu[i]) for i, k in enumerate(np.unique(y))) / len(h))
    maha = lambda x: -np.stack([np.einsum("nd,de,ne->n", x - m, p, x - m) for m in mu], 1).min(1)  # noqa: E731
    nrm = lambda a: a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)  # noqa: E731
    nn = NearestNeighbors(n_neighbors=20, algorithm="brute").fit(nrm(h))
    knn = lambda x: -nn.kneighbors(nrm(x))[0][:, -1]  # noqa: E731
    lab = np.r_[np.ones(len(hi)), np.zeros(len(ho))]
    for key, fn in (("mahalanobis", maha), ("knn", knn)):
        want = roc_auc_score(lab, np.r_[fn(hi), fn(ho)])
        assert got["auroc"][key] == pytest.approx(want, abs=1e-6)
        assert ref.auroc[key] == pytest.approx(want, abs=1e-6)
    for key in F.FEATURE_SCORES:
        assert got["aupr_in"][key] == pytest.approx(ref.aupr_in[key])
        assert got["fpr_at_95_tpr"][key] == pytest.approx(ref.fpr_at_95_tpr[key])


@pytest.mark.slow
def test_cli_ood_train_count_must_match(real_dumps, digits_ood_dump, tmp_path, capsys):
    from tests._cli import run_cli

    test = real_dumps["CE"]["test"]
    code, _, stderr = run_cli(["ood", "--in", str(test.path), "--ood", str(digits_ood_dump.path), "--train",
                               str(test.path), "--train", str(test.path), "--out", str(tmp_path)], capsys)
    assert code != 0 and "--train" in stderr
