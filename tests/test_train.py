"""The training module: the losses' logit identities, the MaxSup schedule, and determinism."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from repanalysis.train import make_loss, mnist_digits, train_small_cnn


def test_label_smoothing_is_ce_plus_alpha_times_zy_minus_mean():
    # MaxSup Theorem 3.3: L_LS = CE + alpha * (z_y - mean_k z_k)
    z = torch.randn(64, 10, dtype=torch.float64)
    y = torch.randint(0, 10, (64,))
    expected = F.cross_entropy(z, y) + 0.1 * (z.gather(1, y[:, None])[:, 0] - z.mean(1)).mean()
    torch.testing.assert_close(make_loss("ls", alpha=0.1)(z, y), expected)


def test_maxsup_penalises_the_top1_logit_with_a_linear_schedule():
    z = torch.tensor([[1.0, 4.0, -1.0, 0.0]])
    y = torch.tensor([0])  # ground truth is not the top-1: MaxSup penalises z_max = 4, not z_y
    loss = make_loss("maxsup")
    ce = F.cross_entropy(z, y)
    torch.testing.assert_close(loss(z, y, progress=0.0), ce + 0.1 * (4.0 - 1.0))
    torch.testing.assert_close(loss(z, y, progress=1.0), ce + 0.2 * (4.0 - 1.0))
    torch.testing.assert_close(loss(z, y, progress=0.5), ce + 0.15 * (4.0 - 1.0))
    lp = make_loss("logit_penalty")
    torch.testing.assert_close(lp(z, y), ce + 2e-3 * (1 + 16 + 1 + 0) / 2)


def test_training_is_deterministic_under_a_seed_and_learns():
    data = mnist_digits(n_train=1000)
    a = train_small_cnn(*data["train"], loss="ce", epochs=5, seed=3)
    b = train_small_cnn(*data["train"], loss="ce", epochs=5, seed=3)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    c = train_small_cnn(*data["train"], loss="ce", epochs=1, seed=4)
    assert not torch.equal(a.fc.weight, c.fc.weight)
    images, labels = data["test"]
    x = (torch.from_numpy(images).float() / 255 - 0.1307) / 0.3081
    with torch.no_grad():
        acc = (a(x[:, None]).argmax(1).numpy() == labels).mean()
    # Five epochs (80 SGD steps) on 1000 real digits reach ~0.8 on seeds 3-6 here: far above chance (0.1).
    # (One epoch on 600 digits, 10 steps of a one-cycle schedule, stayed near chance on the CI machine.)
    assert acc > 0.5
    assert np.bincount(labels).min() > 50


def test_demo_data_files_are_keyed_by_n_train_and_seed(tmp_path):
    from repanalysis.train import make_demo_checkpoints

    _, small = make_demo_checkpoints(tmp_path, losses=(), n_train=100)
    _, full = make_demo_checkpoints(tmp_path, losses=(), n_train=4000)
    _, other_seed = make_demo_checkpoints(tmp_path, losses=(), n_train=4000, seed=1)
    assert small["train"].name == "mnist_train_n100_s0.npz" and full["test"].name == "mnist_test_n4000_s0.npz"
    for data, (n_train, seed) in ((small, (100, 0)), (full, (4000, 0)), (other_seed, (4000, 1))):
        want = mnist_digits(n_train=n_train, seed=seed)
        for split in ("train", "test"):
            with np.load(data[split]) as z:      # each call gets its own split, not a stale file of another
                np.testing.assert_array_equal(z["labels"], want[split][1])
                np.testing.assert_array_equal(z["images"], want[split][0])
    with np.load(full["train"]) as z:
        assert len(z["labels"]) == 4000


@pytest.mark.parametrize("kw,pattern", [
    ({"n_train": 0}, "n_train must be an integer >= 1 and <= 4999; got 0"),
    ({"n_train": 5000}, "n_train .* got 5000"), ({"n_train": 2.5}, "n_train .* got 2.5"),
    ({"n_train": "100"}, "n_train .* got '100'"), ({"epochs": 0}, "epochs must be an integer >= 1; got 0"),
    ({"epochs": 1.5}, "epochs .* got 1.5"), ({"seed": -1}, "seed must be an integer >= 0; got -1"),
    ({"seed": 0.5}, "seed .* got 0.5"), ({"losses": ("ce", "bogus")}, "unknown loss 'bogus'"),
])
def test_demo_arguments_are_checked_before_anything_is_written(tmp_path, kw, pattern):
    from repanalysis.errors import DataError
    from repanalysis.train import make_demo_checkpoints

    with pytest.raises(DataError, match=pattern):
        make_demo_checkpoints(tmp_path / "out", **{"losses": ("ce",), **kw})
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value,kind", [(5, "int"), (None, "None"), (["out"], "list"), (b"out", "bytes")])
def test_demo_folder_must_be_a_path(value, kind):
    from repanalysis.errors import DataError
    from repanalysis.train import make_demo_checkpoints

    with pytest.raises(DataError, match=rf"^folder: expected a file path \(str or os.PathLike\); got {kind}$"):
        make_demo_checkpoints(value, losses=())


@pytest.mark.parametrize("kw,pattern", [({"epochs": 0}, "epochs must be an integer >= 1"),
                                        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
                                        ({"lr": 0.0}, "lr must be a finite number > 0"),
                                        ({"loss": "bogus"}, "unknown loss 'bogus'")])
def test_train_small_cnn_checks_its_options(kw, pattern):
    from repanalysis.errors import DataError

    images, labels = mnist_digits(n_train=64)["train"]
    with pytest.raises(DataError, match=pattern):
        train_small_cnn(images, labels, **kw)


def test_demo_reuses_a_dump_only_when_it_is_of_the_same_run(tmp_path, real_checkpoints, real_data, monkeypatch):
    # the demo's Dumps are a cache keyed by the run fingerprint: a checkpoint retrained under the same name (or
    # other data) is extracted again, never served the old logits (the check used to be the data path only)
    import shutil

    import repanalysis as ra
    from repanalysis.extract import runner

    ck = tmp_path / "ce_e8_n4000_s0.pth"
    shutil.copy(real_checkpoints["CE"], ck)
    kw = {"progress": False, "overwrite": True, "reuse": True, "workers": 0, "batch_size": 256}
    first = ra.extract(ra.load_model(ck), real_data["test"], tmp_path / "d", **kw)
    with monkeypatch.context() as m:
        m.setattr(runner, "_run", lambda *a, **k: pytest.fail("extracted again"))
        again = ra.extract(ra.load_model(ck), real_data["test"], tmp_path / "d", **kw)
    np.testing.assert_array_equal(again.logits, first.logits)
    shutil.copy(real_checkpoints["LS"], ck)                    # "retrained": same file name, other weights
    new = ra.extract(ra.load_model(ck), real_data["test"], tmp_path / "d", **kw)
    assert new.meta["checkpoint"]["sha256"] != first.meta["checkpoint"]["sha256"]
    assert not np.array_equal(np.asarray(new.logits), np.asarray(first.logits))
