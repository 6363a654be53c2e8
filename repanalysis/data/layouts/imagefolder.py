"""``imagefolder``: ``root/<class>/**/<image>`` (torchvision's ImageFolder: classes are the sorted folder names,
label i = i-th folder). Folders named by WordNet id (``n01440764``) get ImageNet class names."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from repanalysis.data.layouts import Layout, register
from repanalysis.data.layouts._common import (IMAGE_EXTENSIONS, _imagenet_name_lookup, _is_wnid, _scan_top, _some,
                                              _visible, _walk_images)
from repanalysis.errors import DataError


def _class_meta_from_folders(names: list[str]) -> tuple[list[str], list[str] | None]:
    """Folder names -> (class names, wnids or None): WordNet-id folders get torchvision's ImageNet names."""
    if not all(_is_wnid(n) for n in names):
        return names, None
    lookup = _imagenet_name_lookup()
    return [lookup.get(n, n) for n in names], list(names)


def _open_imagefolder(root: Path) -> dict:
    top, _ = _scan_top(root)
    class_dirs = [p for p in _visible(root) if p.is_dir()]
    if not class_dirs:
        raise DataError(f"no images found in {root}; expected class sub-folders (ImageFolder) such as "
                        f"{root}/<class>/<image>.jpg")
    per_class = [_walk_images(d) for d in class_dirs]
    empty = [d.name for d, files in zip(class_dirs, per_class) if not files]
    if top and any(per_class):
        raise DataError(f"{root} holds {len(top)} images at its top level and class sub-folders; expected "
                        "class sub-folders only (ImageFolder) or a flat folder with val_map.txt (ImageNet val)")
    if empty:
        if len(empty) == len(class_dirs):
            raise DataError(f"no images found in {root}; expected class sub-folders (ImageFolder) holding "
                            f"images ({', '.join(IMAGE_EXTENSIONS)})")
        raise DataError(f"{len(empty)} class folder(s) in {root} hold no images: {', '.join(empty[:5])}; "
                        "expected at least one image per class folder")
    files = [f"{d.name}/{f}" for d, fs in zip(class_dirs, per_class) for f in fs]
    labels = np.repeat(np.arange(len(class_dirs), dtype=np.int64), [len(fs) for fs in per_class])
    class_names, wnids = _class_meta_from_folders([d.name for d in class_dirs])
    return {"files": files, "labels": labels, "class_names": class_names, "wnids": wnids}



def open_imagefolder(root: Path, layout: str, split: str | None, *, labels_file=None, synsets_file=None,
                     strict: bool = False):
    """(root, parts, split) of the class sub-folders of ``root``."""
    return root, _open_imagefolder(root), split


def find_imagefolder(path: Path, scan, found: dict) -> dict[str, str]:
    _, class_dirs = scan()
    if not class_dirs:
        return {}
    return {"imagefolder": f"{len(class_dirs)} sub-folders of images ({_some([d.name for d in class_dirs])})"}


register(Layout(names=("imagefolder",), open=open_imagefolder, find=find_imagefolder, priority=40, order=10,
                folder_of_images=True))
