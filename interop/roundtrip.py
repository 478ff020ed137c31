"""Round trips between vla-align and LeRobot, each side running its own code in its own environment.

Runs in LeRobot's virtual environment (``make interop``). vla-align runs in its own: its CLI and
interop/vla_dump.py are started with a subprocess and hand their arrays over through .npz files.

1. ours -> LeRobot: datasets written by ``vla-align data`` (BabyAI, Meta-World) and by tests/synthetic.py
   are read by ``LeRobotDataset(repo_id, root=DIR)``; every frame's image, action, state, timestamp and
   task string is compared with what vla-align's own reader returns.
2. LeRobot -> ours: the datasets interop/make_fixtures.py wrote with LeRobot's writer are read by
   vla-align's reader (compared with what LeRobot's reader returned) and put through
   ``vla-align train --preset tiny``, ``eval`` and ``report``.
3. LeRobot's dataset tools on our dataset: split, delete episodes, merge, append an episode, rename a
   task; each result is read by both projects, checking task strings, the frames and actions against
   the source episodes, a non-empty meta/stats.json and our action vocabulary.

One summary table at the end; the exit status is 1 when any check found a mismatch or an error.

    python interop/roundtrip.py --vla-align-bin .venv/bin --work .interop/work --fixtures DIR
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from lerobot.datasets import dataset_tools
from lerobot.datasets.lerobot_dataset import LeRobotDataset

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VIDEO_TOLERANCE = 1.0  # mean |pixel difference| allowed for a video frame decoded by two readers


@dataclass
class Row:
    direction: str
    subject: str
    check: str
    n: int = 0
    bad: int = 0
    error: str = ""
    note: str = ""

    @property
    def status(self) -> str:
        return "ERROR" if self.error else ("MISMATCH" if self.bad else "ok")


ROWS: list[Row] = []


def add(direction: str, subject: str, check: str, n: int = 0, bad: int = 0, error: str = "", note: str = "") -> None:
    row = Row(direction, subject, check, n, bad, error, note)
    ROWS.append(row)
    detail = row.error or row.note
    print(f"  [{row.status:8}] {direction} | {subject} | {check}: {bad}/{n} mismatching  {detail}", flush=True)


def short(text: str, limit: int = 160) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    line = lines[-1] if lines else text
    return line if len(line) <= limit else line[: limit - 3] + "..."


# --- running vla-align in its own environment ----------------------------------------------------------


class VlaAlign:
    def __init__(self, bin_dir: Path, pythonpath: str | None) -> None:
        self.python = str(bin_dir / "python")
        self.env = dict(os.environ)
        for key in ("HF_HUB_OFFLINE", "HF_LEROBOT_HOME", "VIRTUAL_ENV", "PYTHONHOME"):
            self.env.pop(key, None)
        self.env["PYTHONPATH"] = pythonpath or ""

    def run(self, args: list[str], log: Path, timeout: float = 900) -> tuple[int, str]:
        """``python -m vla_align ARGS`` (or a script when ARGS[0] ends in .py); (exit code, output)."""
        cmd = [self.python, *(args if args[0].endswith(".py") else ["-m", "vla_align", *args])]
        t0 = time.time()
        try:
            p = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout, cwd=REPO)
            rc, out = p.returncode, p.stdout + p.stderr
        except subprocess.TimeoutExpired as e:
            rc, out = 124, f"{e.stdout or ''}{e.stderr or ''}\ntimed out after {timeout:.0f} s"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(f"$ {' '.join(cmd)}\n# rc={rc} in {time.time() - t0:.1f} s\n{out}")
        return rc, out

    def dump(self, dataset: Path, prefix: Path, split: str | None = None, cameras: list[str] | None = None) -> dict:
        """What vla-align's reader reads from ``dataset``: json metadata plus the arrays under "arrays"."""
        prefix.parent.mkdir(parents=True, exist_ok=True)
        args = [str(HERE / "vla_dump.py"), str(dataset), str(prefix)]
        args += ["--split", split] if split else []
        args += ["--cameras", *cameras] if cameras else []
        js, npz = Path(f"{prefix}.json"), Path(f"{prefix}.npz")
        for stale in (js, npz):  # from an earlier run
            stale.unlink(missing_ok=True)
        rc, out = self.run(args, Path(f"{prefix}.log"))
        if rc != 0 or not js.exists():
            return {"error": f"vla_dump exited {rc}: {short(out)}"}
        meta = json.loads(js.read_text())
        if not meta.get("error") and npz.exists():
            with np.load(npz) as z:
                meta["arrays"] = {k: z[k] for k in z.files}
        return meta


# --- reading with LeRobot ------------------------------------------------------------------------------


VIDEO_BACKEND = "pyav"  # LeRobot's torchcodec decoder needs FFmpeg's shared libraries installed system-wide


def torchcodec_problem() -> str:
    """Why LeRobot's default video decoder (torchcodec) cannot run here; "" when it can."""
    try:
        from torchcodec.decoders import VideoDecoder  # noqa: F401  (loads FFmpeg's shared libraries)
    except Exception as e:
        return f"{type(e).__name__}: {short(str(e), 120)}"
    return ""


def lerobot_read(root: Path, repo_id: str, backend: str = VIDEO_BACKEND) -> dict:
    """Every frame of the dataset at ``root`` as LeRobot's reader returns it (images as (H, W, 3) uint8)."""
    ds = LeRobotDataset(repo_id=repo_id, root=root, video_backend=backend)
    cams = list(ds.meta.camera_keys)
    out: dict[str, list] = {"action": [], "state": [], "timestamp": [], "episode_index": [], "frame_index": []}
    images: dict[str, list] = {c: [] for c in cams}
    tasks = []
    has_state = "observation.state" in ds.meta.features
    for i in range(len(ds)):
        item = ds[i]
        for c in cams:
            images[c].append((item[c].permute(1, 2, 0).numpy() * 255.0).round().clip(0, 255).astype(np.uint8))
        out["action"].append(item["action"].numpy())
        if has_state:
            out["state"].append(item["observation.state"].numpy())
        for k in ("timestamp", "episode_index", "frame_index"):
            out[k].append(item[k].numpy())
        tasks.append(item["task"])
    arrays = {k: np.stack(v) for k, v in out.items() if v}
    return {
        "arrays": arrays,
        "images": {c: np.stack(v) for c, v in images.items()},
        "cameras": cams,
        "video_keys": list(ds.meta.video_keys),
        "tasks": tasks,
        "num_episodes": ds.meta.total_episodes,
        "num_frames": len(ds),
        "dataset": ds,
    }


# --- comparing ------------------------------------------------------------------------------------------


def vla_rows(dump: dict) -> dict[tuple[int, int], int]:
    """(episode_index, frame_index) -> row of vla-align's arrays."""
    a = dump["arrays"]
    keys = {}
    for e, s, n in zip(a["episode_ids"], a["episode_start"], a["episode_length"], strict=True):
        for t in range(int(n)):
            keys[(int(e), t)] = int(s) + t
    return keys


def vla_tasks_per_row(dump: dict) -> list[str]:
    a = dump["arrays"]
    out: list[str] = []
    for text, n in zip(dump["instructions"], a["episode_length"], strict=True):
        out += [text] * int(n)
    return out


def camera_tiles(frames: np.ndarray, cameras: list[str], shape: tuple[int, int]) -> tuple[dict[str, np.ndarray], str]:
    """vla-align's frames split into its cameras: one camera, or several tiled side by side."""
    h, w = shape
    if frames.shape[1:3] == (h, w):
        return {cameras[0]: frames}, "" if len(cameras) == 1 else f"reader returned one camera of {len(cameras)}"
    if frames.shape[1] == h and frames.shape[2] == w * len(cameras):
        return {c: frames[:, :, k * w : (k + 1) * w] for k, c in enumerate(cameras)}, "cameras tiled side by side"
    return {}, f"frames are {tuple(frames.shape[1:])}, camera is {(h, w, 3)}"


def compare(
    direction: str,
    subject: str,
    ref: dict,
    ref_rows: list[tuple[int, int]],
    vla: dict,
    cameras: list[str],
    video: set[str],
    what: str = "LeRobot",
) -> None:
    """Compare reference arrays (``ref``: images, action, state, timestamp, tasks, in ``ref_rows`` order of
    (episode, frame)) with vla-align's dump, frame by frame; one Row per field."""
    if vla.get("error"):
        add(direction, subject, "vla-align reads it", 1, 1, error=short(vla["error"], 220))
        return
    keys = vla_rows(vla)
    a = vla["arrays"]
    rows = [keys.get(k) for k in ref_rows]
    missing = sum(r is None for r in rows) + max(0, len(keys) - len(ref_rows))
    add(
        direction,
        subject,
        "frames present (episode, frame)",
        len(ref_rows),
        missing,
        note=f"{what} {len(ref_rows)}, vla-align {len(keys)}",
    )
    pairs = [(i, r) for i, r in enumerate(rows) if r is not None]
    ri = np.array([i for i, _ in pairs], dtype=int)
    vi = np.array([r for _, r in pairs], dtype=int)
    if not len(pairs):
        return
    # images
    if cameras:
        h, w = ref["images"][cameras[0]].shape[1:3]
        tiles, how = camera_tiles(a["frames"], cameras, (h, w))
        for c in cameras:
            name = f"image {c}" + (" (video)" if c in video else "")
            if c not in tiles:
                add(direction, subject, name, len(pairs), len(pairs), error=how or "camera not returned by vla-align")
                continue
            x, y = ref["images"][c][ri].astype(np.int16), tiles[c][vi].astype(np.int16)
            diff = np.abs(x - y).reshape(len(pairs), -1)
            per_frame = diff.mean(1)
            bad = int((per_frame > VIDEO_TOLERANCE).sum()) if c in video else int((diff.max(1) > 0).sum())
            rule = f"mean |diff| > {VIDEO_TOLERANCE}" if c in video else "any pixel differs"
            add(
                direction,
                subject,
                name,
                len(pairs),
                bad,
                note=f"{rule}; mean {diff.mean():.3f} max {diff.max()} {how}".strip(),
            )
    # action
    ra, va = ref["action"][ri], a["actions"][vi]
    if va.ndim == 1 and ra.ndim == 2 and ra.shape[1] == 1:
        ra = ra[:, 0]
    if ra.shape != va.shape:
        add(
            direction,
            subject,
            "action",
            len(pairs),
            len(pairs),
            error=f"shape {what} {ra.shape} vs vla-align {va.shape}",
        )
    else:
        bad = int((ra != va).reshape(len(pairs), -1).any(1).sum())
        add(direction, subject, "action", len(pairs), bad, note=f"{what} {ra.dtype} / vla-align {va.dtype}, exact")
    # state
    if "state" in ref:
        if "state" not in a:
            add(direction, subject, "observation.state", len(pairs), len(pairs), error="vla-align returned no state")
        else:
            rs, vs = ref["state"][ri], a["state"][vi]
            bad = len(pairs) if rs.shape != vs.shape else int((rs != vs).reshape(len(pairs), -1).any(1).sum())
            add(direction, subject, "observation.state", len(pairs), bad, note="exact")
    elif "state" in a:
        add(
            direction,
            subject,
            "observation.state",
            len(pairs),
            0,
            note=f"only vla-align returns a state ({what} has none)",
        )
    # timestamp
    rt, vt = ref["timestamp"][ri].astype(np.float64).reshape(-1), a["timestamps"][vi].astype(np.float64)
    bad = int((np.abs(rt - vt) > 1e-5).sum())
    add(
        direction,
        subject,
        "timestamp",
        len(pairs),
        bad,
        note=f"|diff| <= 1e-5; vla-align: {vla.get('timestamps_source')}",
    )
    # task string
    vt_tasks = vla_tasks_per_row(vla)
    wrong = [(ref["tasks"][i], vt_tasks[r]) for i, r in pairs if ref["tasks"][i] != vt_tasks[r]]
    note = f"e.g. {what} {wrong[0][0]!r} vs vla-align {wrong[0][1]!r}" if wrong else ""
    add(direction, subject, "task string", len(pairs), len(wrong), note=note)


def lerobot_ref(lr: dict) -> tuple[dict, list[tuple[int, int]]]:
    a = lr["arrays"]
    ref = {"images": lr["images"], "action": a["action"], "timestamp": a["timestamp"], "tasks": lr["tasks"]}
    if "state" in a:
        ref["state"] = a["state"]
    rows = [(int(e), int(f)) for e, f in zip(a["episode_index"].reshape(-1), a["frame_index"].reshape(-1), strict=True)]
    return ref, rows


# --- 1. ours -> LeRobot ---------------------------------------------------------------------------------


def make_ours(vla: VlaAlign, work: Path) -> dict[str, Path]:
    """Our datasets, written by vla-align's own code (regenerated each run)."""
    ours = work / "ours"
    jobs = {
        "babyai": [
            "data",
            "babyai",
            "--episodes",
            "20",
            "--val-episodes",
            "4",
            "--test-episodes",
            "4",
            "--image-size",
            "32",
            "--seed",
            "0",
        ],
        "metaworld": [
            "data",
            "metaworld",
            "--tasks",
            "reach-v3",
            "--episodes-per-task",
            "3",
            "--val-episodes-per-task",
            "1",
            "--test-episodes-per-task",
            "1",
            "--max-steps",
            "30",
            "--image-size",
            "32",
            "--seed",
            "0",
        ],
    }
    made = {}
    for name, args in jobs.items():
        out = ours / name
        rc, log = vla.run([*args, "--out", str(out), "--overwrite"], work / "logs" / f"data-{name}.log")
        if rc != 0:
            add("1 ours->LeRobot", name, "vla-align data writes it", 1, 1, error=f"rc={rc}: {short(log)}")
        else:
            made[name] = out
    code = (
        "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[2]); "
        "from tests.synthetic import write_synthetic; "
        "write_synthetic(Path(sys.argv[1]), n_train=6, n_val=2, n_test=2, continuous=True, size=32)"
    )
    out = ours / "synthetic-continuous"
    shutil.rmtree(out, ignore_errors=True)
    script = work / "logs" / "write_synthetic.py"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(code.replace("; ", "\n") + "\n")
    rc, log = vla.run([str(script), str(out), str(REPO)], work / "logs" / "data-synthetic.log")
    if rc != 0:
        add(
            "1 ours->LeRobot",
            "synthetic-continuous",
            "tests/synthetic.py writes it",
            1,
            1,
            error=f"rc={rc}: {short(log)}",
        )
    else:
        made["synthetic-continuous"] = out
    return made


def ours_to_lerobot(vla: VlaAlign, work: Path, ours: dict[str, Path]) -> None:
    d = "1 ours->LeRobot"
    for name, root in ours.items():
        print(f"== {d}: {name}", flush=True)
        try:
            lr = lerobot_read(root, f"vla-align/{name}")
        except Exception as e:
            add(d, name, "LeRobotDataset opens it", 1, 1, error=f"{type(e).__name__}: {short(str(e), 200)}")
            (work / "logs" / f"lerobot-{name}.traceback").write_text(traceback.format_exc())
            continue
        add(d, name, "LeRobotDataset opens it", 1, 0, note=f"{lr['num_episodes']} episodes, {lr['num_frames']} frames")
        dump = vla.dump(root, work / "dumps" / f"ours-{name}")
        ref, rows = lerobot_ref(lr)
        compare(d, name, ref, rows, dump, lr["cameras"], set(lr["video_keys"]))


# --- 2. LeRobot -> ours ---------------------------------------------------------------------------------


def lerobot_to_ours(vla: VlaAlign, work: Path, fixtures: Path, train: list[str]) -> None:
    d = "2 LeRobot->ours"
    if not (fixtures / "made.json").exists():
        add(d, str(fixtures), "interop/make_fixtures.py wrote made.json", 1, 1, error="missing: did it crash?")
        return
    made = json.loads((fixtures / "made.json").read_text())
    for name, err in made.get("failed", {}).items():
        add(d, name, "LeRobot writes it", 1, 1, error=short(err, 200))
    for name in made.get("made", []):
        print(f"== {d}: {name}", flush=True)
        root = fixtures / name
        meta = json.loads((fixtures / f"{name}.expected.json").read_text())
        with np.load(fixtures / f"{name}.expected.npz") as z:
            exp = {k: z[k] for k in z.files}
        cams = meta["cameras"]
        ref = {
            "images": {c: exp[f"image/{c}"] for c in cams},
            "action": exp["action"],
            "state": exp["state"],
            "timestamp": exp["timestamp"],
            "tasks": meta["tasks_per_frame"],
        }
        rows = [
            (int(e), int(f))
            for e, f in zip(exp["episode_index"].reshape(-1), exp["frame_index"].reshape(-1), strict=True)
        ]
        video = set(cams) if meta["camera_dtype"] == "video" else set()
        dump = vla.dump(root, work / "dumps" / f"fixture-{name}")
        first = {**ref, "images": {cams[0]: ref["images"][cams[0]]}}
        compare(d, f"{name} (default read)", first, rows, dump, cams[:1], video)
        if len(cams) > 1:  # one camera at a time, then all tiled, when the reader can select cameras
            for label, chosen in [*((f"cameras={c}", [c]) for c in cams), ("cameras=all, reversed", cams[::-1])]:
                one = vla.dump(
                    root, work / "dumps" / f"fixture-{name}-{'-'.join(chosen)}".replace(".", "_"), cameras=chosen
                )
                if not one.get("error") and one.get("camera_param") is None:
                    add(d, f"{name} {label}", "camera selection", 1, 1, error="read_dataset has no camera parameter")
                    continue
                sub = {**ref, "images": {c: ref["images"][c] for c in chosen}}
                compare(d, f"{name} {label}", sub, rows, one, chosen, video)
        if video and meta.get("video_backend") != "torchcodec":
            # the same frames decoded by LeRobot's default decoder, torchcodec, against vla-align's PyAV decode
            problem = torchcodec_problem()
            if problem:
                add(
                    d,
                    f"{name} (LeRobot torchcodec)",
                    "decoded",
                    0,
                    0,
                    note=f"skipped, torchcodec cannot load: {problem}",
                )
            else:
                lr = lerobot_read(root, f"vla-align-interop/{name}", backend="torchcodec")
                ref_tc, rows_tc = lerobot_ref(lr)
                ref_tc["images"] = {cams[0]: ref_tc["images"][cams[0]]}
                compare(d, f"{name} (LeRobot torchcodec)", ref_tc, rows_tc, dump, cams[:1], video)
        if name in train:
            cli_chain(vla, work, d, name, root)


def cli_chain(vla: VlaAlign, work: Path, d: str, name: str, root: Path) -> None:
    """vla-align train (tiny) -> eval -> report on a dataset; each step's exit code and last line."""
    run = work / "runs" / name
    shutil.rmtree(run, ignore_errors=True)
    # LeRobot's info.json has only a "train" split; `vla-align data split` (when this vla-align has it)
    # writes a split file beside a copy of the dataset, so eval gets a held-out test split.
    rc, _ = vla.run(["data", "split", "--help"], work / "logs" / "cli-data-split-help.log")
    if rc == 0:
        copy = work / "cli-data" / name
        shutil.rmtree(copy, ignore_errors=True)
        copy.parent.mkdir(parents=True, exist_ok=True)
        for old in copy.parent.glob(f"{name}.splits.json"):
            old.unlink()
        shutil.copytree(root, copy)
        root = copy
        rc, out = vla.run(
            ["data", "split", str(copy), "--val", "0.25", "--test", "0.25"], work / "logs" / f"cli-{name}-split.log"
        )
        add(
            d,
            name,
            "vla-align data split --val 0.25 --test 0.25",
            1,
            int(rc != 0),
            error=f"rc={rc}: {short(out, 240)}" if rc else "",
        )
    else:
        add(d, name, "vla-align data split", 0, 0, note="not in this vla-align; eval uses info.json's splits")
    steps = [
        ("train --preset tiny", ["train", "--preset", "tiny", "--data", str(root), "--out", str(run)]),
        ("eval", ["eval", "--run", str(run)]),
        ("report", ["report", "--run", str(run), "--lang", "en"]),
    ]
    for label, args in steps:
        t0 = time.time()
        rc, out = vla.run(args, work / "logs" / f"cli-{name}-{label.split()[0]}.log")
        if rc != 0:
            add(d, name, f"vla-align {label}", 1, 1, error=f"rc={rc}: {short(out, 240)}")
            return
        add(d, name, f"vla-align {label}", 1, 0, note=f"{time.time() - t0:.0f} s")
    if not (run / "report.html").exists():
        add(d, name, "report.html written", 1, 1, error="missing")


# --- 3. LeRobot's dataset tools on our dataset ----------------------------------------------------------


def _source_ref(src: dict) -> dict:
    """Episode -> (frames, actions, task) of our source dataset as vla-align reads it."""
    a = src["arrays"]
    eps = {}
    for k, (e, s, n) in enumerate(zip(a["episode_ids"], a["episode_start"], a["episode_length"], strict=True)):
        sl = slice(int(s), int(s) + int(n))
        eps[int(e)] = {"frames": a["frames"][sl], "actions": a["actions"][sl], "task": src["instructions"][k]}
    return eps


def check_tool_result(
    vla: VlaAlign, work: Path, tool: str, root: Path, repo_id: str, mapping: dict[int, tuple[int, str]], src: dict
) -> None:
    """``mapping``: new episode index -> (source episode, expected task string)."""
    d = "3 LeRobot tools"
    eps = _source_ref(src)
    # LeRobot reads the result
    try:
        ds = LeRobotDataset(repo_id=repo_id, root=root, video_backend=VIDEO_BACKEND)
        hf = ds.hf_dataset.with_format(None)
        ep_col = np.asarray(hf["episode_index"]).reshape(-1)
        lr_tasks = {}
        for i in range(len(ds)):
            lr_tasks.setdefault(int(ep_col[i]), set()).add(ds[i]["task"])
        wrong = [
            (sorted(map(str, lr_tasks.get(e, set()))), t) for e, (_, t) in mapping.items() if lr_tasks.get(e) != {t}
        ]
        example = f"; e.g. LeRobot {wrong[0][0]} vs expected {wrong[0][1]!r}" if wrong else ""
        add(
            d,
            tool,
            "LeRobot: task string per episode",
            len(mapping),
            len(wrong),
            note=f"{ds.meta.total_episodes} episodes (expected {len(mapping)}){example}",
        )
        n_frames = sum(len(eps[s]["frames"]) for s, _ in mapping.values())
        add(d, tool, "LeRobot: frame count", 1, int(len(ds) != n_frames), note=f"{len(ds)} vs {n_frames}")
    except Exception as e:
        add(d, tool, "LeRobot reads it", 1, 1, error=f"{type(e).__name__}: {short(str(e), 200)}")
    # stats.json
    stats_path = root / "meta" / "stats.json"
    try:
        stats = json.loads(stats_path.read_text())
        need = ["action", "observation.image"]
        missing = [k for k in need if not (isinstance(stats.get(k), dict) and stats[k].get("mean") is not None)]
        add(
            d,
            tool,
            "meta/stats.json non-empty",
            len(need),
            len(missing),
            note=f"keys: {sorted(stats)}" + (f"; no mean for {missing}" if missing else ""),
        )
    except Exception as e:
        add(d, tool, "meta/stats.json non-empty", 1, 1, error=f"{type(e).__name__}: {short(str(e))}")
    # info.json keeps our vocabulary: top-level "vla_align" (LeRobot's tools drop unknown top-level keys)
    # or inside features["action"] (which they copy)
    want = src["action_spec"]
    try:
        info = json.loads((root / "meta" / "info.json").read_text())
        places = {
            "info.json vla_align.action_spec": (info.get("vla_align") or {}).get("action_spec"),
            "features.action.info": ((info.get("features", {}).get("action") or {}).get("info") or {}).get(
                "vla_align.action_spec"
            ),
        }
        found = [k for k, v in places.items() if v == want]
        add(
            d,
            tool,
            "info.json keeps our action vocabulary",
            1,
            int(not found),
            note=f"in {', '.join(found)}" if found else f"found {places}",
        )
    except Exception as e:
        add(d, tool, "info.json keeps our action vocabulary", 1, 1, error=short(str(e)))
    # vla-align reads it
    dump = vla.dump(root, work / "dumps" / f"tool-{tool}")
    if dump.get("error"):
        add(d, tool, "vla-align reads it", 1, 1, error=short(dump["error"], 220))
        return
    spec = dump["action_spec"]
    add(
        d,
        tool,
        "vla-align: action vocabulary",
        1,
        int(spec.get("names") != want.get("names") or spec.get("kind") != want.get("kind")),
        note=f"names {spec.get('names')} (source {want.get('names')})",
    )
    a = dump["arrays"]
    got = {int(e): k for k, e in enumerate(a["episode_ids"])}
    bad_task = bad_img = bad_act = absent = 0
    task_example = ""
    for new, (old, task) in mapping.items():
        if new not in got:
            absent += 1
            continue
        k = got[new]
        s, n = int(a["episode_start"][k]), int(a["episode_length"][k])
        if dump["instructions"][k] != task:
            bad_task += 1
            task_example = task_example or f"e.g. episode {new}: {dump['instructions'][k]!r} vs expected {task!r}"
        ref = eps[old]
        if n != len(ref["frames"]):
            bad_img += 1
            bad_act += 1
            continue
        bad_img += int(not np.array_equal(a["frames"][s : s + n], ref["frames"]))
        bad_act += int(not np.array_equal(a["actions"][s : s + n].reshape(n, -1), ref["actions"].reshape(n, -1)))
    add(d, tool, "vla-align: episodes present", len(mapping), absent + max(0, len(got) - len(mapping)))
    add(d, tool, "vla-align: task string per episode", len(mapping), bad_task, note=task_example)
    add(d, tool, "vla-align: frames equal source episode", len(mapping), bad_img)
    add(d, tool, "vla-align: actions equal source episode", len(mapping), bad_act)


def _frame_of(item: dict, features: dict) -> dict:
    """A LeRobot item turned back into the dict add_frame takes."""
    frame = {}
    for key, ft in features.items():
        if key in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
            continue
        v = item[key]
        if ft["dtype"] in ("image", "video"):
            frame[key] = (v.permute(1, 2, 0).numpy() * 255.0).round().clip(0, 255).astype(np.uint8)
        else:
            frame[key] = v.numpy().reshape(tuple(ft["shape"])).astype(ft["dtype"])
    return frame


def tools_on_ours(vla: VlaAlign, work: Path, src_root: Path) -> None:
    d = "3 LeRobot tools"
    print(f"== {d}: on {src_root.name}", flush=True)
    src = vla.dump(src_root, work / "dumps" / "tool-source")
    if src.get("error"):
        add(d, "source", "vla-align reads it", 1, 1, error=short(src["error"], 220))
        return
    tasks = {int(e): t for e, t in zip(src["arrays"]["episode_ids"], src["instructions"], strict=True)}
    n = len(tasks)
    base = work / "tools"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    repo = f"vla-align/{src_root.name}"

    def attempt(tool: str, fn) -> None:
        try:
            fn()
        except Exception as e:
            add(d, tool, "LeRobot tool runs", 1, 1, error=f"{type(e).__name__}: {short(str(e), 200)}")
            (work / "logs" / f"tool-{tool}.traceback").write_text(traceback.format_exc())

    parts = {"train": list(range(0, n - 8)), "val": list(range(n - 8, n - 4)), "test": list(range(n - 4, n))}
    split_out: dict = {}

    def split() -> None:
        ds = LeRobotDataset(repo_id=repo, root=src_root, video_backend=VIDEO_BACKEND)
        split_out.update(dataset_tools.split_dataset(ds, splits=parts, output_dir=base / "split"))
        for name, episodes in parts.items():
            mapping = {i: (old, tasks[old]) for i, old in enumerate(sorted(episodes))}
            check_tool_result(
                vla, work, f"split_dataset[{name}]", base / "split" / name, f"{repo}_{name}", mapping, src
            )

    def delete() -> None:
        gone = [1, 5, n - 2]
        ds = LeRobotDataset(repo_id=repo, root=src_root, video_backend=VIDEO_BACKEND)
        dataset_tools.delete_episodes(ds, gone, output_dir=base / "delete", repo_id=f"{repo}_deleted")
        kept = [e for e in range(n) if e not in gone]
        mapping = {i: (old, tasks[old]) for i, old in enumerate(kept)}
        check_tool_result(vla, work, "delete_episodes[1,5,-2]", base / "delete", f"{repo}_deleted", mapping, src)

    def merge() -> None:
        if not split_out:
            raise RuntimeError("needs split_dataset's output, which failed")
        dataset_tools.merge_datasets(
            [split_out["val"], split_out["test"]], output_repo_id=f"{repo}_merged", output_dir=base / "merge"
        )
        olds = parts["val"] + parts["test"]
        mapping = {i: (old, tasks[old]) for i, old in enumerate(olds)}
        check_tool_result(vla, work, "merge_datasets[val+test]", base / "merge", f"{repo}_merged", mapping, src)

    def append() -> None:
        root = base / "append"
        shutil.copytree(src_root, root)
        source = LeRobotDataset(repo_id=repo, root=src_root, video_backend=VIDEO_BACKEND)
        new_task = "appended by lerobot: " + tasks[0]
        frames = [_frame_of(source[i], source.meta.features) for i in range(int(src["arrays"]["episode_length"][0]))]
        # 0.4 appends to a dataset opened for reading; 0.5+ has LeRobotDataset.resume for it
        opener = getattr(LeRobotDataset, "resume", LeRobotDataset)
        ds = opener(repo_id=repo, root=root, video_backend=VIDEO_BACKEND)
        for frame in frames:
            ds.add_frame({**frame, "task": new_task})
        ds.save_episode()
        ds.finalize()
        mapping = {e: (e, tasks[e]) for e in range(n)} | {n: (0, new_task)}
        check_tool_result(vla, work, "add_frame+save_episode (append 1)", root, repo, mapping, src)

    def rename() -> None:
        root = base / "modify_tasks"
        shutil.copytree(src_root, root)
        ds = LeRobotDataset(repo_id=repo, root=root, video_backend=VIDEO_BACKEND)
        dataset_tools.modify_tasks(ds, episode_tasks={0: "a renamed instruction"})
        mapping = {e: (e, tasks[e]) for e in range(n)} | {0: (0, "a renamed instruction")}
        check_tool_result(vla, work, "modify_tasks[ep 0]", root, repo, mapping, src)

    for tool, fn in [
        ("split_dataset", split),
        ("delete_episodes", delete),
        ("merge_datasets", merge),
        ("append episode", append),
        ("modify_tasks", rename),
    ]:
        print(f"-- {tool}", flush=True)
        attempt(tool, fn)


# --- main -----------------------------------------------------------------------------------------------


def table() -> str:
    head = ("direction", "subject", "check", "checked", "mismatch", "status", "detail")
    body = [(r.direction, r.subject, r.check, str(r.n), str(r.bad), r.status, (r.error or r.note)[:110]) for r in ROWS]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head) - 1)]

    def fmt(row: tuple[str, ...]) -> str:
        return " | ".join(v.ljust(w) for v, w in zip(row[:-1], widths, strict=True)) + " | " + row[-1]

    sep = "-+-".join("-" * w for w in widths) + "-+-" + "-" * 20
    return "\n".join([fmt(head), sep, *(fmt(r) for r in body)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vla-align-bin", type=Path, default=REPO / ".venv" / "bin", help="bin/ of vla-align's venv")
    ap.add_argument("--vla-align-pythonpath", help="PYTHONPATH for vla-align (e.g. another checkout's src)")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--fixtures", type=Path, required=True, help="interop/make_fixtures.py's --out")
    ap.add_argument(
        "--train",
        nargs="*",
        default=["cli_image_continuous", "cli_image_discrete", "cli_video_default"],
        help="fixtures to put through vla-align train/eval/report",
    )
    ap.add_argument("--skip", nargs="*", default=[], choices=["1", "2", "3"], help="directions to skip")
    args = ap.parse_args(argv)
    work = args.work.resolve()
    (work / "logs").mkdir(parents=True, exist_ok=True)
    vla = VlaAlign(
        args.vla_align_bin.resolve() if args.vla_align_bin.is_absolute() else REPO / args.vla_align_bin,
        args.vla_align_pythonpath,
    )
    print(f"LeRobot {version('lerobot')} (torch {torch.__version__}); vla-align from {vla.python}", flush=True)
    t0 = time.time()
    ours = make_ours(vla, work) if "1" not in args.skip or "3" not in args.skip else {}
    if "1" not in args.skip:
        ours_to_lerobot(vla, work, ours)
    if "2" not in args.skip:
        lerobot_to_ours(vla, work, args.fixtures.resolve(), args.train)
    if "3" not in args.skip:
        if "babyai" in ours:
            tools_on_ours(vla, work, ours["babyai"])
        else:
            add("3 LeRobot tools", "babyai", "source dataset", 1, 1, error="vla-align data babyai failed")
    summary = table()
    bad = [r for r in ROWS if r.status != "ok"]
    print(
        f"\n=== interop summary: LeRobot {version('lerobot')}, {len(ROWS)} checks, {len(bad)} failing, "
        f"{time.time() - t0:.0f} s (logs: {work / 'logs'}) ===\n{summary}"
    )
    (work / "summary.txt").write_text(summary + "\n")
    (work / "summary.json").write_text(json.dumps([r.__dict__ | {"status": r.status} for r in ROWS], indent=1) + "\n")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
