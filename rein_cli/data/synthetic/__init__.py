"""The embedded benchmark: procedural street scenes rendered under five conditions, written as prepared datasets."""

from rein_cli.data.synthetic.generate import generate_synthetic
from rein_cli.data.synthetic.scene import Scene, make_scene
from rein_cli.data.synthetic.weather import render

__all__ = ["Scene", "generate_synthetic", "make_scene", "render"]
