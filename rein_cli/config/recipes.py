"""YAML recipes: the shipped ones, reading a recipe over its ``base:`` recipes, ``--set key=value`` overrides and
explicit flags on top (`load_config`), and the list `rein train --list` prints."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from rein_cli.config.figures import Published
from rein_cli.config.rules import check_config
from rein_cli.config.sections import Config, ModelConfig, config_from_dict, merge_keys
from rein_cli.documents import load_yaml
from rein_cli.errors import ReinError, did_you_mean


def recipes_dir() -> Path | None:
    """The shipped recipes: ``rein_cli/recipes`` in an installed wheel, ``recipes/`` in a source checkout."""
    here = Path(__file__).resolve().parent.parent  # the package rein_cli
    return next((d for d in (here / "recipes", here.parent / "recipes") if d.is_dir()), None)


def shipped_recipes() -> dict[str, Path]:
    """{name: file} of the shipped recipes, sorted by name; a name starting with ``_`` is a base for others."""
    folder = recipes_dir()
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))} if folder else {}


def recipe_path(recipe: str | Path) -> Path:
    """A recipe file, or the name of one shipped in ``recipes/`` (``demo`` -> ``recipes/demo.yaml``)."""
    path = Path(recipe)
    if path.is_file():
        return path
    shipped = shipped_recipes()
    if str(recipe) in shipped:
        return shipped[str(recipe)]
    raise ReinError(
        f'recipe "{recipe}" is neither a file nor a shipped recipe{did_you_mean(str(recipe), shipped)}; '
        f"shipped: {', '.join(sorted(shipped)) or 'none'}"
    )


def recipe_name(recipe: str | Path | None) -> str | None:
    """The name a run records for its recipe: a shipped recipe's name, a recipe file's stem (``my/abl.yaml`` ->
    ``abl``); None without one."""
    return None if recipe is None else Path(recipe).stem


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], value); values are Python literals, YAML lists and mappings of plain words
    (``[gta5, synthia]``, as recipes write them), or plain strings."""
    if "=" not in text:
        raise ReinError(f'--set "{text}" must look like key=value, e.g. optim.lr=2e-4')
    key, raw = text.split("=", 1)
    raw = raw.strip()
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = _flow(raw) if raw[:1] in "[{" else raw
    return key.strip().split("."), value


def _flow(text: str) -> Any:
    """A YAML list or mapping (``[a, b]``, ``{a: 1}``), or ``text`` itself when it is not one."""
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, list | dict) else text


def _read_recipe(recipe: str | Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A recipe's data with its ``base:`` recipes applied under it (a name, or a path relative to the recipe)."""
    import yaml

    path = recipe_path(recipe)
    try:
        data = load_yaml(path.read_text(encoding="utf-8"), f"recipe {path}") or {}
    except yaml.YAMLError as err:
        raise ReinError(f"recipe {path} is not valid YAML: {' '.join(str(err).split())}") from err
    except UnicodeDecodeError as err:
        raise ReinError(
            f"recipe {path} is not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8"
        ) from err
    except OSError as err:
        raise ReinError(f"cannot read recipe {path}: {err.strerror}") from err
    if not isinstance(data, dict):
        raise ReinError(f"recipe {path} must be a mapping of sections (model, data, optim, train, eval)")
    base = data.pop("base", None)
    try:  # this file's own keys and types, so that an error names the file that holds the key
        config_from_dict(data)
    except ReinError as err:
        raise ReinError(f"recipe {path}: {err}") from None
    if base is None:
        return data
    if not isinstance(base, str) or not base.strip():
        raise ReinError(f"base in recipe {path} must be the name or path of another recipe, got {base!r}")
    if path.resolve() in seen:
        chain = " -> ".join(str(p) for p in (*seen, path.resolve()))
        raise ReinError(f"recipe {path} inherits from itself ({chain}); remove a base: line")
    relative = path.parent / base
    parent = _read_recipe(relative if relative.is_file() else base, (*seen, path.resolve()))
    return _deep_merge(parent, data)


def _deep_merge(base: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``data`` on top: sections merge key by key, any other value (lists too) is replaced."""
    merged = dict(base)
    for key, value in data.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "reported":
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(recipe: str | Path | None = None, overrides: list[str] | None = None, **flags: Any) -> Config:
    """Defaults, then the recipe (over its ``base:`` recipes), then ``--set`` overrides, then explicit flags (dotted
    keys; None = not set)."""
    data = _read_recipe(recipe) if recipe is not None else {}
    cfg = from_recipe = config_from_dict(data)
    items = [parse_override(o) for o in overrides or []]
    items += [(key.split("."), value) for key, value in flags.items() if value is not None]
    for keys, value in items:
        nested: dict[str, Any] = {keys[-1]: value}
        for k in reversed(keys[:-1]):
            nested = {k: nested}
        cfg = merge_keys(cfg, nested)
    try:
        return check_config(cfg)
    except ReinError:
        if recipe is None:
            raise
        try:  # the recipe's own value is at fault, not an override: name the recipe
            check_config(from_recipe)
        except ReinError as err:
            raise ReinError(f"recipe {recipe_path(recipe)}: {err}") from None
        raise


def format_recipes() -> str:
    """Every shipped recipe in a few lines: name and description; backbone, data, crop, iterations, global batch;
    the published figures (test-server ones marked). Bases (names starting with "_") come last."""
    recipes = shipped_recipes()
    if not recipes:
        return "no shipped recipes found"
    lines, bases = [], []
    for name in recipes:
        cfg = load_config(name)
        method = "" if cfg.model.method == ModelConfig.method else f" ({cfg.model.method})"
        block = [
            f"{name}: {cfg.description or '(no description)'}",
            f"    {cfg.model.backbone}{method}  {' + '.join(cfg.data.train)} -> {', '.join(cfg.data.eval) or '-'}  "
            f"crop {cfg.model.crop_size}, {cfg.train.max_iters} iters, batch {cfg.data.batch_size}",
        ]
        if cfg.reported:
            figures = "; ".join(
                f"{dataset} "
                + " / ".join(
                    Published(f["mIoU"], f.get("checkpoint", "")).shown + (" test" if f["split"] == "test" else "")
                    for f in items
                )
                for dataset, items in cfg.reported.items()
            )
            block.append(f"    reported: {figures}")
        (bases if name.startswith("_") else lines).extend(block)
    if bases:
        lines += ["", "bases (the recipes above inherit them with `base:`; not meant to be trained alone):", *bases]
    lines += ["", "run one with: rein train NAME (see docs/recipes.md)"]
    return "\n".join(lines)
