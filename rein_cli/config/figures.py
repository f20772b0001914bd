"""Published figures as published: a number that keeps its digits (BDD100K's ``60.0`` stays ``60.0``), and one
figure of a setting or a release (`Reported`: mIoU, split, source, and the checkpoint it was measured on when that
is not the model it is shown beside). The schema of a recipe's ``reported:``, config.json's and results.json's."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from rein_cli.documents import Fields


class Published(float):
    """A published figure: a float that prints with the digits it was published with. Given as a number, its
    shortest form (``60.0``, ``77.56``); given as text, the text (``"65.30"`` keeps its trailing zero). ``note``:
    the checkpoint it was measured on when that is not the model it is shown beside (the figure prints with a
    ``*`` where a table has no room for the note)."""

    text: str
    note: str

    def __new__(cls, value: Any, note: str = "") -> Published:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError(f"a published figure must be a number, got {value!r}")
        if isinstance(value, Published):
            text = value.text
        elif isinstance(value, str):
            text = value.strip()
        else:  # a float's shortest form keeps its published digits (60.0, 77.56); an int stays one
            text = repr(float(value)) if isinstance(value, float) else str(value)
        number = float(text)  # ValueError for text that is no number
        if not math.isfinite(number):
            raise ValueError(f"a published figure must be a finite number, got {value!r}")
        self = super().__new__(cls, number)
        self.text, self.note = text, note
        return self

    def __repr__(self) -> str:
        return self.text

    __str__ = __repr__

    def __reduce__(self) -> tuple:
        return Published, (self.text, self.note)

    @property
    def shown(self) -> str:
        """The text, with ``*`` when it was measured on another checkpoint."""
        return self.text + ("*" if self.note else "")


@dataclass(frozen=True)
class Reported:
    """One published figure for a target dataset: its mIoU (`Published`), the split it is on (``test``: the
    dataset's evaluation server), where it was published, and ``checkpoint``: the model it was measured on when that
    is not the one it is listed with (paper Table 5's figures beside the 1024-crop Cityscapes release)."""

    mIoU: float
    split: str
    source: str
    checkpoint: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "mIoU", Published(self.mIoU, self.checkpoint))

    @property
    def label(self) -> str:
        """The source, and the checkpoint it was measured on where that is another."""
        return f"{self.source}; measured on {self.checkpoint}" if self.checkpoint else self.source

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"mIoU": self.mIoU, "split": self.split, "source": self.source}
        if self.mIoU.text != repr(float(self.mIoU)):  # digits a JSON number would lose ("65.30", "60")
            data["published"] = self.mIoU.text
        if self.checkpoint:
            data["checkpoint"] = self.checkpoint
        return data

    @classmethod
    def read(cls, f: Fields) -> Reported:
        """As `from_json`, each value's type checked (``f``: one figure of a results.json)."""
        value: Any = f.text("published") if "published" in f.data else f.number("mIoU")
        try:
            figure = Published(value)
        except ValueError:
            raise f.error("published", "a number written as text", value) from None
        return cls(figure, f.text("split"), f.text("source"), f.text("checkpoint", ""))

    @classmethod
    def from_json(cls, data: Any) -> Reported:
        value = data.get("published", data["mIoU"])
        return cls(value, str(data["split"]), str(data["source"]), str(data.get("checkpoint") or ""))
