"""Real data in the formats people already have.

* :class:`FrameFolderDataset`: frame dumps ``<root>/<path>/<template.format(i)>`` with
  an annotation list of lines ``path num_frames label`` (UCF101 / HMDB51 / Kinetics /
  Something-Something dumps as mmaction2 and TSN write them). JPEGs read with Pillow.
* :class:`VideoDataset`: video files ``<root>/<path>`` with lines ``path label`` (or
  ``path num_frames label``), decoded with PyAV (``pip install "vkd-kernels[video]"``).

Mistakes that would spoil every sample fail at construction (:class:`DataError`, naming
the argument, the path and the fix): a missing ``root`` folder or ``annotations`` file, an
empty list, a missing decoder (Pillow / PyAV), a ``template`` without a frame-number
field, and a ``root`` or ``template`` under which none of the first listed samples exist.

A single sample that cannot be read (a missing or corrupt file, no frames) is skipped:
``__getitem__`` returns an :class:`Unreadable` record (path and error), which
:func:`vkd_kernels.train.data.collate_skip` takes out of the batch and hands to the
trainer, which counts them (``log.csv``, ``summary.json``) and stops the run when more
than ``train.max_unreadable`` of an epoch's samples are unreadable. Only read errors
(``OSError``, ``ValueError``, ``EOFError``, PyAV's errors) are skipped: anything else is a
bug and propagates.
Randomness (sampling, crops, flips) comes from ``default_rng([seed, epoch, index])``,
so a sample is the same whichever worker loads it and after a resume.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal, NamedTuple, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from . import formats
from .formats import DataError, Format
from .sampling import (
    CROPS,
    crop_views,
    dense_indices,
    dense_views,
    segment_indices,
    segment_views,
    train_transform,
    val_transform,
)

ANNOTATION_FORMATS = formats.FORMATS  # our lists and the official files (data/formats.py)
PROBE_ITEMS = 8                     # samples whose files are looked for at construction


class Unreadable(NamedTuple):
    """What a dataset returns for a sample it cannot read."""
    path: str
    error: str


class _ClipDataset(Dataset):
    decoder = ""           # the module that reads the files, checked at construction
    install = ""

    def __init__(self, root, annotations, *, train: bool, num_classes: Optional[int] = None,
                 sampling: Literal["segments", "dense"] = "segments", num_segments: int = 8, clip_len: int = 16,
                 frame_interval: int = 1, size: int = 224, scale_size: Optional[int] = None, flip: bool = True,
                 seed: int = 0, format: Format = "list", split: int = 1, classes: Optional[str] = None):
        if sampling not in ("segments", "dense"):
            raise DataError(f"sampling must be 'segments' or 'dense', got {sampling!r}")
        if format not in ANNOTATION_FORMATS:
            raise DataError(f"format must be one of {', '.join(ANNOTATION_FORMATS)}, got {format!r}")
        self.root, self.train, self.sampling = Path(root), train, sampling
        if not self.root.is_dir():
            raise DataError(f"root: no folder {str(self.root)!r} (the folder the annotation paths are relative "
                            f"to): fix data.root in the recipe or pass --set data.root=PATH")
        folder = format == "hmdb51"             # hmdb51: the folder of the official split files
        if not (Path(annotations).is_dir() if folder else Path(annotations).is_file()):
            what = ("folder", "the official split folder (testTrainMulti_7030_splits)") if folder else \
                ("file", "the annotation list of this split" if format == "list" else f"the official {format} file")
            raise DataError(f"annotations: no {what[0]} {str(annotations)!r} ({what[1]}): fix "
                            f"data.<split>.annotations in the recipe or pass --set data.<split>.annotations=PATH")
        self.read_errors = self.check_decoder()
        # the official annotation files (UCF101, HMDB51, Kinetics, SSv2, Jester) or our lists
        found = formats.read(format, annotations, root=root, train=train, split=split, classes=classes,
                             videos=not isinstance(self, FrameFolderDataset))
        if found.missing and not found.items:
            raise DataError(f"root: none of the {len(found.missing)} videos listed in {str(annotations)!r} is "
                            f"under {str(self.root)!r} (first: {found.missing[0]}): is data.root the videos folder?")
        if found.missing:
            warnings.warn(f"{format}: {len(found.missing)} of {len(found.items) + len(found.missing)} videos listed "
                          f"in {annotations} are not under {root} (first: {found.missing[0]}); left out")
        if not found.items:
            raise DataError(f"annotations: {str(annotations)!r} lists no samples")
        self.items, self.classes = found.items, found.classes
        self.num_classes = num_classes or len(self.classes)
        wrong = next((item for item in self.items if not 0 <= item[2] < self.num_classes), None)
        if wrong is not None:
            raise DataError(f"annotations {annotations}: label {wrong[2]} of {wrong[0]} is outside "
                            f"num_classes={self.num_classes}")
        self.num_segments, self.clip_len, self.frame_interval = num_segments, clip_len, frame_interval
        self.size, self.scale_size, self.flip = size, scale_size or round(size * 8 / 7), flip
        self.seed, self.epoch = seed, 0
        self.views = (1, 1)                     # (clips, crops) per test sample: set_views

    def check_decoder(self) -> tuple:
        """Import the decoder (a clear error naming the install if it is missing) and return
        the exception types that mean "this sample cannot be read"."""
        try:
            __import__(self.decoder)
        except ImportError as error:
            raise DataError(f"{type(self).__name__} reads files with {self.decoder}, which is not installed "
                            f"({error}): {self.install}") from None
        return (OSError, ValueError, EOFError)

    def check_sources(self) -> None:
        """Look for the files of the first listed samples: if none exists, ``root`` is wrong."""
        probes = [self.root / path for path, _, _ in self.items[:PROBE_ITEMS]]
        if not any(p.exists() for p in probes):
            raise DataError(f"root: none of the first {len(probes)} listed samples exists under "
                            f"{str(self.root)!r} (e.g. {str(probes[0])!r}): is data.root the folder the "
                            f"annotation paths are relative to?")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_views(self, clips: int = 1, crops: int = 1) -> None:
        """Multi-view testing: each sample becomes a (clips x crops, 3, T, s, s) stack of
        ``clips`` clips (:func:`segment_views` / :func:`dense_views`) times ``crops``
        crops (:func:`crop_windows`: 1, 3 or 10), clip-major. 1 x 1 is the plain clip."""
        if self.train:
            raise ValueError("set_views: multi-view testing is for a test split (train=False)")
        if not isinstance(clips, int) or isinstance(clips, bool) or clips < 1:
            raise DataError(f"clips: an integer >= 1, got {clips!r}")
        if crops not in CROPS or isinstance(crops, bool):
            raise DataError(f"crops: one of {', '.join(map(str, CROPS))} (centre; three along the long side; "
                            f"five and their mirror images), got {crops!r}")
        self.views = (clips, crops)

    def __len__(self) -> int:
        return len(self.items)

    def indices(self, num_frames: int, rng) -> np.ndarray:
        """The frames to read: one clip, or under :meth:`set_views` every clip's, concatenated."""
        clips = self.views[0]
        if not self.train and clips > 1:
            if self.sampling == "segments":
                return segment_views(num_frames, self.num_segments, clips).reshape(-1)
            return dense_views(num_frames, self.clip_len, self.frame_interval, clips).reshape(-1)
        if self.sampling == "segments":
            return segment_indices(num_frames, self.num_segments, self.train, rng)
        return dense_indices(num_frames, self.clip_len, self.frame_interval, self.train, rng)

    def __getitem__(self, index: int):
        path, num_frames, label = self.items[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        try:
            frames = self.load(self.root / path, num_frames, rng)            # uint8 (T, H, W, 3)
        except self.read_errors as error:      # a missing or corrupt sample; anything else is a bug
            return Unreadable(str(self.root / path), f"{type(error).__name__}: {error}")
        clips, crops = self.views
        if self.train or clips * crops == 1:
            clip = (train_transform(frames, self.size, rng, self.flip) if self.train
                    else val_transform(frames, self.size, self.scale_size))
            return clip, label
        views = [crop_views(part, self.size, self.scale_size, crops) for part in frames.chunk(clips)]
        return torch.cat(views), label          # (clips * crops, 3, T, s, s)


class FrameFolderDataset(_ClipDataset):
    """Frame folders + "path num_frames label" list (a "path label" line, or an official
    format, has its frames counted when read); ``template`` names frame i (``start_index``
    is the first, 1 in mmaction2 dumps)."""

    decoder, install = "PIL", 'pip install pillow (or pip install "vkd-kernels[video]")'

    def __init__(self, root, annotations, *, template: str = "img_{:05d}.jpg", start_index: int = 1, **kwargs):
        super().__init__(root, annotations, **kwargs)
        self.template, self.start_index = template, start_index
        try:
            names = {template.format(start_index), template.format(start_index + 1)}
        except (IndexError, KeyError, ValueError) as error:
            raise DataError(f"template: {template!r} is not a frame-name pattern ({type(error).__name__}: "
                            f"{error}); it needs one field for the frame number, e.g. 'img_{{:05d}}.jpg'") from None
        if len(names) == 1:
            raise DataError(f"template: {template!r} has no field for the frame number, e.g. 'img_{{:05d}}.jpg'")
        self.check_sources()

    def check_sources(self) -> None:
        """The first listed folders must exist (else ``root`` is wrong) and hold their first
        frame under ``template`` (else ``template`` / ``start_index`` are)."""
        super().check_sources()
        folders = [self.root / path for path, _, _ in self.items[:PROBE_ITEMS]]
        first = self.template.format(self.start_index)
        if any((f / first).is_file() for f in folders):
            return
        folder = next(f for f in folders if f.exists())
        found = sorted(p.name for p in folder.iterdir())[:3] if folder.is_dir() else []
        raise DataError(f"template: no {first!r} in any of the first {len(folders)} listed folders (e.g. "
                        f"{str(folder)!r}, which holds {found or 'no files'}): set data.template (a pattern "
                        f"such as 'img_{{:05d}}.jpg') and data.start_index (the first frame's number) to match")

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
    decoder, install = "av", 'pip install av (or pip install "vkd-kernels[video]")'

    def __init__(self, root, annotations, **kwargs):
        super().__init__(root, annotations, **kwargs)
        self.check_sources()

    def check_decoder(self) -> tuple:
        errors = super().check_decoder()
        import av
        return errors + (av.FFmpegError,)

    def load(self, path: Path, num_frames: int, rng) -> torch.Tensor:
        from .decode import read_frames  # seeks: decodes only the frames the clip needs
        return torch.from_numpy(read_frames(path, sample=lambda n: self.indices(n, rng)))
