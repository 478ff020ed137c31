"""Frame-accurate decoding of the mp4 files of LeRobot v3.0 video cameras, with PyAV (the ``video`` extra).

LeRobot concatenates many episodes into one mp4 per camera; meta/episodes gives each episode's
``from_timestamp`` in that file, and each frame's ``timestamp`` (data parquet) is relative to it. The frame of
row ``i`` is the decoded frame nearest to ``from_timestamp + timestamp[i]``; it must lie within half a frame
period (else :class:`DatasetError` names the file, the episode and the timestamp). A :class:`VideoReader`
keeps each file open and decodes forward: an episode that starts shortly after the previous one ended
continues the same sequential decode, any other seeks once to the keyframe before its first frame. Only the
frames used are converted to RGB (and box-resampled with Pillow when the output size differs).
PyAV's wheels bundle FFmpeg with the AV1 (dav1d) and H.264 decoders LeRobot's writer needs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from PIL import Image

from ..errors import DatasetError

INSTALL = "install the video extra: pip install 'vla-align[video]' (PyAV)"
CONTINUE_S = 2.0  # an episode starting at most this long after the last decoded frame is reached without a seek


def _av() -> Any:
    """The ``av`` module, or a clear error when the ``video`` extra is not installed."""
    try:
        import av
    except ImportError:
        raise DatasetError(f"reading cameras stored as mp4 video needs PyAV; {INSTALL}") from None
    return av


def _rgb(frame: Any, out: np.ndarray, where: str, shape: tuple[int, int]) -> None:
    """Write ``frame`` as RGB into ``out`` (h, w, 3), checking its size is ``shape`` and resizing (box)."""
    if (frame.height, frame.width) != shape:
        raise DatasetError(
            f"{where}: the video's frames are {frame.height}x{frame.width}, info.json says {shape[0]}x{shape[1]}; "
            "fix meta/info.json or re-encode the video"
        )
    rgb = frame.to_ndarray(format="rgb24")  # (H, W, 3)
    if rgb.shape[:2] != out.shape[:2]:
        rgb = np.asarray(Image.fromarray(rgb).resize((out.shape[1], out.shape[0]), Image.Resampling.BOX))
    out[...] = rgb


@dataclass
class _Stream:
    """One open mp4: its decode position. ``prev`` is the last frame passed, ``pending`` the frame after it
    (already decoded, not yet passed)."""

    container: Any
    stream: Any
    frames: Iterator[Any] | None = None
    prev: Any = None
    prev_t: float = -np.inf
    pending: list[Any] = field(default_factory=list)

    def seek(self, t: float) -> None:
        """Restart decoding at the keyframe at or before ``t`` seconds."""
        if t > 0 and self.stream.time_base:
            self.container.seek(int(t / self.stream.time_base), stream=self.stream, backward=True)
        else:
            self.container.seek(0)
        self.frames, self.prev, self.prev_t, self.pending = self.container.decode(self.stream), None, -np.inf, []

    def position(self) -> float | None:
        """The time of the earliest frame still at hand (None before the first decode)."""
        if self.prev is not None:
            return self.prev_t
        if self.pending and self.pending[-1].time is not None:
            return float(self.pending[-1].time)
        return None

    def pull(self) -> Iterator[Any]:
        """The frames from the current position on (``pending`` first). Stopping early leaves the decode
        where it is (no ``yield from``: closing this generator must not close the decoder's)."""
        while self.pending or self.frames is not None:
            frame = self.pending.pop() if self.pending else next(self.frames, None)  # type: ignore[arg-type]
            if frame is None:
                return
            yield frame


class VideoReader:
    """Decodes frames by timestamp from mp4 files, each opened once per reader; use as a context manager."""

    def __init__(self, fps: float) -> None:
        self.tol = 0.5 / fps  # half a frame period
        self._open: dict[Path, _Stream] = {}
        self._av = _av()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        for s in self._open.values():
            s.container.close()
        self._open.clear()

    def read(self, path: Path, targets: np.ndarray, out: np.ndarray, shape: tuple[int, int], where: str) -> None:
        """Decode the frames nearest to ``targets`` (seconds in the file, ascending) into ``out`` (n, h, w, 3);
        ``shape`` is the (H, W) info.json promises, ``where`` names the episode in errors."""
        if not np.isfinite(targets).all():
            raise DatasetError(f"{where}: a frame's timestamp is not a finite number; regenerate the dataset")
        if len(targets) and np.any(np.diff(targets) < 0):
            raise DatasetError(f"{where}: its frames' 'timestamp' values are not increasing; regenerate the dataset")
        try:
            st = self._stream(path, where)
            if not len(targets):
                return
            at = st.position()
            if at is None or not (at - self.tol <= targets[0] <= at + CONTINUE_S):
                st.seek(targets[0] - self.tol)
            done = self._walk(st, targets, out, shape, f"{path}: {where}")
        except self._av.FFmpegError as e:
            self._drop(path)
            raise DatasetError(f"{path}: cannot be decoded ({where}: {e}); re-encode or regenerate the video") from None
        if done < len(targets):
            raise DatasetError(
                f"{path}: {where}: no frame at timestamp {targets[done]:.4f} s (within {self.tol:.4f} s); the video "
                "is shorter than the episode's timestamps (truncated file or wrong from_timestamp); regenerate it"
            )

    def _drop(self, path: Path) -> None:
        st = self._open.pop(path, None)
        if st is not None:
            st.container.close()

    def _stream(self, path: Path, where: str) -> _Stream:
        if path not in self._open:
            container = self._av.open(str(path))
            if not container.streams.video:
                container.close()
                raise DatasetError(f"{path}: no video stream ({where}); re-encode the video")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            self._open[path] = _Stream(container, stream)
        return self._open[path]

    def _walk(self, st: _Stream, targets: np.ndarray, out: np.ndarray, shape: tuple[int, int], where: str) -> int:
        """Give each target its nearest decoded frame, decoding forward; returns how many targets were filled."""
        i = 0
        for frame in st.pull():
            if frame.pts is None or frame.time is None:
                raise DatasetError(f"{where}: a decoded frame has no timestamp; re-encode the video")
            t = float(frame.time)
            while i < len(targets) and targets[i] <= t:
                best, best_t = (st.prev, st.prev_t) if targets[i] - st.prev_t < t - targets[i] else (frame, t)
                if abs(best_t - targets[i]) > self.tol or best is None:
                    raise DatasetError(
                        f"{where}: no frame at timestamp {targets[i]:.4f} s, nearest is {best_t:.4f} s (tolerance "
                        f"{self.tol:.4f} s, half a frame period); check the dataset's fps / timestamps or regenerate it"
                    )
                _rgb(best, out[i], where, shape)
                i += 1
            if i == len(targets):
                st.pending.append(frame)
                return i
            st.prev, st.prev_t = frame, t
        while i < len(targets) and st.prev is not None and abs(targets[i] - st.prev_t) <= self.tol:
            _rgb(st.prev, out[i], where, shape)
            i += 1
        return i


def decode_range(
    path: Path, targets: np.ndarray, fps: float, out: np.ndarray, shape: tuple[int, int], where: str
) -> None:
    """One :meth:`VideoReader.read` with a reader of its own (the file is opened and closed here)."""
    with VideoReader(fps) as reader:
        reader.read(path, targets, out, shape, where)
