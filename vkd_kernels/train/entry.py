"""The console script ``vkd``: checks that the trainer's own dependencies (the
``train`` extra: PyYAML, tqdm) are installed, then runs :func:`vkd_kernels.train.cli.main`.

The kernels themselves need only torch, so ``pip install vkd-kernels`` does not pull the
trainer's dependencies; without them ``vkd`` exits with status 2 and says what to install
instead of failing with an ImportError traceback.
"""
from __future__ import annotations

import importlib.util
import sys
from typing import List

# import name -> distribution name, for the message
REQUIREMENTS = {"yaml": "pyyaml", "tqdm": "tqdm"}
HINT = "python -m pip install 'vkd-kernels[train]' (from a checkout: python -m pip install '.[train]')"


def missing_requirements() -> List[str]:
    """The distributions of the ``train`` extra that cannot be imported here."""
    return [dist for module, dist in REQUIREMENTS.items() if importlib.util.find_spec(module) is None]


def main(argv=None) -> int:
    missing = missing_requirements()
    if missing:
        print(f"vkd: the trainer needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not "
              f"installed; install the trainer's extra: {HINT}", file=sys.stderr)
        return 2
    from .cli import main as cli_main
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
