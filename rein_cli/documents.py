"""Reading YAML and JSON documents strictly: a key given twice in one mapping is an error naming the key and both
lines (the parsers would keep the last silently), and `Fields` reads typed values whose errors name the file and the
key."""

from __future__ import annotations

import functools
import json
import json.decoder
import json.scanner
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rein_cli.errors import ReinError


class _DuplicateKey(Exception):
    def __init__(self, key: Any, first: int, second: int) -> None:
        super().__init__(key, first, second)
        self.key, self.first, self.second = key, first, second


def _duplicate(name: str, err: _DuplicateKey) -> ReinError:
    where = f"on line {err.first}" if err.first == err.second else f"on lines {err.first} and {err.second}"
    return ReinError(
        f'{name}: "{err.key}" is given twice, {where}; the second would silently replace the first: merge them '
        "into one or delete one"
    )


@functools.cache
def _strict_loader() -> type:
    """PyYAML's SafeLoader whose mappings refuse a key given twice (a ``<<`` merge may still be overridden)."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
            if isinstance(node, yaml.MappingNode):
                seen: dict[Any, yaml.Node] = {}
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue
                    key = self.construct_object(key_node, deep=True)
                    try:
                        first = seen.setdefault(key, key_node)
                    except TypeError:  # an unhashable key: PyYAML's own error follows
                        continue
                    if first is not key_node:
                        raise _DuplicateKey(key, first.start_mark.line + 1, key_node.start_mark.line + 1)
            return super().construct_mapping(node, deep=deep)

    return StrictLoader


def load_yaml(text: str, name: str) -> Any:
    """``yaml.safe_load(text)``, refusing a key given twice; ``name`` (e.g. ``recipe runs/a.yaml``) begins the
    error. A syntax error is PyYAML's own ``YAMLError``, for the caller to word."""
    import yaml

    try:
        return yaml.load(text, Loader=_strict_loader())  # a SafeLoader: no Python objects
    except _DuplicateKey as err:
        raise _duplicate(name, err) from None


def load_json(text: str, name: str) -> Any:
    """``json.loads(text)``, refusing a key given twice in one object (both lines named, read by the pure-Python
    scanner, which tells where each value starts). A syntax error is ``json.JSONDecodeError``."""
    starts: list[list[int]] = []  # per object being read: where each of its values starts

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, int] = {}
        for k, (key, _) in enumerate(pairs):
            if key in seen:
                raise _DuplicateKey(key, _key_line(text, starts[-1][seen[key]]), _key_line(text, starts[-1][k]))
            seen[key] = k
        return dict(pairs)

    def parse_object(state: tuple[str, int], strict: bool, scan_once: Callable, *rest: Any) -> tuple[Any, int]:
        own: list[int] = []

        def scan(s: str, idx: int) -> tuple[Any, int]:
            own.append(idx)
            return scan_once(s, idx)

        starts.append(own)
        try:
            return json.decoder.JSONObject(state, strict, scan, *rest)
        finally:
            starts.pop()

    decoder = json.JSONDecoder(object_pairs_hook=unique)
    decoder.parse_object = parse_object
    decoder.scan_once = json.scanner.py_make_scanner(decoder)
    try:
        return decoder.decode(text)
    except _DuplicateKey as err:
        raise _duplicate(name, err) from None


def _key_line(text: str, value_start: int) -> int:
    """The line of the key whose value starts at ``value_start`` (the key ends before the ``:`` that precedes it)."""
    colon = text.rfind(":", 0, value_start)
    return text.count("\n", 0, len(text[:colon].rstrip())) + 1


# ---- typed fields ------------------------------------------------------------------------------------------------

_REQUIRED = object()


def shown(value: Any) -> str:
    """A found value as the error shows it: ``'abc'``, ``[1, 2]``, ``true``, ``null``, shortened."""
    text = json.dumps(value) if isinstance(value, bool) or value is None else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class Fields:
    """A mapping read from ``source``, at ``where`` (a dotted key; "" for the whole document): each getter checks
    the type of one value, and an error names the file and the key, what was expected and what was found, and says
    what to do (``advice``)."""

    data: Mapping[str, Any]
    source: str
    advice: str
    where: str = ""

    @classmethod
    def of(cls, data: Any, source: Any, advice: str, where: str = "") -> Fields:
        """``data`` if it is a mapping; else the error that it is not."""
        if not isinstance(data, Mapping):
            what = f"{where} must be" if where else "must hold"
            raise ReinError(f"{source}: {what} an object of keys, found {shown(data)}; {advice}")
        return cls(data, str(source), advice, where)

    def key(self, key: str | int) -> str:
        if isinstance(key, int):
            return f"{self.where}[{key}]"
        return f"{self.where}.{key}" if self.where else key

    def error(self, key: str | int, expected: str, value: Any) -> ReinError:
        return ReinError(f"{self.source}: {self.key(key)} must be {expected}, found {shown(value)}; {self.advice}")

    def _value(self, key: str, default: Any) -> Any:
        if key in self.data:
            return self.data[key]
        if default is _REQUIRED:
            raise ReinError(f"{self.source}: {self.key(key)} is missing; {self.advice}")
        return default

    def number(self, key: str, default: Any = _REQUIRED, *, null: bool = False) -> float | None:
        """A JSON number (a float; ``null`` is NaN where ``null``; a string or a boolean is refused)."""
        value = self._value(key, default)
        if value is None and null:
            return math.nan
        if not is_number(value):
            raise self.error(key, "a number" + (" or null" if null else ""), value)
        return float(value)

    def integer(self, key: str, default: Any = _REQUIRED, *, null: bool = False) -> int | None:
        value = self._value(key, default)
        if value is None and null:
            return None
        if not is_number(value) or not float(value).is_integer():
            raise self.error(key, "a whole number" + (" or null" if null else ""), value)
        return int(value)

    def text(self, key: str, default: Any = _REQUIRED, *, null: bool = False) -> str | None:
        value = self._value(key, default)
        if value is None and null:
            return None
        if not isinstance(value, str):
            raise self.error(key, "a string" + (" or null" if null else ""), value)
        return value

    def flag(self, key: str, default: Any = _REQUIRED) -> bool:
        value = self._value(key, default)
        if not isinstance(value, bool):
            raise self.error(key, "true or false", value)
        return value

    def texts(self, key: str, default: Any = _REQUIRED) -> list[str]:
        """A list of strings (``null`` where a default is given: the default)."""
        value = self._value(key, default)
        if value is None and default is not _REQUIRED:
            return list(default)
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise self.error(key, "a list of strings", value)
        return list(value)

    def numbers(self, key: str, default: Any = _REQUIRED, *, null: bool = False) -> list[float] | None:
        """A list of numbers, each ``null`` read as NaN (the list itself ``null`` where ``null``: None)."""
        value = self._value(key, default)
        if value is None and null:
            return None
        if not isinstance(value, list | tuple) or not all(v is None or is_number(v) for v in value):
            raise self.error(key, "a list of numbers" + (" or null" if null else ""), value)
        return [math.nan if v is None else float(v) for v in value]

    def matrix(self, key: str) -> list[list[int]] | None:
        """A square list of lists of whole numbers (e.g. a confusion matrix), or None where missing or ``null``."""
        value = self.data.get(key)
        if value is None:
            return None
        square = isinstance(value, list) and all(isinstance(row, list) and len(row) == len(value) for row in value)
        if not square or not all(isinstance(x, int) and not isinstance(x, bool) for row in value for x in row):
            raise self.error(key, "a square list of lists of whole numbers, or null", value)
        return value

    def object(self, key: str, default: Any = _REQUIRED, *, null: bool = False) -> Fields | None:
        """The mapping at ``key`` as `Fields` (``null`` where ``null``: None; missing: ``default``, a mapping or
        None)."""
        value = self._value(key, default)
        if value is None and (null or default is None):
            return None
        if not isinstance(value, Mapping):
            raise self.error(key, "an object of keys" + (" or null" if null else ""), value)
        return Fields(value, self.source, self.advice, self.key(key))

    def objects(self, key: str, default: Any = _REQUIRED) -> list[Fields]:
        """A list of mappings (``null`` where a default is given: the default)."""
        value = self._value(key, default)
        if value is None and default is not _REQUIRED:
            value = default
        if not isinstance(value, list | tuple):
            raise self.error(key, "a list of objects", value)
        inner = Fields({}, self.source, self.advice, self.key(key))
        out = []
        for k, item in enumerate(value):
            if not isinstance(item, Mapping):
                raise inner.error(k, "an object of keys", item)
            out.append(Fields(item, self.source, self.advice, inner.key(k)))
        return out

    def entries(self) -> list[tuple[str, Fields]]:
        """(key, its mapping as `Fields`) for each key of this mapping, whose values must all be mappings."""
        out = []
        for name, value in self.data.items():
            if not isinstance(value, Mapping):
                raise self.error(str(name), "an object of keys", value)
            out.append((str(name), Fields(value, self.source, self.advice, self.key(str(name)))))
        return out

    def get(self, key: str, default: Any = None) -> Any:
        """The raw value (for values read by a reader of their own)."""
        return self.data.get(key, default)


def is_number(value: Any) -> bool:
    """A JSON/YAML number: int or float, not a boolean (``True`` is an int in Python)."""
    return isinstance(value, int | float) and not isinstance(value, bool)
