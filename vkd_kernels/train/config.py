"""Recipes: YAML files naming the data, the teacher and student models, the schedule,
per-method options and what ``vkd reproduce`` runs. Built-in recipes live in
``vkd_kernels/train/recipes/<name>.yaml``; any path to a YAML file works too.

A recipe is validated as a whole when it is loaded (:func:`load_recipe`), before any
data or model is built:

* the top level, the roles and ``train`` are dataclasses (:class:`Recipe`,
  :class:`RoleConfig`, :class:`TrainConfig`, :class:`ReproduceConfig`);
* ``data``, ``<role>.model`` and ``methods.<name>`` are checked against the signature
  of what they configure (the dataset class, the model constructor, the method class),
  so the schema is the code's own keyword arguments and their type annotations;
* an unknown key is rejected with the closest valid name, a value of the wrong type
  with the expected type, a missing section or an unknown method by name;
* ``--set key.sub=value`` values are YAML scalars or lists (``1e-2`` is a float, as in
  YAML 1.2, not the string PyYAML's YAML 1.1 rules make of it);
* the loaded recipe is rebuilt from plain dicts and lists, so YAML anchors and aliases
  (``gkd_gd: *gkd``) never make two sections share one dict.

Errors are :class:`ConfigError` (a ``ValueError``) whose message starts with the dotted
name of the offending entry.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import importlib.util
import inspect
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Literal, Optional, Sequence, Union

try:
    import yaml
except ModuleNotFoundError as error:          # the kernels install without the trainer's extra
    raise ModuleNotFoundError("vkd_kernels.train needs PyYAML (the 'train' extra): "
                              "python -m pip install 'vkd-kernels[train]'", name="yaml") from error

RECIPES = Path(__file__).parent / "recipes"


class ConfigError(ValueError):
    """A recipe, an override or a command-line option that cannot work; the message
    names the entry (``train.lr: ...``) and what would be valid."""


# ----------------------------------------------------------------------------- YAML
class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader plus YAML 1.2 floats: ``1e-2`` and ``5e4`` are floats
    (YAML 1.1 wants a dot and a signed exponent, ``1.0e-2``, else they are strings)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def yaml_value(text: str):
    """One YAML value as ``--set`` reads it: numbers, bools, null, lists, dicts, strings."""
    return yaml.load(text, Loader=_Loader)


def _plain(node):
    """A copy made of fresh dicts and lists: YAML aliases become independent copies
    (``copy.deepcopy`` would keep them shared: it preserves identity)."""
    if isinstance(node, dict):
        return {k: _plain(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_plain(v) for v in node]
    return copy.copy(node)


# ----------------------------------------------------------------------------- checks
def closest(name: str, valid: Iterable[str], synonyms: Optional[Dict[str, str]] = None) -> str:
    """' (did you mean X?)' for the valid name closest to ``name``, else ''."""
    valid = list(valid)
    pool = {v: v for v in valid}
    pool.update({k: v for k, v in (synonyms or {}).items() if v in pool})
    match = difflib.get_close_matches(name, list(pool), n=1, cutoff=0.6)
    return f" (did you mean {pool[match[0]]!r}?)" if match else ""


def check_keys(section: Dict, valid: Iterable[str], where: str, synonyms: Optional[Dict[str, str]] = None) -> None:
    """Reject a key of ``section`` that is not in ``valid``, naming the closest valid one."""
    valid = sorted(valid)
    for key in section:
        if key not in valid:
            raise ConfigError(f"{_join(where, key)}: unknown key{closest(str(key), valid, synonyms)}; "
                              f"valid keys: {', '.join(valid)}")


def _join(where: str, key) -> str:
    return f"{where}.{key}" if where else str(key)


def _describe(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union:
        inner = [a for a in args if a is not type(None)]
        text = " or ".join(_describe(a) for a in inner)
        return f"{text} or null" if type(None) in args else text
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (list, tuple, Sequence, typing.get_origin(Sequence[int])):
        return f"a list of {_describe(args[0])}" if args else "a list"
    if origin is dict or hint is dict:
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))


def _matches(value, hint) -> bool:
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union:
        return any(_matches(value, a) for a in args)
    if origin is Literal:
        return value in args
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple, Sequence, typing.get_origin(Sequence[int])) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        inner = [a for a in args if a is not Ellipsis]
        return all(_matches(v, inner[0]) for v in value) if len(inner) == 1 else True
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return True


def check_type(value, hint, where: str) -> None:
    if not _matches(value, hint):
        note = ""
        if isinstance(value, str) and re.fullmatch(r"[-+0-9.eE_]+", value):
            note = " (a string that looks like a number: write it without quotes)"
        raise ConfigError(f"{where}: expected {_describe(hint)}, got {value!r} ({type(value).__name__}){note}")


def _hint_of(param: inspect.Parameter, hints: Dict) -> Any:
    """The annotation, or for an unannotated parameter the type of its default."""
    if param.name in hints:
        return hints[param.name]
    default = param.default
    if default is inspect.Parameter.empty or default is None:
        return Any
    if isinstance(default, bool):
        return bool
    if isinstance(default, float):
        return float
    if isinstance(default, int):
        return int
    if isinstance(default, str):
        return str
    if isinstance(default, (tuple, list)):
        return list
    return Any


def signature_schema(functions: Sequence[Callable], exclude: Iterable[str] = ()) -> Dict[str, tuple]:
    """{name: (type hint, required)} of the keyword parameters of ``functions`` (a
    constructor and the functions its ``**kwargs`` reach), minus ``exclude``."""
    schema: Dict[str, tuple] = {}
    exclude = set(exclude) | {"self"}
    for fn in functions:
        try:
            hints = typing.get_type_hints(fn)
        except Exception:  # noqa: BLE001 - an unresolvable annotation: fall back to the defaults' types
            hints = {}
        for p in inspect.signature(fn).parameters.values():
            if p.name in exclude or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) or p.name in schema:
                continue
            schema[p.name] = (_hint_of(p, hints), p.default is inspect.Parameter.empty)
    return schema


def check_schema(section: Dict, schema: Dict[str, tuple], where: str, *, partial: bool = False,
                 synonyms: Optional[Dict[str, str]] = None) -> None:
    """Unknown keys, missing required keys (unless ``partial``) and types of ``section``."""
    if not isinstance(section, dict):
        raise ConfigError(f"{where}: expected a mapping of keys to values, got {section!r}")
    check_keys(section, schema, where, synonyms)
    for key, value in section.items():
        check_type(value, schema[key][0], _join(where, key))
    if not partial:
        missing = [k for k, (_, required) in schema.items() if required and k not in section]
        if missing:
            raise ConfigError(f"{_join(where, missing[0])}: missing (required: {', '.join(missing)})")


def dataclass_schema(cls) -> Dict[str, tuple]:
    hints = typing.get_type_hints(cls)
    return {f.name: (hints[f.name], f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
            for f in dataclasses.fields(cls)}


# ----------------------------------------------------------------------------- sections
TRAIN_SYNONYMS = {"learning_rate": "lr", "base_lr": "lr", "wd": "weight_decay", "batch": "batch_size",
                  "num_workers": "workers", "max_epochs": "epochs", "warmup": "warmup_epochs",
                  "clip_grad": "grad_clip", "max_grad_norm": "grad_clip", "nesterov_momentum": "nesterov"}


@dataclass
class TrainConfig:
    """The ``train`` section (a role's ``train`` overrides entries of it).

    lr_step: "iteration" (the learning rate follows the schedule every step) or "epoch"
    (constant within an epoch; what the synthetic recipes were measured with).
    warmup_epochs: linear warm-up before the cosine decay (fractions allowed).
    eval_interval: validate every that many epochs and after the last (the learning
    curve, best.pt and the log's val columns then hold those epochs only).
    grad_clip: max global gradient norm (None: no clipping). log_interval: a log line
    every that many iterations (0: epoch lines only). time_losses: measure the forward
    time of the loss terms (on CUDA it costs two synchronisations per step).
    max_unreadable: the share of an epoch's samples that may be unreadable before the
    run stops (0 stops at the first one, 1 never stops).
    threads: torch CPU threads of the run (``torch.set_num_threads``; None: torch's
    choice, the number of cores). CPU results depend on it (the reduction order of the
    convolutions changes), so the synthetic recipes pin it; ``vkd --threads N`` overrides it.
    """
    epochs: int
    batch_size: int
    lr: float
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    amp: bool = True
    workers: int = 0
    eval_batch_size: Optional[int] = None
    eval_interval: int = 1
    warmup_epochs: float = 0
    lr_step: Literal["iteration", "epoch"] = "iteration"
    grad_clip: Optional[float] = None
    log_interval: int = 50
    tensorboard: bool = False
    time_losses: bool = False
    max_unreadable: float = 0.05
    threads: Optional[int] = None

    def check(self, where: str = "train") -> "TrainConfig":
        for name in ("epochs", "batch_size", "eval_interval"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{where}.{name}: must be >= 1, got {getattr(self, name)!r}")
        for name in ("lr", "momentum", "weight_decay", "warmup_epochs", "workers", "log_interval"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{where}.{name}: must be >= 0, got {getattr(self, name)!r}")
        if self.eval_batch_size is not None and self.eval_batch_size < 1:
            raise ConfigError(f"{where}.eval_batch_size: must be >= 1 or null, got {self.eval_batch_size!r}")
        if self.warmup_epochs > self.epochs:
            raise ConfigError(f"{where}.warmup_epochs: {self.warmup_epochs} is more than epochs ({self.epochs})")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"{where}.threads: must be >= 1 or null (torch's choice), got {self.threads!r}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ConfigError(f"{where}.grad_clip: must be > 0 or null (no clipping), got {self.grad_clip!r}")
        if not 0 <= self.max_unreadable <= 1:
            raise ConfigError(f"{where}.max_unreadable: a share in [0, 1], got {self.max_unreadable!r}")
        if self.tensorboard and importlib.util.find_spec("tensorboard") is None:
            raise ConfigError(f"{where}.tensorboard: true needs the tensorboard package, which is not installed: "
                              f"pip install tensorboard (or set {where}.tensorboard=false)")
        return self

    @classmethod
    def from_dict(cls, section: Dict, where: str = "train") -> "TrainConfig":
        check_schema(section, dataclass_schema(cls), where, synonyms=TRAIN_SYNONYMS)
        return cls(**section).check(where)


@dataclass
class RoleConfig:
    """``teacher`` / ``student``: the model spec, optional ``train`` overrides and (teacher
    only) ``pretrain``: a cross-entropy run before the role's own, on other data, whose
    weights the role's run starts from (pre-training on abundant data, then fine-tuning)."""
    model: Dict[str, Any]
    train: Optional[Dict[str, Any]] = None
    pretrain: Optional[Dict[str, Any]] = None


@dataclass
class PretrainConfig:
    """``teacher.pretrain``: ``data`` entries merged over the recipe's ``data`` (per split:
    ``data.train`` merges into ``data.train``) and ``train`` entries over the recipe's
    ``train`` (not the role's: those are the fine-tuning's)."""
    data: Optional[Dict[str, Any]] = None
    train: Optional[Dict[str, Any]] = None


@dataclass
class ReproduceConfig:
    """``reproduce``: what ``vkd reproduce`` runs by default."""
    seeds: List[int]
    methods: List[str]


@dataclass
class SweepConfig:
    """``sweep``: what ``vkd sweep`` runs. ``grid``: {method: {"keys": [option keys of
    methods.<method>, dotted], "values": [...]}}: every value set on every key at once
    (one shared scale, e.g. the three distillation weights of collab); each method gets
    the same number of values. ``stream``: the split whose clips the sweep validates on
    (never the reported ``val``), ``num_clips`` its size (default: ``data.val``'s).
    ``seeds``: the seeds of each point (``ce`` runs on them too, as the reference).
    ``train``: entries merged over the recipe's ``train`` for the sweep's runs (e.g. a
    shorter schedule, the same for every method)."""
    grid: Dict[str, Any]
    seeds: List[int]
    stream: str = "tune"
    num_clips: Optional[int] = None
    train: Optional[Dict[str, Any]] = None


@dataclass
class EvalConfig:
    """``evaluate``: the views of ``vkd evaluate`` (``--clips`` / ``--crops`` / ``--average``
    override them). clips: clips per video (TSN segment offsets, or uniformly spaced dense
    clips); crops: 1 (centre), 3 (along the long side) or 10 (five crops and their mirror
    images); average: over the views, of the softmax probabilities ("prob", as mmaction2's
    configs) or of the logits ("score"). The per-epoch validation of training uses one view."""
    clips: int = 1
    crops: int = 1
    average: Literal["prob", "score"] = "prob"

    def check(self, where: str = "evaluate") -> "EvalConfig":
        if self.clips < 1:
            raise ConfigError(f"{where}.clips: must be >= 1, got {self.clips!r}")
        if self.crops not in (1, 3, 10):
            raise ConfigError(f"{where}.crops: must be 1 (centre), 3 (along the long side) or 10 (five crops "
                              f"and their mirror images), got {self.crops!r}")
        return self

    @classmethod
    def from_dict(cls, section: Optional[Dict], where: str = "evaluate") -> "EvalConfig":
        check_schema(section or {}, dataclass_schema(cls), where)
        return cls(**(section or {})).check(where)


@dataclass
class Recipe:
    """The top level of a recipe."""
    data: Dict[str, Any]
    teacher: Dict[str, Any]
    student: Dict[str, Any]
    train: Dict[str, Any]
    name: Optional[str] = None
    methods: Optional[Dict[str, Any]] = None
    reproduce: Optional[Dict[str, Any]] = None
    teacher_seed: int = 0
    evaluate: Optional[Dict[str, Any]] = None
    sweep: Optional[Dict[str, Any]] = None
    base: Optional[str] = None          # resolved by load_recipe (never left in a loaded recipe)


# ----------------------------------------------------------------------------- data, models, methods
def data_schema(name: str) -> Dict[str, tuple]:
    """The keys of a ``data`` section for dataset ``name`` (its constructor's keywords)."""
    from .data import DATASETS
    if name not in DATASETS:
        raise ConfigError(f"data.name: must be one of {', '.join(sorted(DATASETS))}, got {name!r}"
                          f"{closest(str(name), DATASETS)}")
    functions, exclude = DATASETS[name]
    schema = signature_schema(functions, exclude)
    schema["name"] = (str, False)
    return schema


SPLITS = ("train", "val", "test")


def check_data(data: Dict, where: str = "data") -> None:
    """The data section: common keys plus per-split sections ``train`` / ``val`` / ``test``
    (each split's merged keys must make a complete dataset)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    name = data.get("name", "synthetic")
    schema = data_schema(name)
    common = {k: v for k, v in data.items() if k not in SPLITS}
    check_schema(common, schema, where, partial=True)
    for split in SPLITS:
        part = data.get(split)
        if part is None:
            if split != "test":
                check_schema(common, schema, f"{where} (split {split})")
            continue
        check_schema(part, {k: v for k, v in schema.items() if k != "name"}, f"{where}.{split}", partial=True)
        check_schema({**common, **part}, schema, f"{where}.{split}")


def model_schema(name: str) -> Dict[str, tuple]:
    from .models import MODELS
    if name not in MODELS:
        raise ConfigError(f"model.name: must be one of {', '.join(sorted(MODELS))}, got {name!r}"
                          f"{closest(str(name), MODELS)}")
    model = MODELS[name]        # a class's annotations are its __init__'s (get_type_hints(cls) reads the body's)
    functions = [model.__init__ if inspect.isclass(model) else model]
    ret = typing.get_type_hints(model).get("return") if not inspect.isclass(model) else None
    if inspect.isclass(ret):                      # a factory passing **kwargs to a class: its keywords too
        functions.append(ret.__init__)
    schema = signature_schema(functions, exclude=("num_classes",))
    schema.update(name=(str, True), pretrained=(Optional[str], False))
    return schema


def check_model(spec: Dict, where: str) -> None:
    if not isinstance(spec, dict) or "name" not in spec:
        raise ConfigError(f"{where}.name: missing (the model, e.g. resnet3d)")
    try:
        schema = model_schema(spec["name"])
    except ConfigError as error:
        raise ConfigError(f"{where}.{error}") from None
    check_schema(spec, schema, where)
    if spec.get("pretrained") is not None:
        path = Path(spec["pretrained"])
        if not path.is_file():
            raise ConfigError(f"{where}.pretrained: no file {str(path)!r} (a pytorch-i3d, TSM, torchvision "
                              f"or vkd checkpoint, see docs/data.md)")


def method_schema(name: str) -> Dict[str, tuple]:
    """The options of method ``name``: the keywords of its class and its bases, minus those
    the registry fixes for the variant (e.g. ``collab_spectrum`` fixes ``param=False``)."""
    from .methods import REGISTRY
    cls, fixed = REGISTRY[name]
    functions = [c.__init__ for c in cls.__mro__ if "__init__" in vars(c) and c.__module__.startswith(__package__)]
    return signature_schema(functions, exclude=("student", "teacher", "probe", *fixed))


def check_method_name(name: str, where: str) -> None:
    """An unknown method name is rejected with the closest."""
    from .methods import ALL_METHODS
    if name not in ALL_METHODS:
        raise ConfigError(f"{where}: unknown method {name!r}{closest(str(name), ALL_METHODS)}; "
                          f"methods: {', '.join(ALL_METHODS)}")


def check_method_options(name: str, options: Dict, where: str) -> None:
    from .methods import REGISTRY
    if name not in REGISTRY:
        return
    fixed = REGISTRY[name][1]
    for key in options or {}:
        if key in fixed:
            raise ConfigError(f"{where}.{key}: fixed to {fixed[key]!r} by the method {name!r} (an ablation); "
                              f"remove the key")
    check_schema(options or {}, method_schema(name), where)


def check_recipe(recipe: Dict, source: str = "recipe") -> None:
    """Validate a whole recipe (see the module docstring); raises :class:`ConfigError`."""
    if not isinstance(recipe, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(recipe).__name__}")
    schema = dataclass_schema(Recipe)
    check_keys(recipe, schema, "")
    missing = [k for k, (_, required) in schema.items() if required and k not in recipe]
    if missing:
        raise ConfigError(f"{source}: missing section{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                          f"(a recipe needs {', '.join(k for k, (_, r) in schema.items() if r)})")
    for key, value in recipe.items():
        check_type(value, schema[key][0], key)
    check_data(recipe["data"])
    EvalConfig.from_dict(recipe.get("evaluate"))
    check_schema(recipe["train"], dataclass_schema(TrainConfig), "train", partial=True, synonyms=TRAIN_SYNONYMS)
    for role in ("teacher", "student"):
        check_schema(recipe[role], dataclass_schema(RoleConfig), role)
        check_model(recipe[role]["model"], f"{role}.model")
        own = recipe[role].get("train") or {}
        check_schema(own, dataclass_schema(TrainConfig), f"{role}.train", partial=True, synonyms=TRAIN_SYNONYMS)
        try:
            TrainConfig.from_dict({**recipe["train"], **own}, "train")
        except ConfigError as error:       # name the section the offending value came from
            key = str(error).split(":", 1)[0].split(".")[-1]
            raise ConfigError(f"{role}.{error}" if key in own else str(error)) from None
    if recipe["student"].get("pretrain") is not None:
        raise ConfigError("student.pretrain: only the teacher is pre-trained (the student's data is the benchmark)")
    if recipe["teacher"].get("pretrain") is not None:
        pre = pretrain_config(recipe, 0)
        check_data(pre["data"], "teacher.pretrain.data")
        TrainConfig.from_dict(pre["train"], "teacher.pretrain.train")
    for name, options in (recipe.get("methods") or {}).items():
        check_method_name(name, f"methods.{name}")
        if options is not None and not isinstance(options, dict):
            raise ConfigError(f"methods.{name}: expected a mapping of options, got {options!r}")
        check_method_options(name, options or {}, f"methods.{name}")
    if recipe.get("reproduce") is not None:
        check_schema(recipe["reproduce"], dataclass_schema(ReproduceConfig), "reproduce")
        for i, name in enumerate(recipe["reproduce"]["methods"]):
            check_method_name(name, f"reproduce.methods[{i}]")
    if recipe.get("sweep") is not None:
        check_sweep(recipe)


def check_sweep(recipe: Dict) -> None:
    """The ``sweep`` section: methods, keys (each a valid option once set), equal budgets."""
    sweep = recipe["sweep"]
    check_schema(sweep, dataclass_schema(SweepConfig), "sweep")
    TrainConfig.from_dict({**recipe["train"], **(sweep.get("train") or {})}, "sweep.train")
    sizes = set()
    for name, point in sweep["grid"].items():
        where = f"sweep.grid.{name}"
        check_method_name(name, where)
        check_schema(point, {"keys": (List[str], True), "values": (list, True)}, where)
        if not point["values"] or not point["keys"]:
            raise ConfigError(f"{where}: needs at least one key and one value")
        sizes.add(len(point["values"]))
        for value in point["values"]:
            options = sweep_options(recipe, name, point["keys"], value)
            check_method_options(name, options, f"{where} (value {value!r})")
    if len(sizes) > 1:
        raise ConfigError(f"sweep.grid: every method needs the same number of values (the same budget), "
                          f"got {sorted(sizes)}")


def sweep_options(recipe: Dict, method: str, keys: Sequence[str], value) -> Dict:
    """methods.<method> of ``recipe`` with ``value`` set at every dotted key of ``keys``."""
    options = _plain((recipe.get("methods") or {}).get(method) or {})
    for key in keys:
        set_dotted(options, key, _plain(value), f"sweep.grid.{method}.keys")
    return options


def merge_data(data: Dict, extra: Optional[Dict]) -> Dict:
    """``data`` with the entries of ``extra`` merged in, split sections merged key by key."""
    out = _plain(data)
    for key, value in (extra or {}).items():
        if key in SPLITS and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **_plain(value)}
        else:
            out[key] = _plain(value)
    return out


def pretrain_config(recipe: Dict, seed: int = 0) -> Dict:
    """The run configuration of the teacher's pre-training (cross-entropy), or None
    without ``teacher.pretrain``."""
    pre = recipe["teacher"].get("pretrain")
    if pre is None:
        return None
    check_schema(pre, dataclass_schema(PretrainConfig), "teacher.pretrain")
    return {"name": "teacher-pretrain", "data": merge_data(recipe["data"], pre.get("data")),
            "model": _plain(recipe["teacher"]["model"]),
            "train": _plain({**recipe["train"], **(pre.get("train") or {})}),
            "method": "ce", "method_options": {}, "seed": seed, "teacher": None}


def recipe_names() -> List[str]:
    return sorted(p.stem for p in RECIPES.glob("*.yaml"))


def apply_override(recipe: Dict, item: str) -> None:
    """One ``--set dotted.key=value`` (value read as YAML) applied to ``recipe`` in place."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set expects key=value, got {item!r}")
    set_dotted(recipe, key.strip(), yaml_value(value), "--set")


def get_dotted(node: Dict, key: str, default=None):
    """``node[a][b][c]`` for ``key`` "a.b.c", or ``default`` where a part is missing."""
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def set_dotted(node: Dict, key: str, value, what: str = "--set") -> None:
    """``node[a][b][c] = value`` for ``key`` "a.b.c" (missing sections are created)."""
    *parents, leaf = key.split(".")
    for depth, part in enumerate(parents):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"{what} {key}: {'.'.join(parents[:depth + 1])} is a value ({child!r}), not a section")
        node = child
    node[leaf] = value


def _read_recipe(name_or_path: str, seen: tuple = ()) -> tuple:
    """(the recipe as plain dicts with its ``base`` merged in, its path). ``base: NAME``: the
    recipe is that one with this file's entries merged over it, mapping by mapping (so a
    variant states only what differs, e.g. synthetic-quick's ``reproduce``)."""
    path = Path(name_or_path)
    if not path.is_file():
        path = RECIPES / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ConfigError(f"recipe: no file {name_or_path!r} and no built-in recipe of that name "
                          f"(built-in: {', '.join(recipe_names())}){closest(str(name_or_path), recipe_names())}")
    try:
        recipe = _plain(yaml.load(path.read_text(), Loader=_Loader))
    except yaml.YAMLError as error:
        raise ConfigError(f"recipe {path}: not valid YAML: {error}") from None
    if not isinstance(recipe, dict):
        raise ConfigError(f"recipe {path}: expected a mapping of sections, got {type(recipe).__name__}")
    base = recipe.pop("base", None)
    if base is not None:
        if not isinstance(base, str) or base in seen:
            raise ConfigError(f"recipe {path}: base: expected the name or path of another recipe, got {base!r}"
                              + (" (a cycle)" if base in seen else ""))
        recipe = _merged(_read_recipe(base, seen + (base,))[0], recipe)
    return recipe, path


def _merged(base: Dict, extra: Dict) -> Dict:
    """``base`` with ``extra`` merged in: mappings key by key, anything else replaced."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_recipe(name_or_path: str, overrides: Optional[List[str]] = None) -> Dict:
    """The validated recipe as a dict; ``overrides`` are "dotted.key=yaml_value" strings."""
    recipe, path = _read_recipe(name_or_path)
    for item in overrides or []:
        apply_override(recipe, item)
    check_recipe(recipe, f"recipe {path}")
    return recipe


def run_config(recipe: Dict, role: str, *, method: str = "ce", seed: int = 0, teacher: Optional[str] = None,
               pretrained: Optional[str] = None) -> Dict:
    """The configuration of one run (see :func:`vkd_kernels.train.engine.fit`) for
    ``role`` "teacher" or "student"; ``pretrained``: the model starts from that model.pt
    (a pre-trained teacher's, :func:`pretrain_config`)."""
    if role not in ("teacher", "student"):
        raise ConfigError(f"role must be 'teacher' or 'student', got {role!r}")
    check_method_name(method, "method")
    for section in ("data", role, "train"):
        if section not in recipe:
            raise ConfigError(f"recipe: missing section {section!r}")
    part = recipe[role]
    options = _plain((recipe.get("methods") or {}).get(method) or {})
    return {
        "name": f"{role}" if method == "ce" and role == "teacher" else f"{method}-seed{seed}",
        "data": _plain(recipe["data"]),
        "model": {**_plain(part["model"]), **({"pretrained": pretrained} if pretrained else {})},
        "train": _plain({**recipe["train"], **(part.get("train") or {})}),
        "method": method, "method_options": options, "seed": seed, "teacher": teacher,
    }


RUN_KEYS = ("name", "data", "model", "train", "method", "method_options", "seed", "teacher")


def check_run(cfg: Dict, planned: bool = False) -> TrainConfig:
    """Validate one run's configuration (what :func:`run_config` returns) before anything
    is built; returns its :class:`TrainConfig`. ``planned``: the teacher is trained later
    (``vkd reproduce``), so its file need not exist yet."""
    check_keys(cfg, RUN_KEYS, "")
    for key in ("data", "model", "train"):
        if key not in cfg:
            raise ConfigError(f"{key}: missing from the run configuration")
    check_data(cfg["data"])
    check_model(cfg["model"], "model")
    train = TrainConfig.from_dict(cfg["train"])
    method = cfg.get("method", "ce")
    check_method_name(method, "method")
    check_method_options(method, cfg.get("method_options") or {}, f"methods.{method}")
    from .methods import REGISTRY
    needs_teacher = REGISTRY[method][0].uses_teacher
    teacher = cfg.get("teacher")
    if planned:
        return train
    if needs_teacher and not teacher:
        raise ConfigError(f"teacher: method {method!r} distils from a teacher: pass --teacher PATH/model.pt "
                          f"(vkd distill), or use ce / gkd_repr with vkd train")
    if teacher and not Path(teacher).is_file():
        raise ConfigError(f"teacher: no file {teacher!r} (the model.pt a teacher run writes)")
    return train


def config_diff(stored, current, where: str = "") -> List[str]:
    """'key: stored -> current' for every entry that differs between two configurations."""
    if isinstance(stored, dict) and isinstance(current, dict):
        out = []
        for key in list(stored) + [k for k in current if k not in stored]:
            out += config_diff(stored.get(key, "<absent>"), current.get(key, "<absent>"), _join(where, key))
        return out
    if isinstance(stored, (list, tuple)) and isinstance(current, (list, tuple)):
        stored, current = list(stored), list(current)
    return [] if stored == current else [f"{where or 'config'}: {stored!r} -> {current!r}"]


__all__ = ["ConfigError", "PretrainConfig", "Recipe", "ReproduceConfig", "RoleConfig", "SweepConfig", "TrainConfig",
           "apply_override", "check_recipe", "check_run", "config_diff", "get_dotted", "load_recipe", "merge_data",
           "pretrain_config", "recipe_names", "run_config", "sweep_options", "yaml_value"]
