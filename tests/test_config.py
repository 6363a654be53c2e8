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


# `config set` edits the file with tomlkit: everything but the one value is kept byte for byte

import os  # noqa: E402
import re  # noqa: E402
import tomllib  # noqa: E402

import pytest  # noqa: E402

from repanalysis.errors import ConfigError  # noqa: E402

AUDIT_FILE = ('# comment kept\n[data]\nroot = "/data/x"  # where the digits are\n\n'
              '[tool.other]\nkey = 1\nlist = [1, 2]\n')


def _project(tmp_path, text: str):
    path = tmp_path / "repanalysis.toml"
    path.write_bytes(text.encode("utf-8"))
    return path


def test_set_keeps_comments_and_other_tables_byte_for_byte(tmp_path):
    path = _project(tmp_path, AUDIT_FILE)
    config.set_value("data.split", "val", cwd=tmp_path)          # a new key: appended to its [data] table
    assert path.read_text() == AUDIT_FILE.replace('digits are\n', 'digits are\nsplit = "val"\n')
    config.set_value("data.root", "/data/y", cwd=tmp_path)       # an existing key: replaced where it stands
    assert path.read_text() == AUDIT_FILE.replace("/data/x", "/data/y").replace(
        'digits are\n', 'digits are\nsplit = "val"\n')
    config.set_value("runs.dir", "myruns", cwd=tmp_path)         # a new table: appended at the end
    assert path.read_text().endswith('list = [1, 2]\n\n[runs]\ndir = "myruns"\n')
    assert tomllib.loads(path.read_text()) == {
        "data": {"root": "/data/y", "split": "val"}, "tool": {"other": {"key": 1, "list": [1, 2]}},
        "runs": {"dir": "myruns"}}
    assert os.listdir(tmp_path) == ["repanalysis.toml"]


@pytest.mark.parametrize("before,after", [
    # a dotted key at the top level is replaced, or a sibling added next to it
    ('title = "t"\ndata.root = "/a"   # c\n\n[runs]\ndir = "r"\n',
     'title = "t"\ndata.root = "/a"   # c\ndata.split = "val"\n\n[runs]\ndir = "r"\n'),
    # CRLF line ends and an indented table are followed; a file without a final newline gets one before the key
    ('# c\r\n[data]\r\n  root = "/a"\r\n\r\n[runs]\r\ndir = "x"\r\n',
     '# c\r\n[data]\r\n  root = "/a"\r\n  split = "val"\r\n\r\n[runs]\r\ndir = "x"\r\n'),
    ('[data]\nroot = "/a"  # no newline', '[data]\nroot = "/a"  # no newline\nsplit = "val"\n'),
    # an existing value written as a multi-line string whose text looks like a table header
    ('[data]\nsplit = """\n[runs]\nx"""\n[x]\na = [\n 1, # ]\n "]",\n]\n',
     '[data]\nsplit = "val"\n[x]\na = [\n 1, # ]\n "]",\n]\n'),
    ('', '[data]\nsplit = "val"\n'),
    # a new key goes right after the table's last key, not after the comment that heads the next table
    ('[data]\nroot = "/a"\n\n# where runs go\n[runs]\ndir = "x"\n',
     '[data]\nroot = "/a"\nsplit = "val"\n\n# where runs go\n[runs]\ndir = "x"\n'),
    # a new table in a CRLF file without a final newline: CRLF throughout
    ('[runs]\r\ndir = "r"', '[runs]\r\ndir = "r"\r\n\r\n[data]\r\nsplit = "val"\r\n'),
    # an existing value of another type is replaced, its comment kept
    ('[data]\nsplit = 5 # c\n', '[data]\nsplit = "val" # c\n'),
])
def test_set_edits_only_the_one_value(tmp_path, before, after):
    path = _project(tmp_path, before)
    config.set_value("data.split", "val", cwd=tmp_path)
    assert path.read_bytes().decode("utf-8") == after


@pytest.mark.parametrize("text,shown", [('data = {root = "/a"}\n', 'data = {root = "/a"}'),
                                        ("data = 5\n", "data = 5"), ('[[data]]\nroot = "/a"\n', "[[data]]")])
def test_set_refuses_a_section_that_is_not_a_table_and_leaves_the_file(tmp_path, text, shown):
    path = _project(tmp_path, text)
    with pytest.raises(ConfigError, match=r"^cannot set data.split in .*repanalysis.toml: 'data' is not written "
                                          r"as a \[data\] table \(" + re.escape(shown) + r"\); the file is unchanged"):
        config.set_value("data.split", "val", cwd=tmp_path)
    assert path.read_text() == text and os.listdir(tmp_path) == ["repanalysis.toml"]


def test_set_refuses_a_key_that_is_a_table_and_leaves_the_file(tmp_path):
    text = 'x = 1\n[data.split]\na = 1\n'
    path = _project(tmp_path, text)
    with pytest.raises(ConfigError, match=r"^cannot set data.split in .*: it is a table there \(\[data.split\]\)"):
        config.set_value("data.split", "val", cwd=tmp_path)
    assert path.read_text() == text and os.listdir(tmp_path) == ["repanalysis.toml"]


@pytest.mark.parametrize("value", ["x\ny", 'a"b\\c', "tab\there\r\f\b", "bell\x07del\x7fnul\x00", "üñï €"])
def test_set_escapes_every_control_character(tmp_path, value):
    path = _project(tmp_path, AUDIT_FILE)
    config.set_value("data.root", value, cwd=tmp_path)
    assert tomllib.loads(path.read_text())["data"]["root"] == value
    assert config.settings(cwd=tmp_path)["data.split"].source == "built-in default"   # later reads still work
    text = path.read_text()
    assert text.count("\n") == AUDIT_FILE.count("\n") and not any(ord(c) < 0x20 and c != "\n" for c in text)


def test_set_refuses_text_that_is_not_utf8_and_leaves_no_temporary_file(tmp_path):
    path = _project(tmp_path, AUDIT_FILE)
    bad = os.fsdecode(b"/tmp/bad\xff")                            # a non-UTF-8 path, as Python hands it over
    with pytest.raises(ConfigError, match=r"^data.root: the value '/tmp/bad\\udcff' is not valid UTF-8 text .*"
                                          r"a TOML config file holds UTF-8 text only"):
        config.set_value("data.root", bad, cwd=tmp_path)
    assert path.read_text() == AUDIT_FILE and os.listdir(tmp_path) == ["repanalysis.toml"]


def test_set_leaves_nothing_behind_when_the_write_fails(tmp_path, monkeypatch):
    path = _project(tmp_path, AUDIT_FILE)

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(config.os, "replace", full_disk)
    with pytest.raises(ConfigError, match=r"^cannot write config file .*repanalysis.toml: No space left on device$"):
        config.set_value("data.root", "/new", cwd=tmp_path)
    assert path.read_text() == AUDIT_FILE and os.listdir(tmp_path) == ["repanalysis.toml"]


def test_a_config_file_that_is_not_utf8_is_one_clear_error(tmp_path):
    path = tmp_path / "repanalysis.toml"
    path.write_bytes(b'[data]\nroot = "/a\xff"\n')
    with pytest.raises(ConfigError, match=r"^config file .*repanalysis.toml is not UTF-8 text"):
        config.set_value("data.split", "val", cwd=tmp_path)
    with pytest.raises(ConfigError, match=r"is not UTF-8 text"):
        config.settings(cwd=tmp_path)
    assert path.read_bytes() == b'[data]\nroot = "/a\xff"\n'


def test_cli_config_set_keeps_the_file_and_refuses_bad_values_in_one_line(tmp_path, capsys, monkeypatch):
    from _cli import run_cli

    monkeypatch.chdir(tmp_path)
    path = _project(tmp_path, AUDIT_FILE)
    code, out, _ = run_cli(["config", "set", "data.root", "x\ny"], capsys)
    assert code == 0 and tomllib.loads(path.read_text())["data"]["root"] == "x\ny"
    assert path.read_text() == AUDIT_FILE.replace('"/data/x"', '"x\\ny"')
    code, out, err = run_cli(["config", "set", "data.root", os.fsdecode(b"/tmp/bad\xff")], capsys)
    assert code == 2 and out == "" and err.startswith("error: data.root: the value") and err.count("\n") == 1
    assert "not valid UTF-8" in err and "Traceback" not in err and "internal error" not in err
    assert path.read_text() == AUDIT_FILE.replace('"/data/x"', '"x\\ny"') and os.listdir(tmp_path) == [path.name]


def test_set_refuses_an_edit_that_does_not_read_back_as_set(tmp_path, monkeypatch):
    # the safety net: the edited text is parsed again and must hold the value and every other setting unchanged
    path = _project(tmp_path, AUDIT_FILE)
    monkeypatch.setattr(config, "_edited_toml", lambda text, key, value, p: text.replace("key = 1", "key = 2"))
    with pytest.raises(ConfigError, match=r"^cannot set data.root in .*repanalysis.toml without changing its other "
                                          r"settings .*the file is unchanged: edit it by hand$"):
        config.set_value("data.root", "/new", cwd=tmp_path)
    assert path.read_text() == AUDIT_FILE and os.listdir(tmp_path) == ["repanalysis.toml"]


def test_set_edits_a_linked_config_where_it_lives_and_keeps_the_users_files(tmp_path):
    # a project file that links to a dotfiles copy stays a link; a user's own repanalysis.toml.tmp is untouched
    dot = tmp_path / "dot"
    dot.mkdir()
    (dot / "repanalysis.toml").write_text('[runs]\ndir = "r"\n')
    project = tmp_path / "proj"
    project.mkdir()
    (project / "repanalysis.toml").symlink_to(dot / "repanalysis.toml")
    (project / "repanalysis.toml.tmp").write_text("my notes")
    config.set_value("data.split", "val", cwd=project)
    assert (project / "repanalysis.toml").is_symlink()
    assert (dot / "repanalysis.toml").read_text() == '[runs]\ndir = "r"\n\n[data]\nsplit = "val"\n'
    assert (project / "repanalysis.toml.tmp").read_text() == "my notes"
    assert sorted(p.name for p in project.iterdir()) == ["repanalysis.toml", "repanalysis.toml.tmp"]
    assert sorted(p.name for p in dot.iterdir()) == ["repanalysis.toml"]
