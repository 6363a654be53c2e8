"""Class-name resolution (data set names, ImageNet names, WordNet ids) and the most-confused triplet."""
import itertools

import numpy as np
import pytest

import repanalysis  # noqa: F401
from repanalysis.data.class_resolution import (confusion_matrix, most_confused_triplet, normalize_name,
                                               resolve_classes)
from repanalysis.errors import DataError

MNIST = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def test_dataset_names_case_and_separators():
    assert resolve_classes("Four, SEVEN,nine", 10, MNIST) == [4, 7, 9]
    assert resolve_classes(["4", 7, "nine"], 10, MNIST) == [4, 7, 9]
    assert normalize_name(" Grey_Fox ") == "grey fox"


def test_imagenet_names_and_wnids():
    from repanalysis.data.imagenet import imagenet_class_names, imagenet_wnids

    names, wnids = imagenet_class_names(), imagenet_wnids()
    got = resolve_classes("schipperke,saluki,grey_fox", 1000)
    assert [names[i] for i in got] == ["schipperke", "Saluki", "grey fox"]
    assert resolve_classes([wnids[got[0]], wnids[got[1]].upper(), "grey-fox"], 1000) == got


def test_imagenet_ambiguous_name_needs_exact_case():
    from repanalysis.data.imagenet import imagenet_class_names

    names = imagenet_class_names()
    dog, sweater = names.index("Cardigan"), names.index("cardigan")
    assert resolve_classes(["Cardigan", "cardigan"], 1000, count=2) == [dog, sweater]
    with pytest.raises(DataError, match="ambiguous"):
        resolve_classes(["CARDIGAN", "tench"], 1000, count=2)


def test_unknown_name_suggests():
    with pytest.raises(DataError, match=r"did you mean 'seven'"):
        resolve_classes("four,sevn,nine", 10, MNIST)
    with pytest.raises(DataError, match=r"did you mean .*schipperke"):
        resolve_classes("schiperke,Saluki,grey fox", 1000)
    with pytest.raises(DataError, match="no class names"):
        resolve_classes("cat,dog,bird", 5)
    with pytest.raises(DataError, match="expected 3 classes"):
        resolve_classes("four,seven", 10, MNIST)
    with pytest.raises(DataError, match="twice"):
        resolve_classes("four,4,nine", 10, MNIST)
    with pytest.raises(DataError, match=r"outside \[0, 9\]"):
        resolve_classes("1,2,12", 10, MNIST)


def _brute_triplet(conf):
    s = conf + conf.T
    best, arg = -1, None
    for a, b, c in itertools.combinations(range(len(conf)), 3):
        t = s[a, b] + s[a, c] + s[b, c]
        if t > best:
            best, arg = t, [a, b, c]
    return arg, best


@pytest.mark.parametrize("seed", range(4))
def test_most_confused_triplet_is_exact(seed):
    rng = np.random.default_rng(seed)
    k, n = 14, 3000
    labels = rng.integers(0, k, n)
    # predictions: mostly right, 30% random mistakes (ties between triplets are possible: compare scores)
    pred = labels.copy()
    wrong = rng.random(n) < 0.3
    pred[wrong] = rng.integers(0, k, wrong.sum())
    logits = np.zeros((n, k))
    logits[np.arange(n), pred] = 1.0
    conf = confusion_matrix(logits, labels, k)
    np.testing.assert_array_equal(conf, np.histogram2d(labels, pred, bins=[np.arange(k + 1)] * 2)[0])
    got = most_confused_triplet(logits, labels, k)
    want, best = _brute_triplet(conf.astype(float) * (1 - np.eye(k)))
    s = conf + conf.T
    assert s[got[0], got[1]] + s[got[0], got[2]] + s[got[1], got[2]] == best
    assert resolve_classes("auto", k, logits=logits, labels=labels) == got


def test_auto_without_mistakes_errors():
    labels = np.arange(5)
    with pytest.raises(DataError, match="no confusion"):
        most_confused_triplet(np.eye(5), labels)


def test_resolve_for_dumps_sums_confusions():
    from repanalysis.data.class_resolution import resolve_for_dumps
    from repanalysis.extract.store import Dump

    k = 6
    labels = np.repeat(np.arange(k), 10)

    def dump_with(mistakes):
        pred = labels.copy()
        for (true, wrong), count in mistakes.items():
            pred[np.flatnonzero(labels == true)[:count]] = wrong
        return Dump.from_arrays(np.eye(k)[pred], labels, class_names=[f"c{i}" for i in range(k)])

    # model A confuses 0-1-2 a little and 3-4 a lot; model B confuses 3-4-5 => sum favours {3, 4, 5}
    a = dump_with({(0, 1): 3, (1, 2): 3, (2, 0): 3, (3, 4): 5})
    b = dump_with({(3, 5): 4, (5, 4): 4})
    assert resolve_for_dumps("auto", [a]) == [0, 1, 2]
    assert resolve_for_dumps("auto", [a, b]) == [3, 4, 5]
    assert resolve_for_dumps("C5,c0,c1", [a, b]) == [5, 0, 1]
