"""Multi-view testing (vkd evaluate --clips N --crops M): the clip and crop sampling, the
per-video averaging of mmaction2's configs (mean softmax), one view equal to the ordinary
evaluation, and a 2-process gloo run equal to one process over the same shards."""
import json
import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch.utils.data import DataLoader
from train_helpers import shard_counts

from vkd_kernels.train import cli
from vkd_kernels.train.config import ConfigError, load_recipe
from vkd_kernels.train.data import build_dataset, collate_skip
from vkd_kernels.train.data.sampling import (
    crop_views,
    crop_windows,
    dense_indices,
    dense_views,
    segment_indices,
    segment_views,
    val_transform,
)
from vkd_kernels.train.engine import average_views, evaluate, evaluate_counts, load_model
from vkd_kernels.train.models import build_model

H, W, FRAMES = 16, 24, 12


# ----------------------------------------------------------------------------- sampling
def test_segment_views_are_offsets_within_the_segments():
    # 16 frames, 4 segments of 4: clip j of 2 takes frame (j + 1/2) / 2 * 4 of each segment
    assert segment_views(16, 4, 2).tolist() == [[1, 5, 9, 13], [3, 7, 11, 15]]
    assert segment_views(16, 4, 4).tolist() == [[0, 4, 8, 12], [1, 5, 9, 13], [2, 6, 10, 14], [3, 7, 11, 15]]
    for n in range(1, 40):           # one clip is the ordinary test clip; every index is a frame
        assert np.array_equal(segment_views(n, 8, 1)[0], segment_indices(n, 8, False, None))
        views = segment_views(n, 8, 3)
        assert views.shape == (3, 8) and views.min() >= 0 and views.max() < n


def test_dense_views_are_uniformly_spaced_clips():
    # 20 frames, clips of 4 frames 2 apart (span 7): starts in [0, 13], centres of 3 equal parts
    assert dense_views(20, 4, 2, 3).tolist() == [[2, 4, 6, 8], [6, 8, 10, 12], [10, 12, 14, 16]]
    assert dense_views(5, 4, 2, 2).tolist() == [[0, 2, 4, 1], [0, 2, 4, 1]]      # shorter than a clip: loops
    for n in range(1, 40):
        assert np.array_equal(dense_views(n, 4, 3, 1)[0], dense_indices(n, 4, 3, False, None))
        starts = dense_views(n, 4, 3, 5)[:, 0]
        assert (np.diff(starts) >= 0).all() and starts.max() <= max(n - 10, 0)


def test_crop_windows_follow_the_long_side():
    assert crop_windows(16, 24, 16, 1) == [(0, 4, False)]
    assert crop_windows(16, 24, 16, 3) == [(0, 0, False), (0, 4, False), (0, 8, False)]     # wide: left..right
    assert crop_windows(24, 16, 16, 3) == [(0, 0, False), (4, 0, False), (8, 0, False)]     # tall: top..bottom
    assert crop_windows(20, 24, 16, 3) == [(2, 0, False), (2, 4, False), (2, 8, False)]     # short side centred
    ten = crop_windows(20, 24, 16, 10)
    assert ten[:5] == [(0, 0, False), (0, 8, False), (4, 0, False), (4, 8, False), (2, 4, False)]
    assert ten[5:] == [(t, left, True) for t, left, _ in ten[:5]]
    with pytest.raises(ValueError, match="crops must be one of"):
        crop_windows(16, 24, 16, 5)


def test_crop_views_cut_and_mirror_the_resized_frames():
    column = np.tile(np.arange(W, dtype=np.uint8) * 10, (2, H, 1))              # (T, H, W): value 10 * x
    frames = torch.from_numpy(np.repeat(column[..., None], 3, -1))
    views = crop_views(frames, 16, 16, 3)                                        # no resize: short side 16
    assert views.shape == (3, 3, 2, 16, 16)
    x = views[:, 0, 0, 0] * 0.229 + 0.485                                        # undo the normalisation
    for view, left in zip(x, (0, 4, 8)):
        assert torch.allclose(view * 255, torch.arange(left, left + 16) * 10.0, atol=1e-3)
    ten = crop_views(frames, 16, 16, 10)
    assert torch.equal(ten[5:], ten[:5].flip(-1))
    assert torch.equal(crop_views(frames, 16, 16, 1)[0], val_transform(frames, 16, 16))


# ----------------------------------------------------------------------------- datasets
def _png_frames(folder, n, rng):
    from PIL import Image
    folder.mkdir(parents=True)
    frames = rng.integers(0, 256, (n, H, W, 3), dtype=np.uint8)
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"img_{i + 1:05d}.png")
    return frames


def frames_data(tmp_path, videos=3, classes=3, seed=0, **extra):
    """``videos`` folders of FRAMES lossless frames (H x W), labels cycling over ``classes``."""
    rng = np.random.default_rng(seed)
    stored = {}
    lines = []
    for v in range(videos):
        stored[f"v{v}"] = _png_frames(tmp_path / f"v{v}", FRAMES, rng)
        lines.append(f"v{v} {FRAMES} {v % classes}")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    data = dict(name="frames", root=str(tmp_path), annotations=str(tmp_path / "list.txt"), template="img_{:05d}.png",
                size=16, scale_size=16, num_classes=classes, **extra)
    return data, stored


@pytest.mark.parametrize("sampling, clips, crops", [("segments", 2, 3), ("dense", 3, 1), ("segments", 1, 10)])
def test_dataset_views_are_the_clips_times_the_crops(tmp_path, sampling, clips, crops):
    data, stored = frames_data(tmp_path, videos=1, sampling=sampling, num_segments=4, clip_len=3, frame_interval=2)
    ds = build_dataset(data, "val")
    plain = ds[0][0]
    ds.set_views(clips, crops)
    stack, label = ds[0]
    frames = torch.from_numpy(stored["v0"])
    rows = segment_views(FRAMES, 4, clips) if sampling == "segments" else dense_views(FRAMES, 3, 2, clips)
    assert stack.shape == (clips * crops, 3, rows.shape[1], 16, 16) and label == 0
    for c, row in enumerate(rows):                                             # clip-major
        assert torch.equal(stack[c * crops:(c + 1) * crops], crop_views(frames[row], 16, 16, crops))
    ds.set_views(1, 1)
    assert torch.equal(ds[0][0], plain)                                        # one view: the ordinary clip
    with pytest.raises(ConfigError, match="crops: one of 1, 3, 10"):
        ds.set_views(1, 4)
    with pytest.raises(ConfigError, match="clips: an integer >= 1"):
        ds.set_views(0, 1)


# ----------------------------------------------------------------------------- averaging
def test_average_views_by_hand():
    """mean softmax ("prob") and mean logits ("score") pick different classes here:
    one confident view for class 1, three mild ones for class 0."""
    logits = torch.tensor([[[0.0, 10.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]])
    e, big = np.e, np.exp(10.0)
    prob0 = (1 / (1 + big) + 3 * e / (e + 1)) / 4
    assert average_views(logits, "prob")[0].tolist() == pytest.approx([prob0, 1 - prob0], rel=1e-6)
    assert average_views(logits, "score")[0].tolist() == pytest.approx([0.75, 2.5])
    assert average_views(logits, "prob").argmax(1).item() == 0 and average_views(logits, "score").argmax(1).item() == 1
    with pytest.raises(ValueError, match="average must be one of prob, score"):
        average_views(logits, "max")


class _TableModel(torch.nn.Module):
    """Logits looked up by the id each clip carries in its first value."""

    def __init__(self, table):
        super().__init__()
        self.table = table

    def forward(self, clips):
        return self.table[clips.flatten(1)[:, 0].long()]


def test_evaluate_counts_average_each_videos_views_by_hand():
    gen = torch.Generator().manual_seed(0)
    videos, views, classes = 7, 6, 5
    table = torch.randn(videos * views, classes, generator=gen) * 3
    labels = torch.randint(classes, (videos,), generator=gen)
    samples = [(torch.arange(v * views, (v + 1) * views).float().view(views, 1, 1, 1, 1).expand(views, 3, 1, 1, 1),
                int(labels[v])) for v in range(videos)]
    loader = DataLoader(samples, batch_size=3, collate_fn=collate_skip)
    for average in ("prob", "score"):
        got = evaluate_counts(_TableModel(table), loader, torch.device("cpu"), average=average)
        correct1 = correct5 = 0
        for v in range(videos):                       # by hand: the views' rows of the table
            rows = table[v * views:(v + 1) * views]
            score = (rows.exp() / rows.exp().sum(1, keepdim=True)).mean(0) if average == "prob" else rows.mean(0)
            ranked = score.argsort(descending=True).tolist()
            correct1 += ranked[0] == int(labels[v])
            correct5 += int(labels[v]) in ranked[:5]
        assert (got["correct1"], got["correct5"], got["samples"]) == (correct1, correct5, videos)


# ----------------------------------------------------------------------------- vkd evaluate
def _recipe_and_checkpoint(tmp_path, videos=5, **extra):
    data, _ = frames_data(tmp_path / "data", videos=videos, sampling="segments", num_segments=4)
    data.update(extra)
    path = tmp_path / "recipe.json"
    base = load_recipe("synthetic-full")
    path.write_text(json.dumps({**base, "data": data, "train": {**base["train"], "batch_size": 2}}))
    torch.manual_seed(0)
    model = build_model({"name": "resnet3d", "depth": 10, "width": 4}, 3)
    ckpt = tmp_path / "model.pt"
    torch.save({"spec": {"name": "resnet3d", "depth": 10, "width": 4}, "num_classes": 3,
                "state_dict": model.state_dict()}, ckpt)
    return str(path), str(ckpt)


def test_one_view_is_the_ordinary_evaluation_and_bad_views_are_named(tmp_path):
    recipe_path, ckpt = _recipe_and_checkpoint(tmp_path)
    recipe = load_recipe(recipe_path)
    one = cli.evaluate_command(recipe, ckpt, clips=1, crops=1)
    val = build_dataset(recipe["data"], "val")
    plain = evaluate(load_model(ckpt), DataLoader(val, batch_size=2, collate_fn=collate_skip), torch.device("cpu"))
    assert {k: one[k] for k in plain} == plain and (one["clips"], one["crops"], one["average"]) == (1, 1, "prob")
    many = cli.evaluate_command(recipe, ckpt, clips=2, crops=3, average="score")
    assert many["samples"] == 5 and (many["clips"], many["crops"], many["average"]) == (2, 3, "score")
    with pytest.raises(ConfigError, match=r"--crops: must be 1 \(centre\), 3 .* or 10"):
        cli.evaluate_command(recipe, ckpt, crops=4)
    with pytest.raises(ConfigError, match="--clips: must be >= 1"):
        cli.evaluate_command(recipe, ckpt, clips=0)
    with pytest.raises(ConfigError, match="synthetic dataset has one clip .* needs data.name frames or video"):
        cli.evaluate_command(load_recipe("synthetic-full"), ckpt, clips=2)
    with pytest.raises(ConfigError, match=r"evaluate.crops: must be 1"):         # the recipe key, at load
        load_recipe(recipe_path, ["evaluate.crops=5"])
    with pytest.raises(ConfigError, match=r"evaluate.average: expected one of 'prob', 'score'"):
        load_recipe(recipe_path, ["evaluate.average=mean"])
    # the recipe's evaluate section is the default, the options override it
    keyed = load_recipe(recipe_path, ["evaluate.clips=2", "evaluate.crops=3", "evaluate.average=score"])
    assert cli.evaluate_command(keyed, ckpt) == many
    assert cli.main(["evaluate", "--recipe", recipe_path, "--checkpoint", ckpt, "--crops", "7"]) == 2


def _views_worker(rank, port, recipe_path, ckpt, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    result = cli.evaluate_command(load_recipe(recipe_path), ckpt, clips=2, crops=3)
    torch.save(result, os.path.join(out, f"rank{rank}.pt"))
    torch.distributed.destroy_process_group()


def test_two_process_multi_view_evaluation_counts_each_video_once(tmp_path):
    """5 videos over 2 gloo ranks (shards of 3 and 2), 2 clips x 3 crops each: both ranks
    report the whole set, equal to one process over the same shards."""
    recipe_path, ckpt = _recipe_and_checkpoint(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_views_worker, args=(port, recipe_path, ckpt, str(tmp_path)), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert results[0] == results[1] and results[0]["samples"] == 5
    val = build_dataset(load_recipe(recipe_path)["data"], "val")
    val.set_views(2, 3)
    model = load_model(ckpt)
    counts = shard_counts(model, val, batch_size=2)
    assert [c["samples"] for c in counts] == [3, 2]
    assert results[0]["top1"] == 100 * sum(c["correct1"] for c in counts) / 5
    assert results[0]["top5"] == 100 * sum(c["correct5"] for c in counts) / 5
