"""The one resolver from a dataset name or folder to its manifest, and `rein data list` / `info`."""

import re

import pytest

from rein_cli.data.catalog import dataset_info, list_datasets, locate, prepare_target
from rein_cli.data.manifest import MANIFEST, write_manifest
from rein_cli.data.registry import DATASETS
from rein_cli.errors import ReinError


def prepared(folder, name="mine"):
    return write_manifest(
        folder, dataset=name, classes=["a"], palette=[[1, 2, 3]], splits={"val": [{"image": "x.png"}]}
    )


def test_registry_names_resolve_under_the_data_root_prepared_or_not(tmp_path):
    found = locate("citys", tmp_path)
    assert found.manifest == tmp_path / "cityscapes" / MANIFEST and found.spec is DATASETS["cityscapes"]
    assert not found.prepared
    prepared(tmp_path / "cityscapes", "cityscapes")
    assert locate("cityscapes", tmp_path).prepared
    assert locate("acdc-fog", tmp_path).manifest == tmp_path / "acdc-fog" / MANIFEST  # its own manifest
    assert prepare_target(DATASETS["acdc-fog"], tmp_path) == tmp_path / "acdc"  # prepared with all of ACDC


def test_nothing_is_generated_or_written(tmp_path):
    found = locate("synthetic-fog", tmp_path / "root")
    assert found.spec.synthetic == "fog" and not found.prepared
    assert not (tmp_path / "root").exists()


def test_folders_manifest_files_and_custom_names(tmp_path, monkeypatch):
    manifest = prepared(tmp_path / "data" / "mine")
    assert locate(tmp_path / "data" / "mine", tmp_path) == locate(str(manifest), tmp_path)
    assert locate(str(manifest), tmp_path).manifest == manifest and locate(manifest, tmp_path).spec is None
    assert locate("mine", tmp_path / "data").manifest == manifest  # a custom dataset prepared under the data root
    monkeypatch.chdir(tmp_path / "data")
    assert locate("mine", tmp_path / "elsewhere").manifest.resolve() == manifest  # a folder here, by its name
    prepared(tmp_path / "data" / "gta5", "other")  # a folder named like a registry dataset: the registry wins
    assert locate("gta5", tmp_path / "root").manifest == tmp_path / "root" / "gta5" / MANIFEST


def test_unknown_names_and_unprepared_folders_are_errors(tmp_path):
    with pytest.raises(ReinError, match=r'unknown dataset "synthetc" \(did you mean "synthetic"\?\)'):
        locate("synthetc", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReinError, match=rf"{tmp_path / 'empty'} is not a prepared dataset \(no manifest.json there\)"):
        locate(tmp_path / "empty", tmp_path)
    with pytest.raises(ReinError, match="is not a prepared dataset"):
        locate(tmp_path / "missing" / MANIFEST, tmp_path)


def test_list_and_info_show_what_is_prepared(tmp_path):
    prepared(tmp_path / "cityscapes", "cityscapes")
    prepared(tmp_path / "cracks")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / MANIFEST).write_text("{")
    rows = {row["name"]: row for row in list_datasets(tmp_path)}
    assert set(DATASETS) | {"cracks", "broken"} == set(rows)
    assert rows["cityscapes"]["prepared"] == {"val": 1} and rows["cityscapes"]["aliases"] == "citys"
    assert rows["gta5"]["prepared"] is None and rows["cracks"]["description"] == "custom dataset"
    assert rows["broken"]["prepared"] is None  # listed, but not counted as prepared
    info = dataset_info("citys", tmp_path)
    assert info.startswith("cityscapes: ") and "test-time resize (keep ratio): 1024x512 (512 crops), 2048x1024" in info
    assert f"prepared: {tmp_path / 'cityscapes'} {{'val': 1}}" in info
    assert "prepared: no" in dataset_info("bdd", tmp_path) and "rein data download cityscapes" in info


def test_info_describes_what_list_shows(tmp_path, capsys):
    from . import fake_datasets as fake
    from .helpers import rein

    src = fake.custom(tmp_path / "mine", {"train": 2, "val": 1}, [0, 1, 2], "classes: [road, crack, pothole]\n")
    root = tmp_path / "root"
    assert rein("data", "prepare", "custom", "--from", src, "--name", "cracks", "--data-root", root) == 0
    assert rein("data", "list", "--data-root", root) == 0
    assert re.search(r"^cracks\s+train 2, val 1\s+custom dataset$", capsys.readouterr().out, re.M)
    assert rein("data", "info", "cracks", "--data-root", root) == 0
    info = capsys.readouterr().out.splitlines()
    assert info[0] == "cracks: custom dataset (3 classes: road, crack, pothole)"
    assert "  train: 2 images" in info and "  val: 1 image" in info
    assert f"  prepared from: {src.resolve()}" in info
    assert info[-1] == f"  prepared: {root / 'cracks'} {{'train': 2, 'val': 1}}"
    assert rein("data", "info", root / "cracks") == 0  # by its folder, too
    assert capsys.readouterr().out.splitlines()[0] == info[0]
    prepared(tmp_path / "elsewhere" / "citys-copy", "cityscapes")  # a registry dataset prepared elsewhere: its entry
    text = dataset_info(tmp_path / "elsewhere" / "citys-copy", root)
    assert text.startswith("cityscapes: ") and f"prepared: {tmp_path / 'elsewhere' / 'citys-copy'} " in text
    assert rein("data", "info", "crcks", "--data-root", root) == 1  # an unknown name: as everywhere
    assert 'unknown dataset "crcks"' in capsys.readouterr().err
