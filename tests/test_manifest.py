"""The manifest contract: what preparation writes is what every reader gets, and bad manifests are clear errors."""

import json

import pytest

from rein_cli.data.manifest import MANIFEST, read_manifest, write_manifest
from rein_cli.errors import ReinError


def write(folder, **extra):
    splits = {
        "train": [
            {"image": "images/a.jpg", "label": "labels/a.png"},
            {"image": "images/b.jpg", "label": "labels/b.png"},
        ],
        "test": [{"image": "images/c.jpg"}],
    }
    space = {"classes": ["sky", "ground"], "palette": [[0, 0, 255], [0, 255, 0]], "ignore_index": 7}
    return write_manifest(folder, dataset="mine", splits=splits, **space, **extra)


def test_round_trip(tmp_path):
    path = write(tmp_path / "mine", version="1", source={"folder": "x"})
    assert path == tmp_path / "mine" / MANIFEST
    data = json.loads(path.read_text())
    assert data["format"] == 1 and data["version"] == "1" and data["source"] == {"folder": "x"}
    for given in (path, path.parent):  # the file or its folder
        manifest = read_manifest(given)
        assert manifest.path == path and manifest.root == path.parent and manifest.dataset == "mine"
        assert manifest.classes == ("sky", "ground") and manifest.palette == ((0, 0, 255), (0, 255, 0))
        assert manifest.ignore_index == 7 and manifest.counts == {"train": 2, "test": 1}
    assert manifest.samples("train") == [
        (path.parent / "images/a.jpg", path.parent / "labels/a.png"),
        (path.parent / "images/b.jpg", path.parent / "labels/b.png"),
    ]
    assert manifest.samples("test") == [(path.parent / "images/c.jpg", None)]  # unlabeled
    with pytest.raises(ReinError, match=r'has no split "tran" \(did you mean "train"\?\); its splits: train, test'):
        manifest.samples("tran")


@pytest.mark.parametrize(
    "content, message",
    [
        ("{", "JSONDecodeError"),
        ('{"dataset": "x", "splits": {}}', "KeyError: 'label_space'"),
        ('{"dataset": "x", "label_space": {"classes": ["a"]}, "splits": []}', "splits must map split names to lists"),
        ('{"dataset": "x", "label_space": {"classes": ["a"]}, "splits": {"val": [{"label": "l.png"}]}}', "'image'"),
        ('{"dataset": "x", "label_space": {"classes": ["a"]}, "splits": {}, "counts": [1]}', "AttributeError"),
    ],
)
def test_bad_manifests_name_the_file(tmp_path, content, message):
    (tmp_path / MANIFEST).write_text(content)
    with pytest.raises(
        ReinError, match=rf"invalid manifest {tmp_path / MANIFEST}: .*{message}.*prepare the dataset again"
    ):
        read_manifest(tmp_path)


def test_a_folder_without_a_manifest(tmp_path):
    with pytest.raises(ReinError, match=rf"no manifest.json at {tmp_path / MANIFEST}"):
        read_manifest(tmp_path)
