"""Every JSON the single commands write carries the provenance of its inputs: checkpoint sha256 (equal to the file's
own hash), data, transform, tool version, when written."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from _cli import run_cli

NAMES = ("CE", "LS")


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.mark.parametrize("command,extra,file,inputs", [
    ("analyze-logits", [], "logit_stats.json", 2),
    ("calibration", ["--bootstrap", "0"], "calibration.json", 2),
    ("separation", [], "separation.json", 2),
    ("collapse", [], "collapse.json", 2),
])
def test_analysis_json_records_its_inputs(command, extra, file, inputs, real_dumps, real_checkpoints, tmp_path,
                                          capsys):
    dumps = [str(real_dumps[n]["test"].path) for n in NAMES]
    code, _, err = run_cli([command, *dumps, "--names", ",".join(NAMES), "--out", str(tmp_path), "--device", "cpu",
                            *extra], capsys)
    assert code == 0, err
    prov = json.loads((tmp_path / file).read_text())["provenance"]
    assert prov["tool"] == "repanalysis" and prov["version"] and prov["written"].startswith("20")
    assert prov["command"].startswith(f"repanalysis {command} ")
    assert [i["name"] for i in prov["inputs"]] == list(NAMES)[:inputs]
    for record, name in zip(prov["inputs"], NAMES):
        assert record["checkpoint"]["sha256"] == _sha(real_checkpoints[name])
        assert record["dump"] == dumps[NAMES.index(name)]
        assert record["data"]["root"].endswith(".npz") and record["num_samples"] == real_dumps[name]["test"].num_samples
        assert record["transform"]["mean"] == real_dumps[name]["test"].meta["transform"]["mean"]


def test_list_payloads_keep_their_rows_under_results(real_dumps, tmp_path, capsys):
    dumps = [str(real_dumps[n]["test"].path) for n in NAMES]
    code, stdout, err = run_cli(["separation", *dumps, "--names", ",".join(NAMES), "--out", str(tmp_path), "--json",
                                 "--device", "cpu"], capsys)
    assert code == 0, err
    written = json.loads((tmp_path / "separation.json").read_text())
    assert written["results"] == json.loads(stdout)           # the rows as printed, the provenance beside them
