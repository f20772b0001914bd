"""The dataset registry is data: names, aliases, layouts, label formats, protocols and subsets, consistent."""

import fnmatch
import typing

import pytest

from rein_cli.data.prepare import expand_braces
from rein_cli.data.registry import (
    ACDC_CONDITIONS,
    ALIASES,
    DATASETS,
    SYNTHETIC_CONDITIONS,
    find_spec,
    lookup,
    synthetic_name,
)
from rein_cli.errors import ReinError
from rein_cli.labels import LABEL_FORMATS, LabelFormatName


def test_names_and_aliases_are_unique_and_resolve():
    assert all(name == spec.name for name, spec in DATASETS.items())
    assert not set(ALIASES) & set(DATASETS)
    for alias, name in ALIASES.items():
        assert lookup(alias) is DATASETS[name] and lookup(alias.upper()) is DATASETS[name]
    assert find_spec("citys").name == "cityscapes" and find_spec("bdd").name == "bdd100k"
    assert lookup("nowhere") is None
    with pytest.raises(ReinError, match=r'unknown dataset "cityscape" \(did you mean "cityscapes"\?\).*folder'):
        find_spec("cityscape")


def test_the_paper_datasets_are_all_there():
    expected = {"gta5", "synthia", "cityscapes", "bdd100k", "mapillary", "acdc"}
    expected |= {f"acdc-{c}" for c in ACDC_CONDITIONS} | {synthetic_name(c) for c in SYNTHETIC_CONDITIONS}
    assert set(DATASETS) == expected


def test_synthetic_names():
    names = ["synthetic", "synthetic-fog", "synthetic-night", "synthetic-rain", "synthetic-snow"]
    assert [synthetic_name(c) for c in SYNTHETIC_CONDITIONS] == names
    assert all(DATASETS[synthetic_name(c)].synthetic == c for c in SYNTHETIC_CONDITIONS)


def test_every_real_dataset_describes_its_layout_and_labels():
    assert set(typing.get_args(LabelFormatName)) == set(LABEL_FORMATS)
    for spec in DATASETS.values():
        assert spec.label_format in LABEL_FORMATS
        if spec.synthetic is not None:
            continue
        assert spec.homepage.startswith("https://") and spec.licence and spec.root_marker and spec.instructions
        assert "train" in spec.splits
        for split, rule in spec.splits.items():
            assert rule.images and all(len(pair) == 2 for pair in rule.labels)
            assert rule.labeled or split == "test"  # only a benchmark's test images come without labels
        assert set(spec.half_resolution) <= set(spec.splits)


def test_test_time_sizes_follow_the_crop():
    assert find_spec("cityscapes").test_size_for(512) == (1024, 512)
    assert find_spec("cityscapes").test_size_for(1024) == (2048, 1024)
    assert find_spec("bdd").test_size_for(1024) == (1280, 720)  # no 1024 protocol of its own
    assert find_spec("acdc-night").test_size_for(512) == (960, 540)
    assert find_spec("synthetic").test_size_for(512) is None  # native size


@pytest.mark.parametrize("condition", ACDC_CONDITIONS)
def test_acdc_conditions_are_subsets_of_acdc(condition):
    acdc, sub = DATASETS["acdc"], DATASETS[f"acdc-{condition}"]
    assert sub.parent == "acdc" and acdc.parent is None
    for split, rule in sub.splits.items():
        path = f"rgb_anon/{condition}/{split}/GOPR0475/GOPR0475_frame_000041_rgb_anon.png"
        assert any(fnmatch.fnmatchcase(path, p) for p in expand_braces(rule.images))
        assert any(fnmatch.fnmatchcase(path, p) for p in expand_braces(acdc.splits[split].images))
        other = path.replace(f"/{condition}/", "/fog/" if condition != "fog" else "/snow/")
        assert not any(fnmatch.fnmatchcase(other, p) for p in expand_braces(rule.images))
    for split in acdc.splits:
        assert sum(DATASETS[f"acdc-{c}"].splits[split].count for c in ACDC_CONDITIONS) == acdc.splits[split].count
