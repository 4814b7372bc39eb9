"""Trainer data: the synthetic benchmark's design, frame folders, PyAV videos, sampling."""
from pathlib import Path

import numpy as np
import pytest
import torch

from vkd_kernels.train.config import run_config
from vkd_kernels.train.data import DataError, build_dataset, collate_skip, synthetic
from vkd_kernels.train.data.frames import FrameFolderDataset
from vkd_kernels.train.data.sampling import dense_indices, segment_indices, train_transform, val_transform
from vkd_kernels.train.engine import fit


def test_synthetic_is_deterministic_balanced_and_split_dependent():
    a, la = synthetic.generate(32, seed=3, split="train")
    b, lb = synthetic.generate(32, seed=3, split="train")
    c, _ = synthetic.generate(32, seed=3, split="val")
    assert a.shape == (32, 3, 8, 32, 32) and a.dtype == torch.uint8
    assert torch.equal(a, b) and torch.equal(la, lb)
    assert not torch.equal(a, c)
    assert torch.bincount(la, minlength=12).tolist() == [3] * 8 + [2] * 4


@pytest.mark.parametrize("label", range(12))
def test_reversed_clip_is_the_opposite_direction_same_frequency(label):
    """The generator's design: the frames of a clip played backwards are exactly a
    clip of another class (opposite direction, same frequency): appearance alone
    cannot give the label, only the order of the frames can."""
    rng = np.random.default_rng(label)
    p = synthetic.sample_params(rng, label)
    q = synthetic.reverse_params(p)
    assert q["label"] != label and q["label"] % 3 == label % 3
    np.testing.assert_allclose(synthetic.render(q), synthetic.render(p)[::-1], atol=1e-5)


def test_appearance_alone_does_not_give_the_label():
    """A nearest-class-mean classifier on time-averaged clips (appearance, no motion)
    stays near chance (1/8) on held-out clips; the class parameters are what they say."""
    train, train_labels = synthetic.generate(800, seed=0, split="train")
    val, val_labels = synthetic.generate(400, seed=0, split="val")
    feature = lambda c: c.float().mean(2).flatten(1)                     # noqa: E731  (N, 3*H*W)
    means = torch.stack([feature(train)[train_labels == k].mean(0) for k in range(12)])
    predicted = torch.cdist(feature(val), means).argmin(1)
    assert (predicted == val_labels).float().mean() < 0.16            # chance: 1/12
    rng = np.random.default_rng(0)
    for label, direction in zip((0, 3, 6, 9), ((1, 0), (0, 1), (-1, 0), (0, -1))):
        p = synthetic.sample_params(rng, label)
        assert np.dot(p["v"], direction) > 0.9 * np.linalg.norm(p["v"])
        assert [synthetic.sample_params(rng, label + j)["freq"] for j in range(3)] == [1.0, 2.0, 3.0]


def test_fresh_clips_each_epoch_are_deterministic():
    a = synthetic.SyntheticMotion(16, fresh_each_epoch=True)
    first = a.clips.clone()
    a.set_epoch(3)
    b = synthetic.SyntheticMotion(16, fresh_each_epoch=True)
    b.set_epoch(3)
    assert torch.equal(a.clips, b.clips) and not torch.equal(a.clips, first)


def test_augmentation_is_the_same_transform_on_every_frame():
    """augment_clip redraws appearance only: it commutes with any reordering of the frames
    (so it cannot change direction or frequency), and a static clip stays static; without
    the shift it is a channel permutation with gains of magnitude in [0.6, 1.4]."""
    x = torch.randn(3, 8, 20, 20, dtype=torch.float64)
    order = torch.randperm(8)
    for seed in range(8):
        a = synthetic.augment_clip(x, np.random.default_rng(seed))
        b = synthetic.augment_clip(x[:, order], np.random.default_rng(seed))
        assert a.shape == x.shape and a.dtype == x.dtype
        torch.testing.assert_close(b, a[:, order], rtol=0, atol=0)
        still = synthetic.augment_clip(x[:, :1].expand(3, 8, 20, 20), np.random.default_rng(seed))
        assert torch.equal(still, still[:, :1].expand_as(still))
    rng = np.random.default_rng(0)
    shifted = synthetic.augment_clip(x, rng, shift=0)
    gains = shifted.flatten(1).unsqueeze(1) / x.flatten(1).unsqueeze(0)     # (3 out, 3 in, n)
    constant = (gains - gains[..., :1]).abs().amax(-1) < 1e-12
    assert constant.sum().item() == 3 and (constant.sum(0) == 1).all()
    picked = gains[..., 0][constant].abs()
    assert ((picked >= 0.6) & (picked <= 1.4)).all()


def test_augmented_dataset_is_deterministic_per_epoch_and_index():
    a = synthetic.SyntheticMotion(12, augment=True)
    b = synthetic.SyntheticMotion(12, augment=True)
    plain = synthetic.SyntheticMotion(12)
    assert torch.equal(a[5][0], b[5][0]) and a[5][1] == plain[5][1]
    assert not torch.equal(a[5][0], plain[5][0]) and not torch.equal(a[5][0], a[6][0])
    first = a[5][0]
    a.set_epoch(2)
    assert not torch.equal(a[5][0], first) and torch.equal(a.clips, plain.clips)   # same clips, new views
    b.set_epoch(2)
    assert torch.equal(a[5][0], b[5][0])
    with pytest.raises(ValueError, match="augment"):
        synthetic.SyntheticMotion(4, augment="yes")


def test_a_pool_of_views_repeats_every_v_epochs():
    """views=V: epoch e reads the views of epoch e mod V (those of the unbounded pool's first
    V epochs), so the labelled set is V x num_clips fixed examples."""
    pool = synthetic.SyntheticMotion(12, augment=True, views=3)
    fresh = synthetic.SyntheticMotion(12, augment=True)
    seen = []
    for epoch in range(7):
        pool.set_epoch(epoch)
        fresh.set_epoch(epoch % 3)
        seen.append(pool[4][0])
        assert torch.equal(seen[-1], fresh[4][0])
    assert torch.equal(seen[0], seen[3]) and torch.equal(seen[1], seen[4]) and torch.equal(seen[0], seen[6])
    assert not torch.equal(seen[0], seen[1]) and not torch.equal(seen[1], seen[2])
    for bad in (0, -2, 2.5, True, "8"):
        with pytest.raises(ValueError, match="views"):
            synthetic.SyntheticMotion(4, augment=True, views=bad)
    with pytest.raises(ValueError, match="views"):
        synthetic.SyntheticMotion(4, views=4)   # views without augment


def test_sampling_indices():
    rng = np.random.default_rng(0)
    idx = segment_indices(80, 8, True, rng)
    assert ((idx >= np.arange(8) * 10) & (idx < np.arange(1, 9) * 10)).all()
    assert segment_indices(80, 8, False, rng).tolist() == [5, 15, 25, 35, 45, 55, 65, 75]
    assert segment_indices(3, 8, False, rng).max() <= 2
    assert dense_indices(10, 4, 2, False, rng).tolist() == [1, 3, 5, 7]
    assert dense_indices(3, 5, 1, True, rng).tolist() == [0, 1, 2, 0, 1]


def test_transforms_shapes_and_flip():
    frames = torch.randint(0, 255, (4, 30, 40, 3), dtype=torch.uint8)
    assert val_transform(frames, 24, 28).shape == (3, 4, 24, 24)
    assert train_transform(frames, 16, np.random.default_rng(0)).shape == (3, 4, 16, 16)
    # flip=False never mirrors: frames that brighten from left to right stay so in every
    # random crop (a mirror would darken them), while flip=True mirrors some of them
    ramp = (torch.arange(40) * 6).to(torch.uint8).view(1, 1, 40, 1).expand(4, 30, 40, 3).contiguous()

    def brightens(x):
        return bool(x[..., 0].mean() < x[..., -1].mean())
    assert all(brightens(train_transform(ramp, 16, np.random.default_rng(seed), flip=False)) for seed in range(40))
    assert not all(brightens(train_transform(ramp, 16, np.random.default_rng(seed), flip=True)) for seed in range(40))


def _write_frames(folder, n, size=(20, 24)):
    from PIL import Image
    folder.mkdir(parents=True)
    for i in range(n):
        value = np.full((*size, 3), 10 * i, np.uint8)
        Image.fromarray(value).save(folder / f"img_{i + 1:05d}.jpg", quality=95)


def test_frame_folders_round_trip_and_skip_missing(tmp_path):
    _write_frames(tmp_path / "a", 16)
    _write_frames(tmp_path / "b", 8)
    (tmp_path / "list.txt").write_text("a 16 0\nb 8 1\nmissing 8 2\n")
    cfg = dict(name="frames", root=str(tmp_path), annotations=str(tmp_path / "list.txt"), sampling="segments",
               num_segments=4, size=16, scale_size=16, num_classes=3)
    ds = build_dataset(cfg, "val")
    clip, label = ds[0]
    assert clip.shape == (3, 4, 16, 16) and label == 0
    # segment centres 2, 6, 10, 14 of 16 frames: brightness 10 * index (JPEG-rounded)
    means = (clip * torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1, 1)
             + torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1, 1)).mean((0, 2, 3)) * 255
    np.testing.assert_allclose(means.numpy(), [20, 60, 100, 140], atol=3)
    clips, labels, skipped = collate_skip([ds[i] for i in range(3)])
    assert clips.shape == (2, 3, 4, 16, 16) and labels.tolist() == [0, 1]
    assert len(skipped) == 1 and skipped[0].path.endswith("missing") and "FileNotFoundError" in skipped[0].error


def test_video_files_round_trip_and_skip_corrupt(tmp_path):
    import av  # PyAV: in the [video] and [dev] extras
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(12):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 20 * i, np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    (tmp_path / "bad.mp4").write_bytes(b"not a video at all")
    (tmp_path / "list.txt").write_text("clip.mp4 4\nbad.mp4 5\nnothere.mp4 1\n")
    cfg = dict(name="video", root=str(tmp_path), annotations=str(tmp_path / "list.txt"), sampling="dense",
               clip_len=4, frame_interval=3, size=24, num_classes=6)
    ds = build_dataset(cfg, "train")
    clips, labels, skipped = collate_skip([ds[i] for i in range(3)])
    assert clips.shape == (1, 3, 4, 24, 24) and labels.tolist() == [4]
    assert [Path(b.path).name for b in skipped] == ["bad.mp4", "nothere.mp4"]
    # frames 3 apart: the decoded brightness steps by 60 between sampled frames
    bright = (clips[0] * 0.226 + 0.449).mean((0, 2, 3)) * 255
    assert np.allclose(np.diff(bright.numpy()), 60, atol=6)


def _frames_dataset(tmp_path, n=10, missing=0):
    """n frame folders of 8 frames (labels alternate 0/1) listed in list.txt, plus ``missing`` listed
    folders that do not exist (listed first)."""
    lines = [f"gone{i} 8 {i % 2}" for i in range(missing)]
    for i in range(n):
        _write_frames(tmp_path / f"v{i}", 8, size=(16, 16))
        lines.append(f"v{i} 8 {i % 2}")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    return dict(name="frames", root=str(tmp_path), annotations=str(tmp_path / "list.txt"), sampling="segments",
                num_segments=4, size=16, scale_size=16, num_classes=2)


@pytest.mark.parametrize("change, error", [
    (dict(root="nowhere"), r"root: no folder '.*nowhere'.*data.root"),
    (dict(annotations="nolist.txt"), r"annotations: no file 'nolist.txt'"),
    (dict(template="frame_{:03d}.png"), r"template: no 'frame_001.png' .*img_00001.jpg.*data.start_index"),
    (dict(template="img.jpg"), r"template: 'img.jpg' has no field for the frame number"),
    (dict(template="img_{x}.jpg"), r"template: 'img_\{x\}.jpg' is not a frame-name pattern"),
    (dict(start_index=0), r"template: no 'img_00000.jpg'"),
])
def test_frame_source_mistakes_fail_at_construction_naming_the_path(tmp_path, change, error):
    cfg = {**_frames_dataset(tmp_path, n=2), **change}
    with pytest.raises(DataError, match=error):
        build_dataset(cfg, "train")


def test_wrong_root_and_missing_decoder_fail_at_construction(tmp_path, monkeypatch):
    cfg = _frames_dataset(tmp_path / "a", n=2)
    (tmp_path / "b").mkdir()
    with pytest.raises(DataError, match=r"root: none of the first 2 listed samples exists under '.*b'"):
        build_dataset({**cfg, "root": str(tmp_path / "b")}, "val")
    monkeypatch.setattr(FrameFolderDataset, "decoder", "no_such_decoder_module")
    with pytest.raises(DataError,
                       match=r"reads files with no_such_decoder_module, which is not installed.*pip install"):
        build_dataset(cfg, "val")


def test_only_read_errors_are_skipped_a_bug_propagates(tmp_path, monkeypatch):
    ds = build_dataset(_frames_dataset(tmp_path, n=2), "val")

    def broken(*args):
        raise TypeError("a bug, not a bad file")
    monkeypatch.setattr(FrameFolderDataset, "load", broken)
    with pytest.raises(TypeError, match="a bug"):
        ds[0]


def _frames_run(tmp_path, data, **train):
    return run_config({"data": data, "train": {"epochs": 1, "batch_size": 2, "lr": 0.01, **train},
                       "teacher": {"model": {}}, "student": {"model": dict(
                           name="resnet3d", depth=10, width=2, stem_stride=[1, 4, 4], stem_pool=False)}}, "student")


def test_unreadable_samples_are_counted_and_a_large_share_stops_the_run(tmp_path):
    # 2 missing folders listed first (the shape probe must find readable ones) among 12
    cfg = _frames_run(tmp_path, _frames_dataset(tmp_path / "data", n=10, missing=2), max_unreadable=0.25)
    summary = fit(cfg, tmp_path / "ok", progress=False)
    log = (tmp_path / "ok" / "log.csv").read_text().splitlines()
    header, row = log[0].split(","), log[1].split(",")
    assert int(row[header.index("val_skipped")]) == 2 and summary["val_skipped"] == 2
    assert 0 <= summary["skipped"] <= 2 and summary["skipped"] == int(row[header.index("skipped")])
    cfg["train"]["max_unreadable"] = 0.1
    with pytest.raises(DataError, match=r"unreadable, more than train.max_unreadable=0.1.*gone[01]"):
        fit(cfg, tmp_path / "stop", progress=False)
