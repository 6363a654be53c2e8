"""Inputs a notebook already has: an nn.Module, a torch Dataset or DataLoader, a model in the hub's saved layout.

Each gives exactly the Dump that the equivalent checkpoint file and data set path give (real MNIST digits, the
real small CNNs trained in conftest), and each bad input is refused in one line.
"""
from __future__ import annotations

import hashlib
import json
from collections import OrderedDict

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset, SubsetRandomSampler

import repanalysis as ra
from repanalysis.data.transforms import EvalTransform
from repanalysis.errors import CheckpointError, DataError
from repanalysis.models.loading import from_module, state_dict_sha256
from repanalysis.models.small_cnn import SmallCNN, mnist_transform

RUN = dict(progress=False, workers=0, batch_size=256)
ARRAYS = ("logits", "features", "labels", "ids", "classifier_weight", "classifier_bias")


class Digits(Dataset):
    """The npz digits as a notebook would hold them: PIL image -> the MNIST transform, (tensor, int) items."""

    classes = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

    def __init__(self, npz, transform=None):
        with np.load(npz) as f:
            self.images, self.labels = f["images"], f["labels"]
        self.transform = transform or mnist_transform()

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def _module(checkpoint) -> SmallCNN:
    """A notebook's module holding the checkpoint's weights, left in train mode."""
    net = SmallCNN()
    net.load_state_dict(torch.load(checkpoint, weights_only=True)["state_dict"])
    return net.train()


def _same_arrays(a, b) -> None:
    for key in ARRAYS:
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key), err_msg=key)


def _one_line(exc) -> str:
    text = str(exc.value)
    assert "\n" not in text and text
    return text


@pytest.fixture(scope="module")
def reference(real_checkpoints, real_data, tmp_path_factory):
    """The CE checkpoint extracted on the test digits' path: what every notebook input must reproduce."""
    out = tmp_path_factory.mktemp("reference") / "ce"
    return ra.extract(real_checkpoints["CE"], real_data["test"], out, **RUN)


def test_module_on_a_dataset_a_dataloader_and_a_path_gives_the_checkpoints_dump(tmp_path, real_checkpoints,
                                                                                real_data, reference):
    net = _module(real_checkpoints["CE"])
    ds = Digits(real_data["test"])
    on_path = ra.extract(net, real_data["test"], tmp_path / "path", **RUN)
    on_dataset = ra.extract(net, ds, tmp_path / "dataset", **RUN)
    on_loader = ra.extract(net, DataLoader(ds, batch_size=256), tmp_path / "loader", **RUN)
    sha = state_dict_sha256(net)
    for dump in (on_path, on_dataset, on_loader):
        _same_arrays(dump, reference)
        assert set(dump.meta) == set(reference.meta)
        for key in ("arch", "family", "num_classes", "feature_layer", "class_names", "precision", "split"):
            assert dump.meta[key] == reference.meta[key], key
        assert dump.meta["checkpoint"] == {"path": None, "sha256": sha, "ema": False} and dump.complete
    assert reference.meta["arch"] == "small_cnn" and reference.meta["feature_layer"] == "fc"
    assert (reference.logits.argmax(1) == reference.labels).mean() > 0.85          # a really trained model
    # a path is read through the architecture's transform, as the checkpoint's; torch data applied its own
    assert on_path.meta["transform"] == reference.meta["transform"] == mnist_transform().to_dict()
    assert on_dataset.meta["transform"] is None and on_loader.meta["transform"] is None
    assert on_dataset.meta["dataset"]["layout"] == "torch-dataset"
    assert on_loader.meta["dataset"]["layout"] == "torch-dataloader"
    assert on_dataset.meta["dataset"]["type"].endswith("Digits") and on_dataset.meta["dataset"]["num_samples"] == len(ds)
    # the caller's module comes back in train mode, on its device, weights unchanged
    assert net.training and all(m.training for m in net.modules()) and state_dict_sha256(net) == sha


def test_a_dataset_and_its_dataloader_share_a_fingerprint_so_reuse_and_resume_work(tmp_path, real_checkpoints,
                                                                                   real_data, reference):
    net = _module(real_checkpoints["CE"])
    ds = Digits(real_data["test"])
    part = ra.extract(net, DataLoader(ds, batch_size=256), tmp_path / "d", max_batches=2, **RUN)
    assert not part.complete and part.num_samples == 512
    done = ra.extract(net, ds, tmp_path / "d", **RUN)        # resumes the loader's run from sample 512
    _same_arrays(done, reference)
    again = ra.extract(net, DataLoader(ds, batch_size=256), tmp_path / "d", reuse=True, **RUN)
    assert again.meta["completed"] == done.meta["completed"]                # reused, not extracted again
    # other weights are another run: not resumed, refused without overwrite
    other = _module(real_checkpoints["LS"])
    with pytest.raises(ra.RepanalysisError):
        ra.extract(other, ds, tmp_path / "d", **RUN)
    fresh = ra.extract(other, DataLoader(ds, batch_size=100), tmp_path / "d", overwrite=True, **RUN)
    assert fresh.meta["checkpoint"]["sha256"] == state_dict_sha256(other) != done.meta["checkpoint"]["sha256"]
    assert not np.array_equal(fresh.logits, done.logits)
    np.testing.assert_array_equal(fresh.ids, np.arange(len(ds)))


def test_a_dataloader_run_interrupted_mid_way_resumes_to_the_same_rows(tmp_path, real_checkpoints, real_data):
    net = _module(real_checkpoints["MaxSup"])
    loader = DataLoader(Digits(real_data["test"]), batch_size=96)
    whole = ra.extract(net, loader, tmp_path / "whole", **RUN)
    ra.extract(net, loader, tmp_path / "part", max_batches=4, **RUN)
    resumed = ra.extract(net, loader, tmp_path / "part", **RUN)
    _same_arrays(resumed, whole)
    np.testing.assert_array_equal(resumed.ids, np.arange(len(loader.dataset)))


def test_classifier_keyword_names_the_head_when_the_last_linear_is_not_it(tmp_path, real_checkpoints, real_data,
                                                                         reference):
    cnn = _module(real_checkpoints["CE"])

    class Wrapped(nn.Module):            # a notebook network: its last nn.Linear is an unused auxiliary layer
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(cnn.features, cnn.pool, nn.Flatten())
            self.head = nn.Sequential(OrderedDict(fc=cnn.fc))
            self.aux = nn.Linear(64, 10)

        def forward(self, x):
            return self.head(self.body(x))

    net, ds = Wrapped(), Digits(real_data["test"])
    lm = from_module(net)
    assert (lm.arch, lm.family, lm.classifier_name, lm.transform) == ("Wrapped", "custom", "aux", None)
    with pytest.raises(ra.RepanalysisError) as err:
        ra.extract(net, ds, tmp_path / "aux", **RUN)
    assert "'aux' did not run" in _one_line(err) and "classifier=" in _one_line(err)
    dump = ra.extract(net, ds, tmp_path / "head", classifier="head.fc", **RUN)
    _same_arrays(dump, reference)
    assert dump.meta["feature_layer"] == "head.fc" and dump.meta["arch"] == "Wrapped"
    # a path needs a transform for a network of no known architecture: said in one line, then given
    with pytest.raises(DataError) as err:
        ra.extract(net, real_data["test"], tmp_path / "p", classifier="head.fc", **RUN)
    assert "transform=" in _one_line(err)
    given = ra.extract(net, real_data["test"], tmp_path / "p", classifier="head.fc", transform=mnist_transform(),
                       **RUN)
    _same_arrays(given, reference)
    assert given.meta["transform"] == mnist_transform().to_dict()
    with pytest.raises(DataError) as err:
        ra.extract(net, ds, tmp_path / "x", classifier="body.0", **RUN)
    assert "'body.0' of Wrapped is a Sequential" in _one_line(err)
    assert "head.fc, aux" in _one_line(err)


def test_a_module_without_a_linear_classifier_is_refused_with_the_keyword_to_use(tmp_path, real_data):
    net = nn.Sequential(nn.Conv2d(1, 10, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())   # a convolutional head
    with pytest.raises(DataError) as err:
        ra.extract(net, Digits(real_data["test"]), tmp_path / "d", **RUN)
    assert "classifier=" in _one_line(err) and "Sequential" in _one_line(err)
    logits_only = ra.extract(net, Digits(real_data["test"]), tmp_path / "d", features=False, **RUN)
    with torch.no_grad():
        direct = net(torch.stack([Digits(real_data["test"])[i][0] for i in range(5)]))
    np.testing.assert_allclose(logits_only.logits[:5], direct.numpy(), rtol=1e-5, atol=1e-6)
    assert logits_only.meta["num_classes"] == 10 and logits_only.meta["family"] == "custom"


class _Pil(Digits):
    def __getitem__(self, i):
        return Image.fromarray(self.images[i]), int(self.labels[i])


class _Named(Digits):
    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i])), self.classes[int(self.labels[i])]


def test_bad_torch_data_is_refused_in_one_line(tmp_path, real_checkpoints, real_data):
    net = _module(real_checkpoints["CE"])
    ds = Digits(real_data["test"])
    cases = [
        (DataLoader(ds, batch_size=64, shuffle=True), "shuffles, so row i of its output is not sample i"),
        (DataLoader(ds, batch_size=64, sampler=SubsetRandomSampler(range(10))), "draws its samples with "
                                                                              "SubsetRandomSampler"),
        (DataLoader(ds, batch_size=64, drop_last=True), "drop_last=True"),
        (DataLoader(ds, batch_size=None), "batch_size=None"),
        (_Pil(real_data["test"]), "item 0 of _Pil has an image of type Image; expected a torch tensor"),
        (DataLoader(_Pil(real_data["test"]), batch_size=8), "collate_fn cannot batch item 0 of _Pil"),
        (DataLoader(_Pil(real_data["test"]), batch_size=8, collate_fn=lambda items: list(zip(*items))),
         "has images of type tuple; expected a tensor [B, C, H, W]"),
        (_Named(real_data["test"]), f"item 0 of _Named has label str {ds.classes[ds.labels[0]]!r}; expected an "
                                    "integer class index"),
        (torch.utils.data.TensorDataset(torch.zeros(0, 1, 28, 28), torch.zeros(0)), "has no samples"),
    ]
    for data, message in cases:
        with pytest.raises(DataError) as err:
            ra.extract(net, data, tmp_path / "d", **RUN)
        assert message in _one_line(err), (message, str(err.value))
        assert not (tmp_path / "d").exists()


# ------------------------------------------------------------------------------------------------------
# The hub's saved layout: a folder, or hf-hub:<repo> from the local cache
# ------------------------------------------------------------------------------------------------------
PRETRAINED_CFG = {"input_size": [3, 64, 64], "crop_pct": 0.8, "interpolation": "bicubic",
                  "mean": [0.48, 0.46, 0.41], "std": [0.27, 0.26, 0.28], "num_classes": 10}
LABELS = [f"class_{i}" for i in range(10)]


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch):
    """A hub cache holding timm/test_resnet.tiny (config.json + model.safetensors, refs/main -> the snapshot),
    written as huggingface_hub lays it out; returns (cache folder, the original module, snapshot folder)."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = timm.create_model("test_resnet", num_classes=10).eval()
    with torch.no_grad():               # non-trivial BatchNorm statistics, so a missed buffer would show
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    commit = hashlib.sha1(b"test_resnet.tiny").hexdigest()
    cache = tmp_path / "hub"
    repo = cache / "models--timm--test_resnet.tiny"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    config = {"architecture": "test_resnet", "num_classes": 10, "num_features": net.num_features,
              "pretrained_cfg": PRETRAINED_CFG, "label_names": LABELS}
    (snapshot / "config.json").write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(snapshot / "model.safetensors"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache, net, snapshot


def test_hub_model_from_the_local_cache_and_from_a_folder_computes_the_original_logits(hub_cache):
    cache, net, snapshot = hub_cache
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = net(x)
    for source in ("hf-hub:timm/test_resnet.tiny", "hf-hub:timm/test_resnet.tiny@main", snapshot):
        lm = ra.load_model(source)
        with torch.no_grad():
            torch.testing.assert_close(lm.model(x), expected, rtol=0, atol=0)
        assert lm.transform == EvalTransform(resolution=64, crop_ratio=0.8, interpolation="bicubic",
                                             mean=(0.48, 0.46, 0.41), std=(0.27, 0.26, 0.28), channels=3)
        assert (lm.arch, lm.family, lm.num_classes, lm.classifier_name) == ("timm/test_resnet", "resnet", 10, "fc")
        assert lm.class_names == LABELS and not lm.model.training
        assert lm.sha256 == hashlib.sha256((snapshot / "model.safetensors").read_bytes()).hexdigest()
    assert ra.load_model("hf-hub:timm/test_resnet.tiny").name == "test_resnet.tiny"


def test_hub_model_extracts_to_a_dump_named_after_the_repository(tmp_path, hub_cache):
    _, net, snapshot = hub_cache
    images = torch.randn(10, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    labels = torch.arange(10)
    dump = ra.extract("hf-hub:timm/test_resnet.tiny", torch.utils.data.TensorDataset(images, labels),
                      tmp_path / "d", progress=False, workers=0, batch_size=4)
    with torch.no_grad():
        np.testing.assert_allclose(dump.logits, net(images).numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(dump.labels, np.arange(10))
    np.testing.assert_allclose(dump.features @ dump.classifier_weight.T + dump.classifier_bias, dump.logits,
                               atol=1e-4)
    assert dump.meta["name"] == "test_resnet.tiny" and dump.class_names == LABELS
    assert dump.meta["checkpoint"]["sha256"] == ra.load_model(snapshot).sha256


def test_missing_hub_cache_entries_say_where_they_were_looked_for(tmp_path, hub_cache):
    cache, _, snapshot = hub_cache
    with pytest.raises(CheckpointError) as err:
        ra.load_model("hf-hub:timm/resnet50.a1_in1k")
    text = _one_line(err)
    assert f"not in the local Hugging Face hub cache {cache}" in text
    assert str(cache / "models--timm--resnet50.a1_in1k" / "snapshots") in text and "model.safetensors" in text
    with pytest.raises(CheckpointError) as err:
        ra.load_model("hf-hub:timm/test_resnet.tiny@v2")            # a revision the cache does not hold
    assert "refs/v2" in _one_line(err)
    (snapshot / "model.safetensors").unlink()
    with pytest.raises(CheckpointError) as err:
        ra.load_model("hf-hub:timm/test_resnet.tiny")
    assert f"expected model.safetensors or pytorch_model.bin in {snapshot}" in _one_line(err)
    with pytest.raises(CheckpointError) as err:
        ra.load_model(snapshot)
    assert "has a config.json but no weights" in _one_line(err)
