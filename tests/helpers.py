"""Shared test helpers: tiny model settings, the command line run in-process, and small files and folders."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TINY = dict(
    backbone="vit-tiny",
    crop_size=64,
    feature_indices=[0, 1, 2, 3],
    head="fpn",
    head_channels=16,
    backbone_kwargs={"depth": 4, "embed_dim": 32, "num_heads": 2},
)
# Tiny timm settings per backbone family (random weights, a few thousand parameters).
VIT = {"depth": 4, "embed_dim": 32, "num_heads": 2}
FAMILIES = {
    "dinov2-s": VIT,
    "dinov2-s-reg4": VIT,
    "eva02-l": VIT,
    "clip-l": VIT,
    "mae-l": VIT,
    "sam-h": {**VIT, "global_attn_indexes": (1, 3), "window_size": 2},
    "convnext-l": {"depths": (1, 1, 2, 1), "dims": (16, 32, 48, 64)},
}
TINY_SETS = [
    "model.backbone=vit-tiny",
    "model.pretrained=false",
    "model.crop_size=64",
    "model.head=fpn",
    "model.head_channels=16",
    "model.feature_indices=[0,1,2,3]",
    "model.backbone_kwargs={'depth':4,'embed_dim':32,'num_heads':2}",
    "data.batch_size=2",
    "data.num_workers=0",
    "train.log_interval=1",
    "eval.mode=whole",
]


def tiny_family(backbone: str, **kwargs):
    """A tiny model of one of the `FAMILIES`, crop 64, seeded."""
    import torch

    from rein_cli.models.segmentor import build_segmentor

    torch.manual_seed(0)
    indices = None if backbone == "convnext-l" else [0, 1, 2, 3]
    return build_segmentor(
        backbone, crop_size=64, backbone_kwargs=FAMILIES[backbone], feature_indices=indices, **kwargs
    )


def tiny_segmentor():
    """The tiny model (`TINY`), seeded, in eval mode."""
    import torch

    from rein_cli.models.segmentor import build_segmentor

    torch.manual_seed(0)
    return build_segmentor(**TINY).eval()


def checkout_env() -> dict[str, str]:
    """The environment for a subprocess that imports this checkout first (``python -m rein_cli``, scripts)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def rein(*args: object) -> int:
    """Run the command line in-process; returns the exit code."""
    from rein_cli.cli import run

    try:
        run([str(a) for a in args])
    except SystemExit as exit_:
        return exit_.code or 0
    return 0


def sets(*extra: str) -> list[str]:
    """``--set`` options for the tiny model, plus ``extra`` overrides."""
    return [x for s in (*TINY_SETS, *extra) for x in ("--set", s)]


def errors(capsys) -> str:
    """What the command line wrote to stderr."""
    return capsys.readouterr().err.strip()


def read_pairs(manifest, split: str) -> list:
    """(image path, label array) of every pair of a prepared split."""
    from rein_cli.data.dataset import SegmentationDataset

    data = SegmentationDataset(manifest, split)
    return [(Path(item["path"]), item["label"].numpy()) for item in (data[k] for k in range(len(data)))]


def odd_folder(synthetic_root: Path, folder: Path, count: int = 5) -> Path:
    """A prepared dataset of ``count`` labeled val images (the synthetic val scenes, then train scenes)."""
    from rein_cli.data.manifest import read_manifest, write_manifest
    from rein_cli.io import relative_path
    from rein_cli.labels import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE

    source = read_manifest(synthetic_root / "synthetic")
    pairs = [*source.splits["val"], *source.splits["train"]][:count]
    items = [{k: relative_path(source.root / v, folder) for k, v in item.items()} for item in pairs]
    write_manifest(folder, dataset="odd", classes=CITYSCAPES_CLASSES, palette=CITYSCAPES_PALETTE, splits={"val": items})
    return folder


def bomb_png(path, width: int, height: int) -> None:
    """A tiny PNG (a few hundred bytes) whose header declares ``width`` x ``height`` greyscale pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * (width + 1), 9)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    import struct
    import zlib

    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def hand_png(path, rows, height: int, *, colour: int = 0, depth: int = 8) -> None:
    """A PNG written by hand whose header declares ``height`` rows while its (complete, valid) zlib stream holds
    only ``rows`` ((n, width) or (n, width, channels) uint8, or (n, width) uint16 with ``depth=16``), filter 0."""
    import struct
    import zlib

    import numpy as np

    rows = np.asarray(rows)
    data = rows.astype(">u2") if depth == 16 else rows
    raw = b"".join(b"\0" + row.tobytes() for row in data)
    header = struct.pack(">IIBBBBB", rows.shape[1], height, depth, colour, 0, 0, 0)
    body = png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)


def drop_rows(path, keep: float = 0.5) -> tuple[int, int]:
    """Rewrite a (non-interlaced) PNG so that its zlib stream, complete and valid, holds only the first ``keep``
    share of the rows its header declares, as a writer stopped early leaves it; every other chunk as it was.
    Returns (rows kept, rows declared)."""
    import struct
    import zlib

    data = path.read_bytes()
    chunks, at = [], 8
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at : at + 8])
        chunks.append((kind, data[at + 8 : at + 8 + length]))
        at += 12 + length
    height = struct.unpack(">I", chunks[0][1][4:8])[0]
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    kept = int(height * keep)
    first = next(k for k, (kind, _) in enumerate(chunks) if kind == b"IDAT")
    idat = (b"IDAT", zlib.compress(raw[: kept * (len(raw) // height)]))
    rest = [c for c in chunks if c[0] != b"IDAT"]
    out = [*rest[:first], idat, *rest[first:]]
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"".join(png_chunk(kind, body) for kind, body in out))
    return kept, height


def truncate(path, keep: float = 0.5) -> None:
    """Cut a file to its first ``keep`` share of bytes, as an interrupted copy leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def shard_worker(rank: int, world: int, rendezvous: str, folder: str, root: str, out: str, options: dict) -> None:
    """One process of a sharded evaluation (``torch.multiprocessing.spawn``): the tiny model on ``folder`` in a gloo
    group of ``world``, with the evaluation's ``options``; writes every dataset's confusion matrix as this process
    holds it to ``out/rank<N>.json``."""
    import faulthandler
    import json

    import torch
    import torch.distributed as dist

    from rein_cli.engine import precision
    from rein_cli.engine.evaluate import evaluate

    precision.CPU_AUTO_BF16 = False  # as in the tests' own process (conftest.py)
    faulthandler.enable()  # a crash in a process prints its Python stack
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    try:
        results = evaluate(
            tiny_segmentor(), [folder], out=Path(out), data_dir=Path(root), mode="whole", progress=False, **options
        )
        Path(out).mkdir(parents=True, exist_ok=True)  # rank 0 makes it as it writes results.json, maybe later
        Path(out, f"rank{rank}.json").write_text(json.dumps({k: e.confusion for k, e in results.datasets.items()}))
        dist.barrier()  # no process leaves the group while another still works in it
    finally:
        dist.destroy_process_group()
