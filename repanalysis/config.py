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
import re
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
    from repanalysis.extract.store import load_dump

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

    The file is edited as text: the key's existing value is replaced where it stands (``key = ...`` in its
    ``[section]``, or a dotted ``section.key = ...``), or the key is added to its section, or a new
    ``[section]`` is appended; comments, other tables and formatting are kept byte for byte. The result is
    parsed again before it replaces the file, which is left untouched when anything fails.
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
    from repanalysis.extract.store import umask_mode
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


def _toml_string(v: str) -> str:
    """A TOML basic string: backslash, quote and every control character escaped (TOML 1.0 "String")."""
    out = []
    for ch in v:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


_ESCAPES = {"\\": "\\\\", '"': '\\"', "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


class _Unfollowed(Exception):
    """The TOML text has a construct this small scanner does not follow."""


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:\d{2})?")
_SCALAR = re.compile(r"[A-Za-z0-9_+\-.:]+")


@dataclass
class _Stmt:
    kind: str          # "table", "array-table" or "kv"
    path: tuple        # full key path (a kv's table path + its own dotted key)
    start: int         # where the line starts
    value: tuple = (0, 0)   # a kv's value span
    end: int = 0       # just past the statement's newline (or the end of the text)


def _skip_blank(text: str, pos: int, newlines: bool) -> int:
    """Past spaces and tabs (and newlines and comments when ``newlines``)."""
    while pos < len(text):
        c = text[pos]
        if c in " \t" or (newlines and c in "\r\n"):
            pos += 1
        elif newlines and c == "#":
            while pos < len(text) and text[pos] != "\n":
                pos += 1
        else:
            break
    return pos


def _quoted_end(text: str, pos: int) -> int:
    """End of the (single- or multi-line, basic or literal) string that starts at ``pos``."""
    q = text[pos]
    if text.startswith(q * 3, pos):
        i = pos + 3
        while True:
            if i >= len(text):
                raise _Unfollowed
            if q == '"' and text[i] == "\\":
                i += 2
            elif text.startswith(q * 3, i):
                run = 3
                while run < 5 and text[i + run:i + run + 1] == q:
                    run += 1
                return i + run
            else:
                i += 1
    i = pos + 1
    while i < len(text) and text[i] != q and text[i] != "\n":
        i += 2 if q == '"' and text[i] == "\\" else 1
    if i >= len(text) or text[i] != q:
        raise _Unfollowed
    return i + 1


def _key(text: str, pos: int) -> tuple[tuple, int]:
    """A dotted key starting at ``pos`` -> (its parts, decoded; the position after it)."""
    parts = []
    while True:
        pos = _skip_blank(text, pos, False)
        if pos < len(text) and text[pos] in "\"'":
            end = _quoted_end(text, pos)
            token = text[pos:end]
            if token.startswith(token[0] * 3):
                raise _Unfollowed
            parts.append(tomllib.loads("k = " + token)["k"])
        else:
            m = _BARE_KEY.match(text, pos)
            if not m:
                raise _Unfollowed
            parts.append(m.group())
            end = m.end()
        pos = _skip_blank(text, end, False)
        if pos < len(text) and text[pos] == ".":
            pos += 1
            continue
        return tuple(parts), pos


def _value_end(text: str, pos: int) -> int:
    """End of the value that starts at ``pos``."""
    if pos >= len(text):
        raise _Unfollowed
    c = text[pos]
    if c in "\"'":
        return _quoted_end(text, pos)
    if c == "[":
        pos += 1
        while True:
            pos = _skip_blank(text, pos, True)
            if pos < len(text) and text[pos] == "]":
                return pos + 1
            pos = _skip_blank(text, _value_end(text, pos), True)
            if pos < len(text) and text[pos] == ",":
                pos += 1
            elif pos >= len(text) or text[pos] != "]":
                raise _Unfollowed
    if c == "{":
        pos = _skip_blank(text, pos + 1, False)
        if pos < len(text) and text[pos] == "}":
            return pos + 1
        while True:
            _, pos = _key(text, pos)
            if pos >= len(text) or text[pos] != "=":
                raise _Unfollowed
            pos = _skip_blank(text, _value_end(text, _skip_blank(text, pos + 1, False)), False)
            if pos < len(text) and text[pos] == ",":
                pos += 1
            elif pos < len(text) and text[pos] == "}":
                return pos + 1
            else:
                raise _Unfollowed
    m = _DATETIME.match(text, pos) or _SCALAR.match(text, pos)
    if not m:
        raise _Unfollowed
    return m.end()


def _line_end(text: str, pos: int) -> int:
    """Past trailing blanks, a comment and the newline that end a statement."""
    pos = _skip_blank(text, pos, False)
    if pos < len(text) and text[pos] == "#":
        while pos < len(text) and text[pos] != "\n":
            pos += 1
    if text.startswith("\r\n", pos):
        return pos + 2
    if pos < len(text) and text[pos] == "\n":
        return pos + 1
    if pos < len(text):
        raise _Unfollowed
    return pos


def _statements(text: str) -> list[_Stmt]:
    """Table headers and key/value pairs of a (valid) TOML document, with their spans."""
    out, table, pos = [], (), 0
    while True:
        pos = _skip_blank(text, pos, True)
        if pos >= len(text):
            return out
        line_start = text.rfind("\n", 0, pos) + 1
        if text.startswith("[[", pos):
            table, pos = _key(text, pos + 2)
            if not text.startswith("]]", pos):
                raise _Unfollowed
            out.append(_Stmt("array-table", table, line_start, end=_line_end(text, pos + 2)))
            table = None                                  # keys below belong to an array element
        elif text[pos] == "[":
            table, pos = _key(text, pos + 1)
            if not text.startswith("]", pos):
                raise _Unfollowed
            out.append(_Stmt("table", table, line_start, end=_line_end(text, pos + 1)))
        else:
            key, pos = _key(text, pos)
            if not text.startswith("=", pos):
                raise _Unfollowed
            vstart = _skip_blank(text, pos + 1, False)
            vend = _value_end(text, vstart)
            path = None if table is None else table + key
            out.append(_Stmt("kv", path, line_start, (vstart, vend), _line_end(text, vend)))
        pos = out[-1].end


def _edited_toml(text: str, key: str, value: str, path: Path) -> str:
    """``text`` with ``key`` set to the string ``value``, everything else as it was."""
    section, name = key.split(".")
    target, literal = (section, name), _toml_string(value)
    try:
        stmts = _statements(text)
    except _Unfollowed:
        raise ConfigError(f"cannot set {key} in {path}: its TOML layout is more than this editor follows; "
                          f"the file is unchanged: edit it by hand") from None
    nl = "\r\n" if "\r\n" in text else "\n"
    for s in stmts:
        if s.kind == "kv" and s.path == target:
            return text[:s.value[0]] + literal + text[s.value[1]:]
    for s in stmts:
        if (s.kind == "kv" and s.path == (section,)) or (s.kind == "array-table" and s.path == (section,)):
            what = text[s.start:s.end].strip() if s.kind == "kv" else f"[[{section}]]"
            raise ConfigError(f"cannot set {key} in {path}: {section!r} is not written as a [{section}] table "
                              f"({what[:60]}); the file is unchanged: edit it by hand")

    def insert_after(stmt: _Stmt, line: str) -> str:
        head = text[:stmt.end]
        if head and not head.endswith("\n"):
            head += nl
        indent = re.match(r"[ \t]*", text[stmt.start:]).group() if stmt.kind == "kv" else ""
        return head + indent + line + nl + text[stmt.end:]

    header = [i for i, s in enumerate(stmts) if s.kind == "table" and s.path == (section,)]
    if header:                  # after the last key of [section], or right after its header
        i = header[0]
        while i + 1 < len(stmts) and stmts[i + 1].kind == "kv":
            i += 1
        return insert_after(stmts[i], f"{name} = {literal}")
    dotted = [s for s in stmts if s.kind == "kv" and s.path and len(s.path) >= 2 and s.path[0] == section
              and _in_root(stmts, s)]
    if dotted:                  # section.other = ... at the top: add section.name = ... beside it
        return insert_after(dotted[-1], f"{section}.{name} = {literal}")
    head = text if not text or text.endswith("\n") else text + nl
    sep = nl if head.strip() else ""
    return head + sep + f"[{section}]{nl}{name} = {literal}{nl}"


def _in_root(stmts: list[_Stmt], stmt: _Stmt) -> bool:
    """Whether a key/value pair comes before every table header (belongs to the root table)."""
    return all(s.kind == "kv" for s in stmts[:stmts.index(stmt)])
