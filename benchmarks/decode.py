"""Clips per second per data-loader worker: the seeking decoder against full decoding.

    PYTHONPATH=. python benchmarks/decode.py --out benchmarks/results/decode-cpu-2cores.md

Writes H.264 files with libx264 (Kinetics-like: short side 256, 30 fps, 10 s, x264's
default preset; GOP 250 (x264's default) and GOP 60), then times, on one thread
(``thread_count=1``, what one DataLoader worker of many gets), two samplings of the
trainer: TSM's 8 uniform segments and a dense 16-frame clip (interval 4), each from a
random position, read (a) by ``decode.read_frames`` and (b) by decoding every frame and
keeping the clip's (the trainer's former path). Frames are checked equal first.
"""
from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from vkd_kernels.train.data import decode
from vkd_kernels.train.data.sampling import dense_indices, segment_indices


def write_h264(path: Path, frames: int, gop: int, size=(256, 340), fps: int = 30) -> None:
    import av
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (size[0] // 8, size[1] // 8, 3)).astype(np.uint8).repeat(8, 0).repeat(8, 1)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"g": str(gop), "preset": "medium"})
        stream.height, stream.width, stream.pix_fmt = *size, "yuv420p"
        for i in range(frames):                       # a textured scene panning, plus sensor noise
            image = np.roll(base, 2 * i, axis=1)
            image = np.clip(image.astype(np.int16) + rng.integers(-8, 8, image.shape), 0, 255).astype(np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


def full_decode(path, sample):
    import av
    with av.open(str(path)) as container:
        container.streams.video[0].thread_count = 1
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return np.stack([frames[i] for i in sample(len(frames))])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=12, help="clips timed per (file, sampling, reader)")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--out", help="write the Markdown table here")
    args = ap.parse_args()
    import av
    samplings = {"8 segments": lambda n, rng: segment_indices(n, 8, True, rng),
                 "dense 16 x 4": lambda n, rng: dense_indices(n, 16, 4, True, rng)}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for gop in (250, 60):
            path = Path(tmp) / f"gop{gop}.mp4"
            write_h264(path, 30 * args.seconds, gop)
            size_mb = path.stat().st_size / 1e6
            for name, sampling in samplings.items():
                rng = np.random.default_rng(0)
                picks = [sampling(30 * args.seconds, rng) for _ in range(args.clips)]
                np.testing.assert_array_equal(decode.read_frames(path, picks[0]), full_decode(path, lambda n: picks[0]))
                timed = {}
                for reader in ("seek", "full"):
                    began = time.perf_counter()
                    decoded = 0
                    for p in picks:
                        if reader == "seek":
                            stats = {}
                            decode.read_frames(path, p, stats=stats, threads=1)
                            decoded += stats["decoded"]
                        else:
                            full_decode(path, lambda n, p=p: p)
                            decoded += 30 * args.seconds
                    timed[reader] = (args.clips / (time.perf_counter() - began), decoded / args.clips)
                rows.append((gop, size_mb, name, *timed["seek"], *timed["full"]))
                print(rows[-1], flush=True)
    lines = ["# Decoding: clips / s per worker (one decoder thread)\n",
             f"`PYTHONPATH=. python benchmarks/decode.py --clips {args.clips} --seconds {args.seconds}` on "
             f"{platform.processor() or platform.machine()}, PyAV {av.__version__}, a shared 2-core machine "
             "(other jobs running: absolute numbers are noisy, the ratio less so).\n",
             f"Files: libx264 preset medium, 340x256, 30 fps, {args.seconds} s ({30 * args.seconds} frames), "
             "synthetic textured pan + noise (no real videos on this machine).\n",
             "| GOP | MB | sampling | seek: clips/s | seek: frames decoded/clip | full: clips/s | "
             "full: frames decoded/clip | speed-up |", "|---|---|---|---|---|---|---|---|"]
    for gop, mb, name, sc, sd, fc, fd in rows:
        lines.append(f"| {gop} | {mb:.1f} | {name} | {sc:.2f} | {sd:.0f} | {fc:.2f} | {fd:.0f} | {sc / fc:.1f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
