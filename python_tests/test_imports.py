"""One room per op, and no import cycle among GKD's modules and the trainer's models and
methods: every op package has the same files, mirrored by one file per op in each layer
of csrc/; each module imports on its own in a fresh interpreter, in either order with
the others, and the old import paths still work (aliases of the new ones)."""
import itertools
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = ["vkd_kernels.gkd", "vkd_kernels.gkd.head", "vkd_kernels.gkd.apply", "vkd_kernels.attention",
           "vkd_kernels.methods.gkd", "vkd_kernels.train.models",
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


# op package (under vkd_kernels/) -> its name in csrc/{common,cpu,cuda}/
OPS = {"spectrum": "spectrum", "weights": "weights", "attention": "attention", "gkd/head": "head",
       "gkd/apply": "apply"}
OP_FILES = {"__init__.py", "layout.py", "reference.py", "native.py", "triton_kernels.py", "op.py", "module.py"}


@pytest.mark.parametrize("package", OPS)
def test_every_op_is_one_package_with_the_same_files(package):
    assert {p.name for p in (ROOT / "vkd_kernels" / package).glob("*.py")} == OP_FILES


@pytest.mark.parametrize("package", OPS)
def test_every_op_has_one_file_in_each_csrc_layer(package):
    name = OPS[package]
    for path in (f"common/{name}.h", f"cpu/{name}.cpp", f"cuda/{name}.cu"):
        assert (ROOT / "csrc" / path).is_file(), path


def test_the_old_attention_names_are_aliases_of_gkd():
    from vkd_kernels import attention, gkd
    assert attention.attention_apply is gkd.attention_apply
    assert attention.attention_head_tail is gkd.attention_head_tail
    assert attention.GenerativeAttentionHead is gkd.GenerativeAttentionHead
