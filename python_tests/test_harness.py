"""The harness itself: the device mapping, the skips, the seeds, and the device audit
that proves, without a GPU, that every backend-parametrised test of the op files builds
its inputs on its backend's device (harness.py)."""
import os
import subprocess
import sys
from pathlib import Path

import harness
import pytest
import torch

HERE = Path(__file__).parent
OP_FILES = ["test_spectrum.py", "test_attention_transfer.py", "test_attention_head.py", "test_attention_apply.py",
            "test_weights.py"]


def test_device_mapping():
    assert harness.device_for("cpu") == torch.device("cpu")
    assert harness.device_for("cuda") == torch.device("cuda")
    accelerator = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert harness.device_for("triton") == harness.device_for("reference") == accelerator


def test_every_backend_is_a_parameter_and_one_that_cannot_run_says_why():
    ids = [p.id for p in harness.ALL]
    assert ids == ["reference", "cpu", "triton", "cuda"]
    for param in harness.ALL:
        why = harness.unavailable(param.id)
        skips = [m for m in param.marks if m.name == "skip"]
        assert bool(skips) == (why is not None)
        if why:
            assert why in skips[0].kwargs["reason"]
    if not torch.cuda.is_available():
        assert harness.unavailable("cuda")


def test_expect_device_names_a_misplaced_input():
    with pytest.raises(AssertionError, match="build it with device=device"):
        harness.expect_device(torch.device("meta"), [torch.ones(2)])


def test_inputs_are_built_on_the_backends_device():
    """Runs every backend-parametrised test of the op files with device_for answering
    'meta' for every backend (cuda included, unskipped): a test passes the audit when
    each input reaching a backend is on meta, i.e. came from the mapping; an input built
    on the CPU by mistake fails with the shape it has. No kernel runs."""
    env = dict(os.environ, VKD_TEST_DEVICE_AUDIT="1", PYTHONPATH=os.pathsep.join(
        [str(HERE.parent)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfEs",
                             "--hypothesis-seed=0", *OP_FILES], cwd=HERE, env=env, capture_output=True, text=True,
                            timeout=600)
    tail = result.stdout[-6000:] + result.stderr[-2000:]
    assert result.returncode == 0, tail
    audited = result.stdout.count(harness.AUDIT_SKIP)
    assert " failed" not in result.stdout and " error" not in result.stdout, tail
    # no backend is skipped for want of its device (cuda included): the audit runs them all
    assert audited > 0 and "cannot run here" not in result.stdout, tail
