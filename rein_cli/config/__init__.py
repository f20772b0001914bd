"""Typed run configuration. Precedence: dataclass defaults < YAML recipe < ``--set key=value`` < explicit flags.

The defaults are the paper's model and schedule (DINOv2-L with Rein and the Mask2Former head, 512 crops, AdamW
1e-4, poly decay, 40k iterations, batch 4) on the embedded synthetic benchmark, so that nothing has to be downloaded
first; the paper's GTA5 -> Cityscapes setting is the recipe ``gta-dinov2-l``. A recipe states only what differs.
Unknown keys and wrongly typed values are errors that name the key.

`sections` holds the types, `rules` what each key must be, `recipes` the YAML recipes and overrides; everything is
imported from here.
"""

from __future__ import annotations

from rein_cli.config.figures import Published, Reported
from rein_cli.config.recipes import (
    format_recipes,
    load_config,
    parse_override,
    recipe_name,
    recipe_path,
    recipes_dir,
    shipped_recipes,
)
from rein_cli.config.rules import (
    RULES,
    check_config,
    check_section,
    per_device_batch,
)
from rein_cli.config.sections import (
    NO_DECAY_KEYS,
    AdaptFormerConfig,
    Config,
    DataConfig,
    EvalConfig,
    Head,
    InferenceMode,
    LoRAConfig,
    Method,
    ModelConfig,
    Neck,
    OptimConfig,
    Precision,
    PredictionIds,
    ReinConfig,
    TrainConfig,
    VPTConfig,
    check_choice,
    choices,
    config_from_dict,
    data_root,
    merge_keys,
    rein_home,
    to_dict,
)

__all__ = [
    "NO_DECAY_KEYS",
    "RULES",
    "AdaptFormerConfig",
    "Config",
    "DataConfig",
    "EvalConfig",
    "Head",
    "InferenceMode",
    "LoRAConfig",
    "Method",
    "ModelConfig",
    "Neck",
    "OptimConfig",
    "Precision",
    "PredictionIds",
    "Published",
    "ReinConfig",
    "Reported",
    "TrainConfig",
    "VPTConfig",
    "check_choice",
    "check_config",
    "check_section",
    "choices",
    "config_from_dict",
    "data_root",
    "format_recipes",
    "load_config",
    "merge_keys",
    "parse_override",
    "per_device_batch",
    "recipe_name",
    "recipe_path",
    "recipes_dir",
    "rein_home",
    "shipped_recipes",
    "to_dict",
]
