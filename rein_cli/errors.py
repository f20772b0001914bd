"""The one exception type for problems the user can fix (bad input, missing files, unknown names)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ReinError(Exception):
    """A problem with the user's input; the CLI prints its message as one line, without a traceback."""


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """' (did you mean "x"?)' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.5)
    return f' (did you mean "{close[0]}"?)' if close else ""


def unknown_name(kind: str, value: str, choices: Iterable[str], hint: str = "") -> ReinError:
    """An error for an unknown name, with a "did you mean" and the list of known names."""
    choices = sorted(choices)
    message = f'unknown {kind} "{value}"{did_you_mean(value, choices)}; known: {", ".join(choices)}'
    return ReinError(message + (f"; {hint}" if hint else ""))
