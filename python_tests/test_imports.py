"""No import cycle among GKD's modules and the trainer's models and methods: each module
imports on its own in a fresh interpreter, in either order with the others, and the old
import paths still work (aliases of the new ones)."""
import itertools
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = ["vkd_kernels.gkd", "vkd_kernels.methods.gkd", "vkd_kernels.train.models",
           "vkd_kernels.train.models.gkd_net", "vkd_kernels.train.methods", "vkd_kernels.train.methods.gkd"]


def _fresh_import(*names):
    code = "".join(f"import {name}\n" for name in names) + "print('ok')\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)


@pytest.mark.parametrize("first,second", list(itertools.permutations(MODULES, 2))[::3]
                         + [(MODULES[-1], MODULES[2]), (MODULES[2], MODULES[-1])])
def test_modules_import_in_either_order(first, second):
    result = _fresh_import(first, second)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]


def test_every_module_imports_alone_and_in_both_full_orders():
    for names in [[m] for m in MODULES] + [MODULES, MODULES[::-1]]:
        result = _fresh_import(*names)
        assert result.returncode == 0 and "ok" in result.stdout, (names, result.stderr[-3000:])


def test_gkd_is_one_public_module_and_old_paths_are_aliases():
    import vkd_kernels
    from vkd_kernels import gkd
    from vkd_kernels.methods import gkd as old_gkd
    from vkd_kernels.train.methods.gkd import GKDNet as old_net
    from vkd_kernels.train.models.gkd_net import GKDNet

    assert "gkd" in vkd_kernels.__all__ and vkd_kernels.gkd is gkd
    for name in gkd.__all__:
        assert hasattr(gkd, name), name
    assert gkd.GenerativeAttentionHead is vkd_kernels.GenerativeAttentionHead
    assert gkd.attention_apply is vkd_kernels.attention_apply
    assert old_gkd.ConditionalVAE is gkd.ConditionalVAE and old_gkd.cvae_loss is gkd.cvae_loss
    assert old_net is GKDNet


def test_models_do_not_import_the_trainer_methods():
    for path in (ROOT / "vkd_kernels" / "train" / "models").glob("*.py"):
        assert "methods" not in "".join(line for line in path.read_text().splitlines(True)
                                         if line.lstrip().startswith(("import ", "from "))), path
