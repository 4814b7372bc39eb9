"""The official annotation formats of the recipes' datasets, read as they are downloaded.

Every reader returns an :class:`Annotations`: ``items`` [(path relative to ``root``,
num_frames or -1, label)], ``classes`` (names, index = label) and ``missing`` (listed
videos not found under ``root``). ``videos=False`` names frame folders (the video's
name without its extension, as mmaction2's and TSN's frame dumps do).

=========  ===========================================================  ================
format     ``annotations`` (and ``classes``, default beside it)         labels
=========  ===========================================================  ================
list       our lists: ``path [num_frames] label`` lines                 as written
ucf101     ``trainlist0N.txt`` / ``testlist0N.txt`` (``classInd.txt``)  classInd - 1
hmdb51     the split folder of ``<class>_test_split<N>.txt`` files,     sorted class
           ``split: N``; marker 1 = train, 2 = test, 0 = unused         names
kinetics   the CSV ``label,youtube_id,time_start,time_end,split[,...]`` sorted labels of
           (400 / 600 / 700); videos ``<id>_<start:06d>_<end:06d>.*``    the CSV, or the
           or ``<id>.*`` anywhere under ``root``; missing ones counted  ``classes`` file
ssv2       ``something-something-v2-{train,validation}.json``           labels JSON
           (``something-something-v2-labels.json``); ``<id>.webm``
jester     ``jester-v1-{train,validation}.csv`` ``id;label``            line order of
           (``jester-v1-labels.csv``); frame folders ``<id>/00001.jpg``  the labels CSV
=========  ===========================================================  ================

Errors (:class:`DataError`, a ``ValueError``) name the file and line. :func:`write_list`
writes our list format (what ``vkd data`` does).
"""
from __future__ import annotations

import csv
import json
import os
import re
import typing
from pathlib import Path
from typing import Dict, List, Literal, NamedTuple, Optional, Tuple

from ..config import ConfigError

Format = Literal["list", "ucf101", "hmdb51", "kinetics", "ssv2", "jester"]   # data.format (config-checked)
FORMATS = typing.get_args(Format)
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v")


class DataError(ConfigError):
    """A data source that cannot work (wrong root, missing or malformed annotations, missing
    decoder, bad template); the message names the argument or the file and line."""


class Annotations(NamedTuple):
    items: List[Tuple[str, int, int]]
    classes: List[str]
    missing: List[str]


def _lines(path: Path):
    """(line number, stripped text) of the non-empty lines of ``path``."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as error:
        raise DataError(f"annotations: cannot read {path}: {error.strerror or error}") from None
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            yield number, line.strip()


def _stem(name: str, videos: bool) -> str:
    return name if videos else os.path.splitext(name)[0]


def read_list(path, with_num_frames: Optional[bool] = None) -> Annotations:
    """Our lists (mmaction2 style): ``path num_frames label`` or ``path label``."""
    path, items = Path(path), []
    for number, line in _lines(path):
        parts = line.split()
        try:
            if len(parts) == 3:
                items.append((parts[0], int(parts[1]), int(parts[2])))
                continue
            if len(parts) == 2 and with_num_frames is not True:
                items.append((parts[0], -1, int(parts[1])))
                continue
        except ValueError:
            pass
        raise DataError(f"annotations: {path}:{number}: expected 'path num_frames label' or 'path label', "
                        f"got {line!r}")
    num = max((label for *_, label in items), default=-1) + 1
    return Annotations(items, [str(i) for i in range(num)], [])


def read_ucf101(path, classes=None, videos: bool = True) -> Annotations:
    """``trainlist0N.txt`` (``Class/v_Class_gXX_cYY.avi index``) or ``testlist0N.txt``
    (``Class/v_...avi``, the label from the folder name); ``classInd.txt`` lines
    ``index Class`` (1-based)."""
    path = Path(path)
    class_file = Path(classes) if classes else path.parent / "classInd.txt"
    if not class_file.is_file():
        raise DataError(f"ucf101: no class file {class_file} (classInd.txt of ucfTrainTestlist; set `classes`)")
    names: Dict[int, str] = {}
    for number, line in _lines(class_file):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise DataError(f"ucf101: {class_file}:{number}: expected 'index ClassName', got {line!r}")
        names[int(parts[0])] = parts[1]
    if sorted(names) != list(range(1, len(names) + 1)):
        raise DataError(f"ucf101: {class_file}: class indices must be 1..{len(names)}")
    order = [names[i] for i in range(1, len(names) + 1)]
    index = {name: i for i, name in enumerate(order)}
    items = []
    for number, line in _lines(path):
        parts = line.split()
        video = parts[0].replace("\\", "/")
        folder = video.split("/")[0] if "/" in video else None
        if len(parts) == 2:
            if not parts[1].isdigit() or int(parts[1]) not in names:
                raise DataError(f"ucf101: {path}:{number}: class index {parts[1]!r} is not in {class_file}")
            label = int(parts[1]) - 1
            if folder is not None and folder in index and index[folder] != label:
                raise DataError(f"ucf101: {path}:{number}: {video} is in folder {folder} but has class "
                                f"{parts[1]} ({order[label]}) in {class_file}")
        elif len(parts) == 1:
            if folder not in index:
                raise DataError(f"ucf101: {path}:{number}: the folder of {video!r} is not a class of {class_file}")
            label = index[folder]
        else:
            raise DataError(f"ucf101: {path}:{number}: expected 'Class/video.avi [index]', got {line!r}")
        items.append((_stem(video, videos), -1, label))
    return Annotations(items, order, [])


def read_hmdb51(path, split: int = 1, train: bool = True, videos: bool = True) -> Annotations:
    """The folder of ``<class>_test_split<split>.txt`` files (testTrainMulti_7030_splits):
    lines ``video.avi marker``, marker 1 train, 2 test, 0 unused; videos
    ``<class>/<video>.avi``; labels: the sorted class names."""
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"hmdb51: annotations must be the split folder (testTrainMulti_7030_splits), got {folder}")
    if split not in (1, 2, 3):
        raise DataError(f"hmdb51: split must be 1, 2 or 3, got {split!r}")
    suffix = f"_test_split{split}.txt"
    files = sorted(p for p in folder.iterdir() if p.name.endswith(suffix))
    if not files:
        raise DataError(f"hmdb51: no *{suffix} files in {folder}")
    order = [p.name[: -len(suffix)] for p in files]
    wanted = "1" if train else "2"
    items = []
    for label, (name, file) in enumerate(zip(order, files)):
        for number, line in _lines(file):
            parts = line.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise DataError(f"hmdb51: {file}:{number}: expected 'video.avi 0|1|2', got {line!r}")
            if parts[1] == wanted:
                items.append((_stem(f"{name}/{parts[0]}", videos), -1, label))
    return Annotations(items, order, [])


def _class_list(path: Path, what: str) -> List[str]:
    names = [line for _, line in _lines(path)]
    if len(set(names)) != len(names):
        raise DataError(f"{what}: {path}: a class name is listed twice")
    return names


def index_videos(root) -> Dict[str, str]:
    """{file name without extension: path relative to ``root``} of the video files under ``root``."""
    root, found = Path(root), {}
    for folder, _, names in os.walk(root):
        for name in names:
            stem, ext = os.path.splitext(name)
            if ext.lower() in VIDEO_SUFFIXES:
                found.setdefault(stem, os.path.relpath(os.path.join(folder, name), root))
    return found


def read_kinetics(path, root, classes=None, videos: bool = True) -> Annotations:
    """A Kinetics-400/600/700 CSV (``label,youtube_id,time_start,time_end,split``...).
    Each row is matched to a file under ``root`` named ``<youtube_id>_<start:06d>_<end:06d>``
    or ``<youtube_id>`` (any video extension, any sub-folder); rows without a file are
    left out and listed in ``missing``. ``videos=False``: frame folders of those names."""
    path, root = Path(path), Path(root)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except OSError as error:
        raise DataError(f"kinetics: cannot read {path}: {error.strerror or error}") from None
    if not rows:
        raise DataError(f"kinetics: {path} is empty")
    header = [h.strip() for h in rows[0]]
    for column in ("label", "youtube_id", "time_start", "time_end"):
        if column not in header:
            raise DataError(f"kinetics: {path}:1: no {column!r} column in the header {header} "
                            "(a test CSV without labels cannot be evaluated)")
    col = {name: header.index(name) for name in header}
    parsed = []
    for number, row in enumerate(rows[1:], 2):
        if not row:
            continue
        try:
            label, vid = row[col["label"]].strip(), row[col["youtube_id"]].strip()
            start, end = int(float(row[col["time_start"]])), int(float(row[col["time_end"]]))
        except (IndexError, ValueError):
            raise DataError(f"kinetics: {path}:{number}: expected label,youtube_id,time_start,time_end,..., "
                            f"got {','.join(row)!r}") from None
        parsed.append((number, label, vid, start, end))
    if classes:
        order = _class_list(Path(classes), "kinetics")
    else:
        order = sorted({label for _, label, *_ in parsed})
    index = {name: i for i, name in enumerate(order)}
    if videos:
        found = index_videos(root)
    else:
        found = {}
        for folder, subdirs, _ in os.walk(root):
            for name in subdirs:
                found.setdefault(name, os.path.relpath(os.path.join(folder, name), root))
    items, missing = [], []
    for number, label, vid, start, end in parsed:
        if label not in index:
            raise DataError(f"kinetics: {path}:{number}: label {label!r} is not in {classes}")
        name = f"{vid}_{start:06d}_{end:06d}"
        hit = found.get(name) or found.get(vid)
        if hit is None:
            missing.append(name)
        else:
            items.append((hit, -1, index[label]))
    return Annotations(items, order, missing)


def _ssv2_label(template: str) -> str:
    return template.replace("[", "").replace("]", "")


def read_ssv2(path, classes=None, videos: bool = True) -> Annotations:
    """``something-something-v2-train.json`` / ``-validation.json`` (a list of
    {"id", "template", ...}); labels from ``something-something-v2-labels.json``
    ({template without brackets: "index"}); videos ``<id>.webm``."""
    path = Path(path)
    class_file = Path(classes) if classes else path.parent / "something-something-v2-labels.json"
    try:
        labels = json.loads(class_file.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(f"ssv2: cannot read the labels JSON {class_file}: {error} (set `classes`)") from None
    try:
        index = {name: int(i) for name, i in labels.items()}
    except (AttributeError, ValueError):
        raise DataError(f"ssv2: {class_file}: expected {{\"template\": \"index\"}}") from None
    order = [None] * len(index)
    for name, i in index.items():
        if not 0 <= i < len(order) or order[i] is not None:
            raise DataError(f"ssv2: {class_file}: class indices must be 0..{len(order) - 1}, each once")
        order[i] = name
    try:
        entries = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(f"ssv2: cannot read {path}: {error}") from None
    if not isinstance(entries, list):
        raise DataError(f"ssv2: {path}: expected a JSON list of {{'id', 'template'}} objects")
    items = []
    for number, entry in enumerate(entries, 1):
        if not isinstance(entry, dict) or "id" not in entry:
            raise DataError(f"ssv2: {path}: entry {number}: expected an object with 'id', got {entry!r:.80}")
        if "template" not in entry:
            raise DataError(f"ssv2: {path}: entry {number} (id {entry['id']}): no 'template' "
                            "(a test JSON without labels cannot be evaluated)")
        name = _ssv2_label(entry["template"])
        if name not in index:
            raise DataError(f"ssv2: {path}: entry {number} (id {entry['id']}): template {name!r} "
                            f"is not in {class_file}")
        items.append((f"{entry['id']}.webm" if videos else str(entry["id"]), -1, index[name]))
    return Annotations(items, order, [])


def read_jester(path, classes=None, videos: bool = False) -> Annotations:
    """``jester-v1-train.csv`` / ``-validation.csv`` (``id;label``) and
    ``jester-v1-labels.csv`` (one label a line, index = line order); frame folders ``<id>``."""
    path = Path(path)
    class_file = Path(classes) if classes else path.parent / "jester-v1-labels.csv"
    if not class_file.is_file():
        raise DataError(f"jester: no labels file {class_file} (jester-v1-labels.csv; set `classes`)")
    order = _class_list(class_file, "jester")
    index = {name: i for i, name in enumerate(order)}
    items = []
    for number, line in _lines(path):
        parts = line.split(";")
        if len(parts) != 2:
            raise DataError(f"jester: {path}:{number}: expected 'id;label', got {line!r} "
                            "(a test CSV without labels cannot be evaluated)")
        if parts[1] not in index:
            raise DataError(f"jester: {path}:{number}: label {parts[1]!r} is not in {class_file}")
        items.append((parts[0] + (".webm" if videos else ""), -1, index[parts[1]]))
    return Annotations(items, order, [])


def read(format: str, annotations, *, root=None, train: bool = True, split: int = 1, classes=None,
         videos: bool = True) -> Annotations:
    """The items of ``annotations`` in ``format`` (see the module docstring)."""
    if format not in FORMATS:
        raise DataError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    if annotations is None:
        raise DataError(f"format {format}: the data config needs `annotations` (per split)")
    path = Path(annotations)
    if not path.exists():
        raise DataError(f"{format}: annotations {path} does not exist")
    if format == "list":
        return read_list(path)
    if format == "ucf101":
        return read_ucf101(path, classes, videos)
    if format == "hmdb51":
        return read_hmdb51(path, int(split), train, videos)
    if format == "kinetics":
        if root is None:
            raise DataError("kinetics: `root` (the videos folder) is needed to match the CSV to files")
        return read_kinetics(path, root, classes, videos)
    if format == "ssv2":
        return read_ssv2(path, classes, videos)
    return read_jester(path, classes, videos)


def count_frames(folder, suffix: str = ".jpg") -> int:
    """Number of files ending in ``suffix`` in a frame folder."""
    return sum(1 for name in os.listdir(folder) if name.endswith(suffix))


def write_list(annotations: Annotations, out, *, root=None, frames: bool = False, suffix: str = ".jpg") -> Dict:
    """Write ``out`` (``path label`` lines, or ``path num_frames label`` with ``frames=True``,
    frames counted under ``root``) and ``<out>.classes.txt`` (one name a line).
    Returns {"written", "missing", "empty"} counts; frame folders without frames are left out."""
    out = Path(out)
    check_paths(annotations, str(out))
    lines, empty = [], []
    for path, num_frames, label in annotations.items:
        if frames:
            if num_frames < 0:
                folder = Path(root) / path if root is not None else Path(path)
                num_frames = count_frames(folder, suffix) if folder.is_dir() else 0
            if num_frames < 1:
                empty.append(path)
                continue
            lines.append(f"{path} {num_frames} {label}")
        else:
            lines.append(f"{path} {label}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(line + "\n" for line in lines))
    out.with_name(out.name + ".classes.txt").write_text("".join(c + "\n" for c in annotations.classes))
    return {"written": len(lines), "missing": len(annotations.missing), "empty": len(empty)}


_WHITESPACE = re.compile(r"\s")


def check_paths(annotations: Annotations, what: str) -> None:
    """Our lists are whitespace separated: reject a path with a space, naming it."""
    for path, _, _ in annotations.items:
        if _WHITESPACE.search(path):
            raise DataError(f"{what}: path {path!r} has whitespace; our lists cannot hold it "
                            "(rename the file or read the official format directly)")


def add_data_parser(sub) -> None:
    """The ``vkd data`` subcommand (argparse sub-parsers ``sub``)."""
    p = sub.add_parser("data", help="convert an official annotation file to our list format")
    p.add_argument("--format", required=True, choices=[f for f in FORMATS if f != "list"])
    p.add_argument("--annotations", required=True,
                   help="the official file (hmdb51: the folder of *_test_splitN.txt files)")
    p.add_argument("--root", help="the videos or frame folders (needed for kinetics and --frames)")
    p.add_argument("--out", required=True, help="the list to write; <out>.classes.txt is written beside it")
    p.add_argument("--split", type=int, default=1, help="hmdb51: split 1, 2 or 3")
    p.add_argument("--subset", choices=("train", "test"), default="train", help="hmdb51: marker 1 or 2")
    p.add_argument("--classes", help="the class file, when not the official one beside --annotations")
    p.add_argument("--frames", action="store_true",
                   help="frame folders: paths without extension, 'path num_frames label' lines")
    p.add_argument("--suffix", default=".jpg", help="with --frames: the frame files' suffix")


def run_data(args) -> Dict:
    """``vkd data``: write the list; the missing videos (kinetics) go to ``<out>.missing.txt``."""
    if args.frames and args.root is None:
        raise DataError("vkd data: --frames counts the frames of each folder under --root; give --root")
    found = read(args.format, args.annotations, root=args.root, train=args.subset == "train", split=args.split,
                 classes=args.classes, videos=not args.frames)
    counts = write_list(found, args.out, root=args.root, frames=args.frames, suffix=args.suffix)
    if found.missing:
        missing = Path(args.out).with_name(Path(args.out).name + ".missing.txt")
        missing.write_text("".join(m + "\n" for m in found.missing))
        counts["missing_list"] = str(missing)
    counts["classes"] = len(found.classes)
    return counts
