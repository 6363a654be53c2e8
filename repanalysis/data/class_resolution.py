"""Turn class names given by a user into class indices, and pick the most confused classes automatically.

Accepted spellings, matched case-insensitively with "_" == " " == "-":
- the data set's own class names (``Dump.class_names``, e.g. "four" for MNIST);
- ImageNet-1k names as torchvision lists them ("schipperke", "Saluki", "grey fox") when the model has 1000
  classes; ``--classes grey_fox`` works;
- WordNet ids ("n02104365"), from ``Dump.wnids`` or, for 1000-class models, timm's list;
- plain integer class indices ("17").
An unknown name raises :class:`DataError` with "did you mean" suggestions (difflib); a name that fits two
classes (torchvision has "Cardigan" the corgi and "cardigan" the sweater) needs its exact case, its WordNet id
or its index. ``"auto"`` picks the three classes the model confuses most (:func:`most_confused_triplet`).
"""
from __future__ import annotations

import difflib
import re
import warnings
from typing import Sequence

import numpy as np
import torch

from repanalysis.errors import DataError

IMAGENET_K = 1000
_INTEGER = re.compile(r"[+-]?\d+")  # a class index, signed or not


def normalize_name(name: str) -> str:
    """'Grey_Fox ' -> 'grey fox' (lower case, '_' and '-' read as spaces, runs of spaces collapsed)."""
    return " ".join(str(name).replace("_", " ").replace("-", " ").lower().split())


def _vocabularies(num_classes: int, class_names: Sequence[str] | None, wnids: Sequence[str] | None
                  ) -> list[list[str]]:
    vocab = []
    if class_names:
        vocab.append(list(class_names))
    if wnids:
        vocab.append(list(wnids))
    if num_classes == IMAGENET_K:
        from repanalysis.data.imagenet import imagenet_class_names, imagenet_wnids

        if not class_names:
            vocab.append(imagenet_class_names())
        if not wnids:
            vocab.append(imagenet_wnids())
    return vocab


def resolve_class(name: str | int, num_classes: int, class_names: Sequence[str] | None = None,
                  wnids: Sequence[str] | None = None) -> int:
    """One class name / WordNet id / index -> class index in [0, num_classes). Text that is exactly one class's
    name is that class (a class named "-1" or "10"); other integer text ("-1", "+3") is an index."""
    if not isinstance(name, (int, np.integer)):
        exact = [i for i, n in enumerate(list(class_names or ())[:num_classes]) if str(n) == str(name).strip()]
        if len(exact) == 1:
            return exact[0]
        if exact:
            raise DataError(f"class name {str(name).strip()!r} is shared by classes {', '.join(map(str, exact))}; "
                            "give the index of the one meant instead")
    if isinstance(name, (int, np.integer)) or _INTEGER.fullmatch(str(name).strip()):
        index = int(str(name).strip())
        if not 0 <= index < num_classes:
            raise DataError(f"class index {index} is out of range; expected an index in 0..{num_classes - 1} "
                            f"(the model has {num_classes} classes)")
        return index
    raw = str(name).strip()
    key = normalize_name(raw)
    vocab = _vocabularies(num_classes, class_names, wnids)
    if not vocab:
        raise DataError(f"cannot resolve class {raw!r}: the Dump has no class names and the model has "
                        f"{num_classes} classes (not ImageNet-1k); give class indices 0..{num_classes - 1}")
    for names in vocab:
        hits = [i for i, n in enumerate(names) if normalize_name(n) == key and i < num_classes]
        if len(hits) > 1:
            exact = [i for i in hits if names[i].replace("_", " ") == raw.replace("_", " ")]
            if len(exact) == 1:
                return exact[0]
            raise DataError(f"class name {raw!r} is ambiguous: it names classes {', '.join(map(str, hits))} "
                            f"({', '.join(repr(names[i]) for i in hits)}); give the exact case, a WordNet id or "
                            "the index")
        if hits:
            return hits[0]
    pool = {normalize_name(n): n for names in vocab for n in names}
    close = difflib.get_close_matches(key, list(pool), n=3, cutoff=0.6)
    if not close:  # substring matches help for long ImageNet names ("sheepdog")
        close = [k for k in pool if key in k][:3]
    hint = f"; did you mean {', '.join(repr(pool[c]) for c in close)}?" if close else ""
    examples = ", ".join(repr(n) for n in vocab[0][:3])
    raise DataError(f"unknown class name {raw!r}{hint} (expected a class name such as {examples}, a WordNet "
                    "id or an index)")


def resolve_classes(spec: str | Sequence[str | int], num_classes: int, class_names: Sequence[str] | None = None,
                    wnids: Sequence[str] | None = None, logits=None, labels=None, count: int | None = 3
                    ) -> list[int]:
    """'schipperke,saluki,grey_fox' (or a list, or 'auto') -> class indices.

    count: how many classes are expected (None: any number >= 2). ``'auto'`` needs ``logits`` (N, K) and
    ``labels`` (N,) and returns :func:`most_confused_triplet`.
    """
    if hasattr(spec, "tolist") and not isinstance(spec, str):      # a tensor or array of indices
        spec = spec.tolist()
        spec = spec if isinstance(spec, list) else [spec]
    if isinstance(spec, str):
        if spec.strip().lower() == "auto":
            if logits is None or labels is None:
                raise DataError("--classes auto needs logits and labels to build the confusion matrix")
            return most_confused_triplet(logits, labels, num_classes)
        spec = [part.strip() for part in spec.split(",") if part.strip()]
    out = [resolve_class(n, num_classes, class_names, wnids) for n in spec]
    if len(set(out)) != len(out):
        dup = next(n for n, i in zip(spec, out) if out.count(i) > 1)
        raise DataError(f"class {dup!r} is given twice; expected distinct classes")
    if count is not None and len(out) != count:
        raise DataError(f"expected {count} classes; got {len(out)} ({', '.join(map(str, spec))})")
    if count is None and len(out) < 2:
        raise DataError(f"expected at least 2 classes; got {len(out)}")
    return out


def resolve_for_dumps(spec, dumps, count: int | None = 3) -> list[int]:
    """:func:`resolve_classes` with the names, WordNet ids and K of the first Dump; ``'auto'`` uses the
    confusion matrices of all the Dumps summed (classes that every model confuses), streamed in chunks."""
    dumps = list(dumps)
    first = dumps[0]
    empty = [d.name for d in dumps if d.num_samples == 0]
    if empty:
        raise DataError(f"{', '.join(empty)}: the Dump has no samples; expected a Dump with samples of the classes")
    if isinstance(spec, str) and spec.strip().lower() == "auto":
        conf = sum(dump_confusion_matrix(d) for d in dumps)
        return most_confused_triplet_from_confusion(conf)
    return resolve_classes(spec, first.num_classes, first.class_names, first.wnids, count=count)


def dump_confusion_matrix(dump, chunk_size: int = 65536) -> np.ndarray:
    """(K, K) confusion counts of a Dump (row = true, column = predicted), streamed over its logits.

    Rows with NaN or inf logits have no prediction: they are excluded, with one RuntimeWarning giving their
    count (as ``analyze-logits`` and ``info`` do); DataError when every row is such a row."""
    k = dump.num_classes
    total = np.zeros((k, k), dtype=np.int64)
    n_bad = n = 0
    for _, chunk in dump.iter_chunks(("logits", "labels"), chunk_size=chunk_size):
        counts, dropped = _finite_confusion(chunk["logits"], chunk["labels"], k)
        total += counts
        n_bad += dropped
        n += len(chunk["labels"])
    _warn_nonfinite(n_bad, n, dump.name)
    return total


def class_label(index: int, num_classes: int, class_names: Sequence[str] | None = None) -> str:
    """Display name of a class: the data set's name, the ImageNet name for 1000-class models, else the index."""
    if class_names and index < len(class_names):
        return str(class_names[index])
    if num_classes == IMAGENET_K:
        from repanalysis.data.imagenet import imagenet_class_names

        return imagenet_class_names()[index]
    return str(index)


def confusion_matrix(logits, labels, num_classes: int | None = None) -> np.ndarray:
    """(K, K) counts: row = true class, column = predicted class (argmax of the logits).

    Rows with NaN or inf logits are excluded with a RuntimeWarning giving their count (the argmax of a NaN row
    would count it as a prediction of class 0); DataError when every row is such a row."""
    counts, n_bad = _finite_confusion(logits, labels, num_classes)
    _warn_nonfinite(n_bad, int(np.shape(labels)[0]))
    return counts


def _finite_confusion(logits, labels, num_classes: int | None = None) -> tuple[np.ndarray, int]:
    """(confusion counts of the rows with finite logits, number of rows left out), without warning."""
    z = torch.from_numpy(np.array(logits, dtype=np.float32)) if not isinstance(logits, torch.Tensor) else logits
    y = torch.from_numpy(np.array(labels, dtype=np.int64)) if not isinstance(labels, torch.Tensor) else labels
    if z.ndim != 2 or y.ndim != 1 or len(y) != len(z):
        raise DataError(f"expected logits [N, K] and labels [N]; got {tuple(z.shape)} and {tuple(y.shape)}")
    k = int(num_classes or z.shape[1])
    finite = torch.isfinite(z).all(dim=1)
    pred = z[finite].float().argmax(dim=1).long()
    return confusion_counts(y[finite], pred, k), int((~finite).sum())


def confusion_counts(labels, preds, num_classes: int) -> np.ndarray:
    """(K, K) int64 counts of (true, predicted) pairs, row = true class, column = predicted: one bincount of
    ``y * K + pred``. labels, preds: (N,) integer tensors or arrays with values in [0, K)."""
    k = int(num_classes)
    y = torch.as_tensor(labels).long()
    p = torch.as_tensor(preds).long().to(y.device)
    return torch.bincount(y * k + p, minlength=k * k).reshape(k, k).cpu().numpy()


def _warn_nonfinite(n_bad: int, n: int, name: str | None = None) -> None:
    """Warn that ``n_bad`` of ``n`` rows with NaN or inf logits are left out of the confusion counts; DataError
    when that is all of them (there is no prediction to count)."""
    if not n_bad:
        return
    where = f"{name}: " if name else ""
    if n_bad == n:
        raise DataError(f"{where}all {n} samples have NaN or inf logits; expected finite logits to count the "
                        "confusions for --classes auto")
    warnings.warn(f"{where}{n_bad} of {n} samples have NaN or inf logits; they are excluded", RuntimeWarning,
                  stacklevel=3)


def most_confused_triplet(logits, labels, num_classes: int | None = None, pair_block: int = 4096) -> list[int]:
    """The three classes with the largest total confusion between them (exact), as sorted indices.

    Score of {a, b, c} = S_ab + S_ac + S_bc with S = C + C^T (off-diagonal confusion counts, both ways).
    Exact search with pruning: a first guess T0 from the top pairs; any better triplet has an edge of at
    least T0 / 3, so only pairs above that bound are completed with their best third class.
    """
    return most_confused_triplet_from_confusion(confusion_matrix(logits, labels, num_classes), pair_block)


def most_confused_triplet_from_confusion(confusion, pair_block: int = 4096) -> list[int]:
    """:func:`most_confused_triplet` from a (K, K) confusion matrix (row = true, column = predicted)."""
    conf = np.asarray(confusion, dtype=np.float64)
    k = conf.shape[0]
    if k < 3:
        raise DataError(f"--classes auto needs a model with at least 3 classes; this one has {k}")
    s = conf + conf.T
    np.fill_diagonal(s, 0.0)
    iu, ju = np.triu_indices(k, 1)
    edge = s[iu, ju]
    order = np.argsort(-edge, kind="stable")

    def complete(pairs: np.ndarray) -> tuple[float, tuple[int, int, int]]:
        best, best_t = -1.0, (0, 1, 2)
        for lo in range(0, len(pairs), pair_block):
            p = pairs[lo:lo + pair_block]
            a, b = iu[p], ju[p]
            third = s[a] + s[b]  # (P, K): S_ac + S_bc for every c
            third[np.arange(len(p)), a] = -1.0
            third[np.arange(len(p)), b] = -1.0
            c = third.argmax(axis=1)
            total = edge[p] + third[np.arange(len(p)), c]
            j = int(total.argmax())
            if total[j] > best:
                best, best_t = float(total[j]), (int(a[j]), int(b[j]), int(c[j]))
        return best, best_t

    t0, triplet = complete(order[:64])
    if t0 <= 0:
        raise DataError("--classes auto found no confusion between classes (the model makes no mistakes on "
                        "this data); name the classes instead")
    candidates = order[edge[order] * 3 >= t0]
    t1, triplet1 = complete(candidates)
    if t1 > t0:
        triplet = triplet1
    return sorted(triplet)
