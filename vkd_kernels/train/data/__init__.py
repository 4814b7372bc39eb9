"""Datasets of the trainer: ``build_dataset(data_cfg, split)``.

``data_cfg["name"]``: "synthetic" (the embedded benchmark), "frames" (frame folders
plus an annotation list) or "video" (video files decoded with PyAV).
"""
from __future__ import annotations

from typing import Dict

import torch

from .synthetic import SyntheticMotion


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
        from .frames import FrameFolderDataset, VideoDataset
        cls = FrameFolderDataset if name == "frames" else VideoDataset
        return cls(train=(split == "train"), **cfg)
    raise ValueError(f"data name must be 'synthetic', 'frames' or 'video', got {name!r}")


def collate_skip(batch):
    """Default collate that drops the samples a dataset returned as None (unreadable
    videos) and counts them: returns (clips, labels, num_skipped)."""
    kept = [b for b in batch if b is not None]
    skipped = len(batch) - len(kept)
    if not kept:
        return None, None, skipped
    clips, labels = zip(*kept)
    return torch.stack(clips), torch.as_tensor(labels), skipped


__all__ = ["SyntheticMotion", "build_dataset", "collate_skip"]
