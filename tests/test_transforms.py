"""The training and test transforms keep image and label aligned, and follow the official rules."""

import numpy as np
import torch

from rein_cli.data.transforms import EvalTransform, TrainTransform, keep_ratio_size, random_crop, short_edge_size

MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


def pair(h: int, w: int, block: int = 8):
    """A label of block-constant random classes, and an image whose red channel is 10 x the label."""
    rng = np.random.default_rng(0)
    label = np.kron(rng.integers(0, 19, (h // block, w // block)), np.ones((block, block), dtype=np.int64)).astype(
        np.uint8
    )
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 0] = label * 10
    image[..., 1] = 128
    return torch.from_numpy(image), torch.from_numpy(label)


def red_class(image: torch.Tensor) -> torch.Tensor:
    """Undo the normalisation; the label each pixel's red channel encodes."""
    return torch.round((image[0] * STD[0] + MEAN[0]) * 255 / 10).long()


def test_crop_and_flip_keep_the_label_on_its_pixels():
    image, label = pair(96, 160)
    transform = TrainTransform(64, MEAN, STD, resize_ratios=[96 / 64], photometric=False)  # short edge stays 96
    for seed in range(8):
        torch.manual_seed(seed)
        x, y = transform(image, label)
        assert x.shape == (3, 64, 64) and y.shape == (64, 64)
        assert torch.equal(red_class(x), y)


def test_resize_keeps_alignment_away_from_block_edges():
    image, label = pair(96, 160, block=16)
    transform = TrainTransform(128, MEAN, STD, resize_ratios=[2 * 96 / 128], photometric=False)  # x2 upscaling
    torch.manual_seed(0)
    x, y = transform(image, label)
    near_edge = torch.zeros_like(y, dtype=torch.bool)  # within 2 pixels of a class boundary
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            near_edge |= torch.roll(y, (dy, dx), (0, 1)) != y
    interior = ~near_edge
    assert interior.float().mean() > 0.7
    assert torch.equal(red_class(x)[interior], y[interior])  # bilinear image, nearest label: the same classes


def test_padding_uses_zero_and_ignore():
    image, label = pair(32, 48)
    transform = TrainTransform(64, MEAN, STD, resize_ratios=[32 / 64], photometric=False)
    x, y = transform(image, label)
    assert (y[32:] == 255).all() and (y[:, 48:] == 255).all() and (y[:32, :48] != 255).all()
    assert (x[:, 32:] == 0).all() and (x[:, :, 48:] == 0).all()


def test_cat_max_ratio_redraws_crops_dominated_by_one_class():
    label = torch.zeros(64, 256, dtype=torch.uint8)
    label[:, 192:] = torch.arange(64, dtype=torch.uint8)[:, None] % 19  # only the right quarter is varied
    torch.manual_seed(0)
    hits = 0
    for _ in range(20):
        _, crop = random_crop(torch.zeros(3, 64, 256), label, 64, cat_max_ratio=0.75)
        counts = torch.bincount(crop.flatten().long(), minlength=256)[:255]
        hits += int(counts.max() / counts.sum() < 0.75)
    assert hits >= 15  # up to 10 draws find the varied part most of the time (1 in 4 per draw)


def test_after_ten_failed_checks_an_eleventh_crop_is_taken_unchecked():
    rows, cols = torch.meshgrid(torch.arange(40.0), torch.arange(50.0), indexing="ij")
    image = torch.stack([rows, cols, rows])  # each pixel knows where it is
    label = torch.zeros(40, 50, dtype=torch.uint8)  # one class everywhere: every check fails
    torch.manual_seed(3)
    crop, _ = random_crop(image, label, 16, cat_max_ratio=0.75)
    torch.manual_seed(3)
    draws = [(int(torch.randint(0, 25, ())), int(torch.randint(0, 35, ()))) for _ in range(11)]
    assert (int(crop[0, 0, 0]), int(crop[1, 0, 0])) == draws[-1]  # the 11th draw, as mmseg's RandomCrop
    torch.manual_seed(3)
    crop, _ = random_crop(image, label, 16, cat_max_ratio=1.0)  # no check: the first draw
    assert (int(crop[0, 0, 0]), int(crop[1, 0, 0])) == draws[0]


def test_the_hue_shift_is_an_integer_in_minus_18_to_17(monkeypatch):
    from rein_cli.data import transforms

    drawn, randint = [], torch.randint

    def spy(*args, **kwargs):
        value = randint(*args, **kwargs)
        if args[:2] == (-18, 18):
            drawn.append(int(value))
        return value

    monkeypatch.setattr(transforms.torch, "randint", spy)
    torch.manual_seed(0)
    for _ in range(400):
        transforms.photometric_distortion(torch.rand(3, 2, 2) * 255)
    assert drawn and min(drawn) == -18 and max(drawn) == 17  # mmcv's randint(-18, 18): 18 is never drawn


def test_resize_rules():
    assert short_edge_size(1052, 1914, 512, 2048) == (512, 932)  # GTA frame, short edge 512
    assert short_edge_size(1024, 2048, 1024, 2048) == (1024, 2048)
    assert short_edge_size(1024, 4096, 1024, 2048) == (512, 2048)  # capped by the long edge
    assert keep_ratio_size(1024, 2048, 1024, 512) == (512, 1024)  # Cityscapes for evaluation
    assert keep_ratio_size(1512, 2016, 1024, 512) == (512, 683)  # a halved 4032x3024 Mapillary image
    image, label = pair(64, 128)
    x, y = EvalTransform(MEAN, STD, (64, 32))(image, label)
    assert x.shape == (3, 32, 64) and y.shape == (64, 128)  # the label keeps its resolution


def _reference_train_transform(t: TrainTransform, image: torch.Tensor, label: torch.Tensor):
    """The training pipeline as first written (a float copy of the label for the nearest resize, the rounding not
    in place): the slow reference the in-place version must equal."""
    import torch.nn.functional as F

    from rein_cli.data.transforms import normalize, photometric_distortion

    image = image.permute(2, 0, 1)
    short = t.shorts[int(torch.randint(len(t.shorts), ()))]
    size = short_edge_size(*label.shape, short, t.max_size)
    if tuple(image.shape[-2:]) != size:
        image = F.interpolate(image.float()[None], size=size, mode="bilinear", align_corners=False)[0]
        label = F.interpolate(label[None, None].float(), size=size, mode="nearest")[0, 0].to(torch.uint8)
    image = image.float().round().clamp(0, 255).to(torch.uint8)
    image, label = random_crop(image, label, t.crop, t.cat_max_ratio)
    if torch.rand(()) < 0.5:
        image, label = image.flip(-1), label.flip(-1)
    image = normalize(photometric_distortion(image).float(), t.mean, t.std)
    pad_h, pad_w = t.crop - label.shape[0], t.crop - label.shape[1]
    image = F.pad(image, (0, pad_w, 0, pad_h), value=0.0)
    label = F.pad(label, (0, pad_w, 0, pad_h), value=255)
    return image.contiguous(), label.long().contiguous()


def test_train_transform_equals_its_reference_on_fixed_seeds():
    """Every scale of the recipe (down, none, up), noisy images (rounding at every step) and odd sizes: the
    outputs are identical to the reference's, value for value."""
    rng = np.random.default_rng(3)
    for h, w in ((75, 137), (64, 64), (41, 90)):
        image = torch.from_numpy(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        label = torch.from_numpy(rng.choice(np.array([0, 1, 2, 5, 255], dtype=np.uint8), size=(h, w)))
        t = TrainTransform(32, MEAN, STD, resize_ratios=[k / 10 for k in range(5, 21)] + [h / 32])
        for seed in range(40):
            torch.manual_seed(seed)
            got = t(image.clone(), label.clone())
            torch.manual_seed(seed)
            want = _reference_train_transform(t, image.clone(), label.clone())
            assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]), (h, w, seed)
            assert got[0].dtype == want[0].dtype and got[1].dtype == want[1].dtype


def test_train_transform_leaves_a_float_input_as_it_was():
    image, label = pair(64, 96)
    image = image.float()
    before = image.clone()
    TrainTransform(32, MEAN, STD, resize_ratios=[2.0])(image, label)  # short edge 64: no resize, rounded
    assert torch.equal(image, before)
