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
    with pytest.raises(DataError, match=r"class index 12 is out of range; expected an index in 0\.\.9"):
        resolve_classes("1,2,12", 10, MNIST)


@pytest.mark.parametrize("spec, bad", [("-1,2,3", -1), ("1,2,10", 10), (["4", "-3", "nine"], -3), ([0, 1, 10], 10)])
def test_index_out_of_range_is_named_as_an_index(spec, bad):
    # "-1" used to be looked up as a name ("unknown class name '-1'"); K itself is one past the last index
    with pytest.raises(DataError, match=rf"^class index {bad} is out of range; expected an index in 0\.\.9 "
                                        r"\(the model has 10 classes\)$"):
        resolve_classes(spec, 10, MNIST)
    assert resolve_classes("+9, 0,+1", 10, MNIST) == [9, 0, 1]


def test_a_class_named_like_a_number_is_that_class():
    # speed-limit signs "20", "30", ..., or a class literally named "-1": an exact name is the class, and any
    # other integer text is an index (a Python int always is)
    names = ["-1", "20", "30", "0"]
    assert resolve_classes("-1,20,30", 4, names) == [0, 1, 2]
    assert resolve_classes("0,20,30", 4, names) == [3, 1, 2] and resolve_classes([0, 1, 2], 4, names) == [0, 1, 2]
    assert resolve_classes("2,1,+3", 4, names) == [2, 1, 3]
    with pytest.raises(DataError, match=r"^class index 40 is out of range"):
        resolve_classes("40,20,30", 4, names)
    with pytest.raises(DataError, match=r"^class name '7' is shared by classes 2, 3; give the index"):
        resolve_classes("7,0,1", 4, ["a", "b", "7", "7"])


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


def _nan_rows_case():
    """Logits of 6 classes where the models confuse {2, 3, 4}, plus 12 NaN / inf rows of class 1.

    The argmax of an all-NaN row is 0, so counting those rows would add 12 confusions 1 -> 0 and make the
    triplet {0, 1, x}; among the finite rows only {2, 3, 4} is confused (2 + 2 + 2 mistakes)."""
    k = 6
    labels = np.concatenate([np.repeat(np.arange(k), 10), np.ones(12, int)])
    pred = labels.copy()
    pred[[20, 21]] = 3          # class 2 rows predicted 3
    pred[[30, 31]] = 4          # class 3 rows predicted 4
    pred[[40, 41]] = 2          # class 4 rows predicted 2
    logits = np.eye(k)[pred]
    logits[60:70] = np.nan      # all NaN
    logits[70, 3] = np.inf      # one inf entry
    logits[71, 0] = -np.inf     # one -inf entry
    return logits, labels, pred


def test_confusion_matrix_excludes_nonfinite_rows_with_a_warning():
    logits, labels, pred = _nan_rows_case()
    with pytest.warns(RuntimeWarning, match=r"^12 of 72 samples have NaN or inf logits; they are excluded$"):
        conf = confusion_matrix(logits, labels, 6)
    want = np.histogram2d(labels[:60], pred[:60], bins=[np.arange(7)] * 2)[0]   # the 60 finite rows only
    np.testing.assert_array_equal(conf, want)
    assert conf[1, 0] == 0 and conf.sum() == 60
    with pytest.warns(RuntimeWarning, match="12 of 72"):
        assert most_confused_triplet(logits, labels, 6) == [2, 3, 4]
    with pytest.raises(DataError, match=r"^all 3 samples have NaN or inf logits; expected finite logits"):
        confusion_matrix(np.full((3, 4), np.nan), np.arange(3), 4)


def test_auto_on_dumps_excludes_nonfinite_rows_once_per_dump():
    from repanalysis.data.class_resolution import dump_confusion_matrix, resolve_for_dumps
    from repanalysis.extract.store import Dump

    logits, labels, pred = _nan_rows_case()
    dump = Dump.from_arrays(logits, labels, name="ce_test")
    with pytest.warns(RuntimeWarning) as caught:
        conf = dump_confusion_matrix(dump, chunk_size=7)      # 11 chunks, one warning with the total
    assert [str(w.message) for w in caught] == ["ce_test: 12 of 72 samples have NaN or inf logits; they are excluded"]
    np.testing.assert_array_equal(conf, np.histogram2d(labels[:60], pred[:60], bins=[np.arange(7)] * 2)[0])
    with pytest.warns(RuntimeWarning, match="ce_test: 12 of 72"):
        assert resolve_for_dumps("auto", [dump]) == [2, 3, 4]
    with pytest.raises(DataError, match=r"^nan: all 4 samples have NaN or inf logits"):
        dump_confusion_matrix(Dump.from_arrays(np.full((4, 6), np.nan), np.arange(4), name="nan"))
