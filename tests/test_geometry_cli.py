"""The geometry commands (separation, features, embed, collapse, transfer) and the demo step."""
import csv
import json
import warnings

import numpy as np
import pytest

import repanalysis  # noqa: F401
from repanalysis.analyze.collapse import neural_collapse
from repanalysis.analyze.geometry import class_separation
from repanalysis.analyze.projection import project_dump
from repanalysis.extract.store import Dump, load_dump
from _cli import run_cli as _cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NAMES = ["zero", "one", "two", "three", "four", "five"]


def _dump(seed, n=240, d=12, k=6, spread=1.0, split="train", name="CE", weights=True):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    h = np.maximum(rng.normal(size=(k, d))[y] * 2 + spread * rng.normal(size=(n, d)), 0).astype(np.float32)
    w, b = rng.normal(size=(k, d)).astype(np.float32), rng.normal(size=k).astype(np.float32)
    return Dump.from_arrays(h @ w.T + b, y, h, class_names=NAMES, name=name, meta={"split": split},
                            classifier_weight=w if weights else None, classifier_bias=b if weights else None)


@pytest.fixture()
def dumps(tmp_path):
    out = {}
    for i, (name, spread) in enumerate((("CE", 1.0), ("LS", 2.0))):
        for j, split in enumerate(("train", "val")):
            out[name, split] = str(_dump(10 * i + j, spread=spread, split=split, name=name)
                                   .save(tmp_path / f"{name}_{split}").path)
    return out


@pytest.fixture(autouse=True)
def _plain_warnings(monkeypatch):
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)


def test_separation_cli(tmp_path, dumps, capsys):
    out = tmp_path / "o"
    code, stdout, stderr = _cli(["separation", *dumps.values(), "--out", str(out)], capsys)
    assert code == 0, stderr
    lines = stdout.splitlines()
    assert lines[0].split() == ["model", "d_within", "train", "d_within", "val", "d_total", "train", "d_total",
                                "val", "R^2", "train", "R^2", "val"]
    want = class_separation(load_dump(dumps["LS", "val"]))
    assert lines[3].split()[0] == "LS" and float(lines[3].split()[2]) == pytest.approx(want.d_within, abs=1e-4)
    data = json.loads((out / "separation.json").read_text())
    assert data[3]["r2"] == pytest.approx(want.r2) and data[3]["split"] == "val"
    assert (out / "separation.png").read_bytes()[:8] == PNG_MAGIC
    code, stdout, _ = _cli(["separation", dumps["CE", "train"], "--json", "--out", str(out)], capsys)
    assert code == 0 and json.loads(stdout)[0]["name"] == "CE"


def test_features_cli_writes_figure_and_csv(tmp_path, dumps, capsys):
    out = tmp_path / "f"
    code, stdout, stderr = _cli(["features", "--dump", dumps["CE", "val"], "--dump", dumps["LS", "val"],
                                 "--names", "A,B", "--classes", "Four,one,zero", "--samples-per-class", "15",
                                 "--seed", "3", "--out", str(out)], capsys)
    assert code == 0, stderr
    assert stdout.splitlines()[2].split()[:3] == ["A", "template", "four,one,zero"]
    rows = list(csv.DictReader((out / "projection_template_coords.csv").open()))
    assert len(rows) == 2 * 3 * 15 and {r["model"] for r in rows} == {"A", "B"}
    # another method writes its own coordinates beside its own figure, leaving the template ones in place
    code, _, stderr = _cli(["features", "--dump", dumps["CE", "val"], "--classes", "Four,one,zero", "--method",
                            "centroid", "--samples-per-class", "15", "--out", str(out)], capsys)
    assert code == 0, stderr
    assert len(list(csv.DictReader((out / "projection_template_coords.csv").open()))) == 2 * 3 * 15
    assert len(list(csv.DictReader((out / "projection_centroid_coords.csv").open()))) == 3 * 15
    ref = project_dump(load_dump(dumps["LS", "val"]), [4, 1, 0], samples_per_class=15, seed=3)
    b_rows = [r for r in rows if r["model"] == "B"]
    np.testing.assert_allclose([[float(r["x"]), float(r["y"])] for r in b_rows], ref.coords, atol=1e-6)
    assert [int(r["sample"]) for r in b_rows] == ref.sample_index.tolist()
    assert (out / "projection_template.png").read_bytes()[:8] == PNG_MAGIC
    assert (out / "projection_template.pdf").read_bytes()[:4] == b"%PDF"


def test_features_cli_errors(tmp_path, dumps, capsys):
    no_w = str(_dump(5, weights=False).save(tmp_path / "now").path)
    no_f = str(Dump.from_arrays(np.zeros((5, 6)), np.arange(5), class_names=NAMES).save(tmp_path / "nof").path)
    out = str(tmp_path / "o")
    cases = [
        (["--dump", dumps["CE", "val"], "--classes", "fuor,one,zero"], "did you mean 'four'"),
        (["--dump", dumps["CE", "val"], "--classes", "four,zero"], "expected 3 classes"),
        (["--dump", no_w, "--classes", "four,one,zero"], "--method centroid"),
        (["--dump", no_f, "--classes", "four,one,zero"], "no 'features' array"),
        (["--dump", dumps["CE", "val"], "--names", "a,b", "--classes", "auto"], "--names has 2 names"),
    ]
    for args, message in cases:
        code, _, stderr = _cli(["features", *args, "--out", out], capsys)
        assert code == 2, (args, stderr)
        assert stderr.startswith("error: ") and message in stderr and stderr.count("\n") == 1, stderr
    code, _, stderr = _cli(["features", "--dump", no_w, "--classes", "four,one,zero", "--method", "centroid",
                            "--out", out], capsys)
    assert code == 0, stderr


def test_features_cli_uses_run_folder(tmp_path, dumps, capsys, monkeypatch):
    runs = tmp_path / "runs"
    for name in ("CE", "LS"):
        load_dump(dumps[name, "val"]).save(runs / name.lower() / "features")
    monkeypatch.setenv("REPANALYSIS_RUNS", str(runs))
    code, stdout, stderr = _cli(["features", "--classes", "auto", "--out", str(tmp_path / "o")], capsys)
    assert code == 0, stderr
    assert [line.split()[0] for line in stdout.splitlines()[2:]] == ["ce", "ls"]


def test_collapse_and_transfer_cli(tmp_path, dumps, capsys):
    out = tmp_path / "c"
    code, stdout, stderr = _cli(["collapse", dumps["CE", "train"], dumps["LS", "train"], "--out", str(out)], capsys)
    assert code == 0, stderr
    data = json.loads((out / "collapse.json").read_text())
    ref = neural_collapse(load_dump(dumps["LS", "train"]))
    assert data[1]["nc1"] == pytest.approx(ref.nc1) and data[1]["vci"] == pytest.approx(ref.vci)
    assert stdout.splitlines()[0].split()[:2] == ["model", "NC1"]
    assert (out / "feature_norms.png").read_bytes()[:8] == PNG_MAGIC
    code, stdout, stderr = _cli(["transfer", "--train", dumps["CE", "train"], "--test", dumps["CE", "val"],
                                 "--l2", "1e-3", "--device", "cpu", "--json", "--out", str(tmp_path / "t")], capsys)
    assert code == 0, stderr
    res = json.loads(stdout)[0]
    assert res["l2"] == 1e-3 and res["n_train"] == 240 and res["num_classes"] == 6 and 0 <= res["test_accuracy"] <= 1
    code, _, stderr = _cli(["transfer", "--train", dumps["CE", "train"], "--test", dumps["CE", "val"],
                            "--test", dumps["LS", "val"]], capsys)
    assert code == 2 and "one pair per model" in stderr


def test_embed_cli(tmp_path, dumps, capsys):
    out = tmp_path / "e"
    code, stdout, stderr = _cli(["embed", dumps["CE", "val"], "--classes", "zero,one,two", "--method", "tsne",
                                 "--samples-per-class", "12", "--quiet", "--out", str(out)], capsys)
    assert code == 0, stderr
    rows = list(csv.DictReader((out / "embedding_tsne_coords.csv").open()))
    assert len(rows) == 36 and {r["class"] for r in rows} == {"zero", "one", "two"}
    assert (out / "embedding_tsne.png").read_bytes()[:8] == PNG_MAGIC


def test_real_mnist_checkpoints_end_to_end(tmp_path, real_checkpoints, real_data, real_dumps, capsys, monkeypatch):
    """Real CNNs on real MNIST: brute force on real features, --checkpoint extraction, a logits-only run."""
    test = real_dumps["CE"]["test"]
    h = np.asarray(test.features, dtype=np.float64)
    y = np.asarray(test.labels)
    u = h / np.linalg.norm(h, axis=1, keepdims=True)
    dist = 1 - u @ u.T
    ks = np.unique(y)
    d_within = np.mean([dist[np.ix_(y == k, y == k)].mean() for k in ks])
    d_total = np.mean([dist[np.ix_(y == j, y == k)].mean() for j in ks for k in ks])
    r = class_separation(test)
    assert r.d_within == pytest.approx(d_within, abs=1e-6) and r.d_total == pytest.approx(d_total, abs=1e-6)

    runs = tmp_path / "runs"
    monkeypatch.setenv("REPANALYSIS_RUNS", str(runs))
    ce, ls = real_checkpoints["CE"], real_checkpoints["LS"]
    code, stdout, stderr = _cli(["features", "--checkpoint", str(ce), "--data", str(real_data["test"]),
                                 "--classes", "four,seven,nine", "--out", str(tmp_path / "f1")], capsys)
    assert code == 0, stderr
    assert (runs / ce.stem / "features" / "meta.json").exists()
    # a run with logits only: the bare command extracts its features from the checkpoint its meta names
    code, _, stderr = _cli(["logits", "--checkpoint", str(ls), "--data", str(real_data["test"]), "--quiet"], capsys)
    assert code == 0, stderr
    code, stdout, stderr = _cli(["features", "--classes", "four,seven,nine", "--out", str(tmp_path / "f2")], capsys)
    assert code == 0, stderr
    assert (runs / ls.stem / "features" / "meta.json").exists()
    assert [line.split()[0] for line in stdout.splitlines()[2:]] == [ce.stem, ls.stem]
    rows = list(csv.DictReader((tmp_path / "f2" / "projection_template_coords.csv").open()))
    assert len(rows) == 2 * 3 * 80


def _sklearn_probe(train, test, l2):
    """scikit-learn's LogisticRegression on the same standardised features, fitted to convergence, with the same
    objective as the probe: mean CE + (l2 / 2) ||W||^2 <=> C = 1 / (n * l2); (test acc, train acc, test NLL)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.preprocessing import StandardScaler

    x_tr, x_te = np.asarray(train.features, np.float64), np.asarray(test.features, np.float64)
    y_tr, y_te = np.asarray(train.labels), np.asarray(test.labels)
    scaler = StandardScaler().fit(x_tr)
    ref = LogisticRegression(C=1.0 / (len(x_tr) * l2), tol=1e-10, max_iter=20000).fit(scaler.transform(x_tr), y_tr)
    return (ref.score(scaler.transform(x_te), y_te), ref.score(scaler.transform(x_tr), y_tr),
            log_loss(y_te, ref.predict_proba(scaler.transform(x_te)), labels=ref.classes_))


def test_transfer_cli_matches_sklearn_logistic_regression(tmp_path, dumps, capsys):
    code, stdout, stderr = _cli(["transfer", "--train", dumps["CE", "train"], "--test", dumps["CE", "val"],
                                 "--train", dumps["LS", "train"], "--test", dumps["LS", "val"], "--names", "A,B",
                                 "--l2", "1e-2", "--device", "cpu", "--json", "--quiet", "--out",
                                 str(tmp_path / "t")], capsys)
    assert code == 0, stderr
    rows = json.loads(stdout)
    assert [r["name"] for r in rows] == ["A", "B"]
    for row, name in zip(rows, ("CE", "LS")):
        test_acc, train_acc, nll = _sklearn_probe(load_dump(dumps[name, "train"]), load_dump(dumps[name, "val"]), 1e-2)
        assert row["test_accuracy"] == pytest.approx(test_acc, abs=1e-6), name     # the same predictions
        assert row["train_accuracy"] == pytest.approx(train_acc, abs=1e-6), name
        assert row["test_nll"] == pytest.approx(nll, rel=1e-3), name
    assert json.loads((tmp_path / "t" / "transfer.json").read_text()) == rows


def test_demo_step(tmp_path, monkeypatch, real_checkpoints):
    from repanalysis.demo import DemoContext, discover_steps
    from repanalysis.demo.steps import geometry as step

    assert step in discover_steps() and step.ORDER == 30
    names10 = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    dumps = {}
    for i, name in enumerate(("CE", "LS", "MaxSup")):
        dumps[name] = {s: _dump(3 * i + j, n=300, k=10, split=s, name=name) for j, s in enumerate(("train", "test"))}
        for d in dumps[name].values():
            d.meta["class_names"] = names10
    monkeypatch.setattr(step, "EMBED_METHOD", "tsne")
    logs = []
    # the synthetic Dumps stand in for the analyses; the downstream probe extracts the real checkpoints' features
    ctx = DemoContext(out=tmp_path, checkpoints=dict(real_checkpoints), dumps=dumps, data={},
                      class_names=names10, device="cpu", log=logs.append)
    step.run(ctx)
    for stem in ("separation", "projection_template", "projection_centroid", "embedding_tsne", "feature_norms"):
        assert (tmp_path / "geometry" / f"{stem}.png").read_bytes()[:8] == PNG_MAGIC, stem
    assert any("R^2 train" in line for line in logs)
    # the real probe on scikit-learn's digits, against LogisticRegression at the strength the probe chose
    probes = json.loads((tmp_path / "geometry" / "transfer.json").read_text())
    assert [p["name"] for p in probes] == ["CE", "LS", "MaxSup"]
    for p in probes:
        train, test = (load_dump(tmp_path / "geometry" / "downstream" / f"{p['name']}_{s}") for s in ("train", "test"))
        assert (p["n_train"], p["n_test"], p["num_classes"]) == (len(train.labels), len(test.labels), 10) == \
            (1200, 597, 10)
        assert train.meta["checkpoint"]["sha256"] == test.meta["checkpoint"]["sha256"]     # the model's own features
        assert p["val_accuracy"][str(p["l2"])] == max(p["val_accuracy"].values())
        test_acc, train_acc, nll = _sklearn_probe(train, test, p["l2"])
        assert p["test_accuracy"] == pytest.approx(test_acc, abs=1e-6), p["name"]
        assert p["train_accuracy"] == pytest.approx(train_acc, abs=1e-6), p["name"]
        assert p["test_nll"] == pytest.approx(nll, rel=2e-2), p["name"]
    assert any("downstream test acc" in line for line in logs)


def test_separation_json_names_two_models_of_one_name_apart_with_their_sources(tmp_path, capsys):
    # two different Dumps both named M, both train: the table said "M" and "M (2)" but the JSON said "M" twice
    a, b = tmp_path / "a" / "M", tmp_path / "b" / "M"
    _dump(1, name="M").save(a)
    _dump(2, name="M", spread=2.0).save(b)
    code, _, stderr = _cli(["separation", str(a), str(b), "--out", str(tmp_path / "o")], capsys)
    assert code == 0, stderr
    payload = json.loads((tmp_path / "o" / "separation.json").read_text())
    assert [(e["name"], e["model"], e["source"]) for e in payload] == [("M", "M", str(a)), ("M", "M (2)", str(b))]
    assert payload[1]["r2"] == pytest.approx(class_separation(load_dump(b)).r2, abs=1e-12)
