"""Real data in the formats people already have.

* :class:`FrameFolderDataset`: frame dumps ``<root>/<path>/<template.format(i)>`` with
  an annotation list of lines ``path num_frames label`` (UCF101 / HMDB51 / Kinetics /
  Something-Something dumps as mmaction2 and TSN write them). JPEGs read with Pillow.
* :class:`VideoDataset`: video files ``<root>/<path>`` with lines ``path label`` (or
  ``path num_frames label``), decoded with PyAV (``pip install "vkd-kernels[video]"``).

A sample that cannot be read (missing or corrupt file, no frames) is skipped with a
warning: ``__getitem__`` returns None, :func:`vkd_kernels.train.data.collate_skip`
drops it and the trainer counts it per epoch; it never stops an epoch.
Randomness (sampling, crops, flips) comes from ``default_rng([seed, epoch, index])``,
so a sample is the same whichever worker loads it and after a resume.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from . import formats
from .sampling import dense_indices, segment_indices, train_transform, val_transform


def read_annotations(path, with_num_frames: Optional[bool] = None) -> List[Tuple[str, int, int]]:
    """[(path, num_frames or -1, label)] from "path [num_frames] label" lines."""
    items = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) == 3:
            items.append((parts[0], int(parts[1]), int(parts[2])))
        elif len(parts) == 2 and with_num_frames is not True:
            items.append((parts[0], -1, int(parts[1])))
        else:
            raise ValueError(f"annotations: {path}:{number}: expected 'path num_frames label', got {line!r}")
    return items


class _ClipDataset(Dataset):
    def __init__(self, root, annotations, *, train: bool, num_classes: Optional[int] = None,
                 sampling: str = "segments", num_segments: int = 8, clip_len: int = 16, frame_interval: int = 1,
                 size: int = 224, scale_size: Optional[int] = None, flip: bool = True, seed: int = 0,
                 format: str = "list", split: int = 1, classes=None):
        if sampling not in ("segments", "dense"):
            raise ValueError(f"sampling must be 'segments' or 'dense', got {sampling!r}")
        self.root, self.train, self.sampling = Path(root), train, sampling
        # the official annotation files (UCF101, HMDB51, Kinetics, SSv2, Jester) or our lists
        found = formats.read(format, annotations, root=root, train=train, split=split, classes=classes,
                             videos=not isinstance(self, FrameFolderDataset))
        if found.missing:
            warnings.warn(f"{format}: {len(found.missing)} of {len(found.items) + len(found.missing)} videos listed "
                          f"in {annotations} are not under {root} (first: {found.missing[0]}); left out")
        self.items, self.classes = found.items, found.classes
        self.num_classes = num_classes or len(self.classes)
        wrong = next((item for item in self.items if not 0 <= item[2] < self.num_classes), None)
        if wrong is not None:
            raise ValueError(f"annotations {annotations}: label {wrong[2]} of {wrong[0]} is outside "
                             f"num_classes={self.num_classes}")
        self.num_segments, self.clip_len, self.frame_interval = num_segments, clip_len, frame_interval
        self.size, self.scale_size, self.flip = size, scale_size or round(size * 8 / 7), flip
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def indices(self, num_frames: int, rng) -> np.ndarray:
        if self.sampling == "segments":
            return segment_indices(num_frames, self.num_segments, self.train, rng)
        return dense_indices(num_frames, self.clip_len, self.frame_interval, self.train, rng)

    def __getitem__(self, index: int):
        path, num_frames, label = self.items[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        try:
            frames = self.load(self.root / path, num_frames, rng)            # uint8 (T, H, W, 3)
        except Exception as error:  # noqa: BLE001 - any unreadable sample is skipped, never fatal
            warnings.warn(f"skipping unreadable sample {self.root / path}: {type(error).__name__}: {error}")
            return None
        clip = (train_transform(frames, self.size, rng, self.flip) if self.train
                else val_transform(frames, self.size, self.scale_size))
        return clip, label


class FrameFolderDataset(_ClipDataset):
    """Frame folders + "path num_frames label" list; ``template`` names frame i
    (``start_index`` is the first, 1 in mmaction2 dumps)."""

    def __init__(self, root, annotations, *, template: str = "img_{:05d}.jpg", start_index: int = 1, **kwargs):
        super().__init__(root, annotations, **kwargs)
        self.template, self.start_index = template, start_index

    def load(self, folder: Path, num_frames: int, rng) -> torch.Tensor:
        from PIL import Image
        if num_frames == -1:                            # an official format: count the folder's frames
            num_frames = formats.count_frames(folder, Path(self.template).suffix)
        if num_frames < 1:
            raise ValueError(f"num_frames is {num_frames}")
        frames = []
        for i in self.indices(num_frames, rng):
            with Image.open(folder / self.template.format(int(i) + self.start_index)) as image:
                frames.append(np.asarray(image.convert("RGB")))
        return torch.from_numpy(np.stack(frames))


class VideoDataset(_ClipDataset):
    """Video files decoded with PyAV (:mod:`.decode`: only the frames a clip needs)."""

    def load(self, path: Path, num_frames: int, rng) -> torch.Tensor:
        try:
            import av
        except ImportError as error:
            raise ImportError('VideoDataset needs PyAV: pip install "vkd-kernels[video]"') from error
        from .decode import read_frames             # seeks: decodes only the frames the clip needs
        return torch.from_numpy(read_frames(path, sample=lambda n: self.indices(n, rng)))
