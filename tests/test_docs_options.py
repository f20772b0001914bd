"""The docs and `--help` agree: every option the docs give a command is in its help, every option in a command's help
is documented for it, and a default stated in the help is the one the docs state.

An option is documented for a command when the docs write it with the command (a `rein ...` command in a code block,
its comment included, or an inline `` `rein CMD ... --option` ``), or write it alone (`` `--option` ``) in a
paragraph, table row or list item that names the command (one that names none: in a section, code included, or a
document whose opening names it). Written with a command, the command must have it; written alone, one of the
commands around it must.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import pytest

from .docs_runner import DOCS, ROOT, blocks, commands

SHELL = ("bash", "sh", "shell")
GROUPS = ("rein", "rein data")  # commands of commands: their options are the global ones
# Options the docs write alone (`` `--option` ``) that belong to other programs, and why they are there. (Other
# programs' commands, `torchrun ...`, `tensorboard --logdir RUN`, are not read for rein's options.)
OTHER_PROGRAMS: dict[str, str] = {}
# Options of a command's help that the docs deliberately leave out for that command, and why.
UNDOCUMENTED: dict[tuple[str, str], str] = {}


@dataclass
class Mentions:
    """Where the docs write each option: with a command, or alone in the context of some commands."""

    attached: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # (command, option) -> where
    # (option, the commands its paragraph names, those of its paragraph or else its section, where)
    alone: list[tuple[str, frozenset[str], frozenset[str], str]] = field(default_factory=list)
    texts: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # (command, option) -> the text around


@cache
def command_line() -> dict[str, dict[str, Any]]:
    """Every command path (`rein`, `rein data prepare`) -> {long option: its click parameter}."""
    import typer

    from rein_cli.cli import app

    found: dict[str, dict[str, Any]] = {}

    def walk(command: Any, path: str) -> None:
        found[path] = {
            name: param
            for param in command.params
            if param.param_type_name == "option"
            for name in (*param.opts, *param.secondary_opts)
            if name.startswith("--")
        }
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{path} {name}")

    walk(typer.main.get_command(app), "rein")
    return found


def split_command(words: list[str]) -> tuple[str, list[str], list[str]]:
    """The words after `rein` -> (command path, its long options, the global options before it)."""
    first = next((i for i, w in enumerate(words) if not w.startswith("-")), len(words))
    globals_, rest = words[:first], words[first:]
    for path in sorted(command_line(), key=lambda p: -len(p.split())):
        parts = path.split()[1:]
        if parts and rest[: len(parts)] == parts:
            return path, [w.split("=")[0] for w in rest[len(parts) :] if w.startswith("--")], globals_
    return "rein", [], globals_


def named(names: set[str], text: str) -> set[str]:
    """The commands ``text`` names (`rein data prepare`; not the groups `rein` and `rein data`)."""
    return {p for p in names if p not in GROUPS and re.search(rf"\b{re.escape(p)}\b", text)}


def long_options(text: str) -> list[str]:
    return re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text)


@cache
def mentions() -> Mentions:
    found = Mentions()
    names = set(command_line())

    def attach(path: str, option: str, where: str, text: str) -> None:
        found.attached.setdefault((path, option), []).append(where)
        found.texts.setdefault((path, option), []).append(text)

    for doc in DOCS:
        rel = doc.relative_to(ROOT).as_posix()
        text = doc.read_text()
        for block in blocks(doc):
            if block.lang not in SHELL:
                continue
            lines = block.text.splitlines()
            for command in commands(block):
                path, options, globals_ = split_command(list(command.args))
                line = lines[command.line - block.line]
                comment = line.split("#", 1)[1] if "#" in line else ""  # `# add --private to ...`
                for option in options + long_options(comment):
                    attach(path, option, command.where, line)
                for option in globals_:
                    attach("rein", option, command.where, line)
        intro = named(names, text.split("\n## ", 1)[0])  # what the doc is about: its opening, code included
        for section in re.split(r"\n(?=#+ )", text):
            in_section = named(names, section) | intro  # its code included
            prose = re.sub(r"^```.*?^```", "", section, flags=re.S | re.M)
            for para in re.split(r"\n\s*\n|\n(?=\s*(?:[-*|]|\d+\.) )", prose):
                in_para = named(names, para)
                for span in re.findall(r"`([^`\n]+)`", para):
                    if span.split()[:1] == ["rein"]:
                        try:
                            words = shlex.split(span)[1:]
                        except ValueError:
                            words = span.split()[1:]
                        path, options, globals_ = split_command(words)
                        for option in options:
                            attach(path, option, f"{rel}: `{span}`", para)
                        for option in globals_:
                            attach("rein", option, f"{rel}: `{span}`", para)
                    elif span.startswith("--"):
                        for option in long_options(span):
                            context = frozenset(in_para or in_section)
                            found.alone.append((option, frozenset(in_para), context, f"{rel}: `{span}`"))
                            for path in in_para or in_section:
                                found.texts.setdefault((path, option), []).append(para)
    return found


def test_every_option_the_docs_give_a_command_is_in_its_help():
    wrong = [
        f"{where[0]}: {path} has no {option}"
        for (path, option), where in mentions().attached.items()
        if option not in command_line()[path] and option != "--help"
    ]
    every = {option for options in command_line().values() for option in options}
    for option, in_para, context, where in mentions().alone:  # `--option` alone: one of the commands around has it
        if option in OTHER_PROGRAMS or (not in_para and option in every):  # a paragraph naming no command: any
            continue
        if not any(option in command_line()[path] for path in {"rein", *(context or command_line())}):
            wrong.append(f"{where}: {'no command' if option not in every else ', '.join(sorted(context))} has {option}")
    assert not wrong, "\n".join(wrong)


def test_every_option_in_the_help_is_documented_for_its_command():
    found = mentions()
    missing = []
    for path, options in command_line().items():
        for option in options:
            documented = (path, option) in found.attached or any(
                option == o and (path in context or path == "rein") for o, _, context, _ in found.alone
            )
            if not documented and (path, option) not in UNDOCUMENTED:
                missing.append(f"{path} {option}")
    assert not missing, "undocumented: " + ", ".join(missing)


def stated_defaults() -> list[tuple[str, str, str]]:
    """(command, option, default) for every option whose default is a value: a string, a number or a path that the
    help shows, or what its help says in ``(default X)``."""
    found = []
    for path, options in command_line().items():
        for option, param in options.items():
            if option in param.secondary_opts:
                continue
            said = re.search(r"\(default:? ([^;),]+)", param.help or "")
            if said and "run" not in said[1]:  # "default: a run's checkpoint as its run": said in words
                found.append((path, option, said[1].strip().rstrip(".")))
            elif param.default not in (None, False, True) and not isinstance(param.default, (list, tuple)):
                found.append((path, option, str(getattr(param.default, "value", param.default))))
    return found


@pytest.mark.parametrize(("path", "option", "default"), stated_defaults(), ids=lambda v: str(v))
def test_a_default_in_the_help_is_the_one_the_docs_state(path, option, default):
    texts = [t.replace("`", "") for t in mentions().texts.get((path, option), [])]
    assert texts, f"{path} {option} is not documented"
    found = (m for t in texts for m in re.findall(rf"{re.escape(option)}\b[^.]*?\bdefault:? ([^;),]+)", t))
    said = [m.removeprefix("./") for m in found]
    if not said:  # the docs do not state this default: nothing to disagree with
        return
    value = default.split()[0].strip("`'\".")
    assert any(re.search(rf"(?<![\w/-]){re.escape(value)}(?![\w-])", d) for d in said), (
        f"{path} {option}: the help says default {default}; the docs: {said}"
    )
