"""The shift report, report.html: its content, and the page as a real browser (headless Chromium) shows it."""

from __future__ import annotations

import html
import json
import math
import os
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image

from rein_cli.engine.evaluate import write_results
from rein_cli.engine.html_report import HTML_FILE, write_html
from rein_cli.engine.results import (
    ClassScore,
    DatasetResult,
    Evaluation,
    ImageCase,
    Interval,
)
from rein_cli.engine.summary import add_mean, corruption_summary
from rein_cli.io import save_image

from .helpers import rein

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# CI sets REIN_NEEDS_CHROMIUM=1: there a missing browser fails the browser tests instead of skipping them
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("REIN_NEEDS_CHROMIUM"),
    reason="no chromium or chromium-browser on PATH (Debian: apt-get install chromium; CI has it)",
)
CLASSES = ("road", "car <&>", "sky")
PICTURES = ("image", "label", "prediction", "errors")

# After the page has loaded (every image loaded or failed), write what the browser saw into the DOM.
PROBE = """<script>
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var ok = images.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  var broken = images.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
  var sections = Array.prototype.slice.call(document.querySelectorAll("section[id]"));
  var seen = {
    loaded: ok.length,
    total: images.length,
    broken: broken.map(function (i) { return i.getAttribute("src"); }),
    sections: sections.map(function (s) { var h = s.querySelector("h2"); return [s.id, h ? h.textContent : null]; })
  };
  var out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify(seen);
  document.body.appendChild(out);
});
</script>"""


def scored(ious: list[float], confusion: list[list[int]], **fields) -> DatasetResult:
    per_class = {c: ClassScore(v, v + 5 if not math.isnan(v) else v) for c, v in zip(CLASSES, ious, strict=True)}
    miou = float(np.nanmean(ious))
    return DatasetResult(
        images=6,
        mIoU=miou,
        mAcc=miou + 5,
        aAcc=min(miou + 10, 100.0),
        per_class=per_class,
        confusion=confusion,
        **fields,
    )


def gallery(out: Path, name: str, count: int) -> tuple[ImageCase, ...]:
    """``count`` worst-image cases of ``name`` with their four pictures written under ``out/gallery/<name>/``."""
    rng = np.random.default_rng(count)
    palette = np.array([[128, 64, 128], [0, 0, 142], [70, 130, 180]], dtype=np.uint8)
    cases = []
    for k in range(count):
        files = {}
        for picture in PICTURES:
            rel = f"gallery/{name}/{k}-{picture}.png"
            if picture == "image":
                save_image(out / rel, rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))
            else:
                save_image(out / rel, rng.integers(0, 3, (24, 32), dtype=np.uint8), palette=palette)
            files[picture] = rel
        cases.append(ImageCase(f"val/{name}/scene {k}.png", 10.0 + k, 60.0 + k, files))
    return tuple(cases)


def evaluation(out: Path, *, source: bool = True) -> Evaluation:
    """An evaluation of a model trained on gta5: gta5 itself (with ``source``), two targets with worst images and
    a bootstrap interval, one with none recorded, and a split without labels."""
    datasets = {}
    if source:
        datasets["gta5"] = scored([90.0, 80.0, math.nan], [[90, 10, 0], [5, 95, 0], [0, 0, 0]], trained_on=True)
    datasets["cityscapes"] = scored(
        [60.0, 55.0, 70.0],
        [[70, 20, 10], [30, 70, 0], [0, 5, 95]],
        interval=Interval(52.1, 66.3, 1000, 0),
        worst=gallery(out, "cityscapes", 2),
    )
    datasets["night&day"] = scored(
        [40.0, 82.0, 30.0], [[50, 10, 40], [5, 90, 5], [10, 10, 80]], worst=gallery(out, "night&day", 1)
    )
    datasets["bdd100k"] = scored([50.0, 50.0, 50.0], [[80, 20, 0], [10, 90, 0], [0, 0, 10]])
    datasets["acdc-test"] = DatasetResult(images=3, predictions="preds/acdc", prediction_ids="label-ids")
    results = Evaluation(
        method="rein", backbone="vit-tiny", trained_on=["gta5"], mode="whole", crop=64, datasets=datasets
    )
    add_mean(results)
    results.mean_interval = Interval(50.0, 60.0, 1000, 0)
    return results


def probe(page: Path, tmp_path: Path) -> dict:
    """What Chromium saw of ``page``: images loaded and in all (and the broken ones' src), the sections' ids and
    headings. The page has no script: a copy beside it gets the probe."""
    copy = page.with_name("probe.html")
    copy.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = chromium(tmp_path, "--virtual-time-budget=10000", "--dump-dom", copy.as_uri())
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, f"the probe wrote nothing; the page as Chromium dumped it:\n{dom[:2000]}"
    return json.loads(html.unescape(found.group(1)))


def chromium(tmp_path: Path, *args: str) -> str:
    assert CHROMIUM is not None, "chromium is not installed (REIN_NEEDS_CHROMIUM is set): apt-get install chromium"
    profile = tmp_path / "chromium-profile"  # its own profile: never the user's, never shared
    command = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"{command} failed ({done.returncode}):\n{done.stderr[-3000:]}"
    return done.stdout


def test_page_is_self_contained_escaped_and_has_every_part(tmp_path):
    out = tmp_path / "eval"
    results = evaluation(out)
    write_results(results, out)  # results.json, report.md, the charts, then report.html
    page = (out / HTML_FILE).read_text(encoding="utf-8")
    assert "<script" not in page.lower() and not re.search(r"\son[a-z]+\s*=", page)  # no script at all
    assert "http://" not in page and "https://" not in page and "url(" not in page  # nothing from the network
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) == 2 * 4 + 4 * 2 + 4 * 1  # 4 labeled datasets' 2 charts, the 3 cases' 4 pictures
    for src in sources:
        assert not src.startswith("/") and (out / unquote(html.unescape(src))).is_file(), src
    assert "car &lt;&amp;&gt;" in page and "car <&>" not in page and "night&amp;day" in page
    assert "&amp;amp;" not in page and "<th>IoU night&amp;day</th>" not in page  # escaped once
    assert '<th class="n">IoU night&amp;day</th>' in page
    for name, section in (
        ("cityscapes", "d-cityscapes"),
        ("night&amp;day", "d-night_day"),
        ("acdc-test", "d-acdc-test"),
    ):
        assert f'<section id="{section}">\n<h2>{name}</h2>' in page
    assert "Source: <strong>gta5</strong>" in page and "No source was evaluated" not in page
    # cityscapes against gta5: road 90 -> 60 (drop 30), car 80 -> 55 (25); sky has no IoU on gta5.
    target = page[page.index('<section id="d-cityscapes">') : page.index('<section id="d-night_day">')]
    assert target.index("<td>road</td>") < target.index("<td>car &lt;&amp;&gt;</td>")
    assert '<td class="n bad">30.00</td>' in target and "sky (source -, here 70.00)" in target
    # car -> road: 5% of gta5's car pixels, 30% of cityscapes': +25 pp; road -> car 10% -> 20% and road -> sky
    # 0% -> 10%: +10 pp each, in matrix order; the rest shrank or has no pixels on gta5 (sky).
    grown = re.findall(
        r"<tr><td>([^<]+)</td><td>([^<]+)</td><td class=\"n\">([\d.]+)</td><td class=\"n\">([\d.]+)</td>"
        r"<td class=\"n bad\">([^<]+)</td>",
        target,
    )
    car = "car &lt;&amp;&gt;"
    assert grown == [
        (car, "road", "5.00", "30.00", "+25.00"),
        ("road", car, "10.00", "20.00", "+10.00"),
        ("road", "sky", "0.00", "10.00", "+10.00"),
    ]
    assert "52.10 to 66.30" in page and "<td>DG mean</td>" in page and "50.00 to 60.00" in page
    assert "1. <code>val/cityscapes/scene 0.png</code>: mIoU 10.00" in target
    bdd = page[page.index('<section id="d-bdd100k">') :]
    assert "No worst images recorded." in bdd and "no metrics" in bdd
    assert (out / "report.md").is_file() and not list(out.rglob("*.tmp"))


def test_without_a_source_each_target_stands_alone_and_a_reference_supplies_one(tmp_path):
    out = tmp_path / "eval"
    results = evaluation(out, source=False)
    page = write_html(results, out).read_text(encoding="utf-8")
    assert "No source was evaluated" in page and "--reference results.json" in page
    assert "IoU drop per class" not in page and page.count("<h3>IoU per class</h3>") == 3
    reference = evaluation(tmp_path / "other")
    page = write_html(results, out, reference).read_text(encoding="utf-8")
    assert "from the reference evaluation" in page and "<td>gta5 (reference)</td>" in page
    assert page.count("IoU drop per class (gta5 to ") == 3
    untrained = write_html(results, out, evaluation(tmp_path / "third", source=False)).read_text(encoding="utf-8")
    assert "Source: <strong>cityscapes</strong>, the reference evaluation's first dataset" in untrained
    # A source of other classes: each target says why it is not compared, and shows its own table.
    reference.datasets["gta5"].per_class.pop("sky")
    page = write_html(results, out, reference).read_text(encoding="utf-8")
    assert page.count("Not compared with the source: gta5 and cityscapes have different classes") == 1


@needs_chromium
def test_chromium_shows_every_image_and_section(tmp_path):
    out = tmp_path / "eval"
    results = evaluation(out)
    write_results(results, out)
    seen = probe(out / HTML_FILE, tmp_path)
    assert seen["total"] == 20 and seen["loaded"] == seen["total"], seen["broken"]
    sections = dict(seen["sections"])
    for name in results.datasets:
        assert name in sections.values(), f"no section for {name}: {sections}"
    assert sections["d-night_day"] == "night&day"
    shot = tmp_path / "shot.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", (out / HTML_FILE).as_uri())
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape == (2000, 1280)
    assert pixels.std() > 10 and (pixels < 200).mean() > 0.02, "the screenshot is blank"
    shutil.copy(shot, out / "screenshot.png")


@needs_chromium
def test_chromium_detects_a_missing_picture(tmp_path):
    out = tmp_path / "eval"
    write_results(evaluation(out), out)
    (out / "gallery" / "night&day" / "0-errors.png").unlink()
    seen = probe(out / HTML_FILE, tmp_path)
    assert seen["loaded"] == seen["total"] - 1
    assert [html.unescape(s) for s in seen["broken"]] == ["gallery/night%26day/0-errors.png"]


def test_rein_eval_writes_the_shift_report_against_a_reference(trained, synthetic_root, tmp_path):
    ckpt = trained / "checkpoints" / "last"
    source = tmp_path / "on-source"
    common = ("--data-root", synthetic_root, "--mode", "whole", "--no-progress")
    assert rein("eval", ckpt, "-t", "synthetic", "--out", source, *common) == 0
    page = (source / HTML_FILE).read_text(encoding="utf-8")
    assert '<section id="d-synthetic">' in page and "The source: the other datasets" in page
    target = tmp_path / "on-fog"
    assert rein("eval", ckpt, "-t", "synthetic-fog", "--reference", source, "--out", target, *common) == 0
    page = (target / HTML_FILE).read_text(encoding="utf-8")
    assert "<td>synthetic (reference)</td>" in page and "IoU drop per class (synthetic to synthetic-fog)" in page
    assert 'src="plots/synthetic-fog-iou.png"' in page and 'src="gallery/synthetic-fog/00-' in page
    assert rein("eval", ckpt, "-t", "synthetic-fog", "--reference", tmp_path, "--out", target, *common) == 1


def test_corrupted_copies_are_one_table_not_a_section_each(tmp_path):
    out = tmp_path / "eval"
    copies = {
        f"cityscapes/{name}-{level}": replace(
            scored([v, v, v], [[5, 1, 0], [1, 5, 0], [0, 0, 3]]), dataset="cityscapes", corruption=name, severity=level
        )
        for name, level, v in (("fog", 1, 40.0), ("fog", 2, 30.0), ("contrast", 1, 20.0))
    }
    results = Evaluation(datasets=copies, corruption=corruption_summary(copies, "fog:1,fog:2,contrast:1"))
    write_results(results, out)
    page = (out / HTML_FILE).read_text(encoding="utf-8")
    assert page.count("<section") == 1 and '<section id="corruptions">' in page
    assert '<td>fog</td><td class="n">40.00</td><td class="n">30.00</td><td class="n">35.00</td>' in page
    assert "over 3 corruption-severity pairs: <strong>30.00</strong>" in page  # (40 + 30 + 20) / 3
    assert 'src="plots/cityscapes-corruptions.png"' in page and "3 corrupted copies" in page
