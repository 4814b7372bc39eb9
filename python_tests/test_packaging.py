"""The house: the README's commands are what CI runs, the version is defined once, the
trainer's dependencies are an extra (``vkd`` says so when they are missing), the build
can skip the extension, and the package imports and computes without it."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import vkd_kernels
from vkd_kernels.train import entry

ROOT = Path(__file__).resolve().parents[1]


def _readme_command(label: str) -> str:
    """The command line that follows ``# <label>:`` in the README's set-up block."""
    lines = (ROOT / "README.md").read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith(f"# {label}:"):
            return lines[i + 1].strip()
    raise AssertionError(f"no '# {label}:' command in README.md")


def test_ci_runs_the_readme_test_command_verbatim():
    command = _readme_command("tests")
    assert command.startswith("python3 -m venv .venv && . .venv/bin/activate && ")
    assert command.endswith("python -m pip install -e \".[dev]\" && python -m pytest -q")
    ci = (ROOT / ".ci" / "run").read_text()
    line = next(ln for ln in ci.splitlines() if "pytest" in ln and not ln.startswith("#"))
    # the exact command, and a failing step's status (pytest's 5 included) is the script's
    assert line == command + " || exit $?", line
    assert "ruff check ." in ci


def test_readme_main_job_installs_the_trainer_extra():
    command = _readme_command("main job")
    assert command.startswith("python3 -m venv .venv && . .venv/bin/activate && ")
    assert re.search(r'pip install "\.\[[^"]*train[^"]*\]"', command), command
    assert command.endswith("vkd reproduce --recipe synthetic-quick --jobs 2 --out runs/synthetic-quick")


def test_version_is_defined_once():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^dynamic = \["version"\]', pyproject, re.M)
    assert not re.search(r"^version\s*=", pyproject, re.M)
    assert 'input = "vkd_kernels/__init__.py"' in pyproject
    assert re.fullmatch(r"\d+\.\d+\.\d+", vkd_kernels.__version__)


def test_trainer_dependencies_are_an_extra():
    pyproject = (ROOT / "pyproject.toml").read_text()
    dependencies = re.search(r"^dependencies = \[(.*)\]$", pyproject, re.M).group(1)
    assert "yaml" not in dependencies and "tqdm" not in dependencies
    assert re.search(r'^train = \["pyyaml", "tqdm"\]$', pyproject, re.M)
    assert 'vkd = "vkd_kernels.train.entry:main"' in pyproject


def test_vkd_without_the_trainer_extra_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setattr(entry.importlib.util, "find_spec", lambda name: None)
    assert entry.main(["--help"]) == 2
    err = capsys.readouterr().err
    assert "pyyaml, tqdm" in err and "vkd-kernels[train]" in err


def test_vkd_entry_runs_the_cli(capsys):
    try:
        entry.main(["--help"])
    except SystemExit as done:                 # argparse's --help
        assert done.code == 0
    assert "reproduce" in capsys.readouterr().out


def test_cmake_skips_the_extension_without_a_compiler_or_on_request():
    cmake = (ROOT / "CMakeLists.txt").read_text()
    assert "project(vkd_kernels LANGUAGES NONE)" in cmake
    assert "check_language(CXX)" in cmake and "option(VKD_BUILD_EXTENSION" in cmake
    assert "VKD_BUILD_EXTENSION = {" in (ROOT / "pyproject.toml").read_text()


def test_package_without_the_extension_imports_and_computes(tmp_path):
    """What `pip install .` without a C++ compiler installs: the Python files, no _C."""
    shutil.copytree(ROOT / "vkd_kernels", tmp_path / "vkd_kernels",
                    ignore=shutil.ignore_patterns("_C*", "__pycache__", "train"))
    code = (
        "import sys, warnings\n"
        # an editable install's import hook maps vkd_kernels to the source tree: not here
        "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in type(f).__module__]\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    import torch, vkd_kernels\n"
        "    x = torch.randn(2, 3, 8, 4, 4, requires_grad=True)\n"
        "    vkd_kernels.temporal_spectrum_loss(x, torch.randn(2, 3, 8, 4, 4)).backward()\n"
        "    vkd_kernels.attention_transfer_loss(x, torch.randn(2, 5, 8, 4, 4)).backward()\n"
        "assert vkd_kernels.__file__.startswith(%r), vkd_kernels.__file__\n"
        "assert 'is not installed' in vkd_kernels.EXT_ERROR, vkd_kernels.EXT_ERROR\n"
        "assert torch.isfinite(x.grad).all()\n"
        "print('ok')\n"
    ) % str(tmp_path)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)})
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]
