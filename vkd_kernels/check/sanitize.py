"""``--sanitize``: the CUDA C++ kernels under compute-sanitizer (memcheck, racecheck, initcheck).

Each tool runs the same command in a child process limited to the ``cuda`` backend,
the quick (small) cases and the plain mode (``--only-correctness``); the three run in
parallel, alongside the parent's own checks, and are joined before the benchmark.
memcheck and racecheck instrument only kernels whose name contains ``vkd`` (the
csrc/cuda kernels live in namespace ``vkd``) where the tool supports ``--kernel-name``;
initcheck instruments every kernel (writes by an uninstrumented kernel would not be
seen, so a filter would report false uninitialised reads) and runs without NaN
poisoning, so a kernel that reads a buffer nobody wrote is reported. The children set
``PYTORCH_NO_CUDA_MEMORY_CACHING=1``: every tensor is its own allocation, so an access
past its end is out of bounds for memcheck instead of landing in a cached block.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import List, Optional

TOOLS = ("memcheck", "racecheck", "initcheck")
ERROR_EXIT = 86        # compute-sanitizer's exit code when the tool found errors
TIMEOUT_S = 240


@dataclass
class SanitizerRun:
    tool: str
    passed: bool
    seconds: float
    exit_code: Optional[int]
    command: str
    error: Optional[str] = None   # the tool's error lines or the child's failure (excerpt)

    def as_dict(self) -> dict:
        return asdict(self)


def find() -> Optional[str]:
    """compute-sanitizer from PATH, CUDA_HOME / CUDA_PATH, /usr/local/cuda or the
    nvidia-cuda-sanitizer-api wheel; None if absent."""
    found = shutil.which("compute-sanitizer")
    if found:
        return found
    roots = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    candidates = [os.path.join(r, "bin", "compute-sanitizer") for r in roots if r]
    candidates += glob.glob(os.path.join(sysconfig.get_paths()["purelib"], "nvidia", "*", "compute-sanitizer",
                                         "compute-sanitizer"))
    return next((c for c in candidates if os.path.isfile(c) and os.access(c, os.X_OK)), None)


def _supports_kernel_filter(sanitizer: str) -> bool:
    try:
        help_text = subprocess.run([sanitizer, "--help"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "--kernel-name" in help_text


class Pending:
    """The three tool runs, started now, collected by :meth:`results`."""

    def __init__(self, sanitizer: str, ops: List[str], dtypes: List[str], timeout_s: float = TIMEOUT_S,
                 workdir: Optional[str] = None):
        """``timeout_s``: for all three, from now; ``workdir``: where their logs and reports go
        (default: a fresh temporary folder)."""
        self.started, self.timeout_s = time.perf_counter(), timeout_s
        self.runs = []
        kernel_filter = _supports_kernel_filter(sanitizer)
        if workdir is not None:
            os.makedirs(workdir, exist_ok=True)
        self.workdir = workdir or tempfile.mkdtemp(prefix="vkd-check-sanitize-")
        env = dict(os.environ, PYTORCH_NO_CUDA_MEMORY_CACHING="1")
        for tool in TOOLS:
            command = [sanitizer, "--tool", tool, "--error-exitcode", str(ERROR_EXIT)]
            if kernel_filter and tool != "initcheck":
                command += ["--kernel-name", "kns=vkd"]
            command += [sys.executable, "-m", "vkd_kernels.check", "--only-correctness", "--quick",
                        "--backends", "cuda", "--ops", *ops, "--dtypes", *dtypes,
                        "--out", os.path.join(self.workdir, tool)]
            if tool == "initcheck":
                command.append("--no-poison")
            log_path = os.path.join(self.workdir, f"{tool}.log")
            handle = open(log_path, "w")
            process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
            self.runs.append((tool, command, process, handle, log_path))

    def kill(self) -> None:
        """Stop the runs (the check was stopped before their results were wanted)."""
        for _, _, process, handle, _ in self.runs:
            process.kill()
            process.wait()
            handle.close()

    def results(self) -> List[SanitizerRun]:
        out = []
        for tool, command, process, handle, log_path in self.runs:
            remaining = max(1.0, self.timeout_s - (time.perf_counter() - self.started))
            try:
                code = process.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                code = None
            handle.close()
            seconds = time.perf_counter() - self.started
            with open(log_path, errors="replace") as f:
                text = f.read()
            run = SanitizerRun(tool, code == 0, round(seconds, 1), code, " ".join(command))
            if code is None:
                run.error = f"timed out after {self.timeout_s:.0f} s; log {log_path}"
            elif code != 0:
                run.error = _excerpt(text, code) + f" (log {log_path})"
            out.append(run)
        return out


def _excerpt(text: str, code: int) -> str:
    """The tool's error lines (or the child's last lines) of a failed run."""
    lines = text.splitlines()
    errors = [line for line in lines if re.search(r"=========\s+(Invalid|Error|Race|Uninitialized|Program hit|"
                                                   r"Warning)", line) or "ERROR SUMMARY" in line
              or "RACECHECK SUMMARY" in line]
    what = "sanitizer errors" if code == ERROR_EXIT else f"the child exited {code}"
    body = errors[:12] if errors else lines[-15:]
    return what + ": " + " | ".join(line.strip() for line in body)[:3000]
