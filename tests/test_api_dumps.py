"""The Python API on Dumps: what each CLI command does, in a few lines of a notebook."""
import numpy as np
import pytest
import torch

import repanalysis as ra
from repanalysis.analyze.calibration import calibrate_dumps, calibration_report
from repanalysis.analyze.confidence import confidence_dumps, misclassification_scores, ood_detection, ood_dumps
from repanalysis.analyze.embed import embed_dumps
from repanalysis.analyze.projection import project_dump, project_dumps
from repanalysis.data.class_resolution import dump_confusion_matrix, most_confused_triplet_from_confusion
from repanalysis.errors import DataError
from repanalysis.extract.store import Dump


def model_dump(sha, seed=0, n=240, k=6, d=5, confuse=(0, 1, 2), root="/data/a"):
    """A Dump whose model confuses the classes in ``confuse`` with each other, and no others."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % k
    z = torch.nn.functional.one_hot(y, k).float() * 4 + torch.randn(n, k, generator=g) * 0.3
    c = list(confuse)
    sel = torch.isin(y, torch.tensor(c))
    z[sel.nonzero().squeeze(1)[:, None], torch.tensor(c)[None]] += torch.rand(int(sel.sum()), 3, generator=g) * 6
    meta = {"dataset": {"root": root, "split": "test"}, "checkpoint": {"path": f"/ck/{sha}.pth", "sha256": sha * 8}}
    return Dump.from_arrays(z, y, features=torch.randn(n, d, generator=g) + y[:, None], name=sha,
                            classifier_weight=torch.randn(k, d, generator=g), classifier_bias=torch.zeros(k),
                            meta=meta)


def test_plot_families_are_attributes_like_the_analysis_families():
    assert ra.plot.calibration.reliability_figure is not None
    assert ra.plot.logits.__name__ == "repanalysis.plot.logits"
    assert ra.analyze.logits.__name__ == "repanalysis.analyze.logits"
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        ra.plot.nope


def test_project_dumps_shows_one_triplet_in_every_panel():
    # each model alone confuses another triplet; 'auto' over both is the triplet of the summed confusions
    a, b = model_dump("aa", confuse=(0, 1, 2)), model_dump("bb", seed=1, confuse=(3, 4, 5))
    a.logits[a.labels == 3, 4] += 3.0                    # a confuses 3 and 4 a little too
    alone = [project_dump(d, "auto", samples_per_class=10).classes for d in (a, b)]
    assert alone[0] != alone[1]
    together = most_confused_triplet_from_confusion(dump_confusion_matrix(a) + dump_confusion_matrix(b))
    results = project_dumps([a, b], "auto", samples_per_class=10)
    assert [r.classes for r in results] == [together, together]
    assert [r.name for r in results] == ["aa", "bb"]
    np.testing.assert_allclose(results[1].coords, project_dump(b, together, samples_per_class=10).coords)
    assert [r.name for r in project_dumps([a, b], [0, 1, 2], names="CE,LS")] == ["CE", "LS"]


def test_embed_dumps_resolves_classes_once():
    a, b = model_dump("aa", confuse=(0, 1, 2)), model_dump("bb", seed=1, confuse=(3, 4, 5))
    results = embed_dumps([a, b], "0,1", method="tsne", samples_per_class=20, perplexity=5.0)
    assert [r.classes for r in results] == [[0, 1], [0, 1]]
    assert [sorted(set(r.labels)) for r in results] == [[0, 1], [0, 1]]


@pytest.mark.parametrize("call", [
    lambda a, b: project_dumps([a, b], "auto", names=["x", "x"]),
    lambda a, b: calibrate_dumps([a, b], names="CE,CE"),
    lambda a, b: confidence_dumps([a, b], names=["m", "m"]),
])
def test_dump_level_calls_refuse_repeated_model_names(call):
    with pytest.raises(DataError, match="model names must be distinct: the names give (.x.|.CE.|.m.) twice"):
        call(model_dump("aa"), model_dump("bb", seed=1))


def test_models_of_different_tasks_are_refused_together():
    with pytest.raises(DataError, match=r"different numbers of classes \(\[5, 6\]\)"):
        project_dumps([model_dump("aa"), model_dump("bb", k=5)], [0, 1, 2])


def test_calibration_and_confidence_of_dumps_equal_the_array_functions():
    a, b = model_dump("aa"), model_dump("bb", seed=1)
    cal = calibrate_dumps([a, b], names=["CE", "LS"])
    assert [r.name for r in cal] == ["CE", "LS"]
    assert cal[1].ece == calibration_report(b.logits, b.labels).ece
    conf = confidence_dumps([a, b])
    ref = misclassification_scores(b.logits, b.labels, b.features)
    assert conf[1].auroc == ref.auroc and conf[1].name == "bb"
    logits_only = Dump.from_arrays(a.logits, a.labels, name="lo")
    with pytest.warns(RuntimeWarning, match="lo has no features"):
        (res,) = confidence_dumps([logits_only])
    assert "feature_l1" not in res.auroc


def test_ood_dumps_checks_each_pair_like_the_cli():
    a_in, a_ood = model_dump("aa"), model_dump("aa", seed=3, root="/data/svhn")
    (res,) = ood_dumps([a_in], [a_ood], names=["CE"])
    ref = ood_detection(a_in.logits, a_ood.logits, a_in.features, a_ood.features)
    assert res.name == "CE" and res.auroc == ref.auroc
    with pytest.raises(DataError, match="same model"):
        ood_dumps([a_in], [model_dump("bb", seed=3)])
    with pytest.raises(DataError, match="1 in-distribution but 2 OOD Dumps"):
        ood_dumps([a_in], [a_ood, a_ood])


def test_ood_detection_refuses_the_in_distribution_logits_as_ood():
    a = model_dump("aa")
    with pytest.raises(DataError, match="OOD logits are the in-distribution logits themselves"):
        ood_detection(a.logits, a.logits.copy())


@pytest.mark.parametrize("names, match", [
    ("x,", r"have an empty entry; expected one non-empty name per model"),
    ([" ", "A"], r"have an empty entry"),
    (5, r"names must be a list of strings or one string 'a,b,c'; got 5 \(int\)"),
])
def test_dump_level_names_are_checked_like_the_clis(names, match):
    a, b = model_dump("aa"), model_dump("bb", seed=1)
    for call in (calibrate_dumps, confidence_dumps, project_dumps):
        with pytest.raises(DataError, match=match):
            call([a, b], names=names)


def test_dump_level_calls_refuse_no_models():
    for call in (calibrate_dumps, confidence_dumps, project_dumps, embed_dumps):
        with pytest.raises(DataError, match="no models given; expected at least one Dump"):
            call([])
