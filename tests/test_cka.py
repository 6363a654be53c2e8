"""Linear CKA (Kornblith et al. 2019) and minibatch CKA (Nguyen et al. 2021): the library against an independent
numpy implementation written here, on data whose answer is known; the command on real MNIST Dumps and
checkpoints."""
import json

import numpy as np
import pytest
import torch

import repanalysis  # noqa: F401
from repanalysis.analyze.cka import (CKAResult, LayerCKAResult, cka_matrix, hsic1, layer_cka, linear_cka,
                                     minibatch_cka)
from repanalysis.errors import DataError, DumpError
from repanalysis.extract.store import Dump
from _cli import run_cli


# --- independent numpy references ----------------------------------------------------------------------------------
def np_linear_cka(x, y):
    """Kornblith et al. 2019, feature space (their colab): centre, then ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def np_gram_cka(x, y):
    """The same CKA by n x n Gram matrices: HSIC(K, L) = tr(K H L H) / (n-1)^2 (Kornblith et al. 2019, Eq. 3-4)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = len(x)
    h = np.eye(n) - 1.0 / n
    k, l = h @ x @ x.T @ h, h @ y @ y.T @ h
    return np.sum(k * l) / np.sqrt(np.sum(k * k) * np.sum(l * l))


def np_hsic1(k, l):
    """Song et al. 2012 unbiased HSIC, written from the formula with explicit loops-free numpy."""
    n = k.shape[0]
    kt, lt = k.copy(), l.copy()
    np.fill_diagonal(kt, 0.0)
    np.fill_diagonal(lt, 0.0)
    ones = np.ones(n)
    return (np.trace(kt @ lt) + (ones @ kt @ ones) * (ones @ lt @ ones) / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * (ones @ kt @ lt @ ones)) / (n * (n - 3))


def np_minibatch_cka(x, y, batch_size, seed):
    """Nguyen et al. 2021: mean HSIC_1 over minibatches (here the groups of a seeded permutation), normalised."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = len(x)
    order = np.arange(n) if seed is None else np.random.default_rng(seed).permutation(n)
    kl = kk = ll = 0.0
    for b in range(n // batch_size):
        idx = order[b * batch_size:(b + 1) * batch_size]
        k, l = x[idx] @ x[idx].T, y[idx] @ y[idx].T
        kl += np_hsic1(k, l)
        kk += np_hsic1(k, k)
        ll += np_hsic1(l, l)
    return kl / np.sqrt(kk * ll)


def _pair(n=600, p=12, q=9, seed=0, noise=1.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, p)) * rng.uniform(0.5, 3.0, size=p) + rng.normal(size=p) * 4
    y = np.tanh(x @ rng.normal(size=(p, q))) + noise * rng.normal(size=(n, q))
    return x, y


def _orthogonal(d, seed=1):
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q * np.sign(np.diag(r))


# --- exact linear CKA ---------------------------------------------------------------------------------------------
def test_reference_implementations_agree():
    x, y = _pair(n=200)
    assert np_linear_cka(x, y) == pytest.approx(np_gram_cka(x, y), abs=1e-12)


def test_orthogonal_map_gives_one():
    x, _ = _pair()
    q = _orthogonal(x.shape[1])
    assert np_linear_cka(x, x @ q) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, x @ q) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, -2.5 * x @ q + 7.0) == pytest.approx(1.0, abs=1e-12)   # scaled, translated, rotated
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)


def test_invariant_to_isotropic_scaling_and_translation():
    x, y = _pair()
    base = linear_cka(x, y)
    assert base == pytest.approx(np_linear_cka(x, y), abs=1e-12)
    assert 0.05 < base < 0.95
    rng = np.random.default_rng(3)
    for x2, y2 in ((3.0 * x, y), (x, 0.01 * y), (x + rng.normal(size=x.shape[1]) * 100, y),
                   (0.2 * x - 5.0, 40.0 * y + rng.normal(size=y.shape[1]))):
        assert linear_cka(x2, y2) == pytest.approx(base, abs=1e-10)


def test_not_invariant_to_a_non_orthogonal_linear_map():
    x, _ = _pair(n=800)
    a = np.random.default_rng(5).normal(size=(x.shape[1], x.shape[1]))
    a[:, 0] *= 10.0                              # invertible, far from orthogonal
    assert np.linalg.matrix_rank(a) == x.shape[1]
    value = linear_cka(x, x @ a)
    assert value < 0.95
    assert value == pytest.approx(np_linear_cka(x, x @ a), abs=1e-12)
    # and a map of another width
    b = np.random.default_rng(6).normal(size=(x.shape[1], 5))
    assert linear_cka(x, x @ b) == pytest.approx(np_linear_cka(x, x @ b), abs=1e-12)


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 599, 600, 10_000])
def test_streamed_chunks_equal_the_one_shot_value(chunk_size):
    x, y = _pair()
    whole = linear_cka(x, y, chunk_size=len(x))
    assert linear_cka(x, y, chunk_size=chunk_size) == pytest.approx(whole, abs=1e-12)
    assert whole == pytest.approx(np_linear_cka(x, y), abs=1e-12)


def test_large_feature_means_keep_precision():
    """ReLU-like features with a mean 10^4 times their spread: the shifted accumulation loses nothing."""
    x, y = _pair(n=2000)
    xs, ys = x + 1e4, y - 3e4
    assert linear_cka(xs, ys, chunk_size=128) == pytest.approx(np_linear_cka(x, y), abs=1e-9)


def test_float32_chunk_products_stay_within_float32_rounding():
    x, y = _pair(n=3000, p=40, q=30)
    want = np_linear_cka(x + 1e3, y)
    got = cka_matrix([x + 1e3, y], precision="float32", chunk_size=500)
    assert got.precision == "float32" and got.matrix[0, 1] == pytest.approx(want, abs=1e-6)
    with pytest.raises(DataError, match="unknown precision"):
        linear_cka(x, y, precision="float16")


def test_float16_memmap_tensor_and_device_inputs(tmp_path):
    x, y = _pair()
    x16 = x.astype(np.float16)
    path = tmp_path / "x.npy"
    np.save(path, x16)
    mm = np.load(path, mmap_mode="r")
    want = np_linear_cka(x16.astype(np.float64), y)
    assert linear_cka(mm, y, chunk_size=100) == pytest.approx(want, abs=1e-12)
    assert linear_cka(torch.from_numpy(x16), torch.from_numpy(y), device="cpu") == pytest.approx(want, abs=1e-12)
    assert minibatch_cka(torch.from_numpy(x), y, batch_size=100) == pytest.approx(
        np_minibatch_cka(x, y, 100, 0), abs=1e-12)


def test_nan_rows_are_excluded_from_both_sets_with_a_warning():
    x, y = _pair()
    x = x.copy()
    x[[3, 50]] = np.nan
    y = y.copy()
    y[100, 0] = np.inf
    keep = np.ones(len(x), bool)
    keep[[3, 50, 100]] = False
    with pytest.warns(RuntimeWarning, match="3 of 600 rows"):
        value = linear_cka(x, y, chunk_size=64)
    assert value == pytest.approx(np_linear_cka(x[keep], y[keep]), abs=1e-12)


def test_bad_inputs_are_named():
    x, y = _pair()
    with pytest.raises(DataError, match="different numbers of rows"):
        linear_cka(x, y[:-1])
    with pytest.raises(DataError, match="2-D"):
        linear_cka(x[:, 0], y)
    with pytest.raises(DataError, match="batch_size"):
        minibatch_cka(x, y, batch_size=3)
    with pytest.raises(DataError, match="at least that many rows"):
        minibatch_cka(x, y, batch_size=1000)
    with pytest.raises(DataError, match="unknown CKA method"):
        cka_matrix([x, y], method="rbf")
    with pytest.raises(DataError, match="at least 2"):
        cka_matrix([x])
    with pytest.warns(RuntimeWarning, match="do not vary"):
        assert np.isnan(linear_cka(x, np.ones_like(y)))


# --- minibatch CKA ---------------------------------------------------------------------------------------------------
def test_hsic1_equals_the_formula():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(40, 6)), rng.normal(size=(40, 3))
    k, l = a @ a.T, (a[:, :3] + b) @ (a[:, :3] + b).T
    assert float(hsic1(torch.from_numpy(k), torch.from_numpy(l))) == pytest.approx(np_hsic1(k, l), rel=1e-12)


@pytest.mark.parametrize("seed", [0, 7, None])
def test_minibatch_equals_numpy_on_the_same_batches(seed):
    x, y = _pair(n=1000)
    got = minibatch_cka(x, y, batch_size=128, seed=seed, chunk_size=300)   # 7 batches, 104 rows left out
    assert got == pytest.approx(np_minibatch_cka(x, y, 128, seed), abs=1e-12)


def test_minibatch_close_to_exact_for_large_batches():
    x, y = _pair(n=20_000, noise=0.7, seed=4)
    exact = linear_cka(x, y)
    assert abs(minibatch_cka(x, y, batch_size=5000, seed=1) - exact) < 0.01
    assert abs(minibatch_cka(x, y, batch_size=256, seed=1) - exact) < 0.03
    q = _orthogonal(x.shape[1])
    assert minibatch_cka(x, 3 * x @ q - 1, batch_size=500) == pytest.approx(1.0, abs=1e-10)


# --- several models: Dumps ---------------------------------------------------------------------------------------
def _dumps(n=500, names=("CE", "LS", "MaxSup"), labels_seed=0):
    rng = np.random.default_rng(labels_seed)
    y = rng.integers(0, 4, n)
    base = rng.normal(size=(4, 16))[y] + rng.normal(size=(n, 16))
    out = []
    for i, name in enumerate(names):
        h = np.maximum(base @ np.random.default_rng(10 + i).normal(size=(16, 8 + 4 * i)), 0).astype(np.float32)
        z = h[:, :4].astype(np.float32)
        out.append(Dump.from_arrays(z, y, h, name=name, class_names=list("abcd")))
    return out


def test_cka_matrix_of_dumps_against_numpy():
    dumps = _dumps()
    r = cka_matrix(dumps)
    assert isinstance(r, CKAResult) and r.names == ["CE", "LS", "MaxSup"] and r.method == "linear" and r.n == 500
    want = np.array([[np_linear_cka(a.features, b.features) for b in dumps] for a in dumps])
    np.testing.assert_allclose(r.matrix, want, atol=1e-12)
    np.testing.assert_allclose(r.matrix, r.matrix.T)
    np.testing.assert_allclose(np.diag(r.matrix), 1.0)
    frame = r.to_frame()
    assert list(frame.columns[:4]) == ["model_a", "model_b", "metric", "value"] and len(frame) == 9
    assert set(frame.metric) == {"cka"}
    row = frame[(frame.model_a == "LS") & (frame.model_b == "MaxSup")].iloc[0]
    assert row.value == pytest.approx(want[1, 2], abs=1e-12)
    d = r.to_dict()
    assert d["names"] == r.names and np.allclose(d["matrix"], want)
    mb = cka_matrix(dumps, names=["a", "b", "c"], method="minibatch", batch_size=100, seed=3)
    assert mb.n == 500 and mb.n_batches == 5 and mb.batch_size == 100 and mb.seed == 3
    assert mb.matrix[0, 2] == pytest.approx(np_minibatch_cka(dumps[0].features, dumps[2].features, 100, 3),
                                            abs=1e-12)


def test_dumps_of_different_images_are_refused():
    a = _dumps(names=("CE",))[0]
    other_labels = _dumps(names=("LS",), labels_seed=1)[0]
    with pytest.raises(DataError, match="cka: sample .* has label"):
        cka_matrix([a, other_labels])
    shorter = a.subset(np.arange(400))
    with pytest.raises(DataError, match="cka: .* holds 500 samples but .* holds 400"):
        linear_cka(a, shorter)
    no_features = Dump.from_arrays(a.logits, a.labels, name="logits only", class_names=list("abcd"))
    with pytest.raises(DumpError, match="no 'features'"):
        cka_matrix([a, no_features])


def test_layer_cka_of_a_model_with_itself_and_another():
    x, y = _pair(n=400)
    feats = {"l1": x, "l2": y, "l3": np.tanh(y)}
    r = layer_cka(feats, feats, names=("M", "M"))
    assert isinstance(r, LayerCKAResult) and r.matrix.shape == (3, 3)
    np.testing.assert_allclose(np.diag(r.matrix), 1.0, atol=1e-12)
    np.testing.assert_allclose(r.matrix, r.matrix.T, atol=1e-12)
    other = {"a": x @ _orthogonal(x.shape[1]), "b": x + y[:, :1]}
    r2 = layer_cka(feats, other, names=("M", "N"))
    assert r2.matrix.shape == (3, 2) and r2.matrix[0, 0] == pytest.approx(1.0, abs=1e-12)
    assert r2.matrix[2, 1] == pytest.approx(np_linear_cka(np.tanh(y), x + y[:, :1]), abs=1e-12)
    frame = r2.to_frame()
    assert list(frame.columns[:6]) == ["model_a", "layer_a", "model_b", "layer_b", "metric", "value"]


def test_heatmaps_are_labelled():
    import matplotlib.pyplot as plt

    from repanalysis.plot.cka import plot_cka_heatmap, plot_layer_cka

    r = cka_matrix(_dumps())
    ax = plot_cka_heatmap(r)
    texts = [t.get_text() for t in ax.texts]
    assert len(texts) == 9 and f"{r.matrix[0, 1]:.3f}" in texts
    assert [t.get_text() for t in ax.get_xticklabels()] == ["CE", "LS", "MaxSup"]
    assert ax.get_xlabel() and ax.get_ylabel()
    assert any(other.get_ylabel() == "linear CKA" for other in ax.figure.axes if other is not ax)
    plt.close(ax.figure)
    x, y = _pair(n=200)
    ax = plot_layer_cka(layer_cka({"a": x, "b": y}, {"a": x, "b": y}, names=("CE", "LS")))
    assert ax.get_xlabel() == "layer of LS" and ax.get_ylabel() == "layer of CE" and len(ax.texts) == 4
    plt.close(ax.figure)
    with pytest.raises(DataError, match="CKAResult"):
        plot_cka_heatmap("not a result")


# --- the command on real MNIST models ------------------------------------------------------------------------------
def test_cli_on_real_dumps(real_dumps, tmp_path, capsys):
    names = ["CE", "LS", "MaxSup"]
    dumps = [real_dumps[n]["test"] for n in names]
    out = tmp_path / "cka"
    code, stdout, stderr = run_cli(["cka", *[str(d.path) for d in dumps], "--names", ",".join(names),
                                    "--out", str(out), "--device", "cpu"], capsys)
    assert code == 0, stderr
    data = json.loads((out / "cka.json").read_text())
    want = np.array([[np_linear_cka(a.features, b.features) for b in dumps] for a in dumps])
    np.testing.assert_allclose(np.array(data["matrix"]), want, atol=1e-10)
    assert data["names"] == names and data["method"] == "linear" and data["n"] == dumps[0].num_samples
    assert [p["name"] for p in data["provenance"]["inputs"]] == names
    assert (out / "cka.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (out / "cka.pdf").exists()
    assert stdout.splitlines()[1].split() == ["model", *names]
    assert float(stdout.splitlines()[4].split()[3]) == pytest.approx(want[1, 2], abs=1e-4)     # LS row, MaxSup column

    code, stdout, stderr = run_cli(["cka", str(dumps[0].path), str(dumps[2].path), "--minibatch", "256", "--seed",
                                    "5", "--json", "--out", str(out)], capsys)
    assert code == 0, stderr
    got = json.loads(stdout)
    assert got["method"] == "minibatch" and got["batch_size"] == 256 and got["seed"] == 5
    assert got["matrix"][0][1] == pytest.approx(np_minibatch_cka(dumps[0].features, dumps[2].features, 256, 5),
                                                abs=1e-10)

    # Dumps of different images: one line, non-zero exit
    code, _, stderr = run_cli(["cka", str(real_dumps["CE"]["train"].path), str(dumps[1].path), "--out", str(out)],
                              capsys)
    assert code != 0 and stderr.count("\n") == 1 and "expected Dumps of the same images" in stderr


def test_cli_layers_on_a_real_checkpoint(real_checkpoints, real_data, real_dumps, tmp_path, capsys):
    out = tmp_path / "layers"
    ckpt = str(real_checkpoints["CE"])
    code, stdout, stderr = run_cli(["cka", "--checkpoint", ckpt, "--checkpoint", ckpt, "--names", "CE,CE",
                                    "--layers", "auto", "--data", str(real_data["test"]), "--limit", "300",
                                    "--workers", "0", "--device", "cpu", "--out", str(out)], capsys)
    assert code == 0, stderr
    data = json.loads((out / "cka_layers.json").read_text())
    m = np.array(data["matrix"])
    assert data["layers_a"] == data["layers_b"] == ["features.0", "features.1", "features.2", "fc"]
    np.testing.assert_allclose(np.diag(m), 1.0, atol=1e-9)
    np.testing.assert_allclose(m, m.T, atol=1e-9)
    assert data["n"] == 300 and "average" in data["pooling"]
    assert (out / "cka_layers.png").exists() and "features.2" in stdout

    # the last stage, pooled, is the penultimate feature that extraction stores: same hooks, same numbers
    from repanalysis.extract.layers import layer_features

    (feats,) = layer_features([real_checkpoints["CE"]], real_data["test"], "features.2,fc", limit=300, workers=0,
                              device="cpu")
    dump = real_dumps["CE"]["test"]
    np.testing.assert_allclose(feats["features.2"], dump.features[:300], atol=1e-5)
    np.testing.assert_allclose(feats["fc"], dump.logits[:300], atol=1e-4)
    code, stdout, _ = run_cli(["cka", "--checkpoint", ckpt, "--checkpoint", str(real_checkpoints["LS"]),
                               "--layers", "features.2,fc", "--data", str(real_data["test"]), "--limit", "300",
                               "--workers", "0", "--device", "cpu", "--json", "--out", str(out)], capsys)
    assert code == 0
    ce_ls = json.loads(stdout)
    (ls,) = layer_features([real_checkpoints["LS"]], real_data["test"], "features.2,fc", limit=300, workers=0,
                           device="cpu")
    assert ce_ls["matrix"][0][1] == pytest.approx(np_linear_cka(feats["features.2"], ls["fc"]), abs=1e-6)

    code, _, stderr = run_cli(["cka", "--checkpoint", ckpt, "--layers", "features.2,nope", "--data",
                               str(real_data["test"]), "--out", str(out)], capsys)
    assert code != 0 and stderr.count("\n") == 1 and "no layer named 'nope'" in stderr
    code, _, stderr = run_cli(["cka", str(real_dumps["CE"]["test"].path), "--checkpoint", ckpt, "--out", str(out)],
                              capsys)
    assert code != 0 and "not both" in stderr
