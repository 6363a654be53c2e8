"""``imagenet-val``: a flat folder of images labelled by ``val_map.txt`` (``<file>\\t<label>``) or by
``LOC_val_solution.csv`` + ``LOC_synset_mapping.txt``, found in the folder or up to four folders above it, or
given as ``labels_file`` / ``synsets_file``."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from repanalysis.data.imagenet import imagenet_wnids, read_loc_solution, read_synset_mapping, read_val_map
from repanalysis.data.layouts import Layout, register
from repanalysis.data.layouts._common import _find_beside, _imagenet_name_lookup, _scan_top, _some
from repanalysis.errors import DataError

_LABEL_FILES = ("val_map.txt", "LOC_val_solution.csv")
_SYNSET_FILE = "LOC_synset_mapping.txt"


def _is_loc_csv(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.readline().lstrip(b"\xef\xbb\xbf").startswith(b"ImageId")


def open_imagenet_val(root: Path, layout: str, split: str | None, *, labels_file: Path | None = None,
                      synsets_file: Path | None = None, strict: bool = False):
    """A flat folder of images labelled by val_map.txt or LOC_val_solution.csv. Images the file lists but the
    folder lacks are left out with one warning (``strict``: DataError); an image it does not list is an error."""
    top, class_dirs = _scan_top(root)
    if top and class_dirs:
        raise DataError(f"{root} holds {len(top)} images at its top level and {len(class_dirs)} sub-folders "
                        "of images; expected a flat folder of images (ImageNet val)")
    if not top:
        raise DataError(f"no images found in {root}; expected a flat folder of images with val_map.txt or "
                        "LOC_val_solution.csv (ImageNet val)")
    labels_file = labels_file or _find_beside(root, _LABEL_FILES)
    if labels_file is None:
        raise DataError(f"no labels for the images in {root}; expected val_map.txt or LOC_val_solution.csv in "
                        "it or a folder above it, or pass labels_file (--labels-file)")
    synsets_file = synsets_file or _find_beside(root, (_SYNSET_FILE,))
    if synsets_file is not None:
        wnids, synset_names = read_synset_mapping(synsets_file)
    else:
        wnids, synset_names = imagenet_wnids(), None  # ImageNet-1k, standard (sorted WordNet id) order
    lookup = _imagenet_name_lookup()
    class_names = [lookup.get(w) or (synset_names[i] if synset_names else w) for i, w in enumerate(wnids)]

    if _is_loc_csv(labels_file):
        boxes = read_loc_solution(labels_file)
        index = {w: i for i, w in enumerate(wnids)}
        listed = {}
        for image_id, entries in boxes.items():
            wnid = entries[0][0] if entries else None
            if wnid not in index:
                raise DataError(f"{labels_file}: image {image_id} has class {wnid!r}, which is not in "
                                f"{synsets_file or 'the ImageNet-1k synsets'}; expected a listed WordNet id")
            listed[image_id] = index[wnid]
        key_of = lambda name: os.path.splitext(name)[0]  # noqa: E731  (ImageId has no extension)
    else:
        listed = {Path(k).name: v for k, v in read_val_map(labels_file).items()}
        key_of = lambda name: name  # noqa: E731

    keys = [key_of(f) for f in top]
    present = set(keys)
    if strict:
        missing = [k for k in listed if k not in present]
        if missing:
            raise DataError(f"{len(missing)} of {len(listed)} files listed in {labels_file.name} are missing from "
                            f"{root}, e.g. {', '.join(missing[:3])}; expected every listed image in the folder")
    unlabelled = [f for f, k in zip(top, keys) if k not in listed]
    if len(unlabelled) == len(top):
        raise DataError(f"none of the {len(listed):,} images listed in {labels_file.name} is in {root}: its "
                        f"{len(top)} images ({_some(unlabelled)}) have no label there; expected images named as "
                        f"{labels_file.name} lists them")
    if unlabelled:
        raise DataError(f"{len(unlabelled)} of {len(top)} images in {root} have no label in {labels_file.name}, "
                        f"e.g. {', '.join(unlabelled[:3])}; expected a label for every image")
    labels = np.fromiter((listed[k] for k in keys), dtype=np.int64, count=len(keys))
    if synsets_file is None and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise DataError(f"labels in {labels_file} run {labels.min()}..{labels.max()}, outside ImageNet-1k's "
                        "0..999; expected ImageNet-1k labels, or pass synsets_file (--synsets-file)")
    used = len(present)
    if used < len(listed):
        warnings.warn(f"{used:,} of {len(listed):,} listed images are in the folder; using those", RuntimeWarning,
                      stacklevel=3)  # the caller of open_dataset (which calls this directly)
    return root, {"files": list(top), "labels": labels, "class_names": class_names, "wnids": list(wnids),
                  "sources": {"labels_file": labels_file, "synsets_file": synsets_file}, "listed": len(listed)}, split



def find_imagenet_val(path: Path, scan, found: dict) -> dict[str, str]:
    top_images, _ = scan()
    return {"imagenet-val": f"{len(top_images)} images at its top level"} if top_images else {}


def confirm_imagenet_val(path: Path, what: str, labels_file) -> None:
    """A flat folder of images is ImageNet val only with a labels file given or beside it."""
    if labels_file is not None or _find_beside(path, _LABEL_FILES) is not None:
        return
    raise DataError(f"{path} holds {what} but no class sub-folders and no labels; "
                    "expected class sub-folders (ImageFolder) or val_map.txt / LOC_val_solution.csv beside "
                    "the images (ImageNet val)")


register(Layout(names=("imagenet-val",), open=open_imagenet_val, find=find_imagenet_val, priority=50, order=20,
                confirm=confirm_imagenet_val, folder_of_images=True))
