"""The documentation names what exists: every configuration key, and nothing else."""

import dataclasses
import re
from pathlib import Path

from rein_cli.config import Config

DOCS = Path(__file__).resolve().parent.parent / "docs"


def config_keys(section: object, prefix: str = "") -> set[str]:
    keys = set()
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            keys |= config_keys(value, f"{prefix}{f.name}.")
        else:
            keys.add(prefix + f.name)
    return keys


def test_configuration_md_names_exactly_the_configuration_keys():
    text = (DOCS / "configuration.md").read_text()
    table = text.split("## Keys", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    documented = [key for row in rows for key in re.findall(r"`([a-z_][a-z0-9_.]*)`", row.split("|")[1])]
    assert len(documented) == len(set(documented)), "a key is documented twice"
    assert set(documented) == config_keys(Config())


def test_hub_md_names_every_backbone_and_release():
    from rein_cli.models.backbone import BACKBONES
    from rein_cli.zoo.releases import RELEASES

    text = (DOCS / "hub.md").read_text()
    for name in RELEASES:
        assert f"`{name}`" in text or name.rsplit("-", 2)[0] in text, name
    families = {name.split("-reg4")[0].rsplit("-", 1)[0] if name.startswith("dinov2") else name for name in BACKBONES}
    for family in families:
        assert family in text, family
