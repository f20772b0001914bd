"""`rein models`: every backbone and released adapter, whether it is on disk, its size, licence and figures."""

from __future__ import annotations

from pathlib import Path

from rein_cli.engine.results import reported_figures
from rein_cli.models.backbone import BACKBONES
from rein_cli.zoo.backbones import BACKBONE_LICENCES, conversion
from rein_cli.zoo.pull import adapter_ready, backbone_file, checkpoint_path, recorded_hashes, zoo_home
from rein_cli.zoo.releases import RELEASES


def _bytes(path: Path | None) -> int | None:
    if path is None or not path.exists():
        return None
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def list_backbones() -> list[dict]:
    rows = []
    for name, spec in BACKBONES.items():
        cached = backbone_file(name)
        rows.append(
            {
                "name": name,
                "hub_repo": spec.hub_repo,
                "description": spec.description,
                "licence": BACKBONE_LICENCES.get(name, ""),
                "conversion": conversion(name),
                "cached": cached is not None,
                "bytes": _bytes(cached),
            }
        )
    return rows


def list_adapters() -> list[dict]:
    hashes = recorded_hashes()
    rows = []
    for name, release in RELEASES.items():
        file = zoo_home() / "releases" / name / release.file if release.file else None
        verified = "published" if release.sha256 else "first download" if name in hashes else "unverified"
        on_disk = _bytes(file) or _bytes(checkpoint_path(name))
        rows.append(
            {
                "name": name,
                "backbone": release.backbone,
                "crop": release.crop,
                "trained_on": release.trained_on,
                "description": release.description,
                "licence": release.licence,
                "pulled": release.backbone is not None and not release.unsupported and adapter_ready(name),
                "bytes": on_disk or hashes.get(name, {}).get("size"),  # else the size its first download had
                "sha256": release.sha256 or hashes.get(name, {}).get("sha256"),
                "checksum": verified,
                "unsupported": release.unsupported,
                "reported": {target: [r.to_json() for r in figures] for target, figures in release.reported.items()},
            }
        )
    return rows


def format_models(backbones: list[dict], adapters: list[dict]) -> str:
    """The two tables `rein models` prints."""
    lines = ["backbones (size: of the Hub file on disk; ? before it is downloaded, and `rein pull` says it first)"]
    lines.append(f"  {'name':<15} {'on disk':<8} {'size':<9} {'licence':<38} hub repo")
    for row in backbones:
        disk = "yes" if row["cached"] else "no"
        lines.append(f"  {row['name']:<15} {disk:<8} {_human(row['bytes']):<9} {row['licence']:<38} {row['hub_repo']}")
    lines += [
        "",
        "released adapters (size: of the release file, on disk or as first downloaded; "
        "reported mIoU: target split value [source])",
    ]
    lines.append(f"  {'name':<27} {'backbone':<11} {'on disk':<8} {'size':<9} {'checksum':<15} reported")
    for row in adapters:
        disk = "yes" if row["pulled"] else "no"
        size = _human(row["bytes"])
        figures = "; ".join(
            f"{target} {r.split} {r.mIoU.shown} [{r.label}]"  # as published: BDD100K's 60.0 stays 60.0
            for target, reported in reported_figures(row["reported"]).items()
            for r in reported[:1]
        )
        status = f"unsupported: {row['unsupported']}" if row["unsupported"] else figures
        line = f"  {row['name']:<27} {row['backbone'] or '-':<11} {disk:<8} {size:<9} {row['checksum']:<15} {status}"
        lines.append(line)
    return "\n".join(lines)


def _human(size: int | None) -> str:
    """A size in MB or GB; ``?`` when it is not known (nothing downloaded yet)."""
    if not size:
        return "?"
    if size >= 1e9:
        return f"{size / 1e9:.2f} GB"
    return f"{size / 1e6:.0f} MB" if size >= 1e6 else f"{max(size / 1e3, 1):.0f} kB"
