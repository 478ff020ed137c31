"""The simulator seam: everything a benchmark brings, behind one interface and one registry.

A simulator (BabyAI, Meta-World, or one of your own) is a subclass of :class:`Simulator` registered
in :data:`SIMULATORS` under the name that its generated datasets carry as ``source`` in the
``vla_align`` section of ``meta/info.json``. Through it, the rest of vla-align

* generates demonstrations (``vla-align data <name>`` and the ``data`` section of a run config),
* rebuilds the held-out episodes of a run (from the dataset on disk, or from the dataset description
  stored in the run's config.json, so a checkpoint alone evaluates),
* plays them in closed loop (a batched ``rollout`` of the policy over many episodes at once), with
  the modality ablations the simulator supports, and summarises the results into metrics,
* replays failed episodes against the simulator's expert for the report's three-view panels.

A dataset whose description names no registered simulator (imported data) is a first-class case:
:func:`simulator_for` returns ``None``; retrieval, trajectory metrics and the report work and the
closed loop says that there is none. Nothing outside this registry compares a simulator's name.

To add a simulator, subclass :class:`Simulator`, implement the abstract methods and decorate the
class with ``@SIMULATORS.register("name")``; importing the module registers it (see the guide's
"extending vla-align" section and ``tests/reach_sim.py`` for a complete example).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch

from ..atomic import write_text
from ..config import check_float, check_int, check_seed, check_split
from ..data.hard_negatives import HardNegativeConfig
from ..errors import ConfigError, UserError
from ..registry import Registry

if TYPE_CHECKING:
    from ..data.lerobot import FrameTable
    from ..diagnostics.three_view import ThreeView
    from ..model import TriModalModel
    from ..physics import PhysicalLimits


@dataclass
class SimConfig:
    episodes: int = 0  # closed-loop episodes from the held-out split (0 = none); per task where a simulator has tasks
    split: str = "test"  # the split whose episode seeds are rolled out
    envs: int = 64  # environments stepped together (one batched policy call per step)
    workers: int = 1  # processes the episodes are split over (each steps its own pool of envs)
    max_steps: int = 0  # per-episode cap; 0 = the level's own limit
    ablations: bool = True  # also run the simulator's modality ablations (shuffled instruction / image)
    seed: int = 0  # which held-out episodes (when fewer than the split holds) and shuffles

    def __post_init__(self) -> None:
        check_int("eval.sim.episodes", self.episodes, 0, why="closed-loop episodes, 0 = none")
        check_split("eval.sim.split", self.split)
        check_int("eval.sim.envs", self.envs, 1, why="environments stepped together")
        check_int("eval.sim.workers", self.workers, 1, 64, why="processes the episodes are split over")
        check_int("eval.sim.max_steps", self.max_steps, 0, why="per-episode cap, 0 = the level's own limit")
        check_seed("eval.sim.seed", self.seed)


@dataclass
class EpisodeResult:
    seed: int
    level: str  # the simulator's level / task of the episode
    instruction: str  # the real instruction (not the shuffled one)
    success: bool
    steps: int
    expert_steps: int  # the expert's length on this seed (0 when unknown)
    actions: list[Any] = field(default_factory=list)  # what the policy did (ids or vectors), to replay it

    @property
    def spl(self) -> float:
        return float(self.success) * self.expert_steps / max(self.expert_steps, self.steps)


EPISODES_FILE = "eval_episodes.jsonl"


def write_episodes(path: str | Path, results: Sequence[EpisodeResult]) -> None:
    """One JSON line per closed-loop episode (seed, level, instruction, success, steps, actions), atomically."""
    write_text(path, "".join(json.dumps(asdict(r)) + "\n" for r in results))


def read_episodes(path: str | Path) -> list[EpisodeResult]:
    out = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        try:
            out.append(EpisodeResult(**json.loads(line)))
        except (ValueError, TypeError) as exc:
            raise UserError(f"{path}: line {n} is not an episode record ({exc}); re-run `vla-align eval`") from None
    return out


@dataclass
class EvalContext:
    """What a simulator knows about the run it evaluates.

    ``info`` is the dataset description (the ``vla_align`` section of ``meta/info.json``, stored in
    the run's config.json as ``dataset.info``); ``table`` is the held-out split's demonstrations when
    the dataset is on disk, ``None`` for a checkpoint evaluated alone.
    """

    info: dict[str, Any]
    image_size: int
    split: str = "test"
    limits: PhysicalLimits | None = None  # the run's limits on the commanded actions (continuous runs)
    table: FrameTable | None = None
    cache: dict[str, Any] = field(default_factory=dict)  # a simulator's work shared across ablations

    @classmethod
    def from_run(cls, dataset: Mapping[str, Any], split: str, table: FrameTable | None = None) -> EvalContext:
        """The context of a run from its config.json ``dataset`` section."""
        from ..physics import PhysicalLimits

        raw = dataset.get("physical_limits")
        limits = PhysicalLimits.from_dict(raw, "config.json dataset.physical_limits") if raw else None
        info = dict(dataset.get("info") or {})
        size = int((dataset.get("image_shape") or [0])[0] or info.get("image_size") or 0)
        if size <= 0:
            raise UserError("config.json: the dataset section has no image_shape; was this run trained by vla-align?")
        return cls(info, size, split, limits, table)

    @classmethod
    def from_table(cls, table: FrameTable, split: str) -> EvalContext:
        return cls(dict(table.info.get("vla_align") or {}), table.image_shape[0], split, None, table)


class Simulator(ABC):
    """One benchmark: demonstrations, held-out episodes, closed-loop rollouts, summaries, failure replays."""

    name: ClassVar[str] = ""  # set by SIMULATORS.register: the dataset's ``source``
    summary: ClassVar[str] = ""  # one line for `vla-align data --help` and `vla-align doctor`
    requires: ClassVar[tuple[str, str]] = ("", "")  # (pip extra, module it provides) or empty
    default_image_size: ClassVar[int] = 64
    closed_loop_validation: ClassVar[bool] = False  # model selection may run closed-loop checks

    # --- demonstrations -------------------------------------------------------------------------

    @abstractmethod
    def add_data_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The simulator's own flags of ``vla-align data <name>`` (``--out``, ``--seed``, ``--image-size``
        and ``--overwrite`` are added for every simulator)."""

    @abstractmethod
    def generate_from_args(self, args: argparse.Namespace) -> str:
        """Run ``vla-align data <name>`` with its parsed flags; returns the line to print."""

    @abstractmethod
    def generate(self, data: DataConfig, out: Path, overwrite: bool = False) -> Path:
        """Write the dataset ``data`` describes to ``out`` (LeRobot v3.0 layout); returns its path."""

    @abstractmethod
    def describes(self, data: DataConfig, info: Mapping[str, Any]) -> bool:
        """Whether the dataset with ``meta/info.json`` ``info`` is the one ``data`` would generate."""

    # --- closed loop ----------------------------------------------------------------------------

    def ablations(self, ctx: EvalContext) -> tuple[str, ...]:
        """The modality ablations this simulator can run in ``ctx`` (besides ``"none"``)."""
        return ("shuffle_text",)

    def check_policy(self, model: TriModalModel) -> None:
        """Raise :class:`UserError` when ``model`` cannot act in this simulator."""
        if model.policy is None:
            raise UserError("this run has no policy head; train with --model.policy.enabled true to act")

    @abstractmethod
    def episode_specs(self, ctx: EvalContext, n: int, seed: int, ablation: str) -> list[Any]:
        """``n`` held-out episodes of ``ctx.split`` to play (per task where the simulator has tasks),
        deterministic for ``seed``; ``ablation`` decides what the policy is shown."""

    @abstractmethod
    def rollout(
        self,
        model: TriModalModel,
        specs: list[Any],
        ctx: EvalContext,
        cfg: SimConfig,
        ablation: str,
        label: str | None,
    ) -> list[EpisodeResult]:
        """Play every spec once with the model's policy, batched; one result per spec, in order.
        ``ablation`` is the one ``specs`` were made for; ``label`` names the progress output
        (``None``: silent)."""

    @abstractmethod
    def summarize(self, results: list[EpisodeResult], ctx: EvalContext, prefix: str = "sim") -> dict[str, float]:
        """``<prefix>/success_rate``, ``<prefix>/episodes``, ``<prefix>/mean_steps`` and breakdowns
        (breakdown keys contain ``/by_``)."""

    # --- report ---------------------------------------------------------------------------------

    def three_views(
        self,
        model: TriModalModel,
        ctx: EvalContext,
        episodes: list[EpisodeResult],
        projection: np.ndarray | None,
        limit: int,
    ) -> list[ThreeView]:
        """Three-view panels of the worst failed ``episodes``, replayed against the expert.
        ``projection`` maps image embeddings to action channels (the health report's fit)."""
        return []


SIMULATORS: Registry[type[Simulator]] = Registry("simulator")


def register_simulator(name: str) -> Any:
    """Class decorator: register a :class:`Simulator` subclass under ``name`` (its datasets' ``source``)."""

    def decorator(cls: type[Simulator]) -> type[Simulator]:
        cls.name = name
        SIMULATORS.register(name)(cls)
        return cls

    return decorator


def get_simulator(name: str) -> Simulator:
    """The registered simulator ``name`` (unknown names raise with the list of known ones)."""
    return SIMULATORS.get(name)()


def simulator_for(info: Mapping[str, Any]) -> Simulator | None:
    """The simulator that generated the dataset described by ``info`` (its ``vla_align`` section),
    or ``None`` for data no registered simulator made (imported or foreign datasets)."""
    source = info.get("source")
    if isinstance(source, str) and source in SIMULATORS:
        return get_simulator(source)
    return None


def evaluate_closed_loop(
    sim: Simulator,
    model: TriModalModel,
    ctx: EvalContext,
    cfg: SimConfig,
    progress: bool = True,
    episodes_out: list[EpisodeResult] | None = None,
) -> dict[str, float]:
    """Closed-loop metrics on ``cfg.episodes`` held-out episodes, plus the simulator's ablations
    (``ablation/<name>/sim/...`` and ``.../success_drop``; breakdowns only for the real condition).

    ``episodes_out``, when given, receives the per-episode results of the unablated condition.
    """
    sim.check_policy(model)
    model.eval()
    out: dict[str, float] = {}
    ablations = ("none", *sim.ablations(ctx)) if cfg.ablations else ("none",)
    for ablation in ablations:
        specs = sim.episode_specs(ctx, cfg.episodes, cfg.seed, ablation)
        label = f"{sim.name} {ablation}" if progress else None
        results = sim.rollout(model, specs, ctx, cfg, ablation, label)
        if ablation == "none" and episodes_out is not None:
            episodes_out.extend(results)
        prefix = "sim" if ablation == "none" else f"ablation/{ablation}/sim"
        summary = sim.summarize(results, ctx, prefix)
        if ablation != "none":
            summary = {k: v for k, v in summary.items() if "/by_" not in k}
        out.update(summary)
    for ablation in ablations[1:]:
        key = f"ablation/{ablation}/sim/success_rate"
        if key in out and "sim/success_rate" in out:
            out[f"ablation/{ablation}/sim/success_drop"] = out["sim/success_rate"] - out[key]
    return out


def evaluate_policy(
    model: TriModalModel,
    table: FrameTable,
    cfg: SimConfig,
    progress: bool = True,
    episodes_out: list[EpisodeResult] | None = None,
) -> dict[str, float]:
    """:func:`evaluate_closed_loop` in the simulator that generated ``table`` (its ``cfg.split`` held out)."""
    sim = simulator_for(table.info.get("vla_align") or {})
    if sim is None:
        raise UserError(f"{table.root}: no registered simulator generated this dataset; there is no closed loop")
    return evaluate_closed_loop(sim, model, EvalContext.from_table(table, cfg.split), cfg, progress, episodes_out)


# --- what a run's data is -------------------------------------------------------------------------


@dataclass
class DataConfig:
    """Where a run's data comes from: ``path`` (an existing dataset, or where to generate one) and
    the simulator ``source`` that generates it when it is not on disk."""

    source: str = "babyai"  # a registered simulator (`vla-align data --help` lists them)
    levels: tuple[str, ...] = ("GoToLocal",)  # the simulator's levels / tasks (BabyAI levels, Meta-World tasks)
    # episodes per split (per task and split for simulators with tasks, e.g. Meta-World)
    train_episodes: int = 5000
    val_episodes: int = 500  # validation split (model selection)
    test_episodes: int = 1000  # test split (held out for evaluation)
    image_size: int = 56  # pixels per side of the camera frames
    seed: int = 0  # seed of the generated demonstrations (episode seeds)
    path: str = ""  # dataset directory; empty = a cache directory named after the fields above
    splits: str = ""  # split file (`vla-align data split`); empty = <path>.splits.json if it exists, 'info' = info.json
    cameras: tuple[str, ...] = ()  # camera features read, tiled side by side; empty = the first in info.json
    align: str = ""  # camera-action offsets (`vla-align data align`): a file, 'auto' = <path>.align.json, '' = off
    align_mode: Literal["shift", "weight"] = "shift"  # shift: correct each episode's offset; weight: only down-weight
    align_max_ms: float = 150.0  # samples whose (residual) offset exceeds this are down-weighted (chapter 5.7)
    align_weight: float = 0.0  # sampling weight of those samples in training (0 = dropped)
    exclude: tuple[
        str, ...
    ] = ()  # dedup / vote files (`vla-align data dedup|vote`): their flagged episodes leave train
    hard_negatives: HardNegativeConfig = field(default_factory=HardNegativeConfig)  # semantic hard negatives (5.7)

    def __post_init__(self) -> None:
        if self.source not in SIMULATORS:
            raise ConfigError(
                f"data.source {self.source!r} is not a registered simulator; use one of {', '.join(SIMULATORS.names())}"
            )
        if not self.levels:
            raise ConfigError("data.levels is empty; name at least one level / task, e.g. GoToLocal")
        for name in ("train_episodes", "val_episodes", "test_episodes"):
            check_int(f"data.{name}", getattr(self, name), 1, why="every split needs an episode")
        check_int("data.image_size", self.image_size, 28, 224, why="pixels per side of the camera frames")
        check_seed("data.seed", self.seed)
        if self.align_mode not in ("shift", "weight"):
            raise ConfigError(f"data.align_mode {self.align_mode!r}: use shift or weight")
        check_float("data.align_max_ms", self.align_max_ms, 0.0, lo_open=True, why="milliseconds, the chapter uses 150")
        check_float("data.align_weight", self.align_weight, 0.0, 1.0, why="a sampling weight, 0 = drop, 1 = keep")
        if not all(isinstance(f, str) and f for f in self.exclude):
            raise ConfigError(f"data.exclude {list(self.exclude)} must be paths of dedup / vote files")
        if len(set(self.cameras)) != len(self.cameras) or not all(isinstance(c, str) and c for c in self.cameras):
            raise ConfigError(
                f"data.cameras {list(self.cameras)} must name each camera once, e.g. observation.images.top"
            )

    @property
    def episodes(self) -> dict[str, int]:
        return {"train": self.train_episodes, "val": self.val_episodes, "test": self.test_episodes}

    def frame_options(self, path: Path) -> dict[str, Any]:
        """How ``read_dataset`` reads the frames of the dataset at ``path``: the chosen ``cameras`` and, for
        a dataset vla-align did not write (a LeRobot recording), ``image_size`` so that every camera is
        box-resized to it while decoding; a vla-align dataset is read at the size it was written at."""
        from ..data.info_checks import ACTION_SPEC_KEY
        from ..data.lerobot import read_info

        info = read_info(path)
        ours = "vla_align" in info or ACTION_SPEC_KEY in ((info["features"].get("action") or {}).get("info") or {})
        return {"cameras": self.cameras, "image_size": None if ours else self.image_size}

    def read(self, path: Path, split: str | None, max_episodes: int | None = None) -> FrameTable:
        """The episodes of ``split`` as the run sees them: :func:`vla_align.data.view.read_view`
        (``data.align`` / ``data.exclude`` applied)."""
        from ..data.view import read_view

        return read_view(self, path, split, max_episodes)

    def resolved_path(self, cache_root: Path = Path("datasets")) -> Path:
        """The dataset directory: ``path`` if set, else ``datasets/<source>-<levels>-<hash>``."""
        if self.path:
            return Path(self.path)
        spec = json.dumps([self.source, list(self.levels), self.episodes, self.image_size, self.seed], sort_keys=True)
        digest = hashlib.sha1(spec.encode()).hexdigest()[:8]
        return cache_root / f"{self.source}-{'+'.join(self.levels)}-{digest}"


def default_split_counts(n: int, val: int | None, test: int | None) -> dict[str, int]:
    """Episodes per split from ``vla-align data`` flags: validation 10 % and test 20 % of ``n`` by default."""
    return {
        "train": n,
        "val": val if val is not None else max(1, n // 10),
        "test": test if test is not None else max(1, n // 5),
    }


# --- what a spawned evaluation worker needs -------------------------------------------------------


def inference_autocast(device: torch.device | str) -> contextlib.AbstractContextManager[Any]:
    """The precision of evaluation, closed loop and report: bf16 autocast on CUDA, plain float32
    elsewhere (CPU results stay exactly those computed without any autocast)."""
    if torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def model_parts(model: TriModalModel) -> dict[str, Any]:
    """What a spawned worker needs to rebuild ``model``: config, action spec, state size, CPU weights
    and the device the model runs on (a worker runs its copy there too)."""
    from .. import config as config_lib

    return {
        "model_config": config_lib.to_dict(model.cfg),
        "action_spec": model.action_spec.to_dict(),
        "state_dim": model.state_dim,
        "weights": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "device": str(next(model.parameters()).device),
    }


def rebuild_model(
    model_config: dict[str, Any],
    action_spec: dict[str, Any],
    state_dim: int,
    weights: dict[str, torch.Tensor],
    device: str = "cpu",
) -> TriModalModel:
    """The inverse of :func:`model_parts`, in a worker process: one torch thread, eval mode, on ``device``."""
    from .. import config as config_lib
    from ..data.episode import ActionSpec
    from ..model import ModelConfig

    torch.set_num_threads(1)
    model = config_lib.from_dict(ModelConfig, model_config).build(ActionSpec.from_dict(action_spec), state_dim)
    model.load_state_dict(weights)
    return model.to(device).eval()


def derange(texts: list[str], rng: np.random.Generator) -> list[str]:
    """A shuffle in which no episode keeps an instruction equal to its own (when possible)."""
    order = rng.permutation(len(texts))
    out = [texts[j] for j in order]
    for i in range(len(out)):
        if out[i] == texts[i]:
            for j in range(len(out)):
                if out[j] != texts[i] and out[i] != texts[j]:
                    out[i], out[j] = out[j], out[i]
                    break
    return out
