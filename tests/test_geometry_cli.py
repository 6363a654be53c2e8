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
    data = json.loads((out / "separation.json").read_text())["results"]
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
    data = json.loads((out / "collapse.json").read_text())["results"]
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


def _record_probe_fits(monkeypatch):
    """Record every fit the probe makes as (l2, ProbeFit); a model's last one is its final fit on all train."""
    from repanalysis.analyze import transfer

    fits, fit_probe = [], transfer.fit_probe

    def record(x, y, num_classes, l2, *args, **kwargs):
        fits.append((l2, fit_probe(x, y, num_classes, l2, *args, **kwargs)))
        return fits[-1][1]

    monkeypatch.setattr(transfer, "fit_probe", record)
    return fits


def _objective(w, b, xs, y, l2):
    """The probe's objective in float64: mean CE(xs W^T + b, y) + (l2 / 2) ||W||^2 (bias not penalised)."""
    z = xs @ w.T + b
    z = z - z.max(1, keepdims=True)
    return np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(len(y)), y]) + 0.5 * l2 * np.sum(w * w)


def _check_against_sklearn(row, fit, train, test, l2, *, obj_rtol=2e-4, tie=0.1, nll_rtol):
    """The probe (its JSON row and its final fit) against scikit-learn's LogisticRegression on the same
    standardised features, fitted to convergence at the same l2 (mean CE + (l2 / 2) ||W||^2 <=> C = 1 / (n * l2)).

    Exact equality of accuracies is not well defined: at a small l2 the objective is flat (curvature ~l2 in some
    directions), so the float32 L-BFGS probe and sklearn's float64 solver agree on the optimum only to their
    tolerances, their logits differ by up to ~0.1-1 (l2 = 1e-5 .. 1e-6; ~0.03 at 1e-2), and an argmax can flip on
    a near-tie (seen: top-2 margins 0.001-0.02, varying with the torch thread count). Checked instead: (1) the
    objective at the probe's weights is within obj_rtol of sklearn's optimum (an unconverged probe was 1e-3-6e-2
    above at l2 <= 1e-5; a wrong objective is off by more); (2) predictions agree except on samples whose top-2
    logit margin under sklearn's fit is below ``tie``; (3) the reported accuracies are the fit's, so they match
    sklearn's up to those near-ties; (4) test NLL within nll_rtol."""
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.preprocessing import StandardScaler

    name = row["name"]
    x_tr, x_te = np.asarray(train.features, np.float64), np.asarray(test.features, np.float64)
    y_tr, y_te = np.asarray(train.labels), np.asarray(test.labels)
    scaler = StandardScaler().fit(x_tr)
    ref = LogisticRegression(C=1.0 / (len(x_tr) * l2), tol=1e-10, max_iter=20000).fit(scaler.transform(x_tr), y_tr)
    w, b = fit.weight.double().numpy(), fit.bias.double().numpy()
    ours = _objective(w, b, (x_tr - fit.mean.double().numpy()) / fit.scale.double().numpy(), y_tr, l2)
    best = _objective(ref.coef_, ref.intercept_, scaler.transform(x_tr), y_tr, l2)
    assert ours == pytest.approx(best, rel=obj_rtol), name
    for key, x, y in (("train_accuracy", x_tr, y_tr), ("test_accuracy", x_te, y_te)):
        pred = fit.logits(torch.as_tensor(x, dtype=torch.float32)).argmax(1).numpy()
        z = np.sort(ref.decision_function(scaler.transform(x)), 1)
        ties = z[:, -1] - z[:, -2] < tie
        assert np.array_equal(pred[~ties], ref.predict(scaler.transform(x))[~ties]), (name, key)
        assert row[key] == pytest.approx(np.mean(pred == y), abs=1e-6), (name, key)     # the fit's accuracy
        assert row[key] == pytest.approx(ref.score(scaler.transform(x), y), abs=ties.sum() / len(y) + 1e-6)
    nll = log_loss(y_te, ref.predict_proba(scaler.transform(x_te)), labels=ref.classes_)
    assert row["test_nll"] == pytest.approx(nll, rel=nll_rtol), name


def test_transfer_cli_matches_sklearn_logistic_regression(tmp_path, dumps, capsys, monkeypatch):
    fits = _record_probe_fits(monkeypatch)
    code, stdout, stderr = _cli(["transfer", "--train", dumps["CE", "train"], "--test", dumps["CE", "val"],
                                 "--train", dumps["LS", "train"], "--test", dumps["LS", "val"], "--names", "A,B",
                                 "--l2", "1e-2", "--device", "cpu", "--json", "--quiet", "--out",
                                 str(tmp_path / "t")], capsys)
    assert code == 0, stderr
    rows = json.loads(stdout)
    assert [r["name"] for r in rows] == ["A", "B"]
    assert [lam for lam, _ in fits] == [1e-2, 1e-2]      # a fixed l2: one fit per model
    for row, name, (_, fit) in zip(rows, ("CE", "LS"), fits):
        _check_against_sklearn(row, fit, load_dump(dumps[name, "train"]), load_dump(dumps[name, "val"]), 1e-2,
                               nll_rtol=1e-3)
    assert json.loads((tmp_path / "t" / "transfer.json").read_text())["results"] == rows


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
    fits = _record_probe_fits(monkeypatch)
    step.run(ctx)
    for stem in ("separation", "projection_template", "projection_centroid", "embedding_tsne", "feature_norms"):
        assert (tmp_path / "geometry" / f"{stem}.png").read_bytes()[:8] == PNG_MAGIC, stem
    assert any("R^2 train" in line for line in logs)
    # the real probe on scikit-learn's digits, against LogisticRegression at the strength the probe chose
    probes = json.loads((tmp_path / "geometry" / "transfer.json").read_text())["results"]
    assert [p["name"] for p in probes] == ["CE", "LS", "MaxSup"]
    per_model = len(probes[0]["val_accuracy"]) + 1          # each model: its grid fits, then its final fit
    finals = fits[per_model - 1::per_model]
    assert len(fits) == 3 * per_model and [lam for lam, _ in finals] == [p["l2"] for p in probes]
    for p, (_, fit) in zip(probes, finals):
        train, test = (load_dump(tmp_path / "geometry" / "downstream" / f"{p['name']}_{s}") for s in ("train", "test"))
        assert (p["n_train"], p["n_test"], p["num_classes"]) == (len(train.labels), len(test.labels), 10) == \
            (1200, 597, 10)
        assert train.meta["checkpoint"]["sha256"] == test.meta["checkpoint"]["sha256"]     # the model's own features
        assert p["val_accuracy"][str(p["l2"])] == max(p["val_accuracy"].values())
        _check_against_sklearn(p, fit, train, test, p["l2"], nll_rtol=2e-2)
    assert any("downstream test acc" in line for line in logs)


def test_separation_json_names_two_models_of_one_name_apart_with_their_sources(tmp_path, capsys):
    # two different Dumps both named M, both train: the table said "M" and "M (2)" but the JSON said "M" twice
    a, b = tmp_path / "a" / "M", tmp_path / "b" / "M"
    _dump(1, name="M").save(a)
    _dump(2, name="M", spread=2.0).save(b)
    code, _, stderr = _cli(["separation", str(a), str(b), "--out", str(tmp_path / "o")], capsys)
    assert code == 0, stderr
    payload = json.loads((tmp_path / "o" / "separation.json").read_text())["results"]
    assert [(e["name"], e["model"], e["source"]) for e in payload] == [("M", "M", str(a)), ("M", "M (2)", str(b))]
    assert payload[1]["r2"] == pytest.approx(class_separation(load_dump(b)).r2, abs=1e-12)
