"""The label space: classes, palettes and the label formats' lookup tables."""

import typing

import numpy as np

from rein_cli.labels import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_PALETTE,
    IGNORE_INDEX,
    LABEL_FORMATS,
    LabelFormatName,
    colorize,
    default_classes,
    default_palette,
    lookup_table,
)


def test_lookup_tables_from_source_ids_per_train_id():
    table = lookup_table((5, (1, 2), None, 7), size=10)
    assert table.tolist() == [255, 1, 1, 255, 255, 0, 255, 3, 255, 255]
    assert table.dtype == np.uint8


def test_label_formats():
    assert set(typing.get_args(LabelFormatName)) == set(LABEL_FORMATS)
    cs = LABEL_FORMATS["cityscapes-ids"]
    assert cs.table[7] == 0 and cs.table[33] == 18 and cs.table[0] == IGNORE_INDEX and cs.known_ids == set(range(34))
    assert LABEL_FORMATS["synthia"].table.shape == (1 << 16,)  # 16-bit label values
    assert LABEL_FORMATS["mapillary-v1.2"].table[58] == CITYSCAPES_CLASSES.index("train")  # "On Rails"
    assert LABEL_FORMATS["train-ids"].table is None and LABEL_FORMATS["train-ids"].known_ids == set(range(19))
    for label_format in LABEL_FORMATS.values():
        mapped = set(label_format.table.tolist()) if label_format.table is not None else set()
        assert mapped <= set(range(19)) | {IGNORE_INDEX}


def test_classes_palettes_and_colours():
    assert len(CITYSCAPES_CLASSES) == len(CITYSCAPES_PALETTE) == 19 and CITYSCAPES_CLASSES[0] == "road"
    assert default_classes(19) == CITYSCAPES_CLASSES and default_classes(3) == ("class_0", "class_1", "class_2")
    assert default_palette(19) == [list(c) for c in CITYSCAPES_PALETTE]
    assert len({tuple(c) for c in default_palette(40)}) == 40  # distinct colours
    rgb = colorize(np.array([[0, 255]], np.uint8), CITYSCAPES_PALETTE)
    assert rgb.tolist() == [[[128, 64, 128], [0, 0, 0]]]  # ignore is black
