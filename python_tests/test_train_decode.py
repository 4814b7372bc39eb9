"""The seeking decoder: frame-accurate against full decoding on videos with several
keyframes and B-frames, variable frame rate, no reported frame count (WebM) and a wrong
one (an AVI whose header says 25 frames of 40); it decodes fewer frames than a full decode."""
import fractions
import struct

import numpy as np
import pytest

from vkd_kernels.train.data import build_dataset, decode

av = pytest.importorskip("av")


def write(path, n=40, codec="libx264", g=6, vfr=False, options=None, size=(48, 64)):
    """A video whose frames all differ (a moving bar, per-frame brightness, noise)."""
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=25, options={"g": str(g), **(options or {})})
        stream.height, stream.width, stream.pix_fmt = *size, "yuv420p"
        if vfr:
            stream.time_base = stream.codec_context.time_base = fractions.Fraction(1, 1000)
        t = 0
        for i in range(n):
            image = np.zeros((*size, 3), np.uint8)
            image[..., 0] = (i * 6) % 256
            image[:, (i * 3) % size[1]] = 255
            frame = av.VideoFrame.from_ndarray((image + rng.integers(0, 20, image.shape)).astype(np.uint8),
                                               format="rgb24")
            if vfr:                                   # 20, 40 or 100 ms between frames
                t += int(rng.choice([20, 40, 100]))
                frame.pts, frame.time_base = t, fractions.Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def wrong_count_avi(path):
    """MPEG-4 part 2 with B-frames in AVI, header frame counts patched from 40 to 25."""
    write(path, codec="mpeg4", options={"bf": "2"})
    data = bytearray(path.read_bytes())
    strh, avih = data.index(b"strh"), data.index(b"avih")
    data[strh + 40:strh + 44] = struct.pack("<I", 25)            # strh dwLength
    data[avih + 24:avih + 28] = struct.pack("<I", 25)            # avih dwTotalFrames
    path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    return {"h264": write(d / "gop6.mp4"), "vfr": write(d / "vfr.mp4", vfr=True),
            "vp9": write(d / "vp9.webm", codec="libvpx-vp9"), "avi": wrong_count_avi(d / "bad.avi")}


@pytest.mark.parametrize("kind", ["h264", "vfr", "vp9", "avi"])
def test_seeking_is_frame_accurate(videos, kind):
    path = videos[kind]
    full = decode.decode_all(path)
    assert len(full) == 40 and decode.num_frames(path) == 40
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        reported = stream.frames
        index = decode.index_stream(container, stream)
    keyframes = index.keyframes
    assert len(keyframes) >= 6, keyframes
    if kind == "vp9":
        assert reported == 0                                     # WebM reports no count
    if kind == "avi":
        assert reported == 25                                    # the header is wrong
    if kind == "vfr":
        assert len(set(np.diff(index.pts))) == 3                 # 20, 40 and 100 ms steps
    rng = np.random.default_rng(1)
    cases = [[0], [39], [39, 0, 39], list(range(40)), list(range(30, 40)), [5, 4, 6]]
    cases += [rng.integers(0, 40, rng.integers(1, 9)).tolist() for _ in range(12)]
    for indices in cases:
        np.testing.assert_array_equal(decode.read_frames(path, indices), full[indices], err_msg=str(indices))


def test_reads_only_what_the_clip_needs(videos):
    stats = {}
    got = decode.read_frames(videos["h264"], [31, 32, 33], stats=stats)
    # keyframe 30 (g=6 gives keyframes 0, 5, 10, ... here; at most 6 frames back), then forward to 33
    assert got.shape == (3, 48, 64, 3) and stats["seeks"] == 1 and stats["decoded"] <= 10
    stats = {}
    decode.read_frames(videos["h264"], [2, 20, 38], stats=stats)
    assert stats["decoded"] < 20 and stats["seeks"] == 3
    seen = []

    def last(n):
        seen.append(n)
        return [n - 1]
    frames = decode.read_frames(videos["avi"], sample=last)
    assert seen == [40] and frames.shape[0] == 1                  # the sampler sees the true count


def test_bad_arguments_are_named(videos):
    with pytest.raises(IndexError, match=r"frame indices must be in \[0, 40\)"):
        decode.read_frames(videos["h264"], [40])
    with pytest.raises(ValueError, match="decoder backend must be one of"):
        decode.read_frames(videos["h264"], [0], backend="ffmpeg")
    for name in ("torchcodec", "decord"):
        try:
            __import__(name)
        except ImportError:
            with pytest.raises(ImportError, match=f"decoder backend '{name}' is not installed"):
                decode.read_frames(videos["h264"], [0], backend=name)
        else:                                                     # installed: it must agree with full decoding
            np.testing.assert_array_equal(decode.read_frames(videos["h264"], [3, 17], backend=name),
                                          decode.decode_all(videos["h264"])[[3, 17]])


def test_video_dataset_uses_the_seeking_decoder(videos, tmp_path):
    (tmp_path / "list.txt").write_text(f"{videos['avi']} 0\n")
    cfg = dict(name="video", root="/", annotations=str(tmp_path / "list.txt"), sampling="dense", clip_len=4,
               frame_interval=10, size=16, scale_size=16, num_classes=1)
    ds = build_dataset(cfg, "val")
    clip, _ = ds[0]
    # 40 true frames (the header says 25): the centred dense clip is frames 4, 14, 24, 34
    full = decode.decode_all(videos["avi"])
    import torch

    from vkd_kernels.train.data.sampling import val_transform
    expected = val_transform(torch.from_numpy(full[[4, 14, 24, 34]]), 16, 16)
    assert torch.allclose(clip, expected)
