"""Decode only the frames a clip needs: seek to the keyframe before each needed run of
frames and decode forward to its last frame (PyAV).

``read_frames(path, indices)`` -> uint8 (len(indices), H, W, 3), frame i being the
i-th frame in presentation order, the same frames a full decode gives. The frame
count and positions come from demuxing the packets (no decoding): the stream's
reported frame count and frame rate are never trusted (they are wrong or missing for
many real files: variable frame rate, truncated downloads, WebM without a count).
For each needed frame the decoder continues forward if that is no further than the
frame's keyframe, else seeks to that keyframe; a seek that lands after the wanted
frame (a container whose index disagrees with its packets) falls back to decoding
from the start. ``backend="torchcodec"`` or ``"decord"`` uses that library where it
is installed (never required).
"""
from __future__ import annotations

import bisect
from typing import List, NamedTuple, Sequence

import numpy as np


class StreamIndex(NamedTuple):
    pts: List[int]          # presentation timestamps, sorted: frame i has pts[i]
    keyframes: List[int]    # the frame indices of the keyframes, sorted


def index_stream(container, stream) -> StreamIndex:
    """The presentation-order pts of every frame and the keyframe positions (demux only)."""
    pts, key = [], []
    for packet in container.demux(stream):
        if packet.size == 0 or packet.pts is None:
            if packet.size and packet.pts is None:
                raise ValueError("a packet without a timestamp")
            continue
        pts.append(packet.pts)
        key.append(packet.is_keyframe)
    order = np.argsort(pts, kind="stable")
    pts = [pts[i] for i in order]
    if len(set(pts)) != len(pts):
        raise ValueError("repeated frame timestamps")
    keyframes = [j for j, i in enumerate(order) if key[i]]
    if not keyframes or keyframes[0] != 0:
        keyframes = [0] + keyframes               # decoding from the start always works
    return StreamIndex(pts, keyframes)


def num_frames(path) -> int:
    """The true frame count of the first video stream (packets counted, nothing decoded)."""
    import av
    with av.open(str(path)) as container:
        return len(index_stream(container, container.streams.video[0]).pts)


def decode_all(path) -> np.ndarray:
    """Every frame, uint8 (T, H, W, 3): the reference ``read_frames`` is checked against."""
    import av
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    if not frames:
        raise ValueError("no video frames")
    return np.stack(frames)


def _pyav(path, indices: np.ndarray, sample, stats=None, threads: int = 0) -> np.ndarray:
    import av
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if threads:
            stream.thread_count = threads
        else:
            stream.thread_type = "AUTO"
        index = index_stream(container, stream)
        n = len(index.pts)
        if n == 0:
            raise ValueError("no video frames")
        indices = np.asarray(sample(n) if callable(sample) else indices, dtype=np.int64)
        if len(indices) and (indices.min() < 0 or indices.max() >= n):
            raise IndexError(f"frame indices must be in [0, {n}), got {indices.min()}..{indices.max()}")
        wanted = sorted(set(int(i) for i in indices))
        got = {}
        state = {"frames": None, "position": None, "start": 0}   # decoder, next frame index, seek point

        def advance(target: int) -> bool:
            """Decode forward to ``target``; False if the first frame after a seek is past it."""
            for frame in state["frames"]:
                i = bisect.bisect_left(index.pts, frame.pts) if frame.pts is not None else n
                if i >= n or index.pts[i] != frame.pts:
                    raise ValueError(f"decoded a frame with pts {frame.pts} that no packet has")
                if state["position"] is None and i > target:
                    return False
                state["position"] = i + 1
                if stats is not None:
                    stats["decoded"] = stats.get("decoded", 0) + 1
                if i >= state["start"] and i in wanted_set and i not in got:
                    got[i] = frame.to_ndarray(format="rgb24")
                if i >= target:
                    return True
            state["position"] = n
            return True

        def seek(key: int) -> None:
            if stats is not None:
                stats["seeks"] = stats.get("seeks", 0) + 1
            state["frames"], state["position"], state["start"] = _seek(container, stream, index, key), None, key

        wanted_set = set(wanted)
        for target in wanted:
            if target in got:
                continue
            key = index.keyframes[bisect.bisect_right(index.keyframes, target) - 1]
            if state["position"] is None or not key <= state["position"] <= target:
                seek(key)
            if not advance(target):          # the container's index disagrees with its packets
                seek(0)
                advance(target)
            if target not in got:
                raise ValueError(f"frame {target} of {n} (by its packets) was not decoded")
        return np.stack([got[int(i)] for i in indices])


def _seek(container, stream, index: StreamIndex, key: int):
    if key == 0:
        container.seek(0, stream=stream, backward=True, any_frame=False)
    else:
        container.seek(index.pts[key], stream=stream, backward=True, any_frame=False)
    return container.decode(stream)


def _torchcodec(path, indices, sample, stats=None, threads=0) -> np.ndarray:
    from torchcodec.decoders import VideoDecoder
    decoder = VideoDecoder(str(path), seek_mode="exact")
    indices = sample(len(decoder)) if callable(sample) else indices
    data = decoder.get_frames_at(indices=[int(i) for i in indices]).data       # (N, C, H, W)
    return data.permute(0, 2, 3, 1).numpy()


def _decord(path, indices, sample, stats=None, threads=0) -> np.ndarray:
    import decord
    reader = decord.VideoReader(str(path))
    indices = sample(len(reader)) if callable(sample) else indices
    return reader.get_batch([int(i) for i in indices]).asnumpy()


BACKENDS = {"pyav": _pyav, "torchcodec": _torchcodec, "decord": _decord}


def read_frames(path, indices: Sequence[int] = (), *, sample=None, backend: str = "pyav",
                stats=None, threads: int = 0) -> np.ndarray:
    """uint8 (len(indices), H, W, 3): the frames ``indices`` (presentation order, repeats
    allowed) of the first video stream of ``path``. ``sample(num_frames) -> indices``
    chooses them once the true frame count is known (then ``indices`` is ignored).
    ``stats``: a dict that counts the frames decoded and the seeks (pyav); ``threads``:
    decoder threads (0: FFmpeg's choice)."""
    if backend not in BACKENDS:
        raise ValueError(f"decoder backend must be one of {sorted(BACKENDS)}, got {backend!r}")
    if backend != "pyav":
        try:
            __import__(backend)
        except ImportError as error:
            raise ImportError(f"decoder backend {backend!r} is not installed (pip install {backend}); "
                              "the default 'pyav' needs only PyAV") from error
    return BACKENDS[backend](path, np.asarray(indices, dtype=np.int64), sample, stats, threads)
