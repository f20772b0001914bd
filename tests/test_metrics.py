"""Metrics against hand-computed confusion matrices."""

import math

import torch

from rein_cli.engine.metrics import confusion_matrix, iou_from_confusion


def test_confusion_matrix_counts_and_ignores_255():
    target = torch.tensor([[0, 0, 1, 1], [2, 255, 255, 1]])
    pred = torch.tensor([[0, 1, 1, 1], [0, 2, 0, 2]])
    cm = confusion_matrix(pred, target, num_classes=3)
    expected = torch.tensor(
        [
            [1, 1, 0],  # class 0: one right, one predicted as 1
            [0, 2, 1],  # class 1: two right, one predicted as 2
            [1, 0, 0],
        ]
    )  # class 2: predicted as 0
    assert torch.equal(cm, expected)
    assert cm.sum() == 6  # the two 255 pixels are not counted


def test_iou_by_hand():
    cm = torch.tensor([[1, 1, 0], [0, 2, 1], [1, 0, 0]])
    m = iou_from_confusion(cm)
    # IoU_0 = 1 / (2 + 2 - 1) = 1/3; IoU_1 = 2 / (3 + 3 - 2) = 1/2; IoU_2 = 0 / (1 + 1 - 0) = 0
    assert [round(v, 4) for v in m["IoU"]] == [33.3333, 50.0, 0.0]
    assert math.isclose(m["mIoU"], 100 * (1 / 3 + 1 / 2 + 0) / 3)
    assert math.isclose(m["aAcc"], 100 * 3 / 6)
    # Acc_c = TP / label area: 1/2, 2/3, 0
    assert math.isclose(m["mAcc"], 100 * (1 / 2 + 2 / 3) / 3)


def test_classes_absent_from_prediction_and_label_are_left_out():
    target = torch.tensor([0, 0, 1, 1])
    pred = torch.tensor([0, 0, 1, 3])  # class 3 only predicted: IoU 0, counted; class 2 nowhere: NaN, left out
    m = iou_from_confusion(confusion_matrix(pred, target, num_classes=4))
    assert math.isnan(m["IoU"][2])
    assert m["IoU"][3] == 0.0
    assert math.isclose(m["mIoU"], 100 * (1 + 0.5 + 0) / 3)
    assert math.isnan(m["Acc"][3])  # not in the label


def test_summed_over_images_not_averaged():
    a = confusion_matrix(torch.tensor([0, 0]), torch.tensor([0, 0]), 2)
    b = confusion_matrix(torch.tensor([1, 1, 1, 1]), torch.tensor([0, 0, 0, 1]), 2)
    m = iou_from_confusion(a + b)
    assert math.isclose(m["IoU"][0], 100 * 2 / 5)
    assert math.isclose(m["IoU"][1], 100 * 1 / 4)


def test_dg_mean_averages_rounded_values_without_the_training_datasets():
    from rein_cli.engine.metrics import dg_mean

    # The official log's example: 51.49, 49.51, 55.55 -> 52.1833...; the unrounded values would give another mean.
    values = {"citys": 51.494, "bdd": 49.506, "map": 55.554, "gta5": 70.0}
    mean, names = dg_mean(values, excluded={"gta5"})
    assert names == ["citys", "bdd", "map"] and mean == (51.49 + 49.51 + 55.55) / 3
    assert round(mean, 4) == 52.1833 and mean != sum(v for k, v in values.items() if k != "gta5") / 3
    assert dg_mean({"gta5": 70.004}, excluded={"gta5"}) == (70.0, ["gta5"])  # only training datasets: all of them
    assert math.isnan(dg_mean({})[0])
