"""Evaluation results for people and files: the per-class table, and JSON without NaN."""

from __future__ import annotations

import math
from typing import Any


def json_safe(value: Any) -> Any:
    """NaN -> None, recursively (JSON has no NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def format_table(results: dict[str, Any]) -> str:
    """Per-class IoU, one column per dataset, then mIoU / mAcc / aAcc rows."""
    names = list(results["datasets"])
    if not names:
        return ""
    classes = list(results["datasets"][names[0]]["per_class"])
    width = max(14, *(len(c) + 2 for c in classes))
    cols = [max(8, len(n) + 2) for n in names]

    def fmt(v: float | None) -> str:
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"

    def row(label: str, values: list[str]) -> str:
        return label.ljust(width) + "".join(v.rjust(w) for v, w in zip(values, cols, strict=True))

    lines = [row("class", names)]
    for c in classes:
        lines.append(row(c, [fmt(results["datasets"][n]["per_class"].get(c, {}).get("IoU")) for n in names]))
    lines.append("-" * len(lines[0]))
    for key in ("mIoU", "mAcc", "aAcc"):
        lines.append(row(key, [fmt(results["datasets"][n][key]) for n in names]))
    if len(names) > 1:
        lines.append(f"mean mIoU over {len(names)} datasets: {results['mean_mIoU']:.2f}")
    return "\n".join(lines)
