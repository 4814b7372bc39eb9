"""Entry point of ``python -m vkd_kernels.check``.

Triton reads TRITON_INTERPRET when a kernel is defined, so without a GPU it is set
here, before any vkd_kernels Triton module is imported (they load on first use).
"""
import logging
import os
import sys

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from vkd_kernels.check.cli import main  # noqa: E402

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    sys.exit(main())
