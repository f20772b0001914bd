"""Which inputs of one `rein compare` label are seeds of one row, and how the rows are named when they are not.

Inputs with one label are seeds of one row only when all of these hold for every two of them:

- they record the same training settings (`training_settings`: every key both record, all but `NOT_TRAINING`);
- they were evaluated alike: the same columns, the DG mean over the same datasets, the same inference mode, crop,
  stride, flip and precision, the same training data and the same number of trainable parameters;
- they are two trainings: not the same weights (a run, a checkpoint folder, a Hub commit, a release) and not the
  same ``train.seed``;
- where the seed of either is not recorded (a results.json without its run's ``config.yaml``), the user gave both
  the label (``LABEL=PATH``): nothing else says they are different seeds, and a note says the row rests on its
  label.

Otherwise they become rows of their own, named after what tells them apart (``gta (train.max_iters=2)``,
``gta (targets: cityscapes, bdd100k)``, ``gta #2`` for the same model evaluated again), with one note saying why.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rein_cli.data.registry import lookup
from rein_cli.engine.results import Evaluation

# Settings that say where a run read its data and weights from, where and how fast it ran, or what it recorded,
# not what it learned: two runs that differ only in these (and the seed) are seeds of one row.
NOT_TRAINING = (
    "description",  # a recipe's one line
    "reported",  # a recipe's published figures
    "train.seed",  # what seeds differ in
    "data.root",  # where the prepared datasets are
    "model.weights",  # where the backbone's converted weights were read from (the Hub's otherwise)
    "train.device",  # where it ran (the number of processes is not recorded either)
    "train.accumulation",  # how the global batch was split to fit in memory
    "train.checkpointing",  # activation checkpointing: less memory, more time, the same gradients
    "data.num_workers",  # loader processes
    "train.log_interval",  # what was logged and kept on the way
    "train.checkpoint_interval",
    "train.keep_checkpoints",
    "train.eval_interval",
    "data.eval",  # the evaluation: compared from the results themselves (their columns, mode, stride, flip)
    "eval",
)
# Differences in how two inputs were evaluated or what they are, besides the training settings.
EVALUATED = ("targets", "mean over", "mode", "crop", "stride", "flip", "precision", "trained on", "params")
# How the scores were made: rows that differ in these differ in more than their models (`inference_note`).
INFERENCE = ("mode", "crop", "stride", "flip", "precision")


@dataclass(frozen=True)
class Input:
    """One input: its results and what is known of the training behind them."""

    given: str  # as typed (without the label)
    file: Path  # the results.json
    results: Evaluation
    label: str
    seed: int | None = None  # train.seed, from its run's config.yaml
    settings: Mapping[str, Any] | None = None  # `training_settings` of its config; None: no config found
    weights: str | None = None  # the weights evaluated: a run, a checkpoint folder, a Hub commit, a release
    named: bool = False  # the label was given (LABEL=PATH)
    columns: tuple[str, ...] = ()  # the comparison's columns it has a value for


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"rein": {"rank": 4}}}`` -> ``{"model.rein.rank": 4}``; tuples as lists (as YAML reads them)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, name))
        else:
            flat[name] = list(value) if isinstance(value, tuple) else value
    return flat


def setting_text(value: Any) -> str:
    """A setting's value as typed on the command line: ``true``, ``["gta5"]``, ``4``."""
    if isinstance(value, bool):
        return str(value).lower()
    return json.dumps(value) if isinstance(value, list) else str(value)


def training_settings(config: Mapping[str, Any], iterations: Any = None) -> dict[str, Any]:
    """A run's ``config.yaml`` as the flat settings pooling compares: every key but `NOT_TRAINING`; the training
    datasets by their registry names (``gta`` is ``gta5``); ``iterations``, the checkpoint's, replaces
    ``train.max_iters`` (a step checkpoint of a run stopped short of it)."""
    settings = _kept(flatten(config))
    if isinstance(iterations, int) and not isinstance(iterations, bool):
        settings["train.max_iters"] = iterations
    return _named_data(settings)


def checkpoint_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """What a checkpoint's ``config.json`` records of its training, for a checkpoint outside a run: the model
    section, the training datasets (``data.train``) and the iterations (``train.max_iters``)."""
    settings = _kept(flatten({"model": config.get("model") or {}}))
    if config.get("training_datasets"):
        settings["data.train"] = list(config["training_datasets"])
    if isinstance(config.get("iterations"), int):
        settings["train.max_iters"] = config["iterations"]
    return _named_data(settings)


def _kept(settings: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if not any(k == n or k.startswith(f"{n}.") for n in NOT_TRAINING)}


def _named_data(settings: dict[str, Any]) -> dict[str, Any]:
    names = settings.get("data.train")
    if isinstance(names, list):
        settings["data.train"] = [spec.name if (spec := lookup(str(n))) else n for n in names]
    elif isinstance(names, str):
        settings["data.train"] = [spec.name if (spec := lookup(names)) else names]
    return settings


def weights_of(results: Evaluation, folder: Path | None) -> str | None:
    """What names the weights an evaluation scored: the run or checkpoint folder (resolved), else a release and its
    SHA-256 or a Hub commit from the results' provenance; None when unknown."""
    if folder is not None:
        return str(Path(folder).resolve())
    provenance = results.model.provenance if results.model is not None else {}
    if provenance.get("adapter"):
        return " ".join(str(provenance[k]) for k in ("adapter", "sha256") if provenance.get(k))
    if provenance.get("hub_repo"):
        return f"hf://{provenance['hub_repo']}@{provenance.get('hub_revision') or 'main'}"
    return None


# ---- the rule ------------------------------------------------------------------------------------------------


def _evaluated(e: Input) -> dict[str, Any]:
    r = e.results
    return {
        "targets": e.columns,
        "mean over": tuple(r.mean_of),
        "mode": r.mode,
        "crop": r.crop,
        "stride": r.stride,
        "flip": r.flip,
        "precision": r.precision or "fp32",  # not recorded: rein evaluated in float32 alone before it recorded it
        "trained on": tuple(r.trained_on),
        "params": r.trainable_parameters,
    }


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, tuple) and isinstance(b, tuple):  # sets of names: their order is the order they were given
        return sorted(map(str, a)) == sorted(map(str, b))
    return a == b


def differences(a: Input, b: Input) -> list[str]:
    """The training settings both record with different values, then the `EVALUATED` keys that differ."""
    ours, theirs = a.settings or {}, b.settings or {}
    keys = [k for k in ours if k in theirs and ours[k] != theirs[k]]
    x, y = _evaluated(a), _evaluated(b)
    return keys + [k for k in EVALUATED if not _same(x[k], y[k])]


def _apart(a: Input, b: Input) -> tuple[str, Any] | None:
    """Why ``a`` and ``b`` are no seeds of one row: ``("differ", keys)``, ``("weights", w)``, ``("seed", s)``,
    ``("unknown", None)``; None when they are."""
    keys = differences(a, b)
    if keys:
        return "differ", keys
    if a.weights is not None and a.weights == b.weights:
        return "weights", a.weights
    if a.seed is not None and b.seed is not None:
        return ("seed", a.seed) if a.seed == b.seed else None
    return None if a.named and b.named else ("unknown", None)


def pools(members: Sequence[Input]) -> list[list[Input]]:
    """``members`` (one label's inputs) in groups of seeds of one row, each input in the first group it fits with
    every input of, in the order given."""
    groups: list[list[Input]] = []
    for e in members:
        home = next((g for g in groups if all(_apart(e, other) is None for other in g)), None)
        if home is None:
            groups.append([e])
        else:
            home.append(e)
    return groups


# ---- names and notes -----------------------------------------------------------------------------------------


def _value(key: str, e: Input) -> str | None:
    """``key``'s value for ``e`` as a label shows it; None when ``e`` does not record it."""
    if key not in EVALUATED:
        settings = e.settings or {}
        return setting_text(settings[key]) if key in settings else None
    value = _evaluated(e)[key]
    if key == "params":
        return f"{value / 1e6:.2f}M" if isinstance(value, int | float) else "?"
    if key == "trained on":
        return " + ".join(value) or "?"
    if isinstance(value, tuple):
        return ", ".join(value) or "-"
    return setting_text(value)


def _part(key: str, e: Input) -> str | None:
    value = _value(key, e)
    if value is None:
        return None
    if key in ("targets", "mean over", "trained on"):
        return f"{key} {value}" if key != "targets" else f"targets: {value}"
    return f"{value} params" if key == "params" else f"{key}={value}"


def _telling(groups: Sequence[Sequence[Input]]) -> list[str]:
    """The keys that tell the groups apart (their first inputs'), without those a shown key already explains."""
    reps = [g[0] for g in groups]
    keys: dict[str, None] = {}
    for k, a in enumerate(reps):
        for b in reps[k + 1 :]:
            keys.update(dict.fromkeys(differences(a, b)))
    return _shown(keys)


def _shown(keys: Sequence[str]) -> list[str]:
    """``keys`` without those another one explains: the training data and the parameters follow from a training
    setting, the DG mean's datasets from the targets."""
    shown = list(keys)
    if any(k not in EVALUATED for k in shown):
        shown = [k for k in shown if k not in ("trained on", "params")]
    if "targets" in shown:
        shown = [k for k in shown if k != "mean over"]
    return shown


def row_names(label: str, groups: Sequence[Sequence[Input]]) -> list[str]:
    """A name per group of one label: the label, with what tells the groups apart in brackets (the same name for
    groups nothing tells apart, such as the same model evaluated again: `numbered` tells them apart)."""
    if len(groups) == 1:
        return [label]
    keys = _telling(groups)
    names = []
    for group in groups:
        parts = [p for k in keys if (p := _part(k, group[0])) is not None]
        names.append(f"{label} ({'; '.join(parts)})" if parts else label)
    return names


def numbered(names: Sequence[str], taken: Sequence[str] = ()) -> list[str]:
    """``names`` with ``#2``, ``#3`` after a name that came before (or is in ``taken``)."""
    seen = set(taken)
    out = []
    for name in names:
        new, k = name, 1
        while new in seen:
            k += 1
            new = f"{name} #{k}"
        seen.add(new)
        out.append(new)
    return out


def split_note(label: str, groups: Sequence[Sequence[Input]], names: Sequence[str]) -> str:
    """One line: why the inputs of ``label`` are not one row, and the rows they are."""
    keys: dict[str, None] = {}
    weights: dict[str, None] = {}
    seeds: dict[int, None] = {}
    unknown = False
    for k, group in enumerate(groups):
        for other in groups[k + 1 :]:
            for a in group:
                for b in other:
                    why = _apart(a, b)
                    kind, what = why if why is not None else ("", None)
                    if kind == "differ":
                        keys.update(dict.fromkeys(what))
                    elif kind == "weights":
                        weights[what] = None
                    elif kind == "seed":
                        seeds[what] = None
                    unknown = unknown or kind == "unknown"
    members = [e for g in groups for e in g]
    reasons = []
    if keys:
        values = {k: list(dict.fromkeys(v for e in members if (v := _value(k, e)) is not None)) for k in _shown(keys)}
        reasons.append("they differ in " + "; ".join(f"{key} ({' vs '.join(v)})" for key, v in values.items()))
    if weights:
        reasons.append(f"{', '.join(weights)} evaluated more than once (the same weights, not another seed)")
    if seeds:
        reasons.append(
            f"train.seed {', '.join(map(str, seeds))} in more than one input (the same training, not another seed)"
        )
    if unknown:
        reasons.append(
            "a train.seed is not recorded (no run's config.yaml), so they are not claimed as seeds; give them one "
            "label (LABEL=PATH) to pool them"
        )
    rows = ", ".join(f'"{n}"' for n in names)
    return f"{label}: {len(members)} inputs not pooled as seeds: {'; '.join(reasons)}; rows {rows}"


def inference_note(rows: Mapping[str, Input]) -> str | None:
    """A note naming each `INFERENCE` setting that ``rows`` (row name -> one of its inputs) differ in, with the rows
    of each value: a difference between those rows is then not the models' alone. None when all were evaluated
    alike."""
    parts = []
    for key in INFERENCE:
        names: dict[str, list[str]] = {}
        for name, e in rows.items():
            value = _evaluated(e)[key]
            names.setdefault("none" if value is None else setting_text(value), []).append(name)
        if len(names) > 1:
            parts.append(f"{key} " + ", ".join(f"{value} ({', '.join(each)})" for value, each in names.items()))
    if not parts:
        return None
    return f"not evaluated alike, so the differences between rows are not the models' alone: {'; '.join(parts)}"


def label_note(name: str, group: Sequence[Input]) -> str | None:
    """For a row pooled on its label alone (a seed not recorded): a line saying so; None otherwise."""
    unknown = sum(e.seed is None for e in group)
    if len(group) < 2 or not unknown:
        return None
    return (
        f"{name}: pooled on its label alone; {unknown} of its {len(group)} inputs record no train.seed (no run's "
        "config.yaml), so nothing shows that they are different seeds"
    )
