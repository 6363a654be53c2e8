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

import os
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
    """Write ``key = value`` into ./repanalysis.toml (or the user config with user=True)."""
    if key not in KEYS:
        raise ConfigError(f"unknown setting {key!r}; expected one of {', '.join(KEYS)}")
    if not str(value).strip():
        raise ConfigError(f"{key} cannot be empty; give a value (or edit {PROJECT_FILE} to remove the line)")
    if key == "data.layout":
        from repanalysis.data.datasets import LAYOUTS

        if value not in ("auto", *LAYOUTS):
            raise ConfigError(f"unknown data layout {value!r}; expected one of auto, {', '.join(LAYOUTS)}")
    path = user_config_path() if user else Path(cwd or os.getcwd()) / PROJECT_FILE
    if user and key in PATH_KEYS and not os.path.isabs(os.path.expanduser(value)):
        # relative to where the command is typed, not to the user config's folder (a project file is both)
        value = str(Path(cwd or os.getcwd()) / os.path.expanduser(value))
    table = _read_toml(path) if path.is_file() else {}
    section, name = key.split(".")
    table.setdefault(section, {})[name] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for sec, values in table.items():
        lines.append(f"[{sec}]")
        for k, v in values.items():
            lines.append(f"{k} = {_toml_value(v)}")
        lines.append("")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")   # TOML is UTF-8 whatever the locale
    os.replace(tmp, path)
    return path


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
