"""``python -m vkd_kernels.check``: one command that verifies (and optionally benchmarks)
every op on the machine it runs on, for the day a GPU is lent.

Correctness: every op x fused backend x dtype (float32, float64, float16, bfloat16)
against a float64 reference, outputs NaN-poisoned (``VKD_POISON_OUTPUTS=1``), forward
and the gradient of every input the op differentiates (student and teacher), on odd
shapes, channels_last_3d and TSM layouts (``cases.py``; tolerances in ``runner.py``).
On CUDA the same comparisons run on a side stream, under
``torch.cuda.set_sync_debug_mode("error")``, replayed from a captured CUDA graph and
on cuda:1 while cuda:0 is current (when present); ``--sanitize`` adds compute-sanitizer
runs of the CUDA C++ kernels (``sanitize.py``) and ``--bench`` the headline benchmark
(``bench.py``). Without a GPU it checks the cpu backend and Triton under the
interpreter (``TRITON_INTERPRET=1``, set by ``__main__`` before Triton loads) on
the quick cases, and says why each GPU part is skipped.

The report goes to ``benchmarks/results/<device>/check.{md,json}`` (``--out``); the
exit code is 1 if any check, sanitizer run or benchmark row failed, else 0.
"""
from .cli import main, parser

__all__ = ["main", "parser"]
