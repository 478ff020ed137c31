"""vla_align.data.video: frame-accurate mp4 decoding by timestamp (H.264 exact, AV1 within a PSNR bound)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tests.lerobot_video import av, pattern, write_mp4

from vla_align.data.video import VideoReader, decode_range
from vla_align.errors import DatasetError

FPS = 10


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def decode(path: Path, targets: np.ndarray, shape: tuple[int, int], size: tuple[int, int] | None = None) -> np.ndarray:
    h, w = size or shape
    out = np.zeros((len(targets), h, w, 3), dtype=np.uint8)
    decode_range(path, targets, FPS, out, shape, "episode 7")
    return out


@pytest.fixture(scope="module")
def h264(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    path = tmp_path_factory.mktemp("v") / "h264.mp4"
    frames = pattern(40, 24, 32)
    write_mp4(path, frames, FPS, "h264")
    return path, frames


def test_lossless_h264_is_exact_at_every_timestamp(h264: tuple[Path, np.ndarray]) -> None:
    path, frames = h264
    got = decode(path, np.arange(40) / FPS, (24, 32))
    assert np.array_equal(got, frames)


def test_a_later_episode_seeks_and_maps_from_timestamp(h264: tuple[Path, np.ndarray]) -> None:
    """Episode starting at 2.3 s, frame timestamps 0.0..0.8 (float32 as LeRobot stores them) -> frames 23..31."""
    path, frames = h264
    stamps = (np.arange(9) / FPS).astype(np.float32).astype(np.float64)
    got = decode(path, 2.3 + stamps, (24, 32))
    assert np.array_equal(got, frames[23:32])


def test_keyframes_far_apart_still_give_the_right_frames(tmp_path: Path) -> None:
    """Lossy H.264 with a keyframe every 10 frames: a mid-GOP range decodes to the frames encoded there."""
    frames = pattern(50, 32, 32)
    path = tmp_path / "gop.mp4"
    write_mp4(path, frames, FPS, "h264-lossy")
    got = decode(path, np.arange(37, 46) / FPS, (32, 32))
    for g, k in zip(got, range(37, 46), strict=True):
        assert psnr(g, frames[k]) > 35
        assert int(np.argmin([np.abs(g.astype(int) - f).mean() for f in frames])) == k


def test_av1_decodes_within_a_psnr_bound(tmp_path: Path) -> None:
    if "libsvtav1" not in av.codecs_available:
        pytest.skip("PyAV's FFmpeg has no AV1 encoder (libsvtav1) to make the fixture")
    assert "libdav1d" in av.codecs_available or "libaom-av1" in av.codecs_available  # an AV1 decoder
    frames = pattern(30, 64, 64)
    path = tmp_path / "av1.mp4"
    write_mp4(path, frames, FPS, "av1")
    with av.open(str(path)) as c:
        assert c.streams.video[0].codec_context.name in ("libdav1d", "av1", "libaom-av1")
    got = decode(path, np.arange(12, 30) / FPS, (64, 64))
    for g, k in zip(got, range(12, 30), strict=True):
        assert psnr(g, frames[k]) > 30
        assert int(np.argmin([np.abs(g.astype(int) - f).mean() for f in frames])) == k


def test_resize_is_pillow_box_of_the_decoded_frame(h264: tuple[Path, np.ndarray]) -> None:
    path, frames = h264
    got = decode(path, np.array([0.5, 0.6]), (24, 32), size=(12, 16))
    want = [np.asarray(Image.fromarray(f).resize((16, 12), Image.Resampling.BOX)) for f in frames[5:7]]
    assert np.array_equal(got, np.stack(want))


def test_timestamp_past_the_end_names_file_episode_and_time(h264: tuple[Path, np.ndarray]) -> None:
    path, _ = h264
    with pytest.raises(DatasetError, match=r"h264.mp4: episode 7: no frame at timestamp 4.5000 s.*shorter"):
        decode(path, np.array([3.8, 3.9, 4.5]), (24, 32))


def test_timestamp_between_frames_beyond_tolerance(h264: tuple[Path, np.ndarray]) -> None:
    path, _ = h264
    out = np.zeros((1, 24, 32, 3), dtype=np.uint8)
    with pytest.raises(DatasetError, match=r"episode 7: no frame at timestamp 0.1500 s, nearest is 0.1000 s"):
        decode_range(path, np.array([0.15]), 2 * FPS, out, (24, 32), "episode 7")  # tolerance 0.025 s


def test_size_other_than_info_json(h264: tuple[Path, np.ndarray]) -> None:
    path, _ = h264
    with pytest.raises(DatasetError, match=r"the video's frames are 24x32, info.json says 20x32"):
        decode(path, np.array([0.0]), (20, 32))


def test_decreasing_timestamps_refused(h264: tuple[Path, np.ndarray]) -> None:
    with pytest.raises(DatasetError, match=r"episode 7: its frames' 'timestamp' values are not increasing"):
        decode(h264[0], np.array([0.2, 0.1]), (24, 32))


@pytest.mark.parametrize("keep", [200, 0.6])
def test_truncated_mp4_is_one_line(h264: tuple[Path, np.ndarray], tmp_path: Path, keep: float) -> None:
    data = h264[0].read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(keep if keep > 1 else len(data) * keep)])
    with pytest.raises(DatasetError, match=r"cut.mp4: (cannot be decoded|episode 7: no frame)") as e:
        decode(cut, np.arange(40) / FPS, (24, 32))
    assert "\n" not in str(e.value)


def test_without_pyav_says_how_to_install(h264: tuple[Path, np.ndarray], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "av", None)
    with pytest.raises(DatasetError, match=r"needs PyAV; install the video extra: pip install 'vla-align\[video\]'"):
        decode(h264[0], np.array([0.0]), (24, 32))


def test_one_reader_continues_forward_and_seeks_back(h264: tuple[Path, np.ndarray]) -> None:
    """Episodes back to back continue one decode; an earlier episode afterwards seeks back; both exact."""
    path, frames = h264
    out = np.zeros((40, 24, 32, 3), dtype=np.uint8)
    with VideoReader(FPS) as reader:
        for lo, hi in [(10, 14), (14, 20), (20, 21), (33, 40), (0, 10), (21, 33)]:
            reader.read(path, np.arange(lo, hi) / FPS, out[lo:hi], (24, 32), f"frames {lo}:{hi}")
    assert np.array_equal(out, frames)
