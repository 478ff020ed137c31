"""`vla-align data vote`: mutual-vote filtering on a tiny run trained on synthetic data (chapter 5.7).

The run: the `tiny` preset, 150 steps on 60 + 8 + 12 synthetic episodes (four colours; image, text and
action all carry the colour), two kept checkpoints. The voted copy has three training episodes whose
instruction names another colour."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tests.reference import mutual_vote_reference
from tests.synthetic import DISCRETE, write_synthetic

from vla_align.data import sidecar
from vla_align.data.lerobot import read_episodes
from vla_align.data.lerobot_write import write_dataset
from vla_align.errors import UserError
from vla_align.vote import VOTES, VoteConfig, memorisation_note, rank_against, spaced, vote_ranks

CLI = Callable[..., tuple[int, str, str]]
SPLITS = {"train": (0, 60), "val": (60, 68), "test": (68, 80)}
CORRUPT = {3: "go to the blue square", 10: "go to the red square", 21: "go to the blue square"}
ACTION_CORRUPT = {30: 0}  # episode 30 (blue: action 2, "up") gets the red episodes' action ("left")


def _copy(
    src: Path,
    out: Path,
    instructions: dict[int, str] | None = None,
    same: str | None = None,
    actions: dict[int, int] | None = None,
) -> Path:
    episodes = read_episodes(src)
    for i, ep in enumerate(episodes):
        if actions and i in actions:
            assert int(ep.actions[0]) != actions[i]
            ep.actions = np.full_like(ep.actions, actions[i])
        if instructions and i in instructions:
            assert ep.instruction != instructions[i]
            ep.instruction = instructions[i]
        if same is not None:
            ep.instruction = same
    return write_dataset(out, iter(episodes), action_spec=DISCRETE, fps=10.0, splits=SPLITS, robot_type="synthetic")


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from vla_align.cli import main

    root = tmp_path_factory.mktemp("vote")
    clean = write_synthetic(root / "clean", n_train=60, n_val=8, n_test=12)
    run = root / "run"
    args = ["train", "--preset", "tiny", "--data", str(clean), "--out", str(run), "--train.steps", "150"]
    assert main([*args, "--train.checkpoint-every", "50", "--train.keep-checkpoints", "2"]) == 0
    return {
        "root": root,
        "clean": clean,
        "run": run,
        "noisy": _copy(clean, root / "noisy", CORRUPT, actions=ACTION_CORRUPT),
    }


def test_vote_flags_the_corrupted_instructions_and_leaves_the_dataset_alone(world: dict[str, Path], cli: CLI) -> None:
    noisy = world["noisy"]
    before = _digest(noisy)
    code, out, err = cli("data", "vote", "--run", str(world["run"]), "--data", str(noisy), "--top-k", "1")
    assert code == 0, err
    assert _digest(noisy) == before  # nothing inside DIR changed, nothing added
    path = noisy.with_name("noisy.vote.json")
    assert f"written to {path}" in out and f"--data.exclude {path}" in out and "instruction disagrees" in out
    doc = sidecar.load(path, "vote", noisy)  # format, version, records and fingerprint checked
    assert doc["dataset"]["episodes"] == 80 and len(doc["episodes"]) == 80
    assert doc["params"]["run"] == str(world["run"].resolve()) and doc["params"]["top_k"] == 1
    assert doc["params"]["checkpoint"] == str((world["run"] / "checkpoint").resolve())
    rec = doc["episodes"][0]
    assert set(rec["votes"]) == set(VOTES) and rec["split"] == "train"
    assert {"agreement", "instruction_agreement", "action_agreement", "instruction"} <= set(rec)
    # the replaced instructions are the least supported ones, and exactly those are flagged for it
    inst = np.array([r["instruction_agreement"] for r in doc["episodes"]])
    assert set(np.argsort(inst)[: len(CORRUPT)].tolist()) == set(CORRUPT)
    by_reason = {r["episode_index"] for r in doc["flagged"] if "instruction" in r["reasons"]}
    assert by_reason == set(CORRUPT)
    for r in doc["flagged"]:
        assert r["reason"].startswith("instruction disagrees (image rank ") and "of 4 instructions" in r["reason"]
        record = doc["episodes"][r["episode_index"]]
        assert record["votes"]["image_to_text"]["rank"] > 1 and record["votes"]["action_to_text"]["rank"] > 1
        assert r["agreement"] == record["agreement"] < 0
    assert doc["summary"]["flagged_instruction"] == len(CORRUPT) and doc["params"]["check"] == "instruction"


def test_the_action_check_flags_the_replaced_actions_only(world: dict[str, Path], cli: CLI) -> None:
    noisy, out = world["noisy"], world["root"] / "both.vote.json"
    args = ["--data", str(noisy), "--top-k", "1", "--check", "both", "--out", str(out)]
    code, _, err = cli("data", "vote", "--run", str(world["run"]), *args)
    assert code == 0, err
    doc = json.loads(out.read_text())
    reasons = {r["episode_index"]: r["reasons"] for r in doc["flagged"]}
    assert reasons == {**{e: ["instruction"] for e in CORRUPT}, **{e: ["action"] for e in ACTION_CORRUPT}}
    assert "action disagrees (image rank " in next(r["reason"] for r in doc["flagged"] if r["episode_index"] == 30)
    assert doc["summary"]["by_split"]["train"] == {"episodes": 60, "flagged": len(doc["flagged"])}


def test_the_vote_file_excludes_the_flagged_episodes_from_training(world: dict[str, Path], cli: CLI) -> None:
    from vla_align.sim.base import DataConfig

    noisy, out = world["noisy"], world["root"] / "exclude.vote.json"
    code, _, err = cli(
        "data", "vote", "--run", str(world["run"]), "--data", str(noisy), "--top-k", "1", "--out", str(out)
    )
    assert code == 0, err
    flagged = sidecar.flagged_ids(json.loads(out.read_text()))
    table = DataConfig(path=str(noisy), exclude=(str(out),)).read(noisy, "train")
    assert flagged and set(table.episode_ids.tolist()) == set(range(60)) - flagged


def test_threshold_check_and_checkpoint(world: dict[str, Path], cli: CLI) -> None:
    noisy, out = world["noisy"], world["root"] / "t.vote.json"
    base = ["data", "vote", "--run", str(world["run"]), "--data", str(noisy), "--out", str(out), "--overwrite"]
    assert cli(*base, "--threshold", "10")[0] == 0  # every agreement is below 10: everything flagged
    assert len(json.loads(out.read_text())["flagged"]) == 80
    assert cli(*base, "--threshold", "-10")[0] == 0
    assert json.loads(out.read_text())["flagged"] == []
    assert cli(*base, "--threshold", "10", "--check", "instruction")[0] == 0
    assert {tuple(r["reasons"]) for r in json.loads(out.read_text())["flagged"]} == {("instruction",)}
    code, _, err = cli(*base, "--checkpoint", "step-000100", "--split", "train", "--pool", "max")
    assert code == 0, err
    doc = json.loads(out.read_text())
    assert doc["params"]["checkpoint"].endswith("checkpoints/step-000100") and doc["params"]["split"] == "train"
    assert len(doc["episodes"]) == 60 and doc["params"]["pool"] == "max"


def test_refuses_to_overwrite_or_write_inside_the_dataset(world: dict[str, Path], cli: CLI) -> None:
    noisy, run = world["noisy"], str(world["run"])
    other = world["root"] / "notes.json"
    other.write_text('{"mine": true}')
    code, _, err = cli("data", "vote", "--run", run, "--data", str(noisy), "--out", str(other), "--overwrite")
    assert code == 2 and "is not a vla-align vote file; it is left alone" in err
    assert other.read_text() == '{"mine": true}'
    code, _, err = cli("data", "vote", "--run", run, "--data", str(noisy), "--out", str(noisy / "v.json"))
    assert code == 2 and "refusing to write there" in err and not (noisy / "v.json").exists()
    target = world["root"] / "once.vote.json"
    assert cli("data", "vote", "--run", run, "--data", str(noisy), "--out", str(target))[0] == 0
    code, _, err = cli("data", "vote", "--run", run, "--data", str(noisy), "--out", str(target))
    assert code == 2 and "already exists; pass --overwrite" in err


def test_bad_inputs_are_one_clear_line(world: dict[str, Path], cli: CLI) -> None:
    root, run = world["root"], str(world["run"])
    cases = [
        (write_synthetic(root / "cont", continuous=True), "its actions (2-d continuous actions) are not those run"),
        (write_synthetic(root / "big", size=32), "its frames are 32x32 px, run"),
        (_copy(world["clean"], root / "one", same="go to the red square"), "share one instruction"),
    ]
    for data, message in cases:
        code, _, err = cli("data", "vote", "--run", run, "--data", str(data))
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
        assert not data.with_name(data.name + ".vote.json").exists()
    code, _, err = cli("data", "vote", "--run", run, "--data", str(world["clean"]), "--top-k", "4")
    assert code == 2 and "only 4 distinct instructions" in err
    code, _, err = cli("data", "vote", "--run", run, "--data", str(world["clean"]), "--action-top", "1.5")
    assert code == 2 and "--action-top must be a fraction" in err
    code, _, err = cli("data", "vote", "--run", run, "--data", str(world["clean"]), "--checkpoint", "step-000007")
    assert code == 2 and "step-000007" in err


def test_spaced_parts() -> None:
    assert spaced(3, 8).tolist() == [0, 1, 2]
    assert spaced(100, 3).tolist() == [0, 50, 99]
    assert spaced(20, 8, step=8).tolist() == [0, 8, 16]
    with pytest.raises(UserError, match="--frames"):
        VoteConfig(frames=0)


def test_the_memorisation_note() -> None:
    held = {"val": {"episodes": 30, "flagged": 21}, "test": {"episodes": 60, "flagged": 43}}
    note = memorisation_note({"train": {"episodes": 300, "flagged": 0}, **held})
    assert note.startswith("note: 0 % of the training episodes flagged against 71 % of the held-out ones")
    assert memorisation_note({"train": {"episodes": 300, "flagged": 200}, **held}) == ""
    assert memorisation_note({"train": {"episodes": 300, "flagged": 0}}) == ""  # nothing held out voted


def test_rank_against_counts_strictly_better_competitors() -> None:
    own = torch.tensor([0.5, 0.2])
    rivals = torch.tensor([[0.9, 0.5, 0.1, -torch.inf], [0.1, 0.0, -0.3, 0.4]])
    rank, margin, slack = rank_against(own, rivals, torch.tensor([1, 2]))
    assert rank.tolist() == [2, 2]  # the tie with 0.5 ranks the own item first
    assert torch.allclose(margin, torch.tensor([-0.4, -0.2]))
    assert torch.allclose(slack, torch.tensor([-0.4, 0.1]))  # second-best rival of row 2 is 0.1


@pytest.mark.parametrize("pool", ["mean", "max"])
def test_vote_ranks_match_the_naive_loops(pool: str) -> None:
    gen = torch.Generator().manual_seed(3)
    n, d = 7, 5
    text_id = torch.tensor([0, 1, 2, 0, 1, 2, 2])
    image_owner = torch.tensor([0, 0, 1, 2, 2, 2, 3, 4, 5, 5, 6])
    action_owner = torch.tensor([0, 1, 1, 2, 3, 3, 4, 5, 6, 6, 6])
    z = {
        "image": F.normalize(torch.randn(len(image_owner), d, generator=gen, dtype=torch.float64), dim=-1),
        "image_owner": image_owner,
        "action": F.normalize(torch.randn(len(action_owner), d, generator=gen, dtype=torch.float64), dim=-1),
        "action_owner": action_owner,
        "text": F.normalize(torch.randn(3, d, generator=gen, dtype=torch.float64), dim=-1),
        "text_id": text_id,
    }
    cfg = VoteConfig(top_k=2, action_top=0.3, pool=pool)  # type: ignore[arg-type]
    got = vote_ranks({k: v.float() if v.is_floating_point() else v for k, v in z.items()}, cfg, block=3)
    want = mutual_vote_reference(
        z["image"].tolist(), image_owner.tolist(), z["action"].tolist(), action_owner.tolist(),
        z["text"].tolist(), text_id.tolist(), top_k=2, action_top=0.3, pool=pool,
    )  # fmt: skip
    assert set(got) == set(want)
    for v in VOTES:
        assert got[v]["rank"].tolist() == [r for r, _, _ in want[v]], v
        assert np.allclose(got[v]["margin"].numpy(), [m for _, m, _ in want[v]], atol=1e-5), v
        assert np.allclose(got[v]["slack"].numpy(), [s for _, _, s in want[v]], atol=1e-5), v
    assert n == len(text_id)
