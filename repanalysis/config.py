"""Project defaults: where the data set lives and where run folders go, so bare commands work.

Precedence, highest first: command-line flag > environment (REPANALYSIS_DATA, REPANALYSIS_LAYOUT,
REPANALYSIS_SPLIT, REPANALYSIS_CLASS_ORDER, REPANALYSIS_RUNS) > ``./repanalysis.toml`` > the user's config
file (``$REPANALYSIS_CONFIG``, else ``$XDG_CONFIG_HOME/repanalysis/config.toml`` or
``~/.config/repanalysis/config.toml``) > built-in defaults. A config file looks like::

    [data]
    root = "/datasets/imagenet/val"
    layout = "auto"
    split = "val"

    [runs]
    dir = "runs"

A run folder per checkpoint, ``<runs.dir>/<checkpoint stem>/``, holds its Dumps: ``logits/`` (from
``repanalysis logits``) and ``features/`` (from ``repanalysis extract``); later commands find them there.
"""
from __future__ import annotations

import copy
import os
import shutil
import tomllib
from dataclasses import dataclass
from pathlib import Path

from repanalysis.errors import ConfigError

KEYS = {  # key -> (environment variable, built-in default)
    "data.root": ("REPANALYSIS_DATA", None),
    "data.layout": ("REPANALYSIS_LAYOUT", "auto"),
    "data.split": ("REPANALYSIS_SPLIT", None),
    "data.class_order": ("REPANALYSIS_CLASS_ORDER", None),
    "runs.dir": ("REPANALYSIS_RUNS", "runs"),
}
PATH_KEYS = ("data.root", "data.class_order", "runs.dir")
PROJECT_FILE = "repanalysis.toml"
RUN_KINDS = ("features", "logits")  # preferred first when both exist


@dataclass(frozen=True)
class Setting:
    key: str
    value: object
    source: str  # "environment (VAR)", "<file>", "built-in default"


def user_config_path() -> Path:
    if os.environ.get("REPANALYSIS_CONFIG"):
        return Path(os.environ["REPANALYSIS_CONFIG"])
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "repanalysis" / "config.toml"


def _read_toml(path: Path) -> dict:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text; a TOML file must be UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None


def _lookup(table: dict, key: str):
    node = table
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def settings(cwd: str | os.PathLike | None = None) -> dict[str, Setting]:
    """The effective value of every key and where it came from."""
    cwd = Path(cwd or os.getcwd())
    files = [p for p in (cwd / PROJECT_FILE, user_config_path()) if p.is_file()]
    tables = [(p, _read_toml(p)) for p in files]
    out = {}
    for key, (env, default) in KEYS.items():
        if os.environ.get(env):
            out[key] = Setting(key, os.environ[env], f"environment ({env})")
            continue
        for path, table in tables:
            value = _lookup(table, key)
            if value is not None:
                if key in PATH_KEYS and not os.path.isabs(str(value)):
                    value = str((path.parent / str(value)))  # relative paths are relative to their file
                out[key] = Setting(key, value, str(path))
                break
        else:
            out[key] = Setting(key, default, "built-in default")
    return out


def get(key: str, cwd=None):
    return settings(cwd)[key].value


HOW_TO_SET_DATA = ("pass --data PATH, or set a default with `repanalysis config set data.root PATH` "
                   "(writes ./repanalysis.toml) or `export REPANALYSIS_DATA=PATH`")


def default_data() -> dict:
    """{'spec', 'layout', 'split', 'class_order'} of the configured data set; ConfigError when none is set."""
    s = settings()
    root = s["data.root"].value
    if not root:
        raise ConfigError(f"no data set given and no default configured: {HOW_TO_SET_DATA}")
    return {"spec": root, "layout": s["data.layout"].value or "auto", "split": s["data.split"].value,
            "class_order": s["data.class_order"].value}


def runs_dir() -> Path:
    return Path(str(get("runs.dir")))


def run_folder(checkpoint: str | os.PathLike) -> Path:
    """``<runs.dir>/<checkpoint stem>/``."""
    return runs_dir() / Path(checkpoint).stem


def default_output(checkpoint: str | os.PathLike, kind: str) -> Path:
    """Where ``repanalysis logits`` (kind='logits') or ``extract`` (kind='features') writes by default."""
    return run_folder(checkpoint) / kind


def default_dumps(require_features: bool = False):
    """Complete Dumps of the run folders, one per checkpoint: [(name, Dump)], features preferred.

    Raises ConfigError when there is none, saying how to make one.
    """
    from repanalysis.dump import load_dump

    root = runs_dir()
    found = []
    for folder in sorted(p for p in root.glob("*") if p.is_dir()) if root.is_dir() else []:
        kinds = RUN_KINDS[:1] if require_features else RUN_KINDS
        for kind in kinds:
            if (folder / kind / "meta.json").exists():
                dump = load_dump(folder / kind, allow_incomplete=True)
                if dump.complete:
                    found.append((folder.name, dump))
                    break
    if not found:
        what = "with features" if require_features else ""
        raise ConfigError(f"no complete Dumps {what} in the run folder {root}/; run `repanalysis extract "
                          f"--checkpoint MODEL.pth` first (or pass Dumps explicitly)".replace("  ", " "))
    return found


def set_value(key: str, value: str, user: bool = False, cwd=None) -> Path:
    """Write ``key = value`` into ./repanalysis.toml (or the user config with user=True).

    The file is edited with tomlkit (format-preserving): the key's existing value is replaced where it stands
    (``key = ...`` in its ``[section]``, or a dotted ``section.key = ...``), or the key is added to its
    section, or a new ``[section]`` is appended; comments, other tables and formatting are kept byte for byte,
    and the value is written as a TOML string with every control character escaped. A value that is not UTF-8
    text is refused. The result is parsed again (tomllib) and must hold the new value and every other setting
    unchanged before it atomically replaces the file (a symlinked file is edited where it lives); the file is
    left untouched when anything fails.
    """
    if key not in KEYS:
        raise ConfigError(f"unknown setting {key!r}; expected one of {', '.join(KEYS)}")
    if not isinstance(value, str):
        raise ConfigError(f"{key}: expected a string value; got {type(value).__name__}")
    if not value.strip():
        raise ConfigError(f"{key} cannot be empty; give a value (or edit {PROJECT_FILE} to remove the line)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(f"{key}: the value {value!r} is not valid UTF-8 text (a path with non-UTF-8 bytes?); "
                          f"a TOML config file holds UTF-8 text only, so give a UTF-8 value") from None
    if key == "data.layout":
        from repanalysis.data.datasets import LAYOUTS

        if value not in ("auto", *LAYOUTS):
            raise ConfigError(f"unknown data layout {value!r}; expected one of auto, {', '.join(LAYOUTS)}")
    path = user_config_path() if user else Path(cwd or os.getcwd()) / PROJECT_FILE
    if user and key in PATH_KEYS and not os.path.isabs(os.path.expanduser(value)):
        # relative to where the command is typed, not to the user config's folder (a project file is both)
        value = str(Path(cwd or os.getcwd()) / os.path.expanduser(value))
    old_table = _read_toml(path) if path.is_file() else {}
    text = path.read_bytes().decode("utf-8") if path.is_file() else ""  # _read_toml checked it is UTF-8 TOML
    new_text = _edited_toml(text, key, value, path)
    expected = _with_value(old_table, key, value)
    try:
        new_table = tomllib.loads(new_text)
    except tomllib.TOMLDecodeError:
        new_table = None
    if new_table is None or not _same(new_table, expected):
        raise ConfigError(f"cannot set {key} in {path} without changing its other settings (a layout this "
                          f"editor does not follow); the file is unchanged: edit it by hand")
    from repanalysis.outputs import umask_mode
    from repanalysis.outputs import remove_files, temp_file

    real = Path(os.path.realpath(path))       # a linked config file (dotfiles) is edited where it lives
    tmp = None
    try:
        real.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = temp_file(real)                 # a new file of its own: nothing of the user's is overwritten
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:   # TOML is UTF-8 whatever the locale
            fh.write(new_text)
        if real.is_file():
            shutil.copymode(real, tmp)
        else:
            umask_mode(tmp)
        os.replace(tmp, real)
        tmp = None
    except OSError as exc:
        raise ConfigError(f"cannot write config file {path}: {exc.strerror or exc}") from None
    finally:
        if tmp is not None:
            remove_files([tmp])
    return path


def _with_value(table: dict, key: str, value) -> dict:
    """A copy of a parsed config with ``key`` set (ConfigError when its section is not a table)."""
    out = copy.deepcopy(table)
    section, name = key.split(".")
    node = out.setdefault(section, {})
    if not isinstance(node, dict):
        raise ConfigError(f"cannot set {key}: {section!r} in the config file is a {type(node).__name__}, "
                          f"not a [{section}] table; fix the file by hand")
    node[name] = value
    return out


def _same(a, b) -> bool:
    """Equal parsed TOML values, in any key order, NaN equal to NaN."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    return type(a) is type(b) and a == b


def _edited_toml(text: str, key: str, value: str, path: Path) -> str:
    """``text`` with ``key`` set to the string ``value``, everything else as it was (tomlkit round trip).

    An existing value is replaced where it stands (in its ``[section]``, or as a dotted ``section.key``);
    a new key goes after the last key of its table, indented and line-ended like its neighbours; a new
    ``[section]`` is appended at the end. tomlkit writes the string escaped (control characters included).
    """
    import tomlkit
    from tomlkit.container import OutOfOrderTableProxy
    from tomlkit.exceptions import TOMLKitError
    from tomlkit.items import AoT, Table

    section, name = key.split(".")
    nl = "\r\n" if "\r\n" in text else "\n"
    try:
        doc = tomlkit.parse(text)
        node = doc.get(section)
        if text and not text.endswith("\n") and not (hasattr(node, "keys") and name in node):
            text += nl                           # a line to add starts on a line of its own, ended like the rest
            doc = tomlkit.parse(text)
            node = doc.get(section)
        if node is None:                         # a new table at the end, a blank line before it
            table = tomlkit.table()
            table.trivia.indent = nl if text.strip() else ""
            table.trivia.trail = nl
            table.add(name, _string_item(value, nl))
            doc.add(section, table)
        elif isinstance(node, AoT):
            raise _NotATable(f"[[{section}]]")
        elif isinstance(node, (Table, OutOfOrderTableProxy)):     # [section], dotted keys, or split tables
            if name in node and isinstance(node[name], dict):
                raise _NotAValue(f"[{section}.{name}]")
            if name in node:
                node[name] = value               # replaced in place: the key's indent and comment are kept
                return doc.as_string()
            item = _string_item(value, nl)
            body = node.value.body if isinstance(node, Table) else []
            last = max((i for i, (k, v) in enumerate(body) if k is not None and not isinstance(v, (Table, AoT))),
                       default=None)
            if last is not None:                 # indented like the table's last key
                item.trivia.indent = body[last][1].trivia.indent
            if last is None or last == len(body) - 1:
                node[name] = item
            else:                                # right after the last key, not after the comments and blank
                node.value._insert_at(last + 1, name, item)   # lines that follow it (tomlkit's append would)
        else:
            raise _NotATable(f"{section} = {node.as_string().strip()}")
        return doc.as_string()
    except _NotAValue as exc:
        raise ConfigError(f"cannot set {key} in {path}: it is a table there ({exc}), not a value; the file is "
                          "unchanged: edit it by hand") from None
    except _NotATable as exc:
        raise ConfigError(f"cannot set {key} in {path}: {section!r} is not written as a [{section}] table "
                          f"({str(exc)[:60]}); the file is unchanged: edit it by hand") from None
    except TOMLKitError as exc:
        raise ConfigError(f"cannot set {key} in {path}: tomlkit cannot edit it ({exc}); the file is unchanged: "
                          "edit it by hand") from None


class _NotATable(Exception):
    """The section to edit is an inline table, an array of tables or a plain value (its text is the message)."""


class _NotAValue(Exception):
    """The key to set is a table in the file (its header is the message)."""


def _string_item(value: str, nl: str):
    """A tomlkit string item on a line of its own ending with ``nl``."""
    import tomlkit

    item = tomlkit.item(value)
    item.trivia.trail = nl
    return item
