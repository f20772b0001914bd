"""The 15 corruptions (Cityscapes-C protocol): determinism, the seed rule, severities, the library's golden values,
frost's download, the cache, and `rein eval --corruption`."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rein_cli.data import corruption_formulas as F
from rein_cli.data import corruptions as C
from rein_cli.engine.results import Evaluation
from rein_cli.errors import ReinError

from .fake_server import FakeServer
from .helpers import errors, odd_folder, rein, shard_worker, tiny_segmentor

HERE = Path(__file__).parent
GOLDEN = json.loads((HERE / "data" / "corruption_golden.json").read_text())


def _reference():
    """benchmarks/corruption_reference.py: the generated image and frost overlays the golden values are of."""
    spec = importlib.util.spec_from_file_location(
        "corruption_reference", HERE.parent / "benchmarks" / "corruption_reference.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REFERENCE = _reference()


def _image(h: int = 64, w: int = 128) -> np.ndarray:
    return REFERENCE.reference_image((h, w))


@pytest.fixture(scope="module")
def overlays(tmp_path_factory):
    return REFERENCE.frost_overlays(tmp_path_factory.mktemp("frost"))


def _run(image, name, severity, overlays, **kwargs):
    """`corrupt`, with frost reading the generated overlays."""
    if name != "frost":
        return C.corrupt(image, name, severity, **kwargs)
    rng = kwargs.get("rng") or np.random.RandomState(C.corruption_seed(kwargs["identity"], name, severity))
    return F.frost(image, severity, rng, overlays=overlays).astype(np.uint8)


# How far an output's statistics (each cell's mean and standard deviation, `REFERENCE.summary`) may be from the
# library's, in grey levels. Another build of numpy, libm or OpenCV rounds some last bits otherwise, which moves a
# few values by one grey level (motion_blur-4: 2 of 25,920 values with numpy's vectorised exp instead of libm's);
# even 5% of the values off by one move a cell by 0.03. A wrong formula moves a cell by tenths or more (the test
# below shows it for motion blur's kernel angle, size and direction).
TOLERANCE = 0.1


def _golden_distance(out: np.ndarray, golden: dict) -> float:
    """The largest difference of a cell's mean or spread between ``out`` and the library's (0 when bit-identical)."""
    summary = REFERENCE.summary(out)
    if summary["sha256"] == golden["sha256"]:
        return 0.0
    return max(np.abs(np.subtract(summary[key], golden[key])).max() for key in ("pooled", "spread"))


def _distances(name: str, overlays) -> dict[int, float]:
    """Severity -> `_golden_distance` of ours to the library's, on the reference image."""
    image = REFERENCE.reference_image()
    distances = {}
    for severity in C.SEVERITIES:
        golden = GOLDEN["values"][f"{name}-{severity}"]
        out = _run(image, name, severity, overlays, rng=np.random.RandomState(golden["seed"]))
        assert out.dtype == np.uint8 and out.shape == image.shape
        distances[severity] = _golden_distance(out, golden)
    return distances


@pytest.mark.parametrize("name", C.CORRUPTIONS)
def test_matches_the_library_golden_values_at_every_severity(name, overlays):
    distances = _distances(name, overlays)
    assert max(distances.values()) <= TOLERANCE, f"{name}: cell statistics off by {distances} grey levels"


def test_the_golden_comparison_passes_rounding_and_fails_a_wrong_formula(overlays, monkeypatch):
    image = REFERENCE.reference_image()
    golden = GOLDEN["values"]["motion_blur-4"]
    out = C.corrupt(image, "motion_blur", 4, rng=np.random.RandomState(golden["seed"]))
    assert _golden_distance(out, golden) == 0.0
    noise = np.random.default_rng(0)
    for share in (0.0001, 0.01, 0.05):  # a library's rounding: a share of the values one grey level off
        off = out.astype(int) + (noise.random(out.shape) < share) * noise.choice([-1, 1], out.shape)
        rounded = np.clip(off, 0, 255).astype(np.uint8)
        assert not np.array_equal(rounded, out) and 0 < _golden_distance(rounded, golden) <= TOLERANCE, share

    class VectorisedExp:  # numpy's exp for the kernel, which differs from libm's in last bits on some machines
        def __getattr__(self, name):
            return getattr(math, name)

        @staticmethod
        def exp(value: float) -> float:
            return float(np.exp(np.full(16, value))[0])

    with monkeypatch.context() as patch:
        patch.setattr(F, "math", VectorisedExp())
        assert max(_distances("motion_blur", overlays).values()) <= TOLERANCE  # the failure seen on a fresh install
    blur = F._motion_blur
    wrong = {
        "angle 1 degree more": lambda x, radius, sigma, angle: blur(x, radius=radius, sigma=sigma, angle=angle + 1),
        "angle negated": lambda x, radius, sigma, angle: blur(x, radius=radius, sigma=sigma, angle=-angle),
        "kernel one longer": lambda x, radius, sigma, angle: blur(x, radius=radius + 1, sigma=sigma, angle=angle),
        "kernel one shorter": lambda x, radius, sigma, angle: blur(x, radius=radius - 1, sigma=sigma, angle=angle),
        "sigma one more": lambda x, radius, sigma, angle: blur(x, radius=radius, sigma=sigma + 1, angle=angle),
    }
    for what, formula in wrong.items():
        monkeypatch.setattr(F, "_motion_blur", formula)
        assert max(_distances("motion_blur", overlays).values()) > 2 * TOLERANCE, what


@pytest.mark.parametrize("name", C.CORRUPTIONS)
def test_deterministic_per_image_and_different_per_severity(name, overlays):
    image = _image()
    first = _run(image, name, 3, overlays, identity="city/a.png")
    assert first.dtype == np.uint8 and first.shape == image.shape
    assert np.array_equal(first, _run(image, name, 3, overlays, identity="city/a.png"))
    outputs = [_run(image, name, s, overlays, identity="city/a.png") for s in C.SEVERITIES]
    for a in range(5):
        for b in range(a + 1, 5):
            assert not np.array_equal(outputs[a], outputs[b]), f"{name}: severities {a + 1} and {b + 1} are equal"
    assert not np.array_equal(first, image)


RANDOM = ("gaussian_noise", "shot_noise", "impulse_noise", "glass_blur", "motion_blur", "snow", "frost", "fog")


@pytest.mark.parametrize("name", RANDOM)
def test_another_image_identity_draws_other_noise(name, overlays):
    image = _image()
    a = _run(image, name, 2, overlays, identity="city/a.png")
    b = _run(image, name, 2, overlays, identity="city/b.png")
    assert not np.array_equal(a, b)


def test_seed_rule():
    text = "rein-corruption-v1\0city/a.png\0fog\x003"
    expected = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
    assert C.corruption_seed("city/a.png", "fog", 3) == expected
    assert C.corruption_seed("city/a.png", "fog", 4) != expected


def test_any_resolution():
    for h, w in ((24, 48), (8, 8), (50, 77), (97, 61)):
        image = _image(h, w)
        for name in ("glass_blur", "zoom_blur", "snow", "fog", "elastic_transform", "pixelate"):
            assert C.corrupt(image, name, 5, identity="x").shape == (h, w, 3)


def test_specs():
    assert len(C.parse_spec("all")) == 75
    assert C.parse_spec("fog") == [("fog", s) for s in C.SEVERITIES]
    assert C.parse_spec("fog:1,contrast") == [("fog", 1), *(("contrast", s) for s in C.SEVERITIES)]
    assert C.parse_spec("Motion-Blur:2, fog:2,fog:2") == [("motion_blur", 2), ("fog", 2)]
    for bad, said in (
        ("fgo", "unknown corruption 'fgo'"),
        ("fog:6", "unknown severity '6'"),
        ("fog:x", "'x'"),
        (",", "no corruption"),
    ):
        with pytest.raises(ReinError, match=said) as err:
            C.parse_spec(bad)
        assert "gaussian_noise" in str(err.value) and "severities 1-5" in str(err.value)
    with pytest.raises(ReinError, match="uint8"):
        C.corrupt(np.zeros((40, 40, 3), np.float32), "fog", 1, identity="x")


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.RandomState(seed).randint(0, 256, (40, 60, 3)).astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def test_frost_images_downloaded_once_and_checked(tmp_path):
    files = {f"frost{k}.png": _png(k) for k in range(1, 7)}
    table = [(name, len(data), hashlib.sha256(data).hexdigest()) for name, data in files.items()]
    with FakeServer() as server:
        for name, data in files.items():
            server.add(f"/frost/{name}", data)
        paths = C.frost_images(tmp_path / "frost", base_url=f"{server.url}/frost", files=table)
        assert [p.read_bytes() for p in paths] == list(files.values())
        count = len(server.requests)
        C._checked.clear()
        assert C.frost_images(tmp_path / "frost", base_url=f"{server.url}/frost", files=table) == paths
        assert len(server.requests) == count  # checked on disk, not downloaded again
        out = F.frost(_image(), 2, np.random.RandomState(0), overlays=paths)
        assert out.shape == (64, 128, 3)

        server.set(
            "/frost/frost3.png", serve=_png(99)[: len(files["frost3.png"])].ljust(len(files["frost3.png"]), b"\0")
        )
        with pytest.raises(ReinError, match=r"frost3\.png has SHA256 \w+, expected"):
            C.frost_images(tmp_path / "other", base_url=f"{server.url}/frost", files=table)
        assert not (tmp_path / "other" / "frost3.png").exists()


def test_pinned_frost_files_name_the_tagged_library():
    assert len(C.FROST_FILES) == 6 and C.FROST_COMMIT in C.FROST_BASE
    assert all(len(sha) == 64 and size > 0 for _, size, sha in C.FROST_FILES)


def test_slow_corruptions_are_cached(tmp_path, monkeypatch):
    image = _image()
    source = tmp_path / "a.png"
    Image.fromarray(image).save(source)
    cache = tmp_path / "cache"
    first = C.corrupt_file(image, "glass_blur", 1, identity="a.png", source=source, cache=cache)
    entries = list(cache.rglob("*.png"))
    assert len(entries) == 1 and np.array_equal(first, C.corrupt(image, "glass_blur", 1, identity="a.png"))

    def fail(*args, **kwargs):
        raise AssertionError("computed again")

    monkeypatch.setattr(C, "corrupt", fail)
    assert np.array_equal(C.corrupt_file(image, "glass_blur", 1, identity="a.png", source=source, cache=cache), first)
    monkeypatch.undo()
    C.corrupt_file(image, "fog", 1, identity="a.png", source=source, cache=cache)  # fast: never cached
    C.corrupt_file(image, "glass_blur", 2, identity="a.png", source=source, cache=cache)
    assert len(list(cache.rglob("*.png"))) == 2


def test_eval_with_corruptions_from_the_command_line(trained, synthetic_root, tmp_path, capsys):
    out = tmp_path / "eval"
    args = [
        "--target",
        "synthetic-fog",
        "--data-root",
        synthetic_root,
        "--out",
        out,
        "--no-progress",
        "--mode",
        "slide",
    ]
    assert rein("eval", trained / "checkpoints" / "last", *args, "--corruption", "fog:1,contrast") == 0
    captured = capsys.readouterr()
    printed = captured.out
    # the time estimate counts every image once per (corruption, severity) pair
    from rein_cli.data.manifest import read_manifest
    from rein_cli.engine.checkpoint import load_segmentor
    from rein_cli.engine.scoring import cpu_estimate

    def windows(text: str) -> int:
        return int(re.search(r"\((\d+) windows of", text).group(1))

    model, manifest = load_segmentor(trained / "checkpoints" / "last"), read_manifest(synthetic_root / "synthetic-fog")
    once = cpu_estimate(model, [(manifest, True)], split="val", mode="slide", stride=43, flip=False, pairs=[None])
    assert windows(captured.err) == 6 * windows(str(once)) == 6 * once.passes
    assert "synthetic-fog: mIoU per corruption and severity" in printed and "mean mIoU over 6" in printed
    results = json.loads((out / "results.json").read_text())
    assert Evaluation.from_json(results).to_json() == results  # the corruption summary and the pairs read back
    assert results["schema"] == 2
    keys = ["synthetic-fog/fog-1", *(f"synthetic-fog/contrast-{s}" for s in C.SEVERITIES)]
    assert list(results["datasets"]) == keys
    for key in keys:
        entry = results["datasets"][key]
        assert {"mIoU", "mAcc", "aAcc", "per_class", "images", "confusion"} <= set(entry)
    summary = results["corruption"]
    assert summary["spec"] == "fog:1,contrast"
    fog = summary["datasets"]["synthetic-fog"]
    rounded = [round(results["datasets"][k]["mIoU"], 2) for k in keys]
    assert fog["pairs"] == 6 and fog["mIoU"] == round(sum(rounded) / 6, 2)
    assert fog["per_corruption"]["fog"] == {"1": rounded[0], "mean": rounded[0]}
    assert list(fog["per_corruption"]["contrast"]) == ["1", "2", "3", "4", "5", "mean"]
    assert fog["per_corruption"]["contrast"]["3"] == rounded[3]
    assert results["mean_of"] == keys and results["mean_mIoU"] == pytest.approx(sum(rounded) / 6)
    assert (out / "plots" / "synthetic-fog-corruptions.png").is_file()
    assert not list((out / "plots").glob("*-iou.png")) and not list((out / "plots").glob("*-confusion.png"))
    report = (out / "report.md").read_text()
    assert "| contrast |" in report and "synthetic-fog-corruptions.png" in report


def test_eval_with_a_bad_corruption_spec_fails_first(trained, synthetic_root, tmp_path, capsys):
    args = ["--target", "synthetic", "--data-root", synthetic_root, "--out", tmp_path / "e"]
    assert rein("eval", trained / "checkpoints" / "last", *args, "--corruption", "fog:9") == 1
    err = errors(capsys)
    assert "unknown severity '9'" in err and "jpeg_compression" in err
    assert not (tmp_path / "e").exists()


SHARDED = "glass_blur:1,gaussian_noise:2"


def test_two_processes_evaluate_corrupted_images_as_one(synthetic_root, tmp_path):
    import torch.multiprocessing as mp

    from rein_cli.engine.evaluate import evaluate

    folder = odd_folder(synthetic_root, tmp_path / "odd")
    single = evaluate(
        tiny_segmentor(), [str(folder)], data_dir=synthetic_root, mode="whole", progress=False, corruption=SHARDED
    )
    clean = evaluate(tiny_segmentor(), [str(folder)], data_dir=synthetic_root, mode="whole", progress=False)
    assert list(single.datasets) == ["odd/glass_blur-1", "odd/gaussian_noise-2"]
    assert single.datasets["odd/gaussian_noise-2"].confusion != clean.datasets["odd"].confusion
    out = tmp_path / "sharded"
    args = (2, str(tmp_path / "rdv"), str(folder), str(synthetic_root), str(out), {"corruption": SHARDED})
    mp.spawn(shard_worker, args=args, nprocs=2)
    expected = {k: e.confusion for k, e in single.datasets.items()}
    for rank in (0, 1):
        assert json.loads((out / f"rank{rank}.json").read_text()) == expected
    written = json.loads((out / "results.json").read_text())
    assert written["corruption"] == json.loads(json.dumps(single.corruption.to_json()))


def test_a_published_corruption_figure_goes_beside_the_whole_protocol_only():
    from rein_cli.engine.results import DatasetResult, Reported
    from rein_cli.engine.summary import corruption_summary

    reported = {"cityscapes-c": [{"mIoU": 60.0, "split": "val", "source": "README 2024"}]}
    pairs = {
        f"cityscapes/{name}-{level}": DatasetResult(
            1, mIoU=50.0 + level, dataset="cityscapes", corruption=name, severity=level
        )
        for name in C.CORRUPTIONS
        for level in C.SEVERITIES
    }
    whole = corruption_summary(pairs, "all", reported).datasets["cityscapes"]
    assert (whole.pairs, whole.mIoU) == (75, 53.0)  # the mean of 51..55 over every corruption
    assert whole.reported == (Reported(60.0, "val", "README 2024"),)
    part = {k: v for k, v in pairs.items() if v.corruption == "fog"}
    assert corruption_summary(part, "fog", reported).datasets["cityscapes"].reported == ()  # not comparable


def test_missing_opencv_names_the_extra_of_this_package(monkeypatch):
    import sys
    import tomllib

    project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())["project"]
    assert "corruptions" in project["optional-dependencies"]
    monkeypatch.setitem(sys.modules, "cv2", None)  # `import cv2` raises ImportError
    with pytest.raises(ReinError, match=re.escape(f"pip install '{project['name']}[corruptions]'")):
        C.corrupt(_image(), "defocus_blur", 1, identity="a.png")
    with pytest.raises(ReinError, match="need OpenCV"):
        C.prepare([("snow", 2)])
    assert C.corrupt(_image(), "contrast", 1, identity="a.png").shape == (64, 128, 3)  # the others need none
