"""The Dump store: writing, resuming, completion, the seed .pt format, and refusing bad paths."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import repanalysis as ra
from repanalysis.errors import DumpError, RepanalysisError
from repanalysis.extract.store import Dump, DumpWriter, load_dump


def _arrays(n=50, k=7, d=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, k)).astype(np.float32), rng.integers(0, k, n), rng.normal(size=(n, d)).astype(np.float32)


def test_save_and_load_roundtrip_is_memory_mapped(tmp_path):
    logits, labels, feats = _arrays()
    w = np.ones((7, 5), np.float32)
    d = Dump.from_arrays(logits, labels, feats, class_names=list("abcdefg"), classifier_weight=w,
                         classifier_bias=np.zeros(7), name="toy").save(tmp_path / "d")
    assert isinstance(d.logits, np.memmap)
    np.testing.assert_array_equal(d.logits, logits)
    np.testing.assert_array_equal(d.labels, labels)
    np.testing.assert_array_equal(d.features, feats)
    np.testing.assert_array_equal(d.classifier_weight, w)
    assert d.class_names == list("abcdefg") and d.name == "toy" and d.complete
    assert (d.num_samples, d.num_classes, d.feature_dim) == (50, 7, 5)


def test_interrupted_writer_resumes_and_completes_only_at_the_end(tmp_path):
    logits, labels, _ = _arrays(n=30)
    specs = {"logits": ((7,), np.float32), "labels": ((), np.int64)}
    meta = {"fingerprint": "run-1"}
    w = DumpWriter(tmp_path / "d", 30, specs, meta)
    w.write(0, {"logits": logits[:10], "labels": labels[:10]})
    w.commit(10)
    w.write(10, {"logits": logits[10:15] * 0 + 99, "labels": labels[10:15]})  # written but never committed
    del w
    with pytest.raises(DumpError, match="incomplete Dump .10 of 30 rows.*resume"):
        load_dump(tmp_path / "d")
    partial = load_dump(tmp_path / "d", allow_incomplete=True)
    assert partial.num_samples == 10 and not partial.complete
    w2 = DumpWriter(tmp_path / "d", 30, specs, meta)
    assert w2.done == 10
    w2.write(10, {"logits": logits[10:], "labels": labels[10:]})
    w2.finalize()
    d = load_dump(tmp_path / "d")
    np.testing.assert_array_equal(d.logits, logits)
    assert json.loads((tmp_path / "d" / "meta.json").read_text())["complete"] is True


def test_existing_output_is_refused_unless_overwrite(tmp_path):
    logits, labels, _ = _arrays(n=5)
    specs = {"logits": ((7,), np.float32), "labels": ((), np.int64)}
    w = DumpWriter(tmp_path / "d", 5, specs, {"fingerprint": "a"})
    w.write(0, {"logits": logits, "labels": labels})
    w.finalize()
    with pytest.raises(DumpError, match="complete Dump of this same run.*--overwrite"):
        DumpWriter(tmp_path / "d", 5, specs, {"fingerprint": "a"})
    with pytest.raises(DumpError, match="different run.*--overwrite"):
        DumpWriter(tmp_path / "d", 5, specs, {"fingerprint": "b"})
    w = DumpWriter(tmp_path / "d", 5, specs, {"fingerprint": "b"}, overwrite=True)
    assert w.done == 0
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "thesis.tex").write_text("precious")
    with pytest.raises(DumpError, match="not a Dump"):
        DumpWriter(tmp_path / "other", 5, specs, {})
    with pytest.raises(DumpError, match="not a Dump's"):
        DumpWriter(tmp_path / "other", 5, specs, {}, overwrite=True)
    assert (tmp_path / "other" / "thesis.tex").read_text() == "precious"


def _files(folder):
    """{relative path: bytes} of every file under ``folder``."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_overwrite_never_deletes_files_that_are_not_a_dumps(tmp_path):
    # --overwrite replaces a Dump of ours, never a folder that holds the user's files: those stay byte for byte,
    # and the message (with or without --overwrite) does not send the user to --overwrite
    from repanalysis.extract.store import LAYOUT_DIR, staging_path

    logits, labels, _ = _arrays(n=5)
    specs = {"logits": ((7,), np.float32), "labels": ((), np.int64)}
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("my notes")
    (user / "settings.json").write_text("{}")
    # a complete Dump, an empty one (laid out, no row done) and a killed layout, each with the user's file inside
    complete = tmp_path / "complete"
    w = DumpWriter(complete, 5, specs, {"fingerprint": "a"})
    w.write(0, {"logits": logits, "labels": labels})
    w.finalize()
    empty = tmp_path / "empty"
    DumpWriter(empty, 5, specs, {"fingerprint": "a"})
    killed = tmp_path / "killed"
    (killed / LAYOUT_DIR).mkdir(parents=True)
    np.save(killed / "logits.npy", logits)
    for folder in (complete, empty, killed):
        (folder / "notes.txt").write_text("mine")
    for folder in (user, complete, empty, killed):
        before = _files(folder)
        for overwrite in (False, True):
            with pytest.raises(DumpError) as err:
                DumpWriter(folder, 5, specs, {"fingerprint": "b"}, overwrite=overwrite)
            msg = str(err.value)
            assert f"output {folder} holds files that are not a Dump's (notes.txt" in msg, msg
            assert msg.endswith("choose another --output or empty it") and "pass --overwrite" not in msg, msg
        assert _files(folder) == before and not staging_path(folder).exists()
    with pytest.raises(DumpError, match=r"holds files that are not a Dump's \(notes.txt, settings.json\)"):
        DumpWriter(user, 5, specs, {"fingerprint": "b"}, overwrite=True)
    # a staging folder of the user's is not emptied either; the Dump being replaced stays as it was
    (complete / "notes.txt").unlink()
    staging_path(complete).mkdir()
    (staging_path(complete) / "draft.txt").write_text("draft")
    with pytest.raises(DumpError, match=r"overwrite.partial holds files that are not a Dump's \(draft.txt\)"):
        DumpWriter(complete, 5, specs, {"fingerprint": "b"}, overwrite=True)
    assert (staging_path(complete) / "draft.txt").read_text() == "draft"
    np.testing.assert_array_equal(load_dump(complete).logits, logits)
    # a damaged Dump (nothing but a Dump's files, no meta.json) is ours: replaced with --overwrite only
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    np.save(damaged / "logits.npy", logits)
    np.save(damaged / "labels.npy", labels)
    with pytest.raises(DumpError, match=r"already exists \(a damaged Dump.*\); pass --overwrite to replace it"):
        DumpWriter(damaged, 5, specs, {"fingerprint": "b"})
    w = DumpWriter(damaged, 5, specs, {"fingerprint": "b"}, overwrite=True)
    w.write(0, {"logits": logits + 1, "labels": labels})
    w.finalize()
    np.testing.assert_array_equal(load_dump(damaged).logits, logits + 1)
    # what a file browser leaves in any folder (.DS_Store, AppleDouble "._x") does not make a Dump foreign
    (damaged / ".DS_Store").write_bytes(b"\0")
    (damaged / "._logits.npy").write_bytes(b"\0")
    w = DumpWriter(damaged, 5, specs, {"fingerprint": "c"}, overwrite=True)
    w.write(0, {"logits": logits + 2, "labels": labels})
    w.finalize()
    np.testing.assert_array_equal(load_dump(damaged).logits, logits + 2)
    fresh = tmp_path / "fresh"                      # a new folder a file browser has already visited: empty
    fresh.mkdir()
    (fresh / ".DS_Store").write_bytes(b"\0")
    w = DumpWriter(fresh, 5, specs, {"fingerprint": "d"})
    w.write(0, {"logits": logits, "labels": labels})
    w.finalize()
    np.testing.assert_array_equal(load_dump(fresh).logits, logits)


def test_not_enough_disk_space_is_refused_before_writing(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9, 1000))
    with pytest.raises(DumpError, match="not enough disk space.*MiB"):
        DumpWriter(tmp_path / "d", 10_000, {"logits": ((1000,), np.float32)}, {})
    assert not (tmp_path / "d" / "logits.npy").exists()


def test_seed_pt_roundtrip_and_bad_pt_files(tmp_path):
    logits, labels, _ = _arrays()
    torch.save({"logits": torch.from_numpy(logits), "labels": torch.from_numpy(labels)}, tmp_path / "seed.pt")
    d = ra.load_dump(tmp_path / "seed.pt")
    np.testing.assert_array_equal(d.logits, logits)
    assert d.name == "seed" and d.num_classes == 7
    out = d.save(tmp_path / "copy.pt")
    obj = torch.load(tmp_path / "copy.pt", weights_only=True)
    assert obj["logits"].dtype == torch.float32 and obj["labels"].dtype == torch.int64
    np.testing.assert_array_equal(out.labels, labels)
    torch.save({"scores": torch.zeros(3, 2)}, tmp_path / "nologits.pt")
    with pytest.raises(DumpError, match="no 'logits' entry .found \\['scores'\\]"):
        ra.load_dump(tmp_path / "nologits.pt")
    torch.save({"logits": torch.zeros(3, 2), "labels": torch.zeros(4)}, tmp_path / "mismatch.pt")
    with pytest.raises(DumpError, match="length 3"):
        ra.load_dump(tmp_path / "mismatch.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a pickle at all")
    with pytest.raises(DumpError, match="cannot read"):
        ra.load_dump(tmp_path / "junk.pt")
    with pytest.raises(DumpError, match="no such dump"):
        ra.load_dump(tmp_path / "missing")


def test_iter_chunks_and_subset_cover_every_row(tmp_path):
    logits, labels, feats = _arrays(n=103)
    d = Dump.from_arrays(logits, labels, feats).save(tmp_path / "d")
    seen = np.concatenate([c["logits"] for _, c in d.iter_chunks(("logits",), chunk_size=10)])
    np.testing.assert_array_equal(seen, logits)
    sub = d.subset(labels == 3)
    np.testing.assert_array_equal(sub.features, feats[labels == 3])
    np.testing.assert_array_equal(sub.ids, np.flatnonzero(labels == 3))


def test_disk_full_while_reserving_leaves_nothing_behind(tmp_path, monkeypatch):
    import errno
    import os

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    specs = {"logits": ((7,), np.float32), "labels": ((), np.int64)}
    with pytest.raises(DumpError, match="disk full while reserving"):
        DumpWriter(tmp_path / "new", 30, specs, {"fingerprint": "a"})
    assert not (tmp_path / "new").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(DumpError, match="disk full"):
        DumpWriter(tmp_path / "empty", 30, specs, {"fingerprint": "a"})
    assert (tmp_path / "empty").is_dir() and not any((tmp_path / "empty").iterdir())
    monkeypatch.undo()
    w = DumpWriter(tmp_path / "new", 30, specs, {"fingerprint": "a"})    # space again: a clean start
    assert w.done == 0


def test_non_ascii_sample_names_round_trip_whatever_the_locale(tmp_path):
    """A Dump written under an ASCII locale (C locale, no UTF-8 mode) holds UTF-8 and reads back the same
    names, including a file name that is not valid UTF-8 (a surrogate escape from os.fsdecode)."""
    import os
    import subprocess
    import sys

    names = ["caf\u00e9.png", "\u00fcber/\u5b57.png", os.fsdecode(b"latin\xe9.png")]
    script = ("import sys, numpy as np; from repanalysis.extract.store import DumpWriter;"
              "names = [n.encode('utf-8', 'surrogateescape').decode('utf-8', 'surrogateescape') "
              "for n in sys.argv[2:]];"
              "w = DumpWriter(sys.argv[1], 3, {'logits': ((2,), np.float32), 'labels': ((), np.int64)},"
              " {'name': 'caf\\u00e9'}, sample_names=names);"
              "w.write(0, {'logits': np.zeros((3, 2), np.float32), 'labels': np.arange(3) % 2});"
              " w.commit(3); w.finalize()")
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "d"), *names], env=env,
                          capture_output=True, text=True, encoding="utf-8", errors="surrogateescape")
    assert proc.returncode == 0, proc.stderr
    raw = (tmp_path / "d" / "samples.txt").read_bytes()
    assert raw == b"caf\xc3\xa9.png\n\xc3\xbcber/\xe5\xad\x97.png\nlatin\xe9.png\n"
    d = load_dump(tmp_path / "d")
    assert d.sample_names() == names and d.meta["name"] == "caf\u00e9"


@pytest.mark.parametrize("kwargs, message", [
    ({"logits": np.zeros(5)}, r"logits must be 2-D \[N, K\]; got shape \(5,\)"),
    ({"labels": np.zeros(4, int)}, r"labels must be \[N\] for logits of shape \[N=5, K=3\]; got shape \(4,\)"),
    ({"features": np.zeros((4, 2))}, r"features must be \[N, D\] .* got shape \(4, 2\)"),
    ({"features": np.zeros(5)}, r"features must be \[N, D\] .* got shape \(5,\)"),
    ({"classifier_weight": np.zeros((2, 2))}, r"classifier_weight must be \[K, D\] .* got shape \(2, 2\)"),
    ({"classifier_bias": np.zeros((2, 1))}, r"classifier_bias must be \[K\] .* got shape \(2, 1\)"),
    ({"features": np.zeros((5, 2)), "classifier_weight": np.zeros((3, 4))},
     r"classifier_weight is \[K, 4\] but the features have D = 2"),
])
def test_from_arrays_checks_shapes(kwargs, message):
    args = {"logits": np.zeros((5, 3)), "labels": np.arange(5) % 3, **kwargs}
    with pytest.raises(DumpError, match=message):
        Dump.from_arrays(args.pop("logits"), args.pop("labels"), **args)


@pytest.mark.parametrize("kwargs, message", [
    ({"class_names": "catdogbird"}, r"class_names must be a list of strings, one per class \(K = 3\); got str"),
    ({"class_names": 5}, r"class_names must be a list of strings, one per class \(K = 3\); got int"),
    ({"class_names": ["a", None, "c"]}, r"class_names must be .* strings.*got the entry None"),
    ({"class_names": ["a", 2.5, "c"]}, r"class_names must be .* strings.*got the entry 2.5"),
    ({"meta": ["split", "test"]}, r"meta must be a dict; got list"),
    ({"logits": np.full((5, 3), "x")}, r"logits has dtype <U1; expected real numbers"),
    ({"logits": np.zeros((5, 3), object)}, r"logits has dtype object; expected real numbers"),
    ({"logits": np.zeros((5, 3), complex)}, r"logits has dtype complex128; expected real numbers"),
    ({"features": np.full((5, 2), "x")}, r"features has dtype <U1; expected real numbers"),
    ({"ids": np.zeros(5)}, r"ids has dtype float64; expected integer sample indices"),
    ({"logits": [[1.0, 2.0, 3.0], [1.0, 2.0]] + [[0.0] * 3] * 3}, r"logits is ragged .*rectangular"),
])
def test_from_arrays_refuses_bad_names_meta_and_dtypes(kwargs, message):
    args = {"logits": np.zeros((5, 3)), "labels": np.arange(5) % 3, **kwargs}
    with pytest.raises(DumpError, match=message):
        Dump.from_arrays(args.pop("logits"), args.pop("labels"), **args)


def test_from_arrays_casts_integer_logits_and_keeps_fewer_class_names(tmp_path):
    d = Dump.from_arrays(np.arange(15).reshape(5, 3), np.arange(5) % 3, class_names=["a", "b"])
    assert d.logits.dtype == np.float32 and d.class_names == ["a", "b"]   # names of the first classes
    assert d.save(tmp_path / "d").logits.dtype == np.float32


def _saved(tmp_path, n=20, k=4, d=3):
    logits, labels, feats = _arrays(n=n, k=k, d=d)
    Dump.from_arrays(logits, labels, feats, class_names=list("abcd")[:k], classifier_weight=np.ones((k, d)),
                     name="toy").save(tmp_path / "d")
    return tmp_path / "d"


def _edit_meta(path, **fields):
    meta = json.loads((path / "meta.json").read_text())
    for key, value in fields.items():
        if key == "done":
            meta["progress"] = {"done": value}
        else:
            meta[key] = value
    (path / "meta.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("fields, message", [
    ({"complete": False, "done": -5}, r"progress.done is -5; expected an integer in \[0, 20\]"),
    ({"complete": False, "done": 21}, r"progress.done is 21; expected an integer in \[0, 20\]"),
    ({"complete": False, "done": "x"}, r"progress.done is 'x'; expected an integer"),
    ({"num_classes": "ten"}, r"num_classes is 'ten'; expected 4, the logits' width"),
    ({"num_classes": 7}, r"num_classes is 7; expected 4, the logits' width"),
    ({"version": "2"}, r"version is '2'; expected an integer"),
    ({"class_names": 5}, r"class_names must be a list of strings, one per class \(K = 4\); got int"),
    ({"class_names": ["a", None]}, r"class_names must be a list of strings.*got the entry None"),
    ({"wnids": "n01440764"}, r"wnids must be a list of strings, one per class \(K = 4\); got str"),
    ({"num_samples": 19, "done": 19}, r"num_samples is 19 but logits.npy has 20 rows"),
    ({"complete": "yes"}, r"complete is 'yes'; expected true or false"),
])
def test_load_dump_validates_meta_fields(tmp_path, fields, message):
    path = _saved(tmp_path)
    _edit_meta(path, **fields)
    with pytest.raises(DumpError, match=f"meta.json: {message}.*the Dump is damaged") as err:
        d = load_dump(path, allow_incomplete=True)
        print(d.num_samples, d.num_classes, d.class_names, d.wnids)   # the old code failed only here, or never
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("file, content, message", [
    ("features.npy", b"", r"features.npy is unreadable"),
    ("features.npy", np.zeros(20, np.float32), r"features must be \[N, D\] .*got shape \(20,\)"),
    ("classifier_weight.npy", np.zeros((3, 3), np.float32), r"classifier_weight must be \[K, D\] .*got shape \(3, 3\)"),
    ("ids.npy", np.zeros(19, np.int64), r"ids must be \[N\] .*got shape \(19,\)"),
    ("logits.npy", np.full((20, 4), "x"), r"logits has dtype <U1; expected real numbers"),
])
def test_load_dump_refuses_damaged_arrays(tmp_path, file, content, message):
    path = _saved(tmp_path)
    if isinstance(content, bytes):
        (path / file).write_bytes(content)
    else:
        np.save(path / file, content)
    with pytest.raises(DumpError, match=f"{message}.*the Dump is damaged"):
        d = load_dump(path)
        repr(d)   # the old code failed here (IndexError) for 1-D features


def test_seed_pt_arrays_are_checked_like_a_dump(tmp_path):
    torch.save({"logits": torch.zeros(6, 3), "labels": torch.zeros(6), "features": torch.zeros(6, 2),
                "classifier_weight": torch.zeros(3, 5)}, tmp_path / "w.pt")
    with pytest.raises(DumpError, match=r"w.pt: classifier_weight is \[K, 5\] but the features have D = 2"):
        load_dump(tmp_path / "w.pt")
    torch.save({"logits": torch.zeros(6, 3), "labels": torch.zeros(6), "features": torch.zeros(6)},
               tmp_path / "f.pt")
    with pytest.raises(DumpError, match=r"f.pt: features must be \[N, D\] .*got shape \(6,\)"):
        load_dump(tmp_path / "f.pt")


def test_short_samples_txt_is_named(tmp_path):
    path = _saved(tmp_path)
    (path / "samples.txt").write_text("a.png\nb.png\n")
    with pytest.raises(DumpError, match=r"samples.txt has 2 lines but the Dump's 20 rows refer to samples 0..19"):
        load_dump(path).sample_names()
    (path / "samples.txt").write_text("".join(f"{i}.png\n" for i in range(20)))
    assert load_dump(path).sample_names()[-1] == "19.png"


def test_load_dump_names_what_the_path_is(tmp_path):
    path = _saved(tmp_path)
    for bad, kind in ((5, "int"), (None, "None"), ([str(path)], "list"), (str(path).encode(), "bytes")):
        with pytest.raises(RepanalysisError, match=f"Dump .*expected a file path \\(str or os.PathLike\\); got {kind}"):
            load_dump(bad)
    with pytest.raises(DumpError, match=r"logits.npy as a Dump: it is a .npy array; expected a Dump directory"):
        load_dump(path / "logits.npy")
    (tmp_path / "notes.pt").write_text("i am text\n")
    with pytest.raises(DumpError, match=r"notes.pt as a logits file: it is not a torch file"):
        load_dump(tmp_path / "notes.pt")
    # a cut-off file and one that pickles code are named as such (not "[Errno 22]" or torch's half sentence)
    import torch

    good = tmp_path / "good.pt"
    torch.save({"logits": torch.zeros(3, 2), "labels": torch.zeros(3, dtype=torch.long)}, good)
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:300])
    with pytest.raises(DumpError, match=r"cut.pt as a logits file: the file is truncated or damaged"):
        load_dump(tmp_path / "cut.pt")
    torch.save({"logits": torch.zeros(3, 2), "labels": torch.zeros(3, dtype=torch.long), "model": torch.nn.ReLU()},
               tmp_path / "code.pt")
    with pytest.raises(DumpError, match=r"code.pt as a logits file: it holds pickled Python objects besides "
                                        r"tensors, and unpickling can run code, so it is not read; expected"):
        load_dump(tmp_path / "code.pt")


def test_json_text_of_numpy_values_and_results():
    from repanalysis.analyze.calibration import calibration_report
    from repanalysis.errors import DataError
    from repanalysis.extract.store import json_text

    assert json.loads(json_text({np.int64(3): np.bool_(True), "b": [np.bool_(False)], np.str_("c"): 1})) == \
        {"3": True, "b": [False], "c": 1}
    rng = np.random.default_rng(0)
    res = calibration_report(rng.normal(size=(40, 3)), rng.integers(0, 3, 40))
    assert json.loads(json_text({"models": [res]}))["models"][0]["num_samples"] == 40
    with pytest.raises(DataError, match="cannot write a set as JSON"):
        json_text({"a": {1, 2}})


def test_from_arrays_meta_num_classes_must_match_the_logits(tmp_path):
    with pytest.raises(DumpError, match=r"meta num_classes is 5 but the logits have K = 3 columns"):
        Dump.from_arrays(np.zeros((4, 3)), np.arange(4) % 3, meta={"num_classes": 5})
    assert Dump.from_arrays(np.zeros((4, 3)), np.arange(4) % 3, meta={"num_classes": 3}).num_classes == 3


def test_a_column_or_row_bias_is_one_entry_per_class():
    for shape in ((3, 1), (1, 3)):
        d = Dump.from_arrays(np.zeros((5, 3)), np.arange(5) % 3, classifier_bias=np.arange(3.0).reshape(shape))
        np.testing.assert_array_equal(d.classifier_bias, [0.0, 1.0, 2.0])


def test_meta_written_by_other_json_writers_still_loads(tmp_path):
    """Whole floats for integers, 1 for true, more names than classes: what other writers produce loads."""
    path = _saved(tmp_path)
    ref = load_dump(path)
    _edit_meta(path, version=float(ref.meta["version"]), num_classes=4.0, num_samples=20.0, complete=1,
               class_names=list("abcdefg"), wnids=[f"n{i:08d}" for i in range(6)])
    d = load_dump(path)
    assert d.num_samples == 20 and d.num_classes == 4 and d.class_names[:4] == list("abcd")
    np.testing.assert_array_equal(d.logits, ref.logits)
    d2 = Dump.from_arrays(np.zeros((5, 3)), np.arange(5) % 3, class_names=[0, 1, 2])
    assert d2.class_names == ["0", "1", "2"]


@pytest.mark.parametrize("kind", ["symlink", "dot", "empty"])
def test_writer_lays_out_inside_the_output_folder(tmp_path, monkeypatch, kind):
    # an output that is a symlink to an empty folder, "." (the current folder, empty) or an existing empty
    # folder gets the Dump inside it; the rows written through the memory maps land in the final files
    logits, labels, _ = _arrays(n=12)
    specs = {"logits": ((7,), np.float32), "labels": ((), np.int64)}
    target = tmp_path / "target"
    target.mkdir()
    if kind == "symlink":
        out = tmp_path / "link"
        out.symlink_to(target)
    elif kind == "dot":
        monkeypatch.chdir(target)
        out = "."
    else:
        out = target
    w = DumpWriter(out, 12, specs, {"fingerprint": "a"})
    w.write(0, {"logits": logits, "labels": labels})
    w.finalize()
    d = load_dump(target)
    np.testing.assert_array_equal(d.logits, logits)
    assert sorted(p.name for p in target.iterdir()) == ["labels.npy", "logits.npy", "meta.json"]
    if kind == "symlink":
        assert (tmp_path / "link").is_symlink()
