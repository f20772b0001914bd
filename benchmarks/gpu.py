"""One GPU run at paper scale, as JSON: training and evaluation speed, memory, and accuracy checks of the device.

    python benchmarks/gpu.py                                  # CUDA, DINOv2-L Rein + Mask2Former, within 8 minutes
    python benchmarks/gpu.py --device cpu --tiny --out x.json # the same code on a tiny model in seconds (tests)

Random weights (no download) and generated images stand in for the real ones; the time does not depend on them.

1. train: s/iteration (median after a warm-up) and peak memory of the real training step
   (`rein_cli.engine.step.accumulate_gradients`, then the AdamW of `build_optimizer`) at 512x512, global batch 4:
   fp32 (TF32 matmuls, as `train.tf32` defaults), bf16 autocast, and bf16 with activation checkpointing.
2. scores_vs_cpu: one 512x512 window's scores on the device against the CPU's (same weights, fp32; on the CPU
   itself against float64): max|a-b| / max|a| <= 1e-3, PASS or FAIL.
3. eval: images/s of `rein_cli.engine.inference.infer` (slide, crop 512, stride 341) plus argmax, fp32 and bf16:
   Cityscapes as `rein eval` runs it at crop 512 (resized to 1024x512, 3 windows, scores resized back to
   2048x1024), Cityscapes at its native 2048x1024 (18 windows) and BDD100K at 1280x720 (8 windows); the share of
   pixels whose bf16 label equals the fp32 one; the time of the 500 Cityscapes val images extrapolated (the
   target is checked on `rein eval`'s way).
4. predict: images/s of `rein_cli.engine.predict.predict` (decode, slide inference, label PNG written) on a
   folder of generated 1024x2048 PNG images.

A time budget (``--budget``, 450 s by default) stops measuring loops early and skips the parts it has no time
for, with a note in the JSON. Writes benchmarks/results/gpu_<device>.json (``--tiny``: gpu_<device>_tiny.json)
or ``--out``.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import resource
import statistics
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from _common import cpu_name, save_json, sync
from PIL import Image

TARGETS = {
    "train_s_per_iteration": 0.12,
    "train_peak_memory_gb": 6.0,
    "cityscapes_val_seconds": 20.0,
    "cityscapes_val_images": 500,
    "scores_vs_cpu_relative": 1e-3,
}
TRAIN_CONFIGS = {  # name: (precision, activation checkpointing)
    "fp32": ("fp32", False),
    "bf16": ("bf16", False),
    "bf16_checkpointing": ("bf16", True),
}


@dataclass(frozen=True)
class Setup:
    """What one run measures: the model and the sizes."""

    backbone: str
    settings: dict
    crop: int
    batch: int
    warmup: int
    iterations: int
    eval_sizes: dict[str, tuple[tuple[int, int], tuple[int, int]]]  # name: ((H, W) inferred, (H, W) of the labels)
    eval_images: int
    predict_images: int
    stride: int | None = None  # None: infer's default, two thirds of the crop (341 for 512)
    reserve_s: dict[str, float] = field(default_factory=dict)  # the least time a part needs to be started


PAPER = Setup(
    backbone="dinov2-l",
    settings={},
    crop=512,
    batch=4,
    warmup=3,
    iterations=10,
    eval_sizes={  # `rein eval` at crop 512 resizes Cityscapes to 1024x512 and its scores back to the labels' size
        "cityscapes": ((512, 1024), (1024, 2048)),
        "cityscapes_native": ((1024, 2048), (1024, 2048)),
        "bdd100k": ((720, 1280), (720, 1280)),
    },
    eval_images=4,
    predict_images=4,
    reserve_s={"train": 25.0, "scores_vs_cpu": 20.0, "eval": 20.0, "predict": 20.0},
)
TINY = Setup(  # the tests' tiny model: a 4-block timm ViT with Rein and the small FPN head (Mask2Former's point
    # losses alone take seconds per step on a CPU, even on tiny features)
    backbone="vit-tiny",
    settings={
        "feature_indices": [0, 1, 2, 3],
        "head": "fpn",
        "head_channels": 16,
        "backbone_kwargs": {"depth": 4, "embed_dim": 32, "num_heads": 2},
    },
    crop=64,
    batch=4,
    warmup=1,
    iterations=1,
    eval_sizes={  # 3, 18 and 2 windows
        "cityscapes": ((64, 128), (128, 256)),
        "cityscapes_native": ((128, 256), (128, 256)),
        "bdd100k": ((54, 96), (54, 96)),
    },
    eval_images=1,
    predict_images=2,
    reserve_s={"train": 1.0, "scores_vs_cpu": 1.0, "eval": 1.0, "predict": 1.0},
)


class Budget:
    """The time left of the run's budget."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.end = seconds, time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()


def median_times(fn: Callable[[int], None], warmup: int, runs: int, device: torch.device, budget: Budget) -> dict:
    """``fn(i)`` ``warmup`` times, then up to ``runs`` timed calls while the budget has room for one more (at
    least one); the median, best and count."""
    for i in range(warmup):
        fn(i)
    times: list[float] = []
    while len(times) < runs and (not times or budget.left() > 2 * max(times)):
        sync(device)
        start = time.perf_counter()
        fn(warmup + len(times))
        sync(device)
        times.append(time.perf_counter() - start)
    return {"median_s": round(statistics.median(times), 4), "best_s": round(min(times), 4), "runs": len(times)}


def fresh_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict:
    """CUDA: the allocator's peak since `fresh_memory`; CPU: the process's peak resident size so far."""
    if device.type == "cuda":
        return {"peak_memory_gb": round(torch.cuda.max_memory_allocated(device) / 1e9, 3)}
    return {"peak_rss_gb_process": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 3)}


def set_tf32(on: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def tf32_flags() -> dict:
    return {"matmul_tf32": torch.backends.cuda.matmul.allow_tf32, "cudnn_tf32": torch.backends.cudnn.allow_tf32}


def generated_images(setup: Setup, size: tuple[int, int], n: int, seed: int) -> list[np.ndarray]:
    """``n`` (H, W, 3) uint8 images: random colours upsampled smoothly, which compress and decode like photos."""
    generator = torch.Generator().manual_seed(seed)
    H, W = size
    out = []
    for _ in range(n):
        small = torch.rand(1, 3, H // 32 + 2, W // 32 + 2, generator=generator) * 255
        big = torch.nn.functional.interpolate(small, size=(H, W), mode="bilinear", align_corners=False)
        out.append(big[0].permute(1, 2, 0).round().to(torch.uint8).numpy())
    return out


def normalized(model: torch.nn.Module, rgb: np.ndarray) -> torch.Tensor:
    """(1, 3, H, W) float32 as the evaluation transform gives it."""
    from rein_cli.data.transforms import EvalTransform

    image, _ = EvalTransform(model.mean, model.std)(torch.from_numpy(rgb), None)
    return image[None]


# ---- the parts --------------------------------------------------------------------------------------------------


def measure_train(model, setup: Setup, device: torch.device, budget: Budget) -> dict:
    """Each training configuration: s/iteration and peak memory of the real step."""
    from rein_cli.engine.optim import build_optimizer
    from rein_cli.engine.step import accumulate_gradients
    from rein_cli.errors import ReinError

    generator = torch.Generator().manual_seed(0)
    images = torch.randn(setup.batch, 3, setup.crop, setup.crop, generator=generator)
    labels = torch.randint(0, 19, (setup.batch, setup.crop, setup.crop), generator=generator)
    labels[:, : setup.crop // 8] = 255  # some ignored pixels, as in real crops
    if device.type == "cuda":  # the training loader pins its batches on CUDA machines
        images, labels = images.pin_memory(), labels.pin_memory()
    results: dict = {}
    set_tf32(True)  # train.tf32 defaults to true
    for name, (precision, checkpointing) in TRAIN_CONFIGS.items():
        if budget.left() < setup.reserve_s["train"]:
            results[name] = {"skipped": f"the time budget of {budget.seconds:.0f} s was spent"}
            continue
        model.train()
        model.backbone.checkpointing = checkpointing
        model.zero_grad(set_to_none=True)
        optimizer = build_optimizer(model, lr=1e-4, weight_decay=0.05, betas=(0.9, 0.999), eps=1e-8)
        autocast = torch.bfloat16 if precision == "bf16" else None
        fresh_memory(device)

        def step(i: int, optimizer=optimizer, autocast=autocast) -> None:
            optimizer.zero_grad(set_to_none=True)
            accumulate_gradients(model, model, [(images, labels)], 1, device, autocast, i)
            optimizer.step()

        try:
            timing = median_times(step, setup.warmup, setup.iterations, device, budget)
            results[name] = {"precision": precision, "checkpointing": checkpointing, **timing, **peak_memory(device)}
        except torch.cuda.OutOfMemoryError:
            results[name] = {"error": "out of memory"}
        except ReinError as error:  # a loss that is not finite
            results[name] = {"error": str(error)}
        finally:
            del optimizer
            model.zero_grad(set_to_none=True)
            model.backbone.checkpointing = False
        print(f"train {name}: {results[name]}", flush=True)
    results["tf32"] = tf32_flags()
    return results


def measure_scores_vs_cpu(model, setup: Setup, device: torch.device) -> dict:
    """One window's scores on ``device`` and on the CPU (float64 when ``device`` is the CPU), strict fp32."""
    from rein_cli.engine.inference import infer

    model.eval()
    rgb = generated_images(setup, (setup.crop, setup.crop), 1, seed=7)[0]
    window = normalized(model, rgb)
    result: dict = {}
    for flags, on in (("strict_fp32", False), ("tf32", True)):
        set_tf32(on)
        result[flags] = infer(model, window.to(device), mode="whole", crop=setup.crop).float().cpu()
    reference_dtype = torch.float64 if device.type == "cpu" else torch.float32
    from rein_cli.models.segmentor import build_segmentor

    reference = build_segmentor(setup.backbone, crop_size=setup.crop, pretrained=False, **setup.settings)
    reference.load_state_dict(model.state_dict())  # the same weights (a deep copy cannot copy a built model)
    reference = reference.to("cpu", reference_dtype).eval()
    expected = infer(reference, window.to(reference_dtype), mode="whole", crop=setup.crop).float()
    del reference
    out = {
        "reference": f"cpu {str(reference_dtype).removeprefix('torch.')}",
        "limit": TARGETS["scores_vs_cpu_relative"],
    }
    for flags, scores in result.items():
        scale = expected.abs().max().item()
        diff = (scores - expected).abs().max().item()
        out[flags] = {"max_abs_diff": diff, "max_abs": scale, "relative": diff / scale}
    out["pass"] = out["strict_fp32"]["relative"] <= out["limit"]
    print(f"scores vs cpu: {'PASS' if out['pass'] else 'FAIL'} {out}", flush=True)
    return out


def measure_eval(model, setup: Setup, device: torch.device, budget: Budget) -> dict:
    """images/s of slide inference + argmax at each evaluation size, fp32 and bf16; bf16/fp32 label agreement."""
    from rein_cli.engine.inference import infer

    model.eval()
    set_tf32(False)  # as `rein eval` and `rein predict` leave matmuls: full fp32
    torch.backends.cudnn.allow_tf32 = True  # torch's default, which they leave as it is
    results: dict = {"tf32": tf32_flags()}
    for key, (size, label_size) in setup.eval_sizes.items():
        images = [normalized(model, rgb) for rgb in generated_images(setup, size, setup.eval_images, seed=1)]
        stride = setup.stride or round(2 * setup.crop / 3)
        entry: dict = {"size_hxw": list(size), "label_size_hxw": list(label_size), "crop": setup.crop, "stride": stride}
        labels: dict[str, list[torch.Tensor]] = {}
        for precision in ("fp32", "bf16"):
            if budget.left() < setup.reserve_s["eval"]:
                entry[precision] = {"skipped": f"the time budget of {budget.seconds:.0f} s was spent"}
                continue
            labels[precision] = []
            autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

            def one(i: int, images=images, autocast=autocast, kept=labels[precision], label_size=label_size) -> None:
                image = images[i % len(images)].to(device)
                with autocast:
                    scores = infer(model, image, mode="slide", crop=setup.crop, stride=setup.stride)
                if scores.shape[-2:] != label_size:  # as `rein eval` scores a resized image: at the label's size
                    scores = torch.nn.functional.interpolate(scores, label_size, mode="bilinear", align_corners=False)
                label = scores.argmax(1).to(torch.uint8).cpu()
                if i >= 1 and len(kept) < len(images):  # the timed calls, once per image
                    kept.append(label)

            fresh_memory(device)
            timing = median_times(one, 1, len(images), device, budget)
            entry[precision] = {**timing, "images_per_s": round(1 / timing["median_s"], 3), **peak_memory(device)}
            print(f"eval {key} {precision}: {entry[precision]}", flush=True)
        if "fp32" in labels and "bf16" in labels:
            pairs = list(zip(labels["fp32"], labels["bf16"], strict=False))
            same = sum(int((a == b).sum()) for a, b in pairs)
            entry["bf16_label_agreement"] = round(same / sum(a.numel() for a, _ in pairs), 6)
            entry["agreement_images"] = len(pairs)
        results[key] = entry
    for key, suffix in (("cityscapes", ""), ("cityscapes_native", "_native")):  # the target is `rein eval`'s
        for precision in ("fp32", "bf16"):
            ips = results.get(key, {}).get(precision, {}).get("images_per_s")
            if ips:
                seconds = round(TARGETS["cityscapes_val_images"] / ips, 1)
                results[f"cityscapes_val_seconds_{precision}{suffix}"] = seconds
    return results


def measure_predict(model, setup: Setup, device: torch.device) -> dict:
    """`predict` on a folder of generated PNG images of the Cityscapes size: decode, slide inference, label PNG."""
    from rein_cli.engine.predict import predict

    set_tf32(False)
    torch.backends.cudnn.allow_tf32 = True
    size = setup.eval_sizes["cityscapes_native"][0]  # `rein predict` infers at the input's size unless --size
    with tempfile.TemporaryDirectory() as tmp:
        folder, out = Path(tmp) / "images", Path(tmp) / "out"
        folder.mkdir()
        for i, rgb in enumerate(generated_images(setup, size, setup.predict_images, seed=3)):
            Image.fromarray(rgb).save(folder / f"{i:03d}.png", compress_level=1)
        sync(device)
        start = time.perf_counter()
        written = predict(model, [folder], out, mode="slide", stride=setup.stride, formats=["label"], progress=False)
        sync(device)
        seconds = time.perf_counter() - start
    result = {
        "images": len(written),
        "size_hxw": list(size),
        "seconds": round(seconds, 3),
        "images_per_s": round(len(written) / seconds, 3),
    }
    print(f"predict: {result}", flush=True)
    return result


def part(results: dict, name: str, budget: Budget, reserve: float, fn: Callable[[], dict]) -> None:
    """``results[name] = fn()``, or a note where the budget has no room for it or the device ran out of memory."""
    if budget.left() < reserve:
        results[name] = {"skipped": f"the time budget of {budget.seconds:.0f} s was spent"}
        return
    start = time.perf_counter()
    try:
        results[name] = fn()
    except torch.cuda.OutOfMemoryError:
        results[name] = {"error": "out of memory"}
        fresh_memory(torch.device("cuda"))
    except Exception as error:  # one part failing leaves the others' figures (a GPU run is one try)
        traceback.print_exc()
        results[name] = {"error": f"{type(error).__name__}: {error}"}
    results[name]["part_s"] = round(time.perf_counter() - start, 2)


def targets_met(results: dict, tiny: bool) -> dict:
    """Each target beside the figure it is checked against (the targets are for the paper's model on a GPU)."""
    met: dict = {"applies": not tiny}
    for name in TRAIN_CONFIGS:
        entry = results.get("train", {}).get(name, {})
        if "median_s" in entry:
            memory = entry.get("peak_memory_gb")
            met[f"train_{name}"] = {
                "s_per_iteration": entry["median_s"],
                "target_s": TARGETS["train_s_per_iteration"],
                "peak_memory_gb": memory,
                "target_gb": TARGETS["train_peak_memory_gb"],
                "met": entry["median_s"] <= TARGETS["train_s_per_iteration"]
                and memory is not None
                and memory <= TARGETS["train_peak_memory_gb"],
            }
    for precision in ("fp32", "bf16"):
        seconds = results.get("eval", {}).get(f"cityscapes_val_seconds_{precision}")
        if seconds is not None:
            met[f"cityscapes_val_{precision}"] = {
                "seconds": seconds,
                "target_s": TARGETS["cityscapes_val_seconds"],
                "met": seconds <= TARGETS["cityscapes_val_seconds"],
            }
    return met


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="a tiny ViT, small crops and images (seconds on a CPU)")
    parser.add_argument("--budget", type=float, default=450.0, help="seconds the run may take (default 450)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    budget = Budget(args.budget)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here; run with --device cpu (add --tiny for a quick run)")
    setup = TINY if args.tiny else PAPER
    if args.tiny:  # tiny tensors: one thread is as fast, and spares a busy machine's other jobs (and its own waits)
        torch.set_num_threads(1)

    from rein_cli.models.segmentor import build_segmentor

    torch.manual_seed(0)
    start = time.perf_counter()
    model = build_segmentor(setup.backbone, crop_size=setup.crop, pretrained=False, **setup.settings).to(device)
    results: dict = {"build_s": round(time.perf_counter() - start, 2)}
    part(results, "train", budget, setup.reserve_s["train"], lambda: measure_train(model, setup, device, budget))
    part(
        results,
        "scores_vs_cpu",
        budget,
        setup.reserve_s["scores_vs_cpu"],
        lambda: measure_scores_vs_cpu(model, setup, device),
    )
    part(results, "eval", budget, setup.reserve_s["eval"], lambda: measure_eval(model, setup, device, budget))
    part(results, "predict", budget, setup.reserve_s["predict"], lambda: measure_predict(model, setup, device))
    results["targets"] = targets_met(results, args.tiny)
    for name, entry in results["targets"].items():
        if name != "applies":
            print(
                f"target {name}: {entry}{'' if not args.tiny else ' (tiny model: not the target setting)'}", flush=True
            )

    data = {
        "benchmark": "gpu",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "tiny": args.tiny,
        "backbone": setup.backbone,
        "crop": setup.crop,
        "batch": setup.batch,
        "weights": "random (pretrained=False)",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "budget_s": args.budget,
        "elapsed_s": round(args.budget - budget.left(), 1),
        "targets": TARGETS,
        "results": results,
    }
    suffix = "_tiny" if args.tiny else ""
    out = args.out or Path(__file__).parent / "results" / f"gpu_{device.type}{suffix}.json"
    save_json(out, data)
    print(f"saved {out}")


if __name__ == "__main__":
    main()
