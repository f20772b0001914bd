"""The documentation runs: every `rein` command in a ```bash block of README.md and docs/*.md parses with the real
command line, the ones that can run offline run (test-sized) and do what they say, and every ```python snippet
compiles and runs.

Commands are read as a shell reads them: `#` comments dropped, `\\` continuations joined, `&&` chains split; words
that are not `rein` commands (pip, export, python3 -m venv) are left out, and a bare `...` ("and so on") is dropped.
Placeholders (NAME, ORG/NAME, PATH) are plain values. A command runs in a fresh working directory that holds the
inputs it names (`WORKSPACE`, made small), with $REIN_HOME holding tiny prepared datasets; the test only appends
options the command already has (`sized_options`), so the documented options stay as written. The others are parsed,
for the reason `why_not_run` gives.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import io
import json
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from . import fake_datasets as fake
from .helpers import TINY_SETS, rein, sets

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


# ----------------------------------------------------------------------------- what runs


# Commands that are parsed but never run here, and why.
NOT_RUN = {
    "rein demo": "minutes of training on 500 generated scenes; no option makes it small (test_demo.py runs it small)",
    "rein pull": "downloads from the Hugging Face Hub and the official release files",
    "rein push": "uploads to the Hugging Face Hub",
    "rein data download": "downloads from the dataset's site, with a login",
    "rein convert": "builds the named real-size model (DINOv2-L: 300M parameters, about a minute on 2 cores); "
    "test_convert.py converts a real-size DINOv2-S file from the command line",
}
# Inputs documented commands name that the tests do not make, and why.
NOT_MADE = {
    "runs/cracks/checkpoints/last": "trained on a custom dataset by the command above it (test_custom.py trains, "
    "evaluates and predicts on a custom dataset from the command line)",
    "checkpoints/rein-dinov2-l-gta": "converted from the official file, its backbone weights come from the Hub",
    "weights/dinov2-l_512.safetensors": "converted from Meta's DINOv2-L release file (1.2 GB)",
    "bdd100k_images_10k.zip": "MD5-checked against the published sums: only the real archive passes",
    "bdd100k_sem_seg_labels_trainval.zip": "MD5-checked against the published sums: only the real archive passes",
    "mapillary-vistas-dataset_public_v2.0.z01": "the parts of a split zip (test_prepare.py makes and prepares some)",
    "mapillary-vistas-dataset_public_v2.0.z02": "the parts of a split zip (test_prepare.py makes and prepares some)",
}
# The runs docs/comparisons.md compares, by their folder's name: why the tests do not make them.
RUNS_COMPARED = {
    re.compile(r"runs/gta-[a-z0-9-]+"): "a paper-scale run of a shipped recipe (40k iterations on GTA5); "
    "test_compare.py compares tiny runs",
    re.compile(r"runs/tiny-[a-z0-9-]+"): "trained by the commands above it, which run here at test size; "
    "test_compare.py compares tiny runs",
}


def run_compared(name: str) -> str | None:
    """Why a run that docs/comparisons.md compares is not made by the tests; None for another input."""
    return next((why for pattern, why in RUNS_COMPARED.items() if pattern.fullmatch(name)), None)


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
# Documented commands that fail because of a bug in rein, until it is fixed: "file:line" -> the error.
LIBRARY_BUGS: dict[str, str] = {}


def inputs(path: str, params: dict[str, Any]) -> list[str]:
    """The files and folders a parsed command reads (datasets by name aside), as written."""
    if path == "rein train":
        sets_ = dict(s.split("=", 1) for s in params["sets"] or [] if "=" in s)
        recipe = params["recipe"] if str(params["recipe"]).endswith((".yaml", ".yml")) else None
        found = [recipe, sets_.get("model.weights"), sets_.get("train.init_from")]
    elif path in ("rein eval", "rein predict"):
        found = [params["checkpoint"], *(params.get("inputs") or [])]
    elif path == "rein data prepare":
        found = params["sources"]
    elif path == "rein compare":  # LABEL=PATH: the path
        found = [name.split("=", 1)[-1] for name in params["inputs"]]
    else:
        found = []
    return [Path(str(name)).as_posix() for name in found if name is not None and not str(name).startswith("hf://")]


def why_not_run(command: Command) -> str | None:
    """Why a documented command is only parsed; None when it runs offline, in seconds, on made inputs."""
    parsed = quiet_parse(command)
    if parsed is None:
        return "does not parse"
    path, params = parsed
    if path in NOT_RUN:
        return NOT_RUN[path]
    if any("hf://" in arg for arg in command.args):
        return "uses the Hugging Face Hub"
    if str(params.get("device") or "").startswith("cuda"):
        return "needs a GPU"
    if path == "rein eval" and (params["backbone"] or params["adapter"]):
        return "pulls a released adapter and its backbone"
    missing = [name for name in inputs(path, params) if name not in WORKSPACE]
    if missing:
        why = run_compared(missing[0]) or NOT_MADE.get(missing[0], "not made by the tests")
        return f"needs {missing[0]}: {why}"
    if path == "rein train" and params["resume"] is not None:
        return "resumes a killed run (test_resume.py kills runs at an iteration and resumes them)"
    if path == "rein train" and not params["list_"]:
        unprepared = [name for name in recipe_datasets(params) if name not in PREPARED]
        if unprepared:
            return f"trains or evaluates on {unprepared[0]}: not prepared by the tests (the recipe tests run it small)"
    return None


def recipe_datasets(params: dict[str, Any]) -> list[str]:
    """The datasets a documented `rein train` names, through its recipe, --set and --data."""
    from rein_cli.config import load_config

    recipe = params["recipe"]
    if recipe is not None and str(recipe).endswith((".yaml", ".yml")):
        recipe = None  # a file of the workspace: made for the tiny data
    cfg = load_config(recipe, params["sets"], **{"data.train": params["data"]})
    return [*cfg.data.train, *cfg.data.eval]


def runs() -> list[Any]:
    """The runnable commands, one per distinct command line (the same line elsewhere is the same check)."""
    unique: dict[tuple[str, ...], Command] = {}
    for command in COMMANDS:
        if why_not_run(command) is None:
            unique.setdefault(command.args, command)
    marks = {where: pytest.mark.xfail(reason=bug, strict=True) for where, bug in LIBRARY_BUGS.items()}
    return [pytest.param(c, id=c.where, marks=marks.get(c.where, ())) for c in unique.values()]


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


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, trained, synthetic_root) -> Path:
    root = tmp_path_factory.mktemp("docs")
    make_workspace(root, trained, synthetic_root)
    return root


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


# ----------------------------------------------------------------------------- the tests


def test_the_docs_are_read():
    files = {c.file for c in COMMANDS}
    assert {"README.md", "docs/quickstart.md", "docs/datasets.md", "docs/hub.md"} <= files
    assert len(COMMANDS) > 50 and len(SNIPPETS) >= 4
    continued = [c for c in COMMANDS if c.file == "docs/datasets.md" and c.args[:2] == ("data", "prepare")]
    assert any(c.args.count("--from") == 3 for c in continued)  # the `\` continuation joined into one command
    assert ("models",) in [c.args for c in COMMANDS if c.file == "README.md"]  # `rein pull ... && rein models`


@pytest.mark.parametrize("command", COMMANDS, ids=[c.where for c in COMMANDS])
def test_documented_command_parses(command):
    odd = [arg for arg in command.args if set(arg) <= SHELL_SYNTAX]
    assert not odd, f"{command}: {odd} is shell syntax, not an argument"
    try:
        path, _ = parse(command.args)
    except UsageError as err:
        pytest.fail(f"{command}: {err}", pytrace=False)
    assert path.startswith("rein")


def test_every_input_is_made_or_explained():
    needed = set()
    for command in COMMANDS:
        parsed = quiet_parse(command)
        if parsed and parsed[0] not in NOT_RUN:
            needed |= set(inputs(*parsed))
    unexplained = {name for name in needed - WORKSPACE - set(NOT_MADE) if run_compared(name) is None}
    assert not unexplained, f"make these in make_workspace, or say in NOT_MADE why not: {sorted(unexplained)}"
    assert set(NOT_MADE) <= needed, f"no documented command needs {sorted(set(NOT_MADE) - needed)}"


RUNS = runs()


def test_the_runs_cover_every_offline_command():
    ran = {parse(p.values[0].args)[0] for p in RUNS}
    offline = {"rein", "rein models", "rein train", "rein eval", "rein predict"}
    offline |= {f"rein data {name}" for name in ("list", "info", "prepare", "verify")}
    assert offline <= ran, f"no documented command runs {sorted(offline - ran)}"


@pytest.mark.parametrize("command", RUNS)
def test_documented_command_runs(command, workspace, tmp_path, monkeypatch, capsys):
    path, params = parse(command.args)
    cwd, home = tmp_path / "cwd", workspace / "home"
    if path == "rein data prepare":
        home = tmp_path / "home"  # a fresh data root to prepare into
    enter(workspace, cwd, inputs(path, params))
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("REIN_HOME", str(home))
    code = rein(*command.args, *sized_options(path))
    out, err = capsys.readouterr()
    assert code == 0, f"{command}: exit code {code}\n{err[-2000:]}"
    expect(path, params, out, cwd, home)


def expect(path: str, params: dict[str, Any], out: str, cwd: Path, home: Path) -> None:
    """What a documented command that ran must have printed and written."""
    from rein_cli.data.registry import find_spec

    if path == "rein":
        assert "Usage: rein" in out and "train" in out and "data" in out
    elif path == "rein models":
        assert "rein-dinov2-l-gta" in out and "dinov2-l" in out
    elif path == "rein data list":
        assert "cityscapes (citys)" in out and re.search(r"^synthetic\s.*train 8", out, re.MULTILINE)
    elif path == "rein data info":
        assert out.startswith(f"{find_spec(params['name']).name}: ") and "  prepared: " in out
    elif path == "rein data verify":
        assert out.rstrip().endswith(": ok")
    elif path == "rein data prepare":
        manifest = Path(re.search(r"^prepared .+ -> (.+manifest\.json)$", out, re.MULTILINE)[1])
        name = params["custom_name"] or find_spec(params["name"]).name
        assert manifest == home / "datasets" / name / "manifest.json" and manifest.is_file()
    elif path == "rein train" and params["list_"]:
        assert re.search(r"^gta-dinov2-l: .*\n    dinov2-l  gta5 -> ", out, re.MULTILINE)
        assert not list(cwd.iterdir())  # listing trains nothing
    elif path == "rein train":
        run = cwd / re.search(r"^run directory: (.+)$", out, re.MULTILINE)[1]
        assert params["out"] is None or run == cwd / params["out"]
        assert (run / "checkpoints" / "last" / "model.safetensors").is_file()
        config = yaml.safe_load((run / "config.yaml").read_text())
        for key, value in documented_settings(params).items():
            section, expected = config, as_configured(key, value)
            for part in key.split("."):
                section = section[part]
            assert section == expected, f"{key} is {section} in the run's config.yaml, not {expected}"
        assert not config["data"]["eval"] or (run / "eval" / "results.json").is_file()
    elif path == "rein eval":
        written = Path(re.search(r"^results: (.+)$", out, re.MULTILINE)[1])
        assert written.resolve().is_relative_to(cwd.resolve())  # beside the (copied) checkpoint, or here
        results = json.loads(written.read_text())
        targets = [t for value in params["targets"] for t in value.split(",")]
        if params["corruption"]:  # one entry per target, corruption and severity
            from rein_cli.data.corruptions import parse_spec

            targets = [(t, pair) for t in targets for pair in parse_spec(params["corruption"])]
        assert len(results["datasets"]) == len(targets) and all("mIoU" in r for r in results["datasets"].values())
    elif path == "rein predict":
        count, folder = re.search(r"^(\d+) images segmented into (.+)/ ", out, re.MULTILINE).groups()
        images = [p for name in map(Path, params["inputs"]) for p in ([name] if name.is_file() else name.iterdir())]
        assert int(count) == len(images) == len(list((cwd / folder / "labels").glob("*.png")))
    elif path == "rein compare":
        written = re.search(r"^written: (.+)$", out, re.MULTILINE)[1].split(", ")
        assert [Path(p).name for p in written] == ["compare.md", "compare.csv", "compare.png"]
        assert all((cwd / p).is_file() for p in written)
        labels = list(dict.fromkeys(name.split("=", 1)[0] for name in params["inputs"] if "=" in name))
        rows = [line.split(",", 1)[0] for line in (cwd / written[1]).read_text().splitlines()[1:]]
        assert not labels or rows == labels, f"rows {rows}, not the labels {labels}"
    else:
        raise AssertionError(f"say what `{path}` must print or write")


def as_configured(key: str, value: Any) -> Any:
    """A documented value as config.yaml holds it (one dataset name where a list is expected: a list of one)."""
    from rein_cli.config import config_from_dict

    nested = value
    for part in reversed(key.split(".")):
        nested = {part: nested}
    section = config_from_dict(nested).to_dict()
    for part in key.split("."):
        section = section[part]
    return section


def documented_settings(params: dict[str, Any]) -> dict[str, Any]:
    """The configuration values a documented `rein train` sets that the test-sized options leave alone."""
    from rein_cli.config import parse_override

    flags = {"model.backbone": params["backbone"], "model.method": params["method"], "model.head": params["head"]}
    flags |= {"data.train": params["data"]}
    settings = {k: v for k, v in flags.items() if v is not None}
    settings |= {".".join(key): value for key, value in map(parse_override, params["sets"] or [])}
    overridden = {s.split("=", 1)[0] for s in TINY_SETS}
    return {k: v for k, v in settings.items() if k not in overridden}


# ----------------------------------------------------------------------------- Python snippets


# Statements that build a real-size model run on the meta device: the same modules without the weight
# initialisation (DINOv2-L: 300M parameters, tens of seconds on 2 cores).
ON_META = "build_segmentor("
# Sizes shrunk in a snippet, each found as written: the full benchmark is 1,000 images.
SHRUNK = {"num_train=500, num_val=100, width=512, height=256": "num_train=2, num_val=1, width=64, height=64"}


def snippet_checks(code: str, names: dict[str, Any]) -> None:
    """What the snippets' comments promise."""
    if "generate_synthetic(" in code:
        assert names["manifests"]["synthetic"] == Path("data/synthetic/manifest.json")
        assert len(names["manifests"]) == 5 and all(p.is_file() for p in names["manifests"].values())
    if "make_scene(" in code:
        assert names["scene"].labels.shape == (256, 512) and names["fog"].shape == (256, 512, 3)
    if "load_segmentor(" in code:
        assert names["model"].classes[0] == "road" and names["model"].config.backbone == "vit-tiny"
    if "semantic_scores(" in code:
        assert names["scores"].shape[:2] == (1, 19) and names["losses"]


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[f"{s.file}:{s.line}" for s in SNIPPETS])
def test_documented_snippet_runs(snippet, workspace, tmp_path, monkeypatch):
    import torch

    code = snippet.text
    for written, small in SHRUNK.items():
        code = code.replace(written, small)
    tree = ast.increment_lineno(ast.parse(code, snippet.file), snippet.line - 1)  # a syntax error fails here
    strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    enter(workspace, tmp_path, [s for s in strings if s in WORKSPACE])
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    names: dict[str, Any] = {  # the tensors model.md's snippet takes as given: the tiny model's sizes
        "images": torch.randn(1, 3, 64, 64),
        "image": torch.randn(1, 3, 64, 64),
        "labels": torch.randint(0, 19, (1, 64, 64)),
    }
    for statement in tree.body:
        compiled = compile(ast.Module([statement], []), snippet.file, "exec")  # tracebacks name the doc's lines
        meta = torch.device("meta") if ON_META in ast.unparse(statement) else contextlib.nullcontext()
        with meta:
            exec(compiled, names)
    snippet_checks(code, names)


def test_snippet_shrinks_apply():
    text = "".join(s.text for s in SNIPPETS)
    assert all(written in text for written in SHRUNK), "a shrunk snippet changed: update SHRUNK"
    assert ON_META in text
