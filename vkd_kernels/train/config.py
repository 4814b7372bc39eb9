"""Recipes: YAML files naming the data, the teacher and student models, the schedule,
per-method options and what ``vkd reproduce`` runs. Built-in recipes live in
``vkd_kernels/train/recipes/<name>.yaml``; any path to a YAML file works too."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Dict, List, Optional

import yaml

RECIPES = Path(__file__).parent / "recipes"


def recipe_names() -> List[str]:
    return sorted(p.stem for p in RECIPES.glob("*.yaml"))


def load_recipe(name_or_path: str, overrides: Optional[List[str]] = None) -> Dict:
    """The recipe as a dict; ``overrides`` are "dotted.key=yaml_value" strings."""
    path = Path(name_or_path)
    if not path.is_file():
        path = RECIPES / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ValueError(f"recipe: no file {name_or_path!r} and no built-in recipe of that name "
                         f"(built-in: {', '.join(recipe_names())})")
    recipe = yaml.safe_load(path.read_text())
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects key=value, got {item!r}")
        node = recipe
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return recipe


def run_config(recipe: Dict, role: str, *, method: str = "ce", seed: int = 0, teacher: Optional[str] = None) -> Dict:
    """The configuration of one run (see :func:`vkd_kernels.train.engine.fit`) for
    ``role`` "teacher" or "student"."""
    if role not in ("teacher", "student"):
        raise ValueError(f"role must be 'teacher' or 'student', got {role!r}")
    part = recipe[role]
    options = copy.deepcopy((recipe.get("methods") or {}).get(method) or {})
    return {
        "name": f"{role}" if method == "ce" and role == "teacher" else f"{method}-seed{seed}",
        "data": copy.deepcopy(recipe["data"]),
        "model": copy.deepcopy(part["model"]),
        "train": {**recipe["train"], **(part.get("train") or {})},
        "method": method, "method_options": options, "seed": seed, "teacher": teacher,
    }
