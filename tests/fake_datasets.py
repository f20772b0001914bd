"""Tiny fakes of the official dataset layouts and archives, written by code (a few images each, labels with
ids of the real label sets, ignored and unused ids included). Each returns (sources, raw labels by image path)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

W, H = 48, 24


def image(path: Path, seed: int, size=(W, H)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path, quality=95) if path.suffix == ".jpg" else Image.fromarray(rgb).save(path)


def label(path: Path, values, seed: int, size=(W, H), palette: bool = False) -> np.ndarray:
    """A label map of random blocks drawn from ``values`` (every value appears)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    values = np.asarray(values)
    bh, bw = -(-size[1] // 4), -(-size[0] // 4)
    blocks = rng.permutation(np.resize(values, bh * bw)).reshape(bh, bw)
    array = np.kron(blocks, np.ones((4, 4), dtype=np.int64)).astype(np.uint8)[: size[1], : size[0]]
    img = Image.fromarray(array)
    if palette:
        img = img.convert("P")
        img.putpalette(list(range(256)) * 3)
    img.save(path)
    return array


def zip_folder(folder: Path, archive: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(archive, "w") as z:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                z.write(f, prefix + f.relative_to(folder).as_posix())
    return archive


def cityscapes(tmp: Path) -> tuple[list[Path], dict[str, np.ndarray]]:
    raw = {}
    for split, cities in (("train", ("aachen", "bochum")), ("val", ("lindau",))):
        for c, city in enumerate(cities):
            for i in range(2):
                stem = f"{city}_000000_{i:06d}"
                image(tmp / "img" / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", seed=c * 10 + i)
                ids = list(range(34)) if i == 0 else [7, 8, 26, 0, 1, 255]
                raw[stem] = label(tmp / "gt" / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", ids, seed=i + c)
                label(tmp / "gt" / "gtFine" / split / city / f"{stem}_gtFine_instanceIds.png", [0], seed=0)  # ignored
    image(tmp / "img" / "leftImg8bit" / "test" / "berlin" / "berlin_000000_000019_leftImg8bit.png", seed=99)  # no label
    return [
        zip_folder(tmp / "img", tmp / "leftImg8bit_trainvaltest.zip"),
        zip_folder(tmp / "gt", tmp / "gtFine_trainvaltest.zip"),
    ], raw


def gta5(tmp: Path) -> tuple[list[Path], dict[str, np.ndarray]]:
    raw = {}
    for i in range(1, 5):
        stem = f"{i:05d}"
        image(tmp / "a" / "images" / f"{stem}.png", seed=i)
        size = (W, H - 4) if i == 3 else (W, H)  # GTA5 ships some labels whose size differs from the image
        raw[stem] = label(tmp / "b" / "labels" / f"{stem}.png", list(range(34)), seed=i, size=size, palette=True)
    return [zip_folder(tmp / "a", tmp / "01_images.zip"), zip_folder(tmp / "b", tmp / "01_labels.zip")], raw


def synthia(tmp: Path) -> tuple[list[Path], dict[str, np.ndarray]]:
    import cv2

    raw = {}
    root = tmp / "RAND_CITYSCAPES"
    for i in range(3):
        stem = f"{i:07d}"
        image(root / "RGB" / f"{stem}.png", seed=i)
        ids = np.resize(
            np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22]),
            (H // 4) * (W // 4),
        )
        ids = np.kron(
            np.random.default_rng(i).permutation(ids).reshape(H // 4, W // 4), np.ones((4, 4), dtype=np.int64)
        )
        bgr = np.zeros((H, W, 3), dtype=np.uint16)
        bgr[..., 2] = ids  # the class id: the channel OpenCV returns last; another channel holds instance ids
        bgr[..., 1] = 1000 + i
        (root / "GT" / "LABELS").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "GT" / "LABELS" / f"{stem}.png"), bgr)
        raw[stem] = ids
    return [tmp], raw


def bdd100k(tmp: Path) -> tuple[list[Path], dict[str, np.ndarray]]:
    raw = {}
    for split, n in (("train", 3), ("val", 2)):
        for i in range(n):
            stem = f"{split[0]}{i:04d}-{i:08x}"
            image(tmp / "i" / "bdd100k" / "images" / "10k" / split / f"{stem}.jpg", seed=i)
            raw[stem] = label(
                tmp / "l" / "bdd100k" / "labels" / "sem_seg" / "masks" / split / f"{stem}.png",
                [*range(19), 255],
                seed=i,
            )
    # named apart from the official archives, whose published MD5 these fakes cannot have
    return [zip_folder(tmp / "i", tmp / "images_10k.zip"), zip_folder(tmp / "l", tmp / "sem_seg_labels.zip")], raw


def mapillary(tmp: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """The v2.0 package layout (v1.2 labels inside); returns the folder to zip and the raw v1.2 labels."""
    raw = {}
    root = tmp / "vistas"
    for split, n in (("training", 3), ("validation", 2)):
        for i in range(n):
            stem = f"{split[:3]}_{i:03d}"
            size = (W + 2 * i + 1, H + 2 * i)  # varied sizes, odd widths too
            image(root / split / "images" / f"{stem}.jpg", seed=i, size=size)
            raw[stem] = label(
                root / split / "v1.2" / "labels" / f"{stem}.png", list(range(66)), seed=i, size=size, palette=True
            )
            label(root / split / "v2.0" / "labels" / f"{stem}.png", list(range(124)), seed=i, size=size, palette=True)
    return root, raw


def acdc(tmp: Path) -> tuple[list[Path], dict[str, np.ndarray]]:
    raw = {}
    for c, condition in enumerate(("fog", "night", "rain", "snow")):
        for split in ("train", "val"):
            stem = f"GOPR{c:04d}_frame_{0 if split == 'train' else 1:06d}"
            image(tmp / "r" / "rgb_anon" / condition / split / f"GOPR{c:04d}" / f"{stem}_rgb_anon.png", seed=c)
            gt = tmp / "g" / "gt" / condition / split / f"GOPR{c:04d}"
            raw[f"{condition}/{stem}"] = label(gt / f"{stem}_gt_labelTrainIds.png", [*range(19), 255], seed=c)
            label(
                tmp / "g" / "gt" / condition / split / f"GOPR{c:04d}" / f"{stem}_gt_labelIds.png", [7], seed=0
            )  # ignored
        test = tmp / "r" / "rgb_anon" / condition / "test" / f"GOPR{c:04d}"
        image(test / f"GOPR{c:04d}_frame_000002_rgb_anon.png", seed=c + 50)  # test images have no public label
    archives = [
        zip_folder(tmp / "r", tmp / "rgb_anon_trainvaltest.zip"),
        zip_folder(tmp / "g", tmp / "gt_trainval.zip"),
    ]
    return archives, raw


def custom(src: Path, counts: dict[str, int], values, classes_yaml: str, size=(64, 64)) -> Path:
    """A custom folder: ``images/SPLIT/i.png`` and index masks ``masks/SPLIT/i.png`` of ``values``, and
    ``classes.yaml``."""
    for split, n in counts.items():
        for i in range(n):
            image(src / "images" / split / f"{i}.png", seed=i, size=size)
            label(src / "masks" / split / f"{i}.png", values, seed=i, size=size)
    (src / "classes.yaml").write_text(classes_yaml)
    return src
