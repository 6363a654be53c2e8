"""Shared fixtures: real checkpoints trained here on real MNIST digits, and their Dumps."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

import repanalysis  # noqa: E402,F401  (applies the torchvision compatibility fix first)


@pytest.fixture(scope="session")
def demo_folder(tmp_path_factory):
    """A folder with real CE / LS / MaxSup checkpoints (5 epochs on 2,000 real MNIST digits) and data."""
    from repanalysis.train import make_demo_checkpoints

    folder = tmp_path_factory.mktemp("real")
    checkpoints, data = make_demo_checkpoints(folder, epochs=5, n_train=2000, seed=0)
    return folder, checkpoints, data


@pytest.fixture(scope="session")
def real_checkpoints(demo_folder):
    """{'CE' | 'LS' | 'MaxSup': checkpoint path} of small CNNs trained on real MNIST digits."""
    return demo_folder[1]


@pytest.fixture(scope="session")
def real_data(demo_folder):
    """{'train' | 'test': .npz path} of the real MNIST digits the checkpoints were trained / tested on."""
    return demo_folder[2]


@pytest.fixture(scope="session")
def real_dumps(demo_folder):
    """{name: {'train': Dump, 'test': Dump}} with logits, features, labels, classifier weights, class names."""
    import repanalysis as ra

    folder, checkpoints, data = demo_folder
    out = {}
    for name, ckpt in checkpoints.items():
        lm = ra.load_model(ckpt)
        out[name] = {split: ra.extract(lm, path, folder / "dumps" / f"{name}_{split}", progress=False,
                                       workers=0, batch_size=256, name=name)
                     for split, path in data.items()}
    return out
