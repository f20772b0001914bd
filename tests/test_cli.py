"""The command line: start-up, one-line errors for bad input and unknown names, the data commands, choices."""

import subprocess
import sys

import numpy as np
from PIL import Image

from .helpers import errors, rein, sets


def test_version_and_help_are_fast_and_light():
    out = subprocess.run([sys.executable, "-m", "rein_cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("rein 0.")
    check = "import sys, rein_cli.cli; assert 'torch' not in sys.modules, 'torch imported'"
    assert subprocess.run([sys.executable, "-c", check]).returncode == 0


def test_unknown_names_suggest_the_closest(tmp_path, capsys):
    assert rein("train", "--data", "synthetc", "--out", tmp_path / "r") == 1
    err = errors(capsys)
    assert err.startswith('error: unknown dataset "synthetc" (did you mean "synthetic"?)') and "\n" not in err
    assert rein("train", "--backbone", "dinov2-xl", *sets(), "--out", tmp_path / "r") == 1
    assert 'unknown backbone "dinov2-xl" (did you mean "dinov2-l"?)' in errors(capsys)
    assert not (tmp_path / "r").exists()  # nothing written


def test_bad_inputs_are_one_line_errors(trained, tmp_path, capsys):
    ckpt = trained / "checkpoints" / "last"
    assert rein("predict", ckpt, tmp_path / "missing.png", "--out", tmp_path / "o") == 1
    err = errors(capsys)
    assert err.startswith("error: input not found:") and "missing.png" in err
    (tmp_path / "empty").mkdir()
    assert rein("predict", ckpt, tmp_path / "empty", "--out", tmp_path / "o") == 1
    assert "no images" in errors(capsys)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    assert rein("predict", ckpt, tmp_path / "broken.png", "--out", tmp_path / "o") == 1
    assert "cannot read image" in errors(capsys) and not (tmp_path / "o").exists()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    image = trained.parent / "img.png"
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(image)
    assert rein("predict", ckpt, image, "--out", blocker / "sub", "--mode", "whole") == 1
    assert (
        errors(capsys)
        == f"error: --out {blocker / 'sub'} lies in {blocker}, which is a file, not a folder; choose a folder"
    )
    assert rein("eval", tmp_path, "--data", "synthetic") == 1
    assert "not a rein checkpoint" in errors(capsys)
    assert rein("train", "--set", "optim.lrr=1") == 1
    assert 'did you mean "optim.lr"' in errors(capsys)


def test_debug_shows_the_traceback(tmp_path):
    cmd = [sys.executable, "-m", "rein_cli", "--debug", "predict", str(tmp_path), str(tmp_path / "x.png")]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode != 0 and "Traceback" in out.stderr
    out = subprocess.run(cmd[:3] + cmd[4:], capture_output=True, text=True)
    assert out.returncode == 1 and "Traceback" not in out.stderr and out.stderr.startswith("error:")


def test_data_commands(cityscapes_folder, tmp_path, capsys):
    folder, _ = cityscapes_folder
    root = tmp_path / "root"
    assert rein("data", "prepare", "citys", "--from", folder, "--data-root", root, "--no-progress") == 0
    assert "prepared train: 4, val: 2" in capsys.readouterr().out
    assert rein("data", "list", "--data-root", root) == 0
    assert "cityscapes (citys)" in (out := capsys.readouterr().out) and "train 4" in out
    assert rein("data", "info", "cityscapes", "--data-root", root) == 0
    assert "test-time resize (keep ratio): 1024x512" in capsys.readouterr().out
    assert rein("data", "verify", "cityscapes", "--data-root", root, "--no-progress") == 0
    next((root / "cityscapes" / "labels" / "val").glob("*.png")).unlink()
    assert rein("data", "verify", "cityscapes", "--data-root", root, "--no-progress") == 1
    assert "missing label" in capsys.readouterr().err
    assert rein("data", "download", "gta5") == 0
    assert "https://download.visinf.tu-darmstadt.de/data/from_games/" in capsys.readouterr().out
    assert rein("data", "prepare", "citiscapes", "--from", folder) == 1
    assert 'did you mean "cityscapes"' in capsys.readouterr().err


def test_closed_choices_come_from_the_configuration(capsys):
    def usage_error() -> str:  # the message inside typer's box, as one line
        return " ".join(capsys.readouterr().err.replace("│", " ").split())

    assert rein("train", "--method", "dora") == 2  # a usage error, before anything runs
    assert "'dora' is not one of 'rein', 'frozen', 'full', 'lora', 'adaptformer', 'vpt'" in usage_error()
    assert rein("eval", "ckpt", "--data", "synthetic", "--mode", "tiles") == 2
    assert "'tiles' is not one of 'slide', 'whole'" in usage_error()


def test_every_numeric_option_has_a_range():
    import typer

    from rein_cli.cli import app

    numeric, unranged = [], []

    def walk(command, path):
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{path} {name}")
        for param in getattr(command, "params", []):
            if param.type_descriptor.annotation in (int, float):
                numeric.append(f"{path} --{param.name}")
                if param.min is None and param.max is None:
                    unranged.append(f"{path} --{param.name}")

    walk(typer.main.get_command(app), "rein")
    assert len(numeric) >= 7 and not unranged, f"numeric options without a range: {unranged}"  # --size: a string rule


def test_bad_sizes_and_strides_are_one_line_errors(trained, synthetic_root, tmp_path, capsys):
    ckpt = trained / "checkpoints" / "last"
    image = synthetic_root / "synthetic" / "images" / "val" / "000000.jpg"
    assert rein("predict", ckpt, image, "--out", tmp_path / "p", "--size", "0x0") == 1
    assert '--size "0x0" must give a long side >= the short side >= 16' in errors(capsys)
    assert not (tmp_path / "p").exists()
    assert rein("eval", ckpt, "--target", "synthetic", "--data-root", synthetic_root, "--stride", "0") == 2
    args = ["--target", "synthetic", "--data-root", synthetic_root, "--stride", "65", "--out", tmp_path / "e"]
    assert rein("eval", ckpt, *args) == 1  # the crop is 64: a larger stride would skip pixels
    err = errors(capsys)
    assert "the slide stride 65 must be between 1 and the crop size 64" in err
    assert "on the CPU this takes" not in err  # an estimate only once every check has passed


def test_eval_output_that_cannot_be_written_fails_before_evaluating(trained, synthetic_root, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    args = ["--target", "synthetic", "--data-root", synthetic_root, "--out", blocker / "sub"]
    assert rein("eval", trained / "checkpoints" / "last", *args) == 1
    err = errors(capsys)
    assert err.splitlines()[-1].startswith(f"error: --out {blocker / 'sub'} lies in {blocker}, which is a file, not")
    assert "on the CPU this takes" not in err  # nothing was evaluated


def test_default_evaluation_folders_never_collide(tmp_path, trained):
    from rein_cli.engine.runs import default_eval_dir

    assert default_eval_dir(trained / "checkpoints" / "last") == trained.resolve() / "eval-last"  # not the run's eval
    converted = tmp_path / "checkpoints"
    assert default_eval_dir(converted / "gta") != default_eval_dir(converted / "citys")
    assert default_eval_dir(converted / "gta") == converted.resolve() / "eval" / "gta"
    assert default_eval_dir("hf://lab/tiny@v1") == default_eval_dir(None, "lab--tiny")
