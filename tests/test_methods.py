"""The table of methods: each method's declared properties hold for the model it builds, and no other module
compares method names."""

import ast
import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch

from rein_cli.config import NO_DECAY_KEYS, LoRAConfig, Method, ModelConfig, ReinConfig, choices
from rein_cli.engine.checkpoint import save_checkpoint
from rein_cli.errors import ReinError
from rein_cli.models.backbone import BACKBONES, FrozenBackbone
from rein_cli.models.methods import METHODS, supported_backbones
from rein_cli.models.segmentor import build_segmentor

from .helpers import FAMILIES, TINY

ROOT = Path(__file__).resolve().parents[1]


def tiny(method: str, **kwargs):
    torch.manual_seed(0)
    return build_segmentor(**{**TINY, "head": "mask2former", "rein": {"token_length": 8}, **kwargs}, method=method)


def test_the_table_holds_every_method_and_nothing_else():
    assert set(METHODS) == set(choices(Method))
    defaults = ModelConfig()
    sections = {f.name for f in dataclasses.fields(defaults) if dataclasses.is_dataclass(getattr(defaults, f.name))}
    families = {spec.family for spec in BACKBONES.values()}
    for name, spec in METHODS.items():
        assert spec.section is None or spec.section in sections, name
        assert spec.slot.isidentifier() and not hasattr(FrozenBackbone, spec.slot), name  # a free attribute name
        assert set(spec.refused) <= families and set(spec.families) == families - set(spec.refused), name
    assert [name for name, spec in METHODS.items() if spec.trains_backbone] == ["full"]
    assert [name for name, spec in METHODS.items() if spec.rein_queries] == ["rein"]
    assert [name for name, spec in METHODS.items() if spec.converts_official] == ["rein"]
    assert METHODS["rein"].slot == "reins"  # the official name: every Rein checkpoint's backbone.reins.* keys
    # a slot's name alone never exempts its parameters from weight decay (only "reins.scale", Rein's scale, is)
    assert not any(key in f"backbone.{spec.slot}.weight" for spec in METHODS.values() for key in NO_DECAY_KEYS)


@pytest.mark.parametrize("method", list(METHODS))
def test_each_methods_declared_properties_hold_for_the_model_it_builds(method, tmp_path):
    spec = METHODS[method]
    model = tiny(method)
    body = model.backbone
    # the slot holds the adapter, and names every backbone key outside the timm model
    assert body.adapter is getattr(body, spec.slot) and body.adapter_slot == spec.slot
    outside = {k for k in model.state_dict() if k.startswith("backbone.") and not k.startswith("backbone.vit.")}
    assert all(k.startswith(f"backbone.{spec.slot}.") for k in outside)
    assert bool(outside) == (method in ("rein", "adaptformer", "vpt"))  # the methods with adapter parameters
    # what trains: the pretrained weights only when the method trains the backbone; what the method adds inside
    # the timm model (LoRA) only when it attaches something
    pretrained = {n: p.requires_grad for n, p in body.vit.named_parameters() if ".lora_" not in n}
    assert set(pretrained.values()) == {spec.trains_backbone}
    added = [n for n, p in body.vit.named_parameters() if ".lora_" in n]
    assert bool(added) == (method == "lora") and (spec.attach is not None or not added)
    assert all(p.requires_grad for p in body.adapter.parameters())
    # the queries: Rein's, with the link on; else the head learns its own
    _, queries = body(torch.randn(1, 3, 64, 64))
    assert (queries is not None) == spec.rein_queries
    assert hasattr(model.head, "query_feat") == (not spec.rein_queries)
    unlinked = tiny(method, rein={"token_length": 8, "link": False})
    assert hasattr(unlinked.head, "query_feat") and unlinked.backbone(torch.randn(1, 3, 64, 64))[1] is None
    # the checkpoint stores the backbone when it trains (the backbone of a pretrained model is otherwise the Hub's)
    model.config = dataclasses.replace(model.config, pretrained=True)
    path = save_checkpoint(model, tmp_path / "ckpt")
    assert json.loads((path / "config.json").read_text())["backbone_in_checkpoint"] == spec.trains_backbone
    card = (path / "README.md").read_text()
    assert ("fine-tuned)" in card) == spec.trains_backbone and ("frozen)" in card) != spec.trains_backbone


@pytest.mark.parametrize("method", [name for name, spec in METHODS.items() if spec.section])
def test_the_settings_of_a_method_are_its_config_section_checked_by_name(method):
    section = METHODS[method].section
    first = dataclasses.fields(getattr(ModelConfig(), section))[0].name  # token_length, rank, bottleneck, length
    with pytest.raises(ReinError, match=rf"model\.{section}\.{first} = 0 is invalid"):
        tiny(method, **{section: {first: 0}})


@pytest.mark.parametrize("method", list(METHODS))
def test_each_method_builds_on_its_families_and_refuses_the_others_naming_them(method):
    spec = METHODS[method]
    for backbone, kwargs in FAMILIES.items():
        family = BACKBONES[backbone].family
        indices = None if family == "convnext" else [0, 1, 2, 3]
        build = dict(crop_size=64, backbone_kwargs=kwargs, feature_indices=indices, head="fpn", method=method)
        if family in spec.families:
            assert build_segmentor(backbone, **build).backbone.adapter_slot == spec.slot
            assert backbone in supported_backbones(method)
            continue
        supported = ", ".join(supported_backbones(method))
        assert backbone not in supported_backbones(method)
        with pytest.raises(ReinError) as error:
            build_segmentor(backbone, **build)
        why, where = spec.refused[family], f"{method} runs on {supported}"
        assert str(error.value) == f"method {method} does not run on backbone {backbone} ({why}); {where}"


def test_convnext_keeps_one_adapter_per_stage_in_the_slot():
    model = build_segmentor("convnext-l", crop_size=64, backbone_kwargs=FAMILIES["convnext-l"])
    assert isinstance(model.backbone.adapter, torch.nn.ModuleList) and len(model.backbone.adapter) == 4
    assert model.backbone.adapter is model.backbone.reins
    assert "backbone.reins.3.learnable_tokens_a" in model.state_dict()


def test_settings_are_the_config_keys_and_former_spellings_name_the_right_one():
    model = build_segmentor(**TINY, rein={"rank": 4}, lora=LoRAConfig(rank=2))
    assert model.config.rein == ReinConfig(rank=4) and model.config.lora == LoRAConfig(rank=2)
    assert build_segmentor(**TINY, rein=ReinConfig(rank=4), lora={"rank": 2}).config == model.config
    assert model.backbone.reins.learnable_tokens_a.shape[-1] == 4
    assert model.config.pretrained is False and model.num_classes == 19  # a backbone name: random, 19 classes
    assert build_segmentor(**TINY, classes=["sky", "ground"]).num_classes == 2
    configured = build_segmentor(ModelConfig(**{**TINY, "pretrained": False, "num_classes": 3}), head_channels=8)
    assert configured.config.head_channels == 8 and configured.num_classes == 3
    for wrong, right in [
        ({"lora_rank": 4}, 'lora={"rank": 4}'),
        ({"token_length": 8}, 'rein={"token_length": 8}'),
        ({"vpt_length": 5}, 'vpt={"length": 5}'),
        ({"adaptformer_bottleneck": 8}, 'adaptformer={"bottleneck": 8}'),
        ({"rank": 4}, 'rein={"rank": 4} or lora={"rank": 4}'),
    ]:
        key = next(iter(wrong))
        with pytest.raises(ReinError, match=rf"no keyword {key}; .*model\.\* configuration keys: {re.escape(right)}$"):
            build_segmentor(**TINY, **wrong)
    with pytest.raises(ReinError, match=r'unknown config key "model.heads" \(did you mean "model.head"\?\)'):
        build_segmentor(**TINY, heads="fpn")
    with pytest.raises(ReinError, match=r"model.lora.rank must be int, got 'wide'"):
        build_segmentor(**TINY, lora={"rank": "wide"})
    with pytest.raises(ReinError, match=r"model.rein is a section; give its keys"):
        build_segmentor(**TINY, rein=LoRAConfig())
    with pytest.raises(ReinError, match="takes a ModelConfig or a backbone name"):
        build_segmentor(TINY)


def test_the_public_call_of_the_install_check_builds():
    with torch.device("meta"):
        model = build_segmentor("dinov2-s", head="mask2former", pretrained=False)
    assert model.config.backbone == "dinov2-s" and model.backbone.reins.learnable_tokens_a.shape == (12, 100, 16)


# ----------------------------------------------------------------------------- method names in one place


def method_name_comparisons(source: str) -> list[int]:
    """Lines comparing a method name: with a string literal (``method == "rein"``, ``method in ("lora", "vpt")``,
    ``case "full"``), with a module constant (``method in PEFT_METHODS``), or a table row picked by its literal
    name (``METHODS["rein"]``)."""
    names = set(choices(Method))

    def literal(node: ast.AST) -> bool:
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return any(literal(e) for e in node.elts)
        return isinstance(node, ast.Constant) and node.value in names

    def is_method(node: ast.AST) -> bool:
        return (isinstance(node, ast.Attribute) and node.attr == "method") or (
            isinstance(node, ast.Name) and node.id == "method"
        )

    def constant(node: ast.AST) -> bool:
        return isinstance(node, ast.Name) and node.id.isupper() and node.id != "METHODS"

    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            parts = [node.left, *node.comparators]
            if any(literal(p) for p in parts) or (any(is_method(p) for p in parts) and any(constant(p) for p in parts)):
                lines.append(node.lineno)
        elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "METHODS":
            if literal(node.slice):
                lines.append(node.lineno)
        elif isinstance(node, ast.MatchValue) and literal(node.value):
            lines.append(node.lineno)
    return lines


def test_the_check_finds_each_kind_of_method_name_comparison():
    for code in [
        'cfg.method == "rein"',
        'x = "full" != model_config.method',
        'if cfg.method in ("lora", "adaptformer"): pass',
        "if cfg.method in PEFT_METHODS: pass",
        "trains = method not in TRAINED",
        'spec = METHODS["vpt"]',
        'match cfg.method:\n    case "frozen":\n        pass',
    ]:
        assert method_name_comparisons(code), code
    for code in ['cfg.head != "mask2former"', "METHODS[cfg.method].trains_backbone", "method in METHODS"]:
        assert not method_name_comparisons(code), code


def test_no_module_but_the_table_compares_method_names():
    table = ROOT / "rein_cli" / "models" / "methods.py"
    found = {
        str(path.relative_to(ROOT)): lines
        for path in sorted((ROOT / "rein_cli").rglob("*.py"))
        if path != table and (lines := method_name_comparisons(path.read_text(encoding="utf-8")))
    }
    assert found == {}, f"ask rein_cli.models.methods.METHODS instead: {found}"
