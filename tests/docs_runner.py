"""The docs runner: code blocks read from the docs, commands parsed by the real command line, a test-sized workspace.

Commands are read as a shell reads them: `#` comments dropped, `\\` continuations joined, `&&` chains split; words
that are not `rein` commands (pip, export, python3 -m venv) are left out, and a bare `...` ("and so on") is dropped.
Placeholders (NAME, ORG/NAME, PATH) are plain values. A command runs in a fresh working directory that holds the
inputs it names (`WORKSPACE`, made small), with $REIN_HOME holding tiny prepared datasets; the test only appends
options the command already has (`sized_options`), so the documented options stay as written. A snippet runs statement
by statement, its sizes shrunk (`SHRUNK`) and its real-size models built on the meta device (`ON_META`).
"""

from __future__ import annotations

import ast
import contextlib
import functools
import io
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import fake_datasets as fake
from .helpers import sets

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_SYNTAX = set("();<>|&")  # a word of these is the shell's (a redirection, a pipe), not an argument


# ----------------------------------------------------------------------------- reading the docs


@dataclass(frozen=True)
class Block:
    """A fenced code block: its language and text, and the line of its first content line."""

    file: str  # relative to the repository, e.g. docs/hub.md
    line: int
    lang: str
    text: str


@dataclass(frozen=True)
class Command:
    """One `rein` command of a doc: where it is written and its arguments after `rein`."""

    file: str
    line: int
    args: tuple[str, ...]

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def __str__(self) -> str:
        return f"{self.where}: {shlex.join(('rein', *self.args))}"


def blocks(path: Path) -> list[Block]:
    found, lang, start, lines = [], None, 0, []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("```") and lang is None:
            lang, start, lines = line[3:].strip(), n + 1, []
        elif line.startswith("```"):
            found.append(Block(path.relative_to(ROOT).as_posix(), start, lang, "\n".join(lines) + "\n"))
            lang = None
        elif lang is not None:
            lines.append(line)
    assert lang is None, f"{path}: a code block is not closed"
    return found


def commands(block: Block) -> list[Command]:
    """The `rein` commands of a shell block, each at the line where it starts."""
    logical: list[tuple[int, str]] = []  # (line, text) with continuations joined
    for n, line in enumerate(block.text.splitlines(), block.line):
        if logical and logical[-1][1].endswith("\\"):
            logical[-1] = (logical[-1][0], logical[-1][1][:-1] + " " + line.strip())
        else:
            logical.append((n, line.rstrip()))
    found = []
    for n, line in logical:
        words = shlex.shlex(line, posix=True, punctuation_chars=True)  # `#` comments, and `<`, `;` ... apart
        words.whitespace_split = True
        chain: list[list[str]] = [[]]
        for word in words:
            chain.append([]) if word == "&&" else chain[-1].append(word)
        found += [Command(block.file, n, tuple(w for w in c[1:] if w != "...")) for c in chain if c[:1] == ["rein"]]
    return found


BLOCKS = [block for path in DOCS for block in blocks(path)]
COMMANDS = [command for block in BLOCKS if block.lang in ("bash", "sh", "shell") for command in commands(block)]
SNIPPETS = [block for block in BLOCKS if block.lang == "python"]


# ----------------------------------------------------------------------------- parsing with the real command line


class UsageError(Exception):
    """A documented command that `rein` would refuse with exit code 2, before running anything."""


@functools.cache
def command_line() -> Any:
    """`rein` as typer builds it with click, each command's body replaced by one that returns the command's path and
    values: invoking it only parses (command names, options, argument counts, types and choices)."""
    import typer

    from rein_cli.cli import app

    def values(path: str, **params: Any) -> tuple[str, dict[str, Any]]:
        return path, params

    def hollow(command: Any, path: str) -> None:
        subcommands = getattr(command, "commands", None)
        if subcommands is None:
            command.callback = functools.partial(values, path)
            return
        command.callback = None  # a group's options are parsed, its body (logging, --offline) skipped
        for name, sub in subcommands.items():
            hollow(sub, f"{path} {name}")

    root = typer.main.get_command(app)
    hollow(root, "rein")
    return root


def parse(args: tuple[str, ...] | list[str]) -> tuple[str, dict[str, Any]]:
    """How `rein ARGS` is read: the command's path (`rein data prepare`) and its values. Raises `UsageError` for an
    unknown command or option, a wrong count of arguments, a bad value or choice."""
    import typer

    root = command_line()
    try:
        with root.make_context("rein", list(args)) as ctx:
            return root.invoke(ctx)
    except typer.Exit as exit_:  # --help, --version
        assert exit_.exit_code == 0
        return "rein", {}
    except Exception as err:
        if getattr(err, "exit_code", None) != 2:  # click's usage errors (typer has its own copy of click)
            raise
        raise UsageError(err.format_message()) from None


def quiet_parse(command: Command) -> tuple[str, dict[str, Any]] | None:
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return parse(command.args)
    except UsageError:
        return None  # test_documented_command_parses says why


# ----------------------------------------------------------------------------- what a command reads, at test size


def inputs(path: str, params: dict[str, Any]) -> list[str]:
    """The files and folders a parsed command reads (datasets by name aside), as written."""
    if path == "rein train":
        sets_ = dict(s.split("=", 1) for s in params["sets"] or [] if "=" in s)
        recipe = params["recipe"] if str(params["recipe"]).endswith((".yaml", ".yml")) else None
        found = [recipe, sets_.get("model.weights"), sets_.get("train.init_from")]
    elif path in ("rein eval", "rein predict"):
        targets = [t for given in params.get("targets") or [] for t in str(given).split(",")]
        found = [params["checkpoint"], *(params.get("inputs") or []), *(t for t in targets if t in WORKSPACE)]
    elif path == "rein data prepare":
        found = params["sources"]
    elif path == "rein compare":  # LABEL=PATH: the path
        found = [name.split("=", 1)[-1] for name in params["inputs"]]
    else:
        found = []
    return [Path(str(name)).as_posix() for name in found if name is not None and not str(name).startswith("hf://")]


def recipe_datasets(params: dict[str, Any]) -> list[str]:
    """The datasets a documented `rein train` names, through its recipe, --set and --data."""
    from rein_cli.config import load_config

    recipe = params["recipe"]
    if recipe is not None and str(recipe).endswith((".yaml", ".yml")):
        recipe = None  # a file of the workspace: made for the tiny data
    cfg = load_config(recipe, params["sets"], **{"data.train": params["data"]})
    return [*cfg.data.train, *cfg.data.eval]


def sized_options(path: str) -> list[str]:
    """Options appended to a documented command so that it runs in seconds on the tiny data: the command's own
    options, later ones winning over the documented ones (the tiny model, 2 iterations of 2 images, whole images)."""
    return {
        "rein train": [*sets(), "--iters", "2", "--batch-size", "2", "--no-progress"],
        "rein eval": ["--mode", "whole", "--no-progress"],
        "rein predict": ["--mode", "whole", "--no-progress"],
        "rein data prepare": ["--workers", "1", "--no-progress"],
        "rein data verify": ["--no-progress"],
    }.get(path, [])


# ----------------------------------------------------------------------------- the workspace


# The datasets `make_workspace` prepares (tiny fakes) under the data root documented commands use.
PREPARED = {
    "synthetic",
    *(f"synthetic-{c}" for c in ("fog", "night", "rain", "snow")),
    "cityscapes",
    "bdd100k",
    "mapillary",
    "cracks",
}
# The inputs the documented commands and snippets name, made small by `make_workspace`.
ARCHIVES = [  # fakes of the official archives, under their names, in the order make_workspace makes them
    "leftImg8bit_trainvaltest.zip",
    "gtFine_trainvaltest.zip",
    "01_images.zip",
    "01_labels.zip",
    "rgb_anon_trainvaltest.zip",
    "gt_trainval.zip",
    "mapillary-vistas-dataset_public_v2.0.zip",
]
CHECKPOINTS = ("runs/demo", "runs/s", "runs/gta", "runs/train")  # each a copy of the tiny trained run
WORKSPACE = {
    *CHECKPOINTS,  # the runs themselves (`rein compare` reads their evaluation)
    *(f"{run}/checkpoints/last" for run in CHECKPOINTS),
    "photos",
    "frames",
    "street.jpg",
    "my_recipe.yaml",
    "my_folder",
    *ARCHIVES,
}


def make_workspace(root: Path, trained: Path, synthetic_root: Path) -> None:
    """Every `WORKSPACE` input under root (tiny, or fakes of the official archives), and the datasets documented
    commands name prepared under root/home/datasets: the synthetic five, cityscapes, bdd100k, mapillary, cracks."""
    from rein_cli.data.prepare import prepare_dataset

    for run in CHECKPOINTS:
        shutil.copytree(trained, root / run)
    scenes = sorted((synthetic_root / "synthetic" / "images" / "val").glob("*.jpg"))
    for folder in ("photos", "frames"):
        (root / folder).mkdir()
        for scene in scenes[:2]:
            shutil.copy(scene, root / folder / scene.name)
    shutil.copy(scenes[0], root / "street.jpg")
    (root / "my_recipe.yaml").write_text("data:\n  eval: [synthetic-fog]\noptim:\n  lr: 1.0e-3\n")
    make_custom_folder(root / "my_folder")
    archives, _ = fake.cityscapes(root / "fakes" / "cityscapes")
    archives += fake.gta5(root / "fakes" / "gta5")[0] + fake.acdc(root / "fakes" / "acdc")[0]
    archives.append(fake.zip_folder(fake.mapillary(root / "fakes" / "mapillary")[0], root / "fakes" / "vistas.zip"))
    for archive, name in zip(archives, ARCHIVES, strict=True):
        shutil.move(archive, root / name)

    datasets = root / "home" / "datasets"
    datasets.mkdir(parents=True)
    for folder in synthetic_root.iterdir():
        (datasets / folder.name).symlink_to(folder)
    bdd = fake.bdd100k(root / "fakes" / "bdd100k")[0]  # named apart from the MD5-checked official archives
    for name, sources in (
        ("cityscapes", [root / "leftImg8bit_trainvaltest.zip", root / "gtFine_trainvaltest.zip"]),
        ("bdd100k", bdd),
        ("mapillary", [root / "mapillary-vistas-dataset_public_v2.0.zip"]),
    ):
        prepare_dataset(name, sources, datasets, workers=1, progress=False)
    prepare_dataset("custom", [root / "my_folder"], datasets, custom_name="cracks", progress=False)


def make_custom_folder(folder: Path) -> None:
    """docs/datasets.md's custom dataset: its classes.yaml, with ten images and colour masks of those classes."""
    import numpy as np
    from PIL import Image

    shown = [b.text for b in BLOCKS if b.file == "docs/datasets.md" and b.lang == "yaml" and "classes:" in b.text]
    assert len(shown) == 1, "docs/datasets.md shows one classes.yaml, in a ```yaml block"
    text = shown[0]
    (folder / "masks").mkdir(parents=True)
    (folder / "classes.yaml").write_text(text)
    colors = np.asarray(yaml.safe_load(text)["colors"], np.uint8)
    for i in range(10):
        fake.image(folder / "images" / f"{i:02d}.jpg", seed=i, size=(64, 64))
        ids = fake.label(folder / "index.png", range(len(colors)), seed=i, size=(64, 64))
        Image.fromarray(colors[ids]).save(folder / "masks" / f"{i:02d}.png")
    (folder / "index.png").unlink()


def enter(workspace: Path, cwd: Path, names: list[str]) -> None:
    """A working directory with the named inputs: runs copied (commands write beside them), the rest linked."""
    cwd.mkdir(parents=True, exist_ok=True)
    for name in names:
        run = name.removesuffix("/checkpoints/last")
        if run in CHECKPOINTS and not (cwd / run).exists():
            shutil.copytree(workspace / run, cwd / run)
        elif run not in CHECKPOINTS:
            (cwd / name).parent.mkdir(parents=True, exist_ok=True)
            (cwd / name).symlink_to(workspace / name)


# ----------------------------------------------------------------------------- Python snippets


# Statements that build a real-size model run on the meta device: the same modules without the weight
# initialisation (DINOv2-L: 300M parameters, tens of seconds on 2 cores).
ON_META = "build_segmentor("
# Sizes shrunk in a snippet, each found as written: the full benchmark is 1,000 images.
SHRUNK = {"num_train=500, num_val=100, width=512, height=256": "num_train=2, num_val=1, width=64, height=64"}


def shrunk(snippet: Block) -> tuple[str, ast.Module]:
    """A snippet's code with its sizes shrunk (`SHRUNK`), and its statements with the doc's line numbers; a syntax
    error fails here."""
    code = snippet.text
    for written, small in SHRUNK.items():
        code = code.replace(written, small)
    return code, ast.increment_lineno(ast.parse(code, snippet.file), snippet.line - 1)


def named_inputs(tree: ast.Module) -> list[str]:
    """The `WORKSPACE` inputs a snippet names, as strings."""
    strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    return [s for s in strings if s in WORKSPACE]


def run_snippet(tree: ast.Module, file: str) -> dict[str, Any]:
    """A snippet run statement by statement, those with `ON_META` on the meta device; the names it ends with."""
    import torch

    torch.manual_seed(0)
    names: dict[str, Any] = {  # the tensors model.md's snippet takes as given: the tiny model's sizes
        "images": torch.randn(1, 3, 64, 64),
        "image": torch.randn(1, 3, 64, 64),
        "labels": torch.randint(0, 19, (1, 64, 64)),
    }
    for statement in tree.body:
        compiled = compile(ast.Module([statement], []), file, "exec")  # tracebacks name the doc's lines
        meta = torch.device("meta") if ON_META in ast.unparse(statement) else contextlib.nullcontext()
        with meta:
            exec(compiled, names)
    return names
