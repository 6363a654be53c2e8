"""Result files as one set: every file of a run replaces the last run's, or none does."""
import pytest

from repanalysis.extract.store import write_json_atomic
from repanalysis.outputs import output_set


def test_a_failed_set_keeps_the_previous_files_and_leaves_no_temporary_file(tmp_path):
    write_json_atomic(tmp_path / "a.json", {"run": 1})
    write_json_atomic(tmp_path / "b.json", {"run": 1})
    with pytest.raises(RuntimeError, match="figure failed"):
        with output_set():
            write_json_atomic(tmp_path / "a.json", {"run": 2})
            assert (tmp_path / "a.json").read_text().count("1") == 1      # not in place before the set ends
            raise RuntimeError("figure failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]
    assert '"run": 1' in (tmp_path / "a.json").read_text()


def test_a_set_puts_everything_in_place_at_its_end_and_removes_what_it_discards(tmp_path):
    write_json_atomic(tmp_path / "stale.json", {"run": 1})
    with output_set() as outer:
        with output_set() as inner:                # a set opened inside another joins it
            assert inner is outer
            write_json_atomic(tmp_path / "a.json", {"run": 2})
        assert not (tmp_path / "a.json").exists()   # the inner block's end is not the set's end
        outer.discard(tmp_path / "stale.json", tmp_path / "never-there.json")
        write_json_atomic(tmp_path / "b.json", {"run": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]
