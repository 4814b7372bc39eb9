"""Datasets of the trainer: ``build_dataset(data_cfg, split)``.

``data_cfg["name"]``: "synthetic" (the embedded benchmark), "frames" (frame folders
plus an annotation list) or "video" (video files decoded with PyAV). The keys a data
section may hold are the keyword arguments of the dataset (``DATASETS``), which
:mod:`vkd_kernels.train.config` checks when a recipe is loaded.
"""
from __future__ import annotations

from typing import Dict

import torch

from . import synthetic
from .frames import DataError, FrameFolderDataset, Unreadable, VideoDataset, _ClipDataset
from .synthetic import SyntheticMotion

# name: ([the constructor and the functions its **kwargs reach], arguments set by build_dataset)
DATASETS = {
    "synthetic": ([SyntheticMotion.__init__, synthetic.sample_params], ("split", "rng", "label")),
    "frames": ([FrameFolderDataset.__init__, _ClipDataset.__init__], ("train",)),
    "video": ([VideoDataset.__init__, _ClipDataset.__init__], ("train",)),
}


def build_dataset(cfg: Dict, split: str):
    cfg = dict(cfg)
    name = cfg.pop("name", "synthetic")
    per_split = cfg.pop(split, {}) or {}
    for other in ("train", "val", "test"):
        cfg.pop(other, None)
    cfg.update(per_split)
    if name == "synthetic":
        return SyntheticMotion(split=split, **cfg)
    if name in ("frames", "video"):
        cls = FrameFolderDataset if name == "frames" else VideoDataset
        return cls(train=(split == "train"), **cfg)
    raise DataError(f"data name must be 'synthetic', 'frames' or 'video', got {name!r}")


def collate_skip(batch):
    """Default collate that takes out the samples a dataset could not read
    (:class:`Unreadable` records, or None) and returns them: (clips, labels, unreadable),
    clips and labels None when no sample of the batch was readable."""
    kept = [b for b in batch if b is not None and not isinstance(b, Unreadable)]
    unreadable = [b if b is not None else Unreadable("?", "the dataset returned None") for b in batch
                  if b is None or isinstance(b, Unreadable)]
    if not kept:
        return None, None, unreadable
    clips, labels = zip(*kept)
    return torch.stack(clips), torch.as_tensor(labels), unreadable


def probe_batch(dataset, n: int = 2, tries: int = 64) -> torch.Tensor:
    """A batch of the first ``n`` readable clips of ``dataset`` (the shape probe of the
    methods); a :class:`DataError` with examples if the first ``tries`` samples give fewer."""
    clips, bad = [], []
    for index in range(min(len(dataset), tries)):
        sample = dataset[index]
        if sample is None or isinstance(sample, Unreadable):
            bad.append(sample)
            continue
        clips.append(sample[0])
        if len(clips) == n:
            return torch.stack(clips)
    examples = "; ".join(f"{b.path}: {b.error}" for b in bad[:3] if b is not None)
    raise DataError(f"data: only {len(clips)} of the first {min(len(dataset), tries)} samples are readable "
                    f"(need {n}); e.g. {examples or 'the dataset returned None'}")


__all__ = ["DATASETS", "DataError", "FrameFolderDataset", "SyntheticMotion", "Unreadable", "VideoDataset",
           "build_dataset", "collate_skip", "probe_batch"]
