"""Damaged datasets: meta/info.json fields, parquet files, actions, states, images, paths, splits."""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

from .case import Case, Ctx
from .damage import (
    DATA_FILE,
    EPISODES_FILE,
    INFO_FILE,
    TASKS_FILE,
    drop_column,
    duplicate_rows,
    edit_table,
    episode_rows,
    first_row,
    frame_bytes,
    garbage,
    info_del,
    info_set,
    png,
    png_with_size,
    replace_column,
    set_frame,
    set_rows,
    symlink_loop,
    truncate,
)

# A short training run: a dataset problem must stop it before the first step.
TRAIN = ("train", "--preset", "tiny", "--data", "{ds}", "--out", "{out}", "--train.steps", "3")
# Long enough for a finite-loss guard to give up on a run that cannot produce a finite loss.
TRAIN_LONG = ("train", "--preset", "tiny", "--data", "{ds}", "--out", "{out}", "--train.steps", "30")
EVAL = ("eval", "--run", "{run}")

NAN, INF = math.nan, math.inf
EXTRAS_FILE = "meta/vla_align/episodes.parquet"  # our seed / success / env_task beside LeRobot's meta/episodes
FEATURE_SPEC = "features/action/info/vla_align.action_spec"


def case(
    id: str,
    keywords: tuple[str, ...],
    damage: Callable[[Path], object],
    fixture: str = "data",
    argv: tuple[str, ...] = TRAIN,
    why: str = "",
    **kwargs: object,
) -> Case:
    """A dataset case: copy ``fixture``, damage it, run ``argv`` with ``{ds}`` = the damaged copy."""

    def setup(ctx: Ctx) -> None:
        ds = ctx.use(fixture)
        ctx.values["ds"] = str(ds)
        damage(ds)

    return Case(f"dataset/{id}", "dataset", argv, keywords, setup, why, **kwargs)  # type: ignore[arg-type]


def _write(rel: str, text: str) -> Callable[[Path], object]:
    return lambda ds: (ds / rel).write_text(text)


def _remove(rel: str) -> Callable[[Path], object]:
    def go(ds: Path) -> None:
        p = ds / rel
        shutil.rmtree(p) if p.is_dir() else p.unlink()

    return go


def _make_dir(rel: str) -> Callable[[Path], object]:
    def go(ds: Path) -> None:
        _remove(rel)(ds)
        (ds / rel).mkdir()

    return go


def _info_cases() -> list[Case]:
    i = "info.json"
    return [
        case("info-not-json", (i,), _write(INFO_FILE, "{ not json"), why="meta/info.json is not JSON"),
        case("info-empty", (i,), _write(INFO_FILE, ""), why="meta/info.json is empty"),
        case("info-a-list", (i,), _write(INFO_FILE, "[1, 2]"), why="meta/info.json is a JSON list"),
        case("info-missing", (i,), _remove(INFO_FILE), why="meta/info.json deleted"),
        case("info-a-directory", (i,), _make_dir(INFO_FILE), why="meta/info.json is a directory"),
        case("info-binary", (i,), lambda ds: (ds / INFO_FILE).write_bytes(b"\xff\xfe\x00garbage"), why="not UTF-8"),
        case("codebase-v2", ("codebase_version",), info_set("codebase_version", "v2.1"), why="older layout"),
        case("codebase-missing", ("codebase_version",), info_del("codebase_version")),
        case("codebase-number", ("codebase_version",), info_set("codebase_version", 3.0)),
        case("fps-string", ("fps",), info_set("fps", "ten"), why="finding 9: fps as a string"),
        case("fps-zero-continuous", ("fps",), info_set("fps", 0), "cont", why="finding 9: ZeroDivisionError"),
        case("fps-zero-discrete", ("fps",), info_set("fps", 0)),
        case("fps-negative", ("fps",), info_set("fps", -10), "cont"),
        case("fps-null", ("fps",), info_set("fps", None)),
        case("fps-nan", ("fps",), info_set("fps", NAN), "cont"),
        case("fps-inf", ("fps",), info_set("fps", INF), "cont"),
        case("fps-bool", ("fps",), info_set("fps", True)),
        case("fps-list", ("fps",), info_set("fps", [10])),
        case("fps-missing", ("fps",), info_del("fps")),
        case("features-list", ("features",), info_set("features", []), why="finding 9: features as a list"),
        case("features-string", ("features",), info_set("features", "observation.image")),
        case("features-empty", ("features",), info_set("features", {})),
        case("features-missing", ("features",), info_del("features")),
        case("image-feature-string", ("observation.image",), info_set("features/observation.image", "image")),
        case("image-dtype-number", ("observation.image",), info_set("features/observation.image/dtype", 7)),
        case("image-shape-letters", ("shape",), info_set("features/observation.image/shape", ["a", "b", 3])),
        case("image-shape-string", ("shape",), info_set("features/observation.image/shape", "28x28x3")),
        case("image-shape-2d", ("shape",), info_set("features/observation.image/shape", [28, 28])),
        case("image-shape-negative", ("shape",), info_set("features/observation.image/shape", [-28, 28, 3])),
        case("image-shape-zero", ("shape",), info_set("features/observation.image/shape", [0, 28, 3])),
        case("image-shape-float", ("shape",), info_set("features/observation.image/shape", [28.5, 28, 3])),
        case("image-shape-other-size", ("info.json",), info_set("features/observation.image/shape", [32, 32, 3])),
        case(
            "image-shape-huge",
            ("shape|info.json",),
            info_set("features/observation.image/shape", [50000, 50000, 3]),
            why="info.json claims 50000x50000 frames: the reader must not allocate them",
            subprocess=True,
            memory_gb=8.0,
        ),
        case(
            "state-shape-letters", ("observation.state",), info_set("features/observation.state/shape", ["x"]), "cont"
        ),
        case("splits-a-list", ("splits",), info_set("splits", ["train", "val", "test"])),
        case("splits-bad-range", ("split",), info_set("splits/train", "a:b")),
        case("splits-number", ("split",), info_set("splits/train", 24)),
        case("splits-reversed", ("split",), info_set("splits/train", "24:0")),
        case("splits-no-train", ("in no split",), info_del("splits/train")),
        case("splits-past-the-end", ("split",), info_set("splits/train", "0:99"), why="episodes 44..98 missing"),
        case("splits-negative", ("split",), info_set("splits/train", "-5:24")),
        case("splits-overlap", ("split",), info_set("splits/val", "20:32"), why="val overlaps train: a leak"),
        case(
            "episodes-outside-splits",
            ("split",),
            info_set("splits/train", "0:20"),
            why="finding 10: episodes 20..23 are in no split and silently dropped",
        ),
        case("total-episodes-string", ("total_episodes",), info_set("total_episodes", "many")),
        case("total-episodes-negative", ("total_episodes",), info_set("total_episodes", -1)),
        case("total-episodes-wrong", ("total_episodes",), info_set("total_episodes", 50), why="44 on disk"),
        case("total-frames-string", ("total_frames",), info_set("total_frames", "x")),
        case("total-tasks-negative", ("total_tasks",), info_set("total_tasks", -3)),
        case("chunks-size-zero", ("chunks_size",), info_set("chunks_size", 0)),
        case("chunks-size-string", ("chunks_size",), info_set("chunks_size", "big")),
        case("robot-type-number", ("robot_type",), info_set("robot_type", 42)),
        case("vla-align-a-list", ("vla_align",), info_set("vla_align", [])),
        case("action-kind-unknown", ("kind",), info_set("vla_align/action_spec/kind", "analog")),
        case("num-actions-zero", ("num_actions",), info_set("vla_align/action_spec/num_actions", 0)),
        case("num-actions-string", ("num_actions",), info_set("vla_align/action_spec/num_actions", "four")),
        case(
            "num-actions-too-few",
            ("action",),
            info_set("vla_align/action_spec/num_actions", 2),
            why="finding 4: action ids 2 and 3 are >= num_actions",
        ),
        case("action-dim-negative", ("dim",), info_set("vla_align/action_spec/dim", -1), "cont"),
        case("action-dim-wrong", ("dim|action",), info_set("vla_align/action_spec/dim", 5), "cont"),
        case("action-names-number", ("names",), info_set("vla_align/action_spec/names", 5), "cont"),
        case(
            "feature-action-spec-bad",
            ("num_actions",),
            lambda ds: (info_del("vla_align")(ds), info_set(f"{FEATURE_SPEC}/num_actions", "four")(ds)),
            why="the copy of the action spec that LeRobot's tools keep, read once info.json lost 'vla_align'",
        ),
    ]


def _data_path_cases() -> list[Case]:
    def outside(ds: Path) -> None:  # a valid copy of the data file outside the dataset root
        target = ds.parent / "outside" / "chunk-000"
        target.mkdir(parents=True)
        shutil.copy(ds / DATA_FILE, target / "file-000.parquet")

    def escape(ds: Path) -> None:
        outside(ds)
        set_key_info(ds, "data_path", "../outside/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet")

    def absolute(ds: Path) -> None:
        outside(ds)
        set_key_info(
            ds, "data_path", str(ds.parent / "outside" / "chunk-{chunk_index:03d}/file-{file_index:03d}.parquet")
        )

    k = ("data_path",)
    return [
        case("data-path-escapes-root", k, escape, why="finding 7: reads parquet files outside the dataset"),
        case("data-path-absolute", k, absolute, why="finding 7: an absolute path outside the dataset"),
        case("data-path-etc-passwd", k, info_set("data_path", "/etc/passwd"), why="finding 7: opens /etc/passwd"),
        case("data-path-positional", k, info_set("data_path", "data/{0}.parquet"), why="finding 7: IndexError"),
        case("data-path-unknown-field", k, info_set("data_path", "data/{nosuch}.parquet"), why="finding 7"),
        case(
            "data-path-attribute",
            k,
            info_set("data_path", "data/chunk-{chunk_index.__class__.__name__}/file-{file_index:03d}.parquet"),
            why="finding 7: attribute lookups in the template are evaluated",
        ),
        case("data-path-bad-format-spec", k, info_set("data_path", "data/chunk-{chunk_index:zz}/f.parquet")),
        case("data-path-number", k, info_set("data_path", 5)),
        case("data-path-empty", k, info_set("data_path", "")),
    ]


def set_key_info(ds: Path, key: str, value: object) -> None:
    info_set(key, value)(ds)


def _parquet_cases() -> list[Case]:
    def action_as_string(ds: Path) -> None:
        edit_table(
            ds / DATA_FILE,
            lambda t: replace_column(t, "action", [str(v) for v in t["action"].to_pylist()], pa.string()),
        )

    def images_as_binary(ds: Path) -> None:
        def edit(t: pa.Table) -> pa.Table:
            values = [v["bytes"] for v in t["observation.image"].to_pylist()]
            return replace_column(t, "observation.image", values, pa.binary())

        edit_table(ds / DATA_FILE, edit)

    p = ("parquet",)
    return [
        case("data-garbage", p, lambda ds: garbage(ds / DATA_FILE)),
        case("data-truncated", p, lambda ds: truncate(ds / DATA_FILE)),
        case("data-empty-file", p, lambda ds: truncate(ds / DATA_FILE, 0.0)),
        case("data-missing", ("file-000.parquet",), _remove(DATA_FILE)),
        case("data-a-directory", p, _make_dir(DATA_FILE)),
        case("data-symlink-loop", ("symlink|loop",), lambda ds: symlink_loop(ds / DATA_FILE), why="finding 10"),
        case("episodes-garbage", p, lambda ds: garbage(ds / EPISODES_FILE)),
        case("episodes-truncated", p, lambda ds: truncate(ds / EPISODES_FILE)),
        case("episodes-missing", ("episodes",), _remove("meta/episodes")),
        case("tasks-garbage", ("tasks.parquet",), lambda ds: garbage(ds / TASKS_FILE)),
        case("tasks-truncated", ("tasks.parquet",), lambda ds: truncate(ds / TASKS_FILE)),
        case("tasks-missing", ("tasks.parquet",), _remove(TASKS_FILE)),
        case("extras-garbage", ("episodes.parquet",), lambda ds: garbage(ds / EXTRAS_FILE)),
        case("extras-seed-null", ("seed",), lambda ds: set_rows(ds / EXTRAS_FILE, "seed", None, first_row)),
        case(
            "extras-duplicated-row",
            ("episode_index",),
            lambda ds: duplicate_rows(ds / EXTRAS_FILE, first_row),
            why="two seeds claimed for one episode",
        ),
        case("info-symlink-loop", ("symlink|loop",), lambda ds: symlink_loop(ds / INFO_FILE), why="finding 10"),
        case("meta-symlink-loop", ("symlink|loop",), lambda ds: symlink_loop(ds / "meta"), why="finding 10"),
        case("data-no-action-column", ("action",), lambda ds: drop_column(ds / DATA_FILE, "action")),
        case(
            "data-no-image-column", ("observation.image",), lambda ds: drop_column(ds / DATA_FILE, "observation.image")
        ),
        case("data-no-task-index", ("task_index",), lambda ds: drop_column(ds / DATA_FILE, "task_index")),
        case("data-action-strings", ("action",), action_as_string),
        case("data-images-as-binary", ("observation.image",), images_as_binary),
        case("episodes-no-length", ("length",), lambda ds: drop_column(ds / EPISODES_FILE, "length")),
        case(
            "episodes-length-wrong",
            ("frames|length",),
            lambda ds: set_rows(ds / EPISODES_FILE, "length", 99, first_row),
        ),
        case("episodes-length-negative", ("length",), lambda ds: set_rows(ds / EPISODES_FILE, "length", -1, first_row)),
        case("episodes-file-index-missing", ("file-007|file_index",), lambda ds: _loc(ds, "data/file_index", 7)),
        case("episodes-chunk-index-negative", ("chunk",), lambda ds: _loc(ds, "data/chunk_index", -1)),
        case(
            "episodes-duplicated-row",
            ("duplicat|twice|more than once",),
            lambda ds: duplicate_rows(ds / EPISODES_FILE, first_row),
            why="finding 10: a duplicated episode row is loaded twice",
        ),
        case(
            "data-duplicated-frames",
            ("frame",),
            lambda ds: duplicate_rows(ds / DATA_FILE, episode_rows(0)),
        ),
        case(
            "data-episode-relabelled",
            ("episode",),
            lambda ds: set_rows(ds / DATA_FILE, "episode_index", 999, episode_rows(0)),
            why="episode 0's frames carry another episode_index",
        ),
        case(
            "task-index-out-of-range",
            ("task",),
            lambda ds: set_rows(ds / DATA_FILE, "task_index", 99, episode_rows(0)),
            why="finding 10: reported as an empty instruction",
        ),
        case("task-index-negative", ("task",), lambda ds: set_rows(ds / DATA_FILE, "task_index", -1, episode_rows(0))),
        case("instruction-empty", ("instruction|task",), lambda ds: set_rows(ds / TASKS_FILE, "task", "", first_row)),
        case(
            "instruction-blank", ("instruction|task",), lambda ds: set_rows(ds / TASKS_FILE, "task", "   ", first_row)
        ),
        case("instruction-null", ("instruction|task",), lambda ds: set_rows(ds / TASKS_FILE, "task", None, first_row)),
        case(
            "tasks-duplicate-index",
            ("task_index|task",),
            lambda ds: set_rows(ds / TASKS_FILE, "task_index", 1, first_row),
            why="two task strings claim task_index 1; task 0 has none",
        ),
    ]


def _loc(ds: Path, column: str, value: int) -> None:
    set_rows(ds / EPISODES_FILE, column, value, first_row)


def _action_cases() -> list[Case]:
    f64, i64 = pa.float64(), pa.int64()
    d = DATA_FILE

    def disc(value: object, type_: pa.DataType = i64) -> Callable[[Path], object]:
        return lambda ds: set_rows(ds / d, "action", value, first_row, type_)

    def cont(column: str, value: object) -> Callable[[Path], object]:
        def go(ds: Path) -> None:
            set_rows(ds / d, column, value, first_row)

        return go

    def ragged(ds: Path) -> None:
        edit_table(
            ds / d,
            lambda t: replace_column(
                t,
                "action",
                [[*v, 0.0] if i == 0 else v for i, v in enumerate(t["action"].to_pylist())],
                pa.list_(pa.float32()),
            ),
        )

    def wider(ds: Path) -> None:
        edit_table(
            ds / d,
            lambda t: replace_column(
                t, "action", [[*v, 0.0] for v in t["action"].to_pylist()], pa.list_(pa.float32(), 3)
            ),
        )

    a, s = ("action",), ("observation.state",)
    return [
        case("discrete-action-nan", a, disc(NAN, f64), why="finding 4: NaN becomes INT64_MIN, clamped to action 0"),
        case("discrete-action-inf", a, disc(INF, f64), why="finding 4"),
        case("discrete-action-negative", a, disc(-1), why="finding 4: clamped to action 0"),
        case("discrete-action-too-large", a, disc(4), why="finding 4: id == num_actions, IndexError"),
        case("discrete-action-huge", a, disc(10**12), why="finding 4"),
        case("discrete-action-fraction", a, disc(2.5, f64), why="a float id"),
        case("discrete-action-null", a, disc(None), why="a missing action"),
        case("babyai-action-too-large", a, disc(7), "baby", why="finding 4: BabyAI has 7 actions (0..6)"),
        case("babyai-action-negative", a, disc(-3), "baby", why="finding 4"),
        case("continuous-action-nan", a, cont("action", [NAN, 0.5]), "cont"),
        case("continuous-action-inf", a, cont("action", [INF, 0.5]), "cont"),
        case("continuous-action-minus-inf", a, cont("action", [0.5, -INF]), "cont"),
        case("continuous-action-null", a, cont("action", None), "cont"),
        case(
            "continuous-action-huge",
            ("action|finite|nan",),
            cont("action", [3e38, 0.5]),
            "cont",
            TRAIN_LONG,
            why="finding 3: one finite but huge action turns the weights into NaN",
        ),
        case("continuous-action-ragged", a, ragged, "cont"),
        case("continuous-action-wider", ("action|dim",), wider, "cont", why="3 values per row, the spec says 2"),
        case("state-nan", s, cont("observation.state", [NAN, 0.0, 0.0]), "cont", why="finding 10: reported as actions"),
        case("state-inf", s, cont("observation.state", [0.0, INF, 0.0]), "cont"),
        case(
            "state-huge",
            ("observation.state|finite|nan",),
            cont("observation.state", [3e38, 0.0, 0.0]),
            "cont",
            (*TRAIN_LONG, "--model.policy.enabled", "true"),
            why="a huge state with a state-conditioned policy",
        ),
    ]


def _image_cases() -> list[Case]:
    def png_bomb(ds: Path) -> None:
        set_frame(ds, png_with_size(frame_bytes(ds), 50000, 50000))

    def corrupt_idat(ds: Path) -> None:
        data = bytearray(frame_bytes(ds))
        data[60:80] = b"\x00" * 20
        set_frame(ds, bytes(data))

    frame = ("frame|image",)
    return [
        case("image-garbage-bytes", frame, lambda ds: set_frame(ds, b"not an image")),
        case("image-no-bytes", frame, lambda ds: set_frame(ds, None)),
        case("image-empty-bytes", frame, lambda ds: set_frame(ds, b"")),
        case("image-truncated-png", frame, lambda ds: set_frame(ds, frame_bytes(ds)[:40])),
        case("image-corrupt-idat", frame, corrupt_idat),
        case(
            "image-other-size", ("info.json",), lambda ds: set_frame(ds, png(32, 32)), why="32x32 frame, info says 28"
        ),
        case("image-one-pixel", ("info.json",), lambda ds: set_frame(ds, png(1, 1))),
        case(
            "image-png-bomb-header",
            ("info.json|50000",),
            png_bomb,
            why="finding 8: a header claiming 50000x50000 drives memory to 10 GB before failing",
            subprocess=True,
            memory_gb=6.0,
        ),
    ]


def _place_cases() -> list[Case]:
    def make_file(ds: Path) -> None:
        shutil.rmtree(ds)
        ds.write_text("a file, not a dataset\n")

    def empty(ds: Path) -> None:
        shutil.rmtree(ds)
        ds.mkdir()

    return [
        case("dataset-missing", ("does not exist|not found",), lambda ds: shutil.rmtree(ds)),
        case("dataset-is-a-file", ("info.json|dataset",), make_file),
        case("dataset-empty-directory", ("info.json",), empty),
        case("dataset-symlink-loop", ("symlink|loop",), symlink_loop, why="finding 10: reported as 'does not exist'"),
        case(
            "dataset-is-a-run",
            ("info.json|dataset",),
            lambda ds: None,
            "run",
            why="--data names a run directory",
        ),
    ]


def _eval_cases() -> list[Case]:
    """Damage in the data files (not meta/, which a run's dataset fingerprint covers) met by ``eval``, which
    reads the test split (episodes 32..43) instead of the training split."""

    def on_run(id: str, keywords: tuple[str, ...], damage: Callable[[Path], object], why: str = "") -> Case:
        def setup(ctx: Ctx) -> None:
            ctx.use("run")
            damage(ctx.path("data"))

        return Case(f"dataset/eval-{id}", "dataset", EVAL, keywords, setup, why)

    last = episode_rows(43)
    return [
        on_run("test-action-too-large", ("action",), lambda ds: set_rows(ds / DATA_FILE, "action", 9, last)),
        on_run("test-image-garbage", ("frame|image",), lambda ds: set_frame(ds, b"garbage", -1)),
        on_run("test-action-negative", ("action",), lambda ds: set_rows(ds / DATA_FILE, "action", -2, last)),
        on_run("test-action-nan", ("action",), lambda ds: set_rows(ds / DATA_FILE, "action", NAN, last, pa.float64())),
        on_run("test-task-index-out-of-range", ("task",), lambda ds: set_rows(ds / DATA_FILE, "task_index", 77, last)),
        on_run("test-frames-missing", ("frame|length",), lambda ds: _drop_rows(ds / DATA_FILE, last)),
        on_run("data-file-truncated", ("parquet",), lambda ds: truncate(ds / DATA_FILE)),
    ]


def _drop_rows(file: Path, rows: Callable[[pa.Table], list[int]]) -> None:
    def edit(t: pa.Table) -> pa.Table:
        gone = set(rows(t)[:2])
        return t.take(pa.array([i for i in range(t.num_rows) if i not in gone]))

    edit_table(file, edit)


def dataset_cases() -> list[Case]:
    return [
        *_info_cases(),
        *_data_path_cases(),
        *_parquet_cases(),
        *_action_cases(),
        *_image_cases(),
        *_place_cases(),
        *_eval_cases(),
        *_dedup_cases(),
    ]


def _dedup_cases() -> list[Case]:
    """`vla-align data dedup` and `data split --exclude` on bad inputs: nothing is written, nothing replaced."""

    def make_file(ds: Path) -> None:
        shutil.rmtree(ds)
        ds.write_text("a file, not a dataset\n")

    def foreign(ds: Path) -> None:
        (ds.parent / "notes.json").write_text('{"mine": 1}\n')

    def splits_file(ds: Path) -> None:
        (ds.parent / "x.json").write_text('{"format": "vla-align-splits", "version": 1}\n')

    dedup = ("data", "dedup", "{ds}")
    return [
        case("dedup-dataset-is-a-file", ("info.json|dataset",), make_file, argv=dedup),
        case(
            "dedup-out-inside-dataset",
            ("refusing", "inside"),
            lambda ds: None,
            argv=(*dedup, "--out", "{ds}/meta/dups.json"),
            why="the dedup file would be written into the dataset it reads",
        ),
        case(
            "dedup-overwrite-foreign-file",
            ("not a vla-align dedup file",),
            foreign,
            argv=(*dedup, "--out", "{root}/notes.json", "--overwrite"),
            why="--overwrite must only ever replace a dedup file",
        ),
        case(
            "split-exclude-not-a-dedup-file",
            ("dedup or vote",),
            splits_file,
            argv=("data", "split", "{ds}", "--exclude", "{root}/x.json"),
            why="--exclude takes dedup / vote files; a split file is not one",
        ),
    ]
