"""Settings: where each comes from, and what a relative path in a settings file means."""
from repanalysis import config


def test_relative_paths_mean_the_folder_the_command_was_typed_in(tmp_path, monkeypatch):
    user = tmp_path / "xdg" / "repanalysis" / "config.toml"
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("REPANALYSIS_CONFIG", str(user))
    for var in ("REPANALYSIS_DATA", "REPANALYSIS_RUNS", "REPANALYSIS_CLASS_ORDER"):
        monkeypatch.delenv(var, raising=False)
    # the user file lives elsewhere: a relative value typed in `work` is stored as work's path
    config.set_value("data.root", "mydata", user=True, cwd=work)
    config.set_value("data.layout", "npz", user=True, cwd=work)        # not a path: stored as typed
    assert 'root = "' + str(work / "mydata") + '"' in user.read_text() and 'layout = "npz"' in user.read_text()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    s = config.settings(cwd=elsewhere)
    assert s["data.root"].value == str(work / "mydata") and s["data.root"].source == str(user)
    # a project file's relative path is relative to that file (the folder it was typed in)
    config.set_value("runs.dir", "myruns", cwd=work)
    assert config.settings(cwd=work)["runs.dir"].value == str(work / "myruns")
    assert 'dir = "myruns"' in (work / "repanalysis.toml").read_text()
