"""Entry point of ``python -m vkd_kernels.check``.

Without a GPU the Triton kernels run under the interpreter, and Triton reads
TRITON_INTERPRET when it is imported: its own library functions (``tl.cdiv`` and the
like) are made then, and ``import torch`` imports Triton. So when the variable is not
set yet, the command sets it and runs itself again in a fresh interpreter.
"""
import logging
import os
import sys

import torch

if not torch.cuda.is_available() and "TRITON_INTERPRET" not in os.environ:
    os.environ["TRITON_INTERPRET"] = "1"
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, "-m", "vkd_kernels.check", *sys.argv[1:]])

from vkd_kernels.check.cli import main  # noqa: E402

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    sys.exit(main())
