"""The documentation runs: every `rein` command of README.md and docs/*.md parses, the offline ones run, snippets too.

The commands that run do so at test size in a workspace of made inputs and do what they say (docs_runner.py reads,
parses and sizes them, docs_checks.py says what each must do); the others are parsed, for the reason `why_not_run`
gives from the tables below.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from .docs_checks import expect, snippet_checks
from .docs_runner import (
    COMMANDS,
    ON_META,
    PREPARED,
    SHELL_SYNTAX,
    SHRUNK,
    SNIPPETS,
    WORKSPACE,
    Command,
    UsageError,
    enter,
    inputs,
    make_workspace,
    named_inputs,
    parse,
    quiet_parse,
    recipe_datasets,
    run_snippet,
    shrunk,
    sized_options,
)
from .helpers import rein

# ----------------------------------------------------------------------------- what does not run, and why


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
    "mapillary-vistas-dataset_public_v2.0.z01": "the parts of a split zip "
    "(test_prepare_layouts.py makes and prepares some)",
    "mapillary-vistas-dataset_public_v2.0.z02": "the parts of a split zip "
    "(test_prepare_layouts.py makes and prepares some)",
}
# The runs docs/comparisons.md compares, by their folder's name: why the tests do not make them.
RUNS_COMPARED = {
    re.compile(r"runs/gta-[a-z0-9-]+"): "a paper-scale run of a shipped recipe (40k iterations on GTA5); "
    "test_compare.py compares tiny runs",
    re.compile(r"runs/tiny-[a-z0-9-]+"): "trained by the commands above it, which run here at test size; "
    "test_compare.py compares tiny runs",
}
# Documented commands that fail because of a bug in rein, until it is fixed: "file:line" -> the error.
LIBRARY_BUGS: dict[str, str] = {}


def run_compared(name: str) -> str | None:
    """Why a run that docs/comparisons.md compares is not made by the tests; None for another input."""
    return next((why for pattern, why in RUNS_COMPARED.items() if pattern.fullmatch(name)), None)


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


def runs() -> list[Any]:
    """The runnable commands, one per distinct command line (the same line elsewhere is the same check)."""
    unique: dict[tuple[str, ...], Command] = {}
    for command in COMMANDS:
        if why_not_run(command) is None:
            unique.setdefault(command.args, command)
    marks = {where: pytest.mark.xfail(reason=bug, strict=True) for where, bug in LIBRARY_BUGS.items()}
    return [pytest.param(c, id=c.where, marks=marks.get(c.where, ())) for c in unique.values()]


RUNS = runs()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, trained, synthetic_root) -> Path:
    root = tmp_path_factory.mktemp("docs")
    make_workspace(root, trained, synthetic_root)
    return root


# ----------------------------------------------------------------------------- the commands


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


# ----------------------------------------------------------------------------- Python snippets


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[f"{s.file}:{s.line}" for s in SNIPPETS])
def test_documented_snippet_runs(snippet, workspace, tmp_path, monkeypatch):
    code, tree = shrunk(snippet)  # a syntax error fails here
    enter(workspace, tmp_path, named_inputs(tree))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REIN_HOME", str(workspace / "home"))  # the prepared datasets, as for the commands
    snippet_checks(code, run_snippet(tree, snippet.file))


def test_snippet_shrinks_apply():
    text = "".join(s.text for s in SNIPPETS)
    assert all(written in text for written in SHRUNK), "a shrunk snippet changed: update SHRUNK"
    assert ON_META in text
