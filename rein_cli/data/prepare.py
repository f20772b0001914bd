"""`rein data prepare`: official archives or folders -> a prepared folder with train-id labels and a manifest.

Images stay where they are (inside the folder the archives were extracted to, or the folder given);
labels that are not train ids already are converted by a table lookup into ``labels/``; Mapillary's
validation split gets the half-resolution copy of the official protocol. The manifest is written last,
so a folder is complete exactly when it has one; a rerun skips finished extractions and label files.
"""

from __future__ import annotations

import fnmatch
import glob
import json
import logging
import os
import re
import shlex
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from rein_cli.data.archives import archive_entry, extract, is_archive
from rein_cli.data.catalog import Located, locate, prepare_command, prepare_target, root_option
from rein_cli.data.manifest import MANIFEST, Manifest, read_manifest, write_manifest
from rein_cli.data.pairs import check_size, unknown_values
from rein_cli.data.registry import DATASETS, DatasetSpec, SplitRule, find_spec
from rein_cli.errors import ReinError
from rein_cli.io import check_folder, check_image, read_image, read_label, relative_path, save_image, write_text
from rein_cli.labels import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, IGNORE_INDEX, LABEL_FORMATS
from rein_cli.parallel import parallel_map

log = logging.getLogger(__name__)

REPLACING = ".replacing"  # in a folder being prepared again: its outputs are rewritten, not resumed


def ensure_prepared(dataset: str | Path | Located, data_root: Path, *, progress: bool = True) -> Manifest:
    """The manifest of a dataset given by name or folder, or already located (`catalog.locate`). The synthetic
    benchmark is generated on first use (deterministic, a few seconds); any other dataset must have been prepared."""
    found = dataset if isinstance(dataset, Located) else locate(dataset, data_root)
    if not found.prepared:
        spec = found.spec
        if spec is None or spec.synthetic is None:
            name = spec.name if spec else found.given
            where = root_option(data_root)
            raise ReinError(
                f"dataset {name} is not prepared under {data_root}; run `{prepare_command(name, data_root)}` "
                f"(see `rein data info {name}{where}`)"
            )
        from rein_cli.data.synthetic import generate_synthetic

        log.info("generating the synthetic benchmark in %s (first use)", data_root)
        generate_synthetic(data_root, progress=progress)
    return read_manifest(found.manifest)


def check_output(out: Path, overwrite: bool, command: str) -> None:
    """Refuse an output that is a file, or a complete prepared dataset unless ``overwrite`` (naming ``command``)."""
    check_folder(out)
    manifest = out / MANIFEST
    if manifest.is_file() and not overwrite:
        try:
            counts = ", ".join(f"{k} {v}" for k, v in read_manifest(manifest).counts.items())
        except ReinError:
            counts = "a manifest"
        raise ReinError(f"{out} is already prepared ({counts}); to prepare it again run `{command}`")


def prepare_dataset(
    name: str,
    sources: list[str | Path],
    data_root: Path,
    *,
    out: Path | None = None,
    custom_name: str | None = None,
    workers: int | None = None,
    allow_unknown: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> Manifest:
    """`rein data prepare`: a registry dataset from its archives or folders, or ``custom`` (with ``custom_name``)
    from one folder or ``hf://org/name``, into ``out`` (default: under ``data_root``). A prepared folder is
    replaced only with ``overwrite``."""
    if name == "custom":
        from rein_cli.data.custom import prepare_custom

        if not custom_name or len(sources) != 1:
            raise ReinError("custom needs --name NAME and one --from FOLDER (or --from hf://org/name)")
        source = str(sources[0])
        target = Path(out or Path(data_root) / custom_name)
        again = shlex.join(["rein", "data", "prepare", "custom", "--name", custom_name, "--from", source])
        check_output(target, overwrite, f"{again} --out {shlex.quote(str(target))} --overwrite")
        path = prepare_custom(
            source if source.startswith("hf://") else Path(source), custom_name, target, progress=progress
        )
    else:
        target = out or prepare_target(find_spec(name), data_root)
        path = prepare(
            name,
            [Path(s) for s in sources],
            target,
            workers=workers,
            allow_unknown=allow_unknown,
            overwrite=overwrite,
            progress=progress,
        )
    return read_manifest(path)


def expand_braces(pattern: str) -> list[str]:
    """'a/{x,y}/b' -> ['a/x/b', 'a/y/b'] (glob has no braces)."""
    match = re.search(r"\{([^{}]*)\}", pattern)
    if not match:
        return [pattern]
    return [
        p
        for option in match[1].split(",")
        for p in expand_braces(pattern[: match.start()] + option + pattern[match.end() :])
    ]


def find_root(folders: list[Path], marker: str) -> Path:
    """The folder (searched three levels deep) that holds ``marker``, the dataset's top-level entry."""
    for folder in folders:
        for depth in range(4):
            for candidate in [folder, *folder.glob("/".join(["*"] * depth))] if depth else [folder]:
                if candidate.is_dir() and (candidate / marker).exists():
                    return candidate
    raise ReinError(
        f"cannot find the dataset inside {', '.join(map(str, folders))} (looked for {marker}/); "
        "give the extracted folder or the official archives"
    )


@dataclass(frozen=True)
class PairTask:
    """One image/label pair to check and, unless its label is usable as it is, convert."""

    image: Path
    label: Path
    out: Path | None  # where the train-id label goes; None: the label is used in place (or ``half`` is set)
    label_format: str
    resize_to_image: bool = False  # GTA5: a label map of another size is resized (nearest) to its image
    half: tuple[Path, Path] | None = None  # Mapillary val: the half-resolution (image, label) copy to write
    allow_unknown: bool = False
    rewrite: bool = False  # write the outputs even when they exist (a dataset prepared again with --overwrite)


def convert_pair(task: PairTask) -> dict:
    """Check one image/label pair and write its train-id label (unless it is one already). Returns a report.

    The checks are the ones training makes (`rein_cli.data.pairs`), with the label format's own ids; they run on
    every pair, also when an earlier run already wrote its label, so the report is complete after a resume."""
    label_format = LABEL_FORMATS[task.label_format]
    report: dict = {"image": str(task.image), "label": str(task.label)}
    width, height = check_image(task.image)  # decoded in full; the pixels are needed only for a half-size copy
    label = read_label(task.label, bits=label_format.bits)
    if label.shape != (height, width):
        if not task.resize_to_image:
            check_size(task.image, (height, width), task.label, label)
        report["resized"] = f"{Path(task.label).name}: {label.shape[1]}x{label.shape[0]}"
        label = np.asarray(Image.fromarray(label).resize((width, height), Image.NEAREST)).astype(label.dtype)
    unknown = unknown_values(label, label_format.known_ids, IGNORE_INDEX)
    if unknown:
        report["unknown"] = unknown
        if not task.allow_unknown:
            return report  # nothing written: the run fails and a rerun will look at this file again
    outputs = task.half or ((task.out,) if task.out is not None else ())
    if not outputs or (not task.rewrite and all(Path(p).is_file() for p in outputs)):  # in place, or written already
        return report
    train = label_format.table[label] if label_format.table is not None else label
    if task.half is not None:  # Mapillary validation: the official half-resolution copy
        half = (width // 2, height // 2)
        image = Image.fromarray(read_image(task.image))
        # JPEG quality 75, Pillow's default, as the official half-resolution copy is saved
        save_image(Path(task.half[0]), np.asarray(image.resize(half, Image.BICUBIC)), quality=75)
        save_image(Path(task.half[1]), np.asarray(Image.fromarray(train).resize(half, Image.NEAREST)), compress_level=1)
    else:
        save_image(Path(task.out), train.astype(np.uint8), compress_level=1)
    return report


def _label_for(image_rel: str, rule: SplitRule, roots: list[Path]) -> Path | None:
    for pattern, replacement in rule.labels:
        if re.match(pattern, image_rel):
            candidate = re.sub(pattern, replacement, image_rel)
            for root in roots:
                if (root / candidate).is_file():
                    return root / candidate
    return None


def _gather_sources(sources: list[Path], out: Path, spec: DatasetSpec, progress: bool) -> tuple[list[Path], list[dict]]:
    """Extract archives into ``out/source``; returns the folders to search and the archive records.

    Every source is checked (it exists, it is a folder or an archive, its published MD5) before anything is
    extracted; an archive is extracted only after its members and the free space have been checked."""
    folders, archives, records = [], [], []
    for source in map(Path, sources):
        if not source.exists():
            raise ReinError(f"--from {source} does not exist")
        if source.is_dir():
            folders.append(source)
            continue
        if not is_archive(source):
            raise ReinError(f"--from {source} is neither a folder nor an archive (.zip, .tar, .tar.gz, split .z01)")
        if re.search(r"\.z\d\d$", source.name.lower()):
            source = source.with_suffix(".zip")  # a part of a split zip: the whole archive is read from its .zip
            if not source.is_file():
                raise ReinError(f"{source}, the last part of a split archive, does not exist; give all its parts")
        if source not in archives:
            archives.append(source)
    if not folders and not archives:
        raise ReinError("no --from given; pass the official archives or the extracted folder")
    for source in archives:
        expected = spec.md5.get(source.name)
        record = archive_entry(source, checksum=True, progress=progress)
        if expected is not None and record["md5"] != expected:
            raise ReinError(f"{source} has MD5 {record['md5']}, the published one is {expected}; download it again")
        records.append(record)
    for source in archives:
        extract(source, out / "source", progress=progress, before_writing=lambda: start_writing(out, spec))
    return [*folders, *([out / "source"] if archives else [])], records


def start_writing(out: Path, spec: DatasetSpec) -> None:
    """Before the first write into a complete prepared folder (``--overwrite``): it stops being one (its manifest,
    and those of its subsets, go) and every label and copy it holds is written anew, also by a resumed run."""
    if not (out / MANIFEST).is_file():
        return
    write_text(out / REPLACING, "prepared again with --overwrite: every output is rewritten until manifest.json\n")
    for subset in (s for s in DATASETS.values() if s.parent == spec.name):
        subset_manifest = out.parent / subset.name / MANIFEST
        if subset_manifest.is_file() and _subset_of(subset_manifest) == (out / MANIFEST).resolve():
            subset_manifest.unlink()
    (out / MANIFEST).unlink()


def _subset_of(manifest: Path) -> Path | None:
    try:
        source = json.loads(manifest.read_text()).get("source", {})
        return (manifest.parent / source["subset_of"]).resolve()
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def prepare(
    name: str,
    sources: list[Path],
    out: Path,
    *,
    workers: int | None = None,
    allow_unknown: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Prepare the registry dataset ``name`` from ``sources`` into ``out``; returns the manifest path.

    ``allow_unknown``: label values outside the dataset's id set become 255 (reported) instead of an error.
    A dataset with subsets in the registry (acdc: acdc-fog, ...) also gets one manifest per subset beside ``out``.
    A complete prepared folder (one with a manifest) is prepared again only with ``overwrite``, and its manifest is
    removed only once the sources have been checked; an interrupted preparation (no manifest) resumes.
    """
    spec = find_spec(name)
    if spec.synthetic is not None:
        raise ReinError(f"{spec.name} is generated, not prepared: it appears on first use (or use generate_synthetic)")
    if spec.parent:  # acdc-fog: prepare acdc, which writes the per-condition manifests too
        spec = DATASETS[spec.parent]
    out = Path(out)
    again = shlex.join(["rein", "data", "prepare", name, *(x for s in sources for x in ("--from", str(s)))])
    check_output(out, overwrite, f"{again} --out {shlex.quote(str(out))} --overwrite")
    start = time.perf_counter()
    folders, records = _gather_sources(sources, out, spec, progress)
    root = find_root(folders, spec.root_marker)
    roots = [root, *[f for f in folders if f != root]]
    label_format = LABEL_FORMATS[spec.label_format]
    splits, paths, tasks, warnings = {}, {}, [], []  # paths: each item's image relative to the dataset root
    for split, rule in spec.splits.items():
        images = sorted({Path(p) for pattern in expand_braces(rule.images) for p in glob.glob(str(root / pattern))})
        if not rule.labeled:  # a benchmark's test images, for predictions to submit: listed, decoded when used
            if images:
                rels = [image.relative_to(root).as_posix() for image in images]
                splits[split], paths[split] = [{"image": relative_path(image, out)} for image in images], rels
                if rule.count and len(images) != rule.count:
                    warnings.append(f"{split}: {len(images)} images, the published count is {rule.count}")
            else:
                log.info(
                    "%s: no %s images under %s (%s); the copy has no %s split",
                    spec.name,
                    split,
                    root,
                    rule.images,
                    split,
                )
            continue
        if not images:
            raise ReinError(
                f"no {split} images of {spec.name} under {root} (expected {rule.images}); is the archive complete?"
            )
        if rule.count and len(images) != rule.count:
            warnings.append(f"{split}: {len(images)} images, the published count is {rule.count}")
        items, rels, missing = [], [], []
        for image in images:
            rel = image.relative_to(root).as_posix()
            label = _label_for(rel, rule, roots)
            if label is None:
                missing.append(rel)
                continue
            task = PairTask(image, label, None, spec.label_format, spec.resize_labels_to_images, None, allow_unknown)
            if split in spec.half_resolution:
                stem = Path(rel).stem
                half = (
                    out / "half" / split / "images" / f"{stem}.jpg",
                    out / "half" / split / "labels" / f"{stem}.png",
                )
                items.append({"image": relative_path(half[0], out), "label": relative_path(half[1], out)})
                task = replace(task, half=half)
            elif label_format.table is not None or spec.resize_labels_to_images:
                target = out / "labels" / split / Path(rel).with_suffix(".png").name
                items.append({"image": relative_path(image, out), "label": relative_path(target, out)})
                task = replace(task, out=target)
            else:
                items.append({"image": relative_path(image, out), "label": relative_path(label, out)})
            rels.append(rel)
            tasks.append(task)
        if missing:
            raise ReinError(
                f"{len(missing)} {split} images of {spec.name} have no label, e.g. {missing[0]} "
                f"(labels looked for as {rule.labels[0][1]}); add the label archive or folder"
            )
        splits[split], paths[split] = items, rels
    start_writing(out, spec)  # sources checked: the folder is not complete until the new manifest
    if (out / REPLACING).is_file():
        tasks = [replace(task, rewrite=True) for task in tasks]
    reports = parallel_map(convert_pair, tasks, workers=workers, progress=progress, desc=f"checking {spec.name}")
    unknown = {r["label"]: r["unknown"] for r in reports if "unknown" in r}
    if unknown and not allow_unknown:
        first = next(iter(unknown.items()))
        raise ReinError(
            f"{len(unknown)} labels hold values that are not {spec.label_format} ids, e.g. {first[0]}: "
            f"{first[1]}; check the files, or pass --allow-unknown to map them to 255"
        )
    unknown = {relative_path(Path(label), out): values for label, values in unknown.items()}
    resized = [r["resized"] for r in reports if "resized" in r]
    if resized:
        warnings.append(f"{len(resized)} label maps differ in size from their image and were resized (nearest) to it")
    for warning in warnings:
        log.warning("%s: %s", spec.name, warning)
    extra = {
        "version": "1",
        "source": {"archives": records, "folders": [str(f) for f in folders if f != out / "source"], "root": str(root)},
        "converted": label_format.description + ("; val at half resolution" if spec.half_resolution else ""),
        "warnings": warnings,
        "resized_labels": resized,
        "unknown_label_values": unknown,
        "seconds": round(time.perf_counter() - start, 1),
    }
    space = {"classes": CITYSCAPES_CLASSES, "palette": CITYSCAPES_PALETTE}
    manifest = write_manifest(out, dataset=spec.name, splits=splits, **space, **extra)
    for subset in (s for s in DATASETS.values() if s.parent == spec.name):  # beside it, pointing at the same files
        folder = out.parent / subset.name
        sub = {
            split: _subset(items, paths[split], subset.splits[split], out, folder)
            for split, items in splits.items()
            if split in subset.splits
        }
        source = {"subset_of": relative_path(manifest, folder)}
        write_manifest(folder, dataset=subset.name, splits=sub, version="1", source=source, **space)
    (out / REPLACING).unlink(missing_ok=True)
    return manifest


def _subset(items: list[dict], rels: list[str], rule: SplitRule, old: Path, new: Path) -> list[dict]:
    """The items whose image (relative to the dataset root) matches the subset's rule, rebased to folder ``new``."""
    patterns = expand_braces(rule.images)
    keep = [item for item, rel in zip(items, rels, strict=True) if any(fnmatch.fnmatchcase(rel, p) for p in patterns)]
    return [{k: _rebase(v, old, new) for k, v in item.items()} for item in keep]


def _rebase(path: str, old: Path, new: Path) -> str:
    """A manifest path relative to folder ``old`` -> relative to folder ``new``."""
    return relative_path(Path(os.path.normpath(old / path)), new)
