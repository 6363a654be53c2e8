"""The `calibration` and `ood` commands and the demo step, on real MNIST checkpoints' Dumps and on bad input."""
import json
import math

import numpy as np
import pytest
import torch

import repanalysis as ra
from _cli import run_cli


@pytest.fixture(scope="module")
def ood_dumps(real_checkpoints, real_dumps, tmp_path_factory):
    """Dumps of real photo patches (out of distribution for digit models) through each real checkpoint."""
    from repanalysis.demo.build import ood_patches
    from repanalysis.train import DIGIT_NAMES
    from repanalysis.train.trainer import write_npz

    folder = tmp_path_factory.mktemp("ood")
    npz = folder / "ood.npz"
    write_npz(npz, ood_patches(n=300, seed=1), np.zeros(300, dtype=np.int64), DIGIT_NAMES)
    return {name: ra.extract(ra.load_model(ckpt), npz, folder / name, progress=False, workers=0, batch_size=256,
                             name=name) for name, ckpt in real_checkpoints.items()}


def test_calibration_cli_on_real_dumps(real_dumps, tmp_path, capsys):
    names = list(real_dumps)
    paths = [str(real_dumps[n]["test"].path) for n in names]
    vals = sum((["--fit-temperature", str(real_dumps[n]["train"].path)] for n in names), [])
    code, out, err = run_cli(["calibration", *paths, "--names", ",".join(names), *vals, "--bootstrap", "20",
                              "--out", str(tmp_path)], capsys)
    assert code in (0, None), err
    assert "ECE %" in out and "CE +TS" in out and "AUROC" in out
    payload = json.loads((tmp_path / "calibration.json").read_text())
    assert [m["name"] for m in payload["models"]] == [x for n in names for x in (n, f"{n} +TS")]
    for stem in ("reliability", "reliability_adaptive", "confidence_hist", "nci_scatter"):
        assert (tmp_path / f"{stem}.png").stat().st_size > 10_000 and (tmp_path / f"{stem}.pdf").exists()
    # the table's numbers are the library's numbers on the same Dump
    d = real_dumps[names[0]]["test"]
    ref = ra.analyze.calibration.calibration_report(d.logits, d.labels)
    got = payload["models"][0]
    assert got["ece"] == pytest.approx(ref.ece, abs=1e-12) and got["nll"] == pytest.approx(ref.nll, abs=1e-12)
    assert got["ece"] == pytest.approx(got["oece"] + got["uece"], abs=1e-12)
    assert len(got["ci"]["ece"]) == 2
    # accuracy agrees with an independent argmax
    acc = float((np.asarray(d.logits).argmax(1) == np.asarray(d.labels)).mean())
    assert got["accuracy"] == pytest.approx(acc)


def test_ood_cli_on_real_dumps(real_dumps, ood_dumps, tmp_path, capsys):
    from sklearn.metrics import roc_auc_score

    name = "CE"
    code, out, err = run_cli(["ood", "--in", str(real_dumps[name]["test"].path), "--ood", str(ood_dumps[name].path),
                              "--names", name, "--out", str(tmp_path), "--json"], capsys)
    assert code in (0, None), err
    payload = json.loads(out)
    auroc = payload["models"][0]["auroc"]
    assert set(auroc) == {"max_softmax", "max_logit", "energy", "feature_l1"}
    zi, zo = np.asarray(real_dumps[name]["test"].logits, float), np.asarray(ood_dumps[name].logits, float)
    y = np.r_[np.ones(len(zi)), np.zeros(len(zo))]
    assert auroc["max_logit"] == pytest.approx(roc_auc_score(y, np.r_[zi.max(1), zo.max(1)]))
    assert (tmp_path / "ood_roc.png").exists() and (tmp_path / "ood.json").exists()


def test_demo_step_on_real_dumps(real_checkpoints, real_dumps, ood_dumps, tmp_path):
    from repanalysis.demo import DemoContext
    from repanalysis.demo.steps import calibration as step

    lines = []
    ctx = DemoContext(out=tmp_path, checkpoints=real_checkpoints, dumps=real_dumps, data={},
                      class_names=real_dumps["CE"]["test"].class_names, ood_dumps=ood_dumps,
                      log=lines.append)  # the demo's default device "auto" (the CLI's default too)
    step.run(ctx)
    payload = json.loads((tmp_path / "calibration" / "calibration.json").read_text())
    assert len(payload["models"]) == 6 and len(payload["ood"]) == 3
    assert all(math.isfinite(m["ece"]) for m in payload["models"])
    assert (tmp_path / "calibration" / "ood_roc.png").exists()
    assert any("OOD detection" in line for line in lines)


def test_cli_bad_input(tmp_path, capsys):
    z = torch.randn(50, 4)
    probs = ra.Dump.from_arrays(torch.softmax(z, 1), torch.randint(0, 4, (50,)), name="p").save(tmp_path / "p.pt")
    ok = ra.Dump.from_arrays(z, torch.randint(0, 4, (50,)), name="ok").save(tmp_path / "ok.pt")
    code, _, err = run_cli(["calibration", str(probs.path), "--bootstrap", "0", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and err.startswith("error: ") and "probabilities" in err and err.count("\n") == 1
    code, _, err = run_cli(["calibration", str(ok.path), "--fit-temperature", str(ok.path), "--fit-temperature",
                            str(ok.path), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "one validation Dump per input" in err
    code, _, err = run_cli(["ood", "--in", str(ok.path), "--out", str(tmp_path / "o")], capsys)
    assert code == 2
    code, _, err = run_cli(["ood", "--in", str(ok.path), "--ood", str(ok.path), "--ood", str(ok.path),
                            "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "expected one OOD Dump" in err


def test_rerun_replaces_the_whole_output_set_or_none_of_it(tmp_path, capsys):
    g = torch.Generator().manual_seed(4)
    z, y = torch.randn(300, 4, generator=g) * 2, torch.randint(0, 4, (300,), generator=g)
    ra.Dump.from_arrays(z, y, features=torch.rand(300, 6, generator=g), name="CE").save(tmp_path / "h")
    no_h = ra.Dump.from_arrays(z * 3, y, name="CE").save(tmp_path / "z.pt")
    out = tmp_path / "out"
    code, _, err = run_cli(["calibration", str(tmp_path / "h"), "--bootstrap", "0", "--out", str(out)], capsys)
    assert code == 0, err
    assert (out / "nci_scatter.png").exists()
    first = (out / "calibration.json").read_bytes()
    # a failure while drawing (a folder in the way of the last figure) leaves the last run's files as they were
    (out / "confidence_hist.pdf").unlink()
    (out / "confidence_hist.pdf").mkdir()
    with pytest.warns(RuntimeWarning, match="no features"):
        code, _, err = run_cli(["calibration", str(no_h.path), "--bootstrap", "0", "--out", str(out)], capsys)
    assert code == 2 and "cannot write figure" in err
    assert (out / "calibration.json").read_bytes() == first and (out / "nci_scatter.png").exists()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]        # no temporary file left
    # a run without features says so, and the earlier model's NCI scatter does not stay beside its results
    (out / "confidence_hist.pdf").rmdir()
    with pytest.warns(RuntimeWarning, match="^z has no features .a logits-only Dump.: its feature_l1 AUROC and NCI"):
        code, _, err = run_cli(["calibration", str(no_h.path), "--bootstrap", "0", "--out", str(out)], capsys)
    assert code == 0, err
    assert json.loads((out / "calibration.json").read_text())["models"][0]["ece"] != json.loads(first)["models"][0]["ece"]
    assert not (out / "nci_scatter.png").exists() and not (out / "nci_scatter.pdf").exists()
    assert (out / "reliability.png").exists()


def test_ood_refuses_the_in_distribution_dump_as_its_own_ood_set(real_dumps, tmp_path, capsys):
    # AUROC 0.5 / FPR 0.95 from comparing a Dump with itself would read as "no OOD signal"
    d = real_dumps["CE"]["test"]
    code, _, err = run_cli(["ood", "--in", str(d.path), "--ood", str(d.path), "--out", str(tmp_path)], capsys)
    assert code == 2 and err.count("\n") == 1 and f"--ood: {d.path} is the same Dump as {d.path}" in err
    import shutil
    copy = shutil.copytree(d.path, tmp_path / "copy")
    code, _, err = run_cli(["ood", "--in", str(d.path), "--ood", str(copy), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "holds the same samples (the same extraction run) as" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("quiet", [False, True])
def test_calibration_cli_bootstrap_bar_follows_quiet(tmp_path, capsys, monkeypatch, quiet):
    import repanalysis.progress

    seen = []
    real = repanalysis.progress.progress_bar

    def recording(total=None, *, desc, enabled=True, **kw):
        seen.append((desc, total, enabled))
        return real(total, desc=desc, enabled=enabled, **kw)

    monkeypatch.setattr(repanalysis.progress, "progress_bar", recording)
    g = torch.Generator().manual_seed(2)
    z, y = torch.randn(200, 3, generator=g) * 2, torch.randint(0, 3, (200,), generator=g)
    ra.Dump.from_arrays(z, y, name="CE").save(tmp_path / "d")
    argv = ["calibration", str(tmp_path / "d"), "--bootstrap", "7", "--ci", "0.9", "--json", "--out",
            str(tmp_path / "o")] + (["--quiet"] if quiet else [])
    with pytest.warns(RuntimeWarning, match="no features"):
        code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    assert [s for s in seen if s[0].startswith("bootstrap")] == [("bootstrap CE", 7, not quiet)]
    model = json.loads(out)["models"][0]
    reps = ra.analyze.calibration.calibration_report(z, y, n_boot=7, seed=0, ci_level=0.9).replicates
    assert model["ci"]["ece"] == pytest.approx(list(np.percentile(reps["ece"], [5, 95])), rel=1e-12)
