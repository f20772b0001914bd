"""The PEFT baselines (LoRA, AdaptFormer, VPT): parameter counts, what trains, start, checkpoints, CLI, errors."""

import json
import sys

import pytest
import torch

from rein_cli.config import NO_DECAY_KEYS, load_config
from rein_cli.engine.checkpoint import init_from_checkpoint, load_segmentor, save_checkpoint
from rein_cli.engine.optim import build_optimizer, param_groups
from rein_cli.errors import ReinError
from rein_cli.models.methods import METHODS as TABLE
from rein_cli.models.methods import supported_backbones
from rein_cli.models.segmentor import build_segmentor, count_parameters, trainable_state_dict

from .helpers import FAMILIES, TINY, errors, rein, sets, tiny_family

METHODS = ("lora", "adaptformer", "vpt")
# The paper's Table 3 counts (0.79M / 1.18M, 3.17M, 3.69M), exactly.
PAPER_COUNTS = {
    ("dinov2-l", "lora"): 786_432,
    ("dinov2-l", "adaptformer"): 3_171_840,
    ("dinov2-l", "vpt"): 3_686_400,
    ("eva02-l", "lora"): 1_179_648,
    ("eva02-l", "adaptformer"): 3_171_840,
    ("eva02-l", "vpt"): 3_686_400,
}


def tiny(method: str, seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    return build_segmentor(**{**TINY, **kwargs}, method=method)


def method_names(model) -> set[str]:
    """The trainable parameters that are not the head's."""
    return {n for n, p in model.named_parameters() if p.requires_grad and not n.startswith("head.")}


@pytest.mark.parametrize(("backbone", "method"), sorted(PAPER_COUNTS))
def test_parameter_counts_are_the_papers(backbone, method):
    with torch.device("meta"):  # the real geometry without weights or memory
        model = build_segmentor(backbone, method=method, crop_size=512)
    backbone_trainable = count_parameters(model, True) - count_parameters(model.head, True)
    assert backbone_trainable == PAPER_COUNTS[backbone, method]
    assert count_parameters(model.head, True) == count_parameters(model.head)  # the whole head trains
    assert model.head.query_feat.weight.shape == (100, 256)  # learned queries, as for the frozen baseline
    if method == "lora":
        projections = ("qkv",) if backbone == "dinov2-l" else ("q_proj", "k_proj", "v_proj")
        assert {n.split(".")[-4] for n in method_names(model)} == set(projections)


@pytest.mark.parametrize("method", METHODS)
def test_training_changes_only_the_method_and_the_head(method):
    model = tiny(method)
    names = method_names(model)
    prefix = {"adaptformer": "backbone.adaptformer.", "vpt": "backbone.prompts."}.get(method)
    assert names and all((".lora_" in n) if method == "lora" else n.startswith(prefix) for n in names)
    assert set(trainable_state_dict(model)) == names | {"head." + n for n, _ in model.head.named_parameters()}
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    assert all(n.startswith("backbone.vit.") for n in frozen) and frozen
    trained = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    optimizer = build_optimizer(model, lr=1e-2, weight_decay=0.05, betas=(0.9, 0.999), eps=1e-8)
    model.train()
    for _ in range(2):
        optimizer.zero_grad()
        loss = model.training_loss(torch.randn(2, 3, 64, 64), torch.randint(0, 19, (2, 64, 64)))["loss_ce"]
        loss.backward()
        optimizer.step()
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]) and p.grad is None, n
        else:
            assert not torch.equal(p, trained[n]), n  # every parameter of the method (and the head) moved


@pytest.mark.parametrize("method", METHODS)
def test_lora_and_adaptformer_start_as_the_frozen_backbone_and_vpt_does_not(method):
    frozen, model = tiny("frozen"), tiny(method)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want, _ = frozen.backbone(x)
        got, queries = model.backbone(x)
    assert queries is None
    same = [torch.equal(a, b) for a, b in zip(got, want, strict=True)]
    assert all(same) if method in ("lora", "adaptformer") else not any(same)


def test_every_method_changes_the_backbone_once_trained():
    x = torch.randn(1, 3, 64, 64)
    frozen, _ = tiny("frozen").backbone(x)
    for method in ("lora", "adaptformer"):
        model = tiny(method)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n or ".up." in n:
                    p.normal_()
            got, _ = model.backbone(x)
        assert not torch.equal(got[3], frozen[3]), method


@pytest.mark.parametrize("method", METHODS)
def test_activation_checkpointing_gives_identical_gradients(method):
    model = tiny(method, lora={"dropout": 0.0})
    with torch.no_grad():  # a backbone the method changes, so that every adapter parameter gets a gradient
        for n, p in model.named_parameters():
            if "lora_B" in n or ".up." in n:
                p.normal_()
    x, labels = torch.randn(2, 3, 64, 64), torch.randint(0, 19, (2, 64, 64))
    grads = []
    for checkpointing in (False, True):
        model.zero_grad()
        model.backbone.checkpointing = checkpointing
        model.train().training_loss(x, labels)["loss_ce"].backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert set(grads[0]) == set(grads[1])
    for n in grads[0]:
        assert torch.equal(grads[0][n], grads[1][n]), n
    assert any(g.abs().sum() > 0 for n, g in grads[0].items() if not n.startswith("head."))


def test_adaptformer_adds_the_bottleneck_of_the_mlp_input_to_the_block_output():
    model = tiny("adaptformer")
    body, adapters = model.backbone, model.backbone.adaptformer
    torch.manual_seed(3)
    with torch.no_grad():
        for up in adapters.up:
            up.weight.normal_()
            up.bias.normal_()
    vit, x = body.vit, torch.randn(1, 3, 64, 64)
    tokens = vit.norm_pre(vit._pos_embed(vit.patch_embed(x)))
    with torch.no_grad():
        for i, block in enumerate(vit.blocks):
            h = tokens + block.ls1(block.attn(block.norm1(tokens)))  # what the MLP branch's norm2 receives
            out = h + block.ls2(block.mlp(block.norm2(h)))
            tokens = out + 0.1 * adapters.up[i](torch.relu(adapters.down[i](h)))
        adapters._inputs.clear()  # the hand-run blocks fed the hooks too
        features, _ = body(x)
    expected = tokens[:, 1:].transpose(1, 2).reshape(1, 32, 4, 4)
    torch.testing.assert_close(
        torch.nn.functional.interpolate(expected, scale_factor=0.5, mode="bilinear"), features[3]
    )
    assert not adapters._inputs  # nothing held after the pass


def test_vpt_prompts_are_inserted_after_the_prefix_tokens_and_removed_after_each_block():
    model = tiny_family("dinov2-s-reg4", method="vpt", vpt={"length": 3})
    body, prompts = model.backbone, model.backbone.prompts.vpt_prompts
    assert body.num_prefix_tokens == 5 and prompts.shape == (4, 3, 32)
    bound = (6 / (3 * 16 * 16 + 32)) ** 0.5
    assert prompts.abs().max() <= bound and prompts.abs().max() > 0.9 * bound
    vit, x = body.vit, torch.randn(1, 3, 64, 64)
    tokens = vit.norm_pre(vit._pos_embed(vit.patch_embed(x)))
    outputs = []
    with torch.no_grad():
        for i, block in enumerate(vit.blocks):
            out = block(torch.cat([tokens[:, :5], prompts[i][None], tokens[:, 5:]], dim=1))
            tokens = torch.cat([out[:, :5], out[:, 8:]], dim=1)
            outputs.append(tokens)
        features, _ = body(x)
    torch.testing.assert_close(features[2], outputs[2][:, 5:].transpose(1, 2).reshape(1, 32, 4, 4), rtol=0, atol=0)


def test_eva_rope_leaves_the_prompts_unrotated_and_rotates_every_patch_token_as_before():
    model = tiny_family("eva02-l", method="vpt", vpt={"length": 3})
    body = model.backbone
    vit, P = body.vit, body.num_prefix_tokens
    x, (Hp, Wp), kwargs = body._embed(torch.randn(2, 3, 64, 64))
    block, prompts = vit.blocks[0], body.prompts.vpt_prompts[0]
    with torch.no_grad():
        got = body._block(block, 0, x, kwargs)
        # timm's own way of leaving tokens unrotated: count the prompts as prefix tokens of the attention
        block.attn.num_prefix_tokens = P + 3
        try:
            out = block(torch.cat([x[:, :P], prompts.expand(2, -1, -1), x[:, P:]], dim=1), rope=kwargs["rope"])
        finally:
            block.attn.num_prefix_tokens = P
        unrotated = block(torch.cat([x[:, :P], prompts.expand(2, -1, -1), x[:, P:]], dim=1), rope=None)
    want = torch.cat([out[:, :P], out[:, P + 3 :]], dim=1)
    assert got.shape == x.shape == (2, P + Hp * Wp, 32)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(got, torch.cat([unrotated[:, :P], unrotated[:, P + 3 :]], dim=1))  # rope is applied


def test_rein_frozen_and_full_outputs_are_unchanged_by_the_before_block_step(tiny_model):
    # the Rein block loop run by hand, as before the step existed: block, then Rein
    vit, x = tiny_model.backbone.vit, torch.randn(1, 3, 64, 64)
    assert tiny_model.backbone.reins.before(x, 0) is x
    tokens = vit.norm_pre(vit._pos_embed(vit.patch_embed(x)))
    with torch.no_grad():
        for i, block in enumerate(vit.blocks):
            tokens = tiny_model.backbone.reins(block(tokens), i)
        features, _ = tiny_model.backbone(x)
    want = tokens[:, 1:].transpose(1, 2).reshape(1, 32, 4, 4)
    assert torch.equal(torch.nn.functional.interpolate(want, scale_factor=0.5, mode="bilinear"), features[3])


@pytest.mark.parametrize("method", ["lora", "adaptformer"])
def test_sam_runs_lora_and_adaptformer(method):
    model = tiny_family("sam-h", method=method)
    frozen = tiny_family("sam-h", method="frozen")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        got, _ = model.backbone(x)
        want, _ = frozen.backbone(x)
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    assert method_names(model)


def test_unsupported_pairs_are_refused_naming_what_is_supported():
    assert "sam-h" not in supported_backbones("vpt") and "sam-h" in supported_backbones("lora")
    assert "convnext-l" not in supported_backbones("adaptformer") and "convnext-l" in supported_backbones("rein")
    assert {name for name, spec in TABLE.items() if spec.refused} == set(METHODS)  # the others run everywhere
    with pytest.raises(ReinError, match=r"method vpt does not run on backbone sam-h \(its windowed .*vpt runs on dino"):
        build_segmentor("sam-h", method="vpt", crop_size=64, backbone_kwargs=FAMILIES["sam-h"])
    for method in METHODS:
        with pytest.raises(
            ReinError, match=rf"method {method} does not run on backbone convnext-l \(it is not a ViT\)"
        ):
            build_segmentor("convnext-l", method=method, crop_size=64, backbone_kwargs=FAMILIES["convnext-l"])


def test_missing_peft_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` raises ImportError
    with pytest.raises(ReinError, match=r"method lora needs the peft library.*pip install 'rein-cli\[lora\]'"):
        tiny("lora")
    tiny("adaptformer")  # the other methods never import it


def test_settings_are_config_keys_checked_by_name():
    cfg = load_config(overrides=["model.method=lora", "model.lora.rank=4", "model.vpt.length=10"])
    assert (cfg.model.lora.rank, cfg.model.lora.alpha, cfg.model.vpt.length) == (4, 8, 10)
    assert (cfg.model.adaptformer.bottleneck, cfg.model.adaptformer.scale, cfg.model.lora.dropout) == (64, 0.1, 0.0)
    with pytest.raises(ReinError, match=r"model.lora.rank = 0 is invalid; it must be >= 1"):
        load_config(overrides=["model.lora.rank=0"])
    with pytest.raises(ReinError, match=r"model.adaptformer.bottleneck must be int, got 'wide'"):
        load_config(overrides=["model.adaptformer.bottleneck=wide"])
    with pytest.raises(ReinError, match=r"model.vpt.length = -1 is invalid"):
        load_config(overrides=["model.vpt.length=-1"])
    with pytest.raises(ReinError, match=r"model.lora.dropout = 1.0 is invalid; it must be in \[0, 1\)"):
        load_config(overrides=["model.lora.dropout=1.0"])
    with pytest.raises(ReinError, match=r"model.vpt.length = 0 is invalid"):
        tiny("vpt", vpt={"length": 0})
    model = tiny("vpt", vpt={"length": 7})
    assert model.backbone.prompts.vpt_prompts.shape == (4, 7, 32) and model.config.vpt.length == 7


def test_lora_dropout_follows_the_train_mode_and_scaling_is_alpha_over_rank():
    model = tiny("lora", lora={"rank": 4, "alpha": 8, "dropout": 0.5})
    qkv = model.backbone.vit.blocks[0].attn.qkv
    assert qkv.scaling["default"] == 2.0 and qkv.lora_A["default"].weight.shape == (4, 32)
    model.train()
    assert not model.backbone.vit.training and qkv.lora_dropout["default"].training
    model.eval()
    assert not qkv.lora_dropout["default"].training


def test_optimizer_groups_of_the_methods():
    lora = tiny("lora")
    groups = param_groups(lora, 0.05, 0.1)
    lora_ids = {id(p) for n, p in lora.named_parameters() if ".lora_" in n}
    for group in groups:  # LoRA's A and B: the full learning rate and weight decay, as any Linear
        if lora_ids & {id(p) for p in group["params"]}:
            assert (group["lr_mult"], group["weight_decay"]) == (1.0, 0.05)
    assert "vpt_prompts" in NO_DECAY_KEYS
    vpt = tiny("vpt")
    (prompt_group,) = [
        g for g in param_groups(vpt, 0.05) if any(p is vpt.backbone.prompts.vpt_prompts for p in g["params"])
    ]
    assert prompt_group["weight_decay"] == 0.0  # like Rein's tokens
    adapt = tiny("adaptformer")
    down = adapt.backbone.adaptformer.down[0].weight
    (down_group,) = [g for g in param_groups(adapt, 0.05) if any(p is down for p in g["params"])]
    assert down_group["weight_decay"] == 0.05


@pytest.mark.parametrize("method", METHODS)
def test_checkpoints_save_load_initialise_and_name_the_method(method, tmp_path):
    from rein_cli.engine.checkpoint import model_card

    model = tiny(method)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn_like(p))  # trained-looking weights, the backbone changed by the method
    path = save_checkpoint(model, tmp_path / "ckpt")
    x = torch.randn(1, 3, 64, 64)
    loaded = load_segmentor(path)
    assert loaded.config.method == method
    assert torch.equal(loaded.semantic_scores(x), model.eval().semantic_scores(x))
    other = tiny(method, seed=5)
    init_from_checkpoint(other, path)
    assert torch.equal(other.eval().semantic_scores(x), model.semantic_scores(x))
    config = json.loads((path / "config.json").read_text())
    assert (
        f"- method: `{method}`" in model_card(config, repo_id="me/x")
        and f"`{method}`" in (path / "README.md").read_text()
    )
    with pytest.raises(ReinError, match="does not fit this model"):
        init_from_checkpoint(tiny("rein"), path)


def test_lora_is_added_after_the_pretrained_weights_load(tmp_path):
    from safetensors.torch import save_file

    weights = tmp_path / "backbone.safetensors"  # a local backbone file: as the Hub's, loaded before LoRA is added
    source = tiny("frozen")
    save_file({k: v.contiguous() for k, v in source.backbone.vit.state_dict().items()}, str(weights))
    model = tiny("lora", seed=1, pretrained=True, weights=str(weights))
    assert torch.equal(
        model.backbone.vit.blocks[0].attn.qkv.base_layer.weight, source.backbone.vit.blocks[0].attn.qkv.weight
    )
    state = trainable_state_dict(model)
    assert {k for k in state if k.startswith("backbone.")} == method_names(model)


def test_rein_train_with_a_method_from_the_command_line(synthetic_root, tmp_path):
    out = tmp_path / "run"
    args = sets(f"data.root={synthetic_root}", "data.eval=[]", "model.vpt.length=5")
    assert rein("train", *args, "--method", "vpt", "--iters", 2, "--out", out, "--no-progress") == 0
    config = json.loads((out / "checkpoints" / "last" / "config.json").read_text())
    assert config["model"]["method"] == "vpt" and config["model"]["vpt"] == {"length": 5}
    assert load_segmentor(out / "checkpoints" / "last").backbone.prompts.vpt_prompts.shape == (4, 5, 32)


@pytest.mark.parametrize("method", ["lora", "adaptformer"])
def test_rein_train_with_activation_checkpointing(synthetic_root, tmp_path, method):
    out = tmp_path / "run"
    args = sets(f"data.root={synthetic_root}", "data.eval=[]", "train.checkpointing=true", "model.lora.rank=2")
    assert rein("train", *args, "--method", method, "--iters", 2, "--out", out, "--no-progress") == 0
    loaded = load_segmentor(out / "checkpoints" / "last")
    assert loaded.config.method == method and method_names(loaded)


def test_rein_train_refuses_an_unsupported_pair(synthetic_root, tmp_path, capsys):
    args = sets(f"data.root={synthetic_root}", "data.eval=[]", "model.backbone=convnext-l", "model.backbone_kwargs={}")
    assert rein("train", *args, "--method", "lora", "--iters", 1, "--out", tmp_path / "run", "--no-progress") != 0
    assert "method lora does not run on backbone convnext-l" in errors(capsys)


def test_rein_convert_refuses_the_other_methods(tmp_path):
    from rein_cli.engine.convert import convert_official_checkpoint, to_official

    state = {to_official(k): v.detach() for k, v in trainable_state_dict(tiny_family("dinov2-s")).items()}
    settings = {"method": "lora", "backbone_kwargs": FAMILIES["dinov2-s"], "feature_indices": [0, 1, 2, 3]}
    with pytest.raises(ReinError, match="converts to method rein, not lora"):
        convert_official_checkpoint(state, "dinov2-s", tmp_path / "ckpt", crop_size=64, settings=settings)
    assert not (tmp_path / "ckpt").exists()
