"""Models in timm's / the Hugging Face hub's saved layout, from a folder or the local hub cache, never the network.

The layout (what timm's ``push_to_hf_hub`` / ``save_for_hf`` write): ``config.json`` holding ``architecture`` (a
timm model name), ``num_classes``, ``pretrained_cfg`` (``input_size``, ``crop_pct``, ``interpolation``, ``mean``,
``std``, ...) and optionally ``model_args`` and ``label_names``; beside it the weights, ``model.safetensors`` (or
``pytorch_model.bin``). ``load_model(folder)`` reads such a folder; ``load_model("hf-hub:timm/resnet50.a1_in1k")``
(``@<revision>`` for another revision than main) finds the repository's snapshot in the hub cache with
huggingface_hub's ``try_to_load_from_cache``. The cache folder is ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else
huggingface_hub's default (``~/.cache/huggingface/hub``), read from the environment at each load (huggingface_hub
reads it once, at import). timm builds the network from ``config.json`` (``create_model("local-dir:...")``, no
weights); the weights are read with the checkpoint reader's safe loading; the eval transform is the
``pretrained_cfg``'s (input_size, crop_pct, interpolation, mean, std); class names are ``label_names``.

Example::

    >>> lm = load_model("hf-hub:timm/resnet50.a1_in1k")    # doctest: +SKIP
    >>> lm.arch, lm.transform.resolution, lm.transform.crop_ratio
    ('timm/resnet50', 224, 0.95)
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from repanalysis.arrays import pick_device
from repanalysis.data.transforms import transform_from_timm_config
from repanalysis.errors import CheckpointError, RepanalysisError
from repanalysis.models import registry
from repanalysis.models.checkpoint import read_checkpoint, sha256_of
from repanalysis.models.loading import LoadedModel, find_classifier, mismatch_summary

HUB_PREFIXES = ("hf-hub:", "hf_hub:")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def is_hub_spec(value) -> bool:
    """True for a string (or a path, as a command line's option makes it) naming a hub repository:
    ``"hf-hub:<org>/<name>[@<revision>]"``."""
    return isinstance(value, (str, os.PathLike)) and str(os.fspath(value)).startswith(HUB_PREFIXES)


def is_hub_folder(path: Path) -> bool:
    """True for a folder holding a ``config.json`` (timm's / the hub's saved layout)."""
    return path.is_dir() and (path / "config.json").is_file()


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache folder: ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else huggingface_hub's default."""
    env = os.environ
    if env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE"):
        return Path(env.get("HF_HUB_CACHE") or env["HUGGINGFACE_HUB_CACHE"]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def cached_snapshot(spec: str) -> tuple[str, Path]:
    """(repo id, snapshot folder holding config.json and the weights) of ``"hf-hub:<org>/<name>[@<revision>]"`` in
    the local hub cache; CheckpointError (one line, naming the cache folder and what was expected) when absent."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.file_download import repo_folder_name

    repo_id, _, revision = spec.split(":", 1)[1].partition("@")
    cache = hub_cache_dir()
    try:
        config = try_to_load_from_cache(repo_id, "config.json", cache_dir=cache, revision=revision or None)
    except ValueError as exc:       # huggingface_hub's HFValidationError: not a repository id
        raise CheckpointError(f"{spec} does not name a hub repository ({str(exc).splitlines()[0][:120]}); "
                              "expected hf-hub:<org>/<name>") from None
    where = cache / repo_folder_name(repo_id=repo_id, repo_type="model")
    if not isinstance(config, str):
        raise CheckpointError(f"{spec} is not in the local Hugging Face hub cache {cache}: expected "
                              f"{where}/snapshots/<commit>/config.json and model.safetensors (refs/"
                              f"{revision or 'main'} naming the commit); repanalysis never downloads: fetch it once "
                              f"where there is network (hf download {repo_id}), or set HF_HUB_CACHE to the cache "
                              "that holds it")
    snapshot = Path(config).parent
    for name in WEIGHT_FILES:
        if isinstance(try_to_load_from_cache(repo_id, name, cache_dir=cache, revision=revision or None), str):
            return repo_id, snapshot
    raise CheckpointError(f"{spec} has a config.json but no weights in the local hub cache: expected "
                          f"{' or '.join(WEIGHT_FILES)} in {snapshot}")


def load_hub_model(source, arch: str | None = None, *, device="cpu", log=None, ema: bool = False) -> LoadedModel:
    """A model in timm's saved layout (a folder, or ``"hf-hub:<org>/<name>"`` from the local cache) as a
    :class:`LoadedModel` in eval mode on ``device``. arch: when given, must be config.json's architecture.
    ``checkpoint`` is the weights file and ``sha256`` its hash; ``name`` the repository's model name (or folder's)."""
    if ema:
        raise CheckpointError(f"{source} holds one set of weights (timm's saved layout has no EMA copy); expected "
                              "ema=False")
    if is_hub_spec(source):
        source = os.fspath(source)
        repo_id, folder = cached_snapshot(source)
        name, label = repo_id.rsplit("/", 1)[-1], source
    else:
        folder = Path(source)
        name, label = folder.resolve().name, str(folder)
    weights = next((folder / w for w in WEIGHT_FILES if (folder / w).is_file()), None)
    if weights is None:
        raise CheckpointError(f"{label} has a config.json but no weights: expected {' or '.join(WEIGHT_FILES)} in "
                              f"{folder}")
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        architecture = config.get("architecture") or config["pretrained_cfg"]["architecture"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise CheckpointError(f"{folder / 'config.json'} is not a timm model config; expected JSON with "
                              "'architecture', 'num_classes' and 'pretrained_cfg'") from None
    if arch is not None and str(arch).removeprefix("timm/") != architecture:
        raise CheckpointError(f"{label} is a {architecture} (config.json) but arch={arch!r} was given; expected "
                              "no arch, or the config's")
    import timm

    try:   # timm parses config.json (model_args, pretrained_cfg, label_names); pretrained=False: no weights, no network
        model = timm.create_model(f"local-dir:{folder}", pretrained=False)
    except (RuntimeError, TypeError, ValueError, KeyError, AssertionError) as exc:
        raise CheckpointError(f"timm cannot build {architecture} from {folder / 'config.json'}: "
                              f"{(str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]}") from None
    raw = read_checkpoint(weights)
    try:
        missing, unexpected = model.load_state_dict(raw.state_dict, strict=False)
    except RuntimeError as exc:
        raise CheckpointError(f"weights {weights} do not fit {architecture}: {str(exc).strip().splitlines()[-1][:160]}"
                              ) from None
    missing = [m for m in missing if not m.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise CheckpointError(f"weights {weights} do not fit {architecture}: "
                              f"{mismatch_summary(dict.fromkeys(missing, ()), dict.fromkeys(unexpected, ()))}")
    model.eval().to(pick_device(device))
    cfg = dict(model.pretrained_cfg)
    try:
        transform = transform_from_timm_config(cfg)
    except RepanalysisError as exc:
        raise CheckpointError(f"{folder / 'config.json'} has an unusable pretrained_cfg ({exc})") from None
    k = int(model.num_classes)
    classifier = find_classifier(model, k)
    notes = [f"timm saved layout: {label} ({weights.name})", *raw.notes]
    if log:
        log(f"loaded {label}: {architecture}, {k} classes")
    return LoadedModel(model=model, arch=registry.qualified("timm", architecture),
                       family=registry.family_of("timm", architecture), num_classes=k, classifier_name=classifier,
                       transform=transform, checkpoint=weights, sha256=sha256_of(weights),
                       class_names=_label_names(cfg.get("label_names"), k), notes=notes, name=name)


def _label_names(names, k: int) -> list[str] | None:
    """config.json's ``label_names`` (a list, or a dict index -> name) as K strings; None when absent or partial."""
    if isinstance(names, dict):
        names = [names.get(str(i), names.get(i)) for i in range(k)]
    if not isinstance(names, (list, tuple)) or len(names) != k or any(n is None for n in names):
        return None
    return [str(n) for n in names]
