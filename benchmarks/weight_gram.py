"""The CPU weight-spectrum kernel on one weight, in nanoseconds per kernel row.

A weight (C_out, C_in, *kernel) is C_out * C_in rows of P = prod(kernel) elements; the
op's cost is the Gram of those rows (benchmarks/README.md, "weight spectrum"). Median of
``--repeats`` calls after ``--warmup``, ``time.perf_counter`` around
``vkd_kernels.weight_spectrum(w, backend="cpu")``, on ``--threads`` threads::

    python benchmarks/weight_gram.py                                  # 512 x 512 x 3 x 3 x 3, one thread
    python benchmarks/weight_gram.py --shape 64 3 3 7 7 --dtype float64
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import torch

import vkd_kernels


def measure(shape, dtype: torch.dtype, repeats: int, warmup: int) -> dict:
    w = torch.randn(shape, dtype=dtype)
    for _ in range(warmup):
        vkd_kernels.weight_spectrum(w, backend="cpu")
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        vkd_kernels.weight_spectrum(w, backend="cpu")
        seconds.append(time.perf_counter() - start)
    rows = shape[0] * shape[1]
    median = statistics.median(seconds)
    return {"shape": list(shape), "dtype": str(dtype).removeprefix("torch."), "threads": torch.get_num_threads(),
            "rows": rows, "P": math.prod(shape[2:]), "median_ms": median * 1e3, "ns_per_row": median / rows * 1e9}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs="+", default=[512, 512, 3, 3, 3], help="C_out C_in k...")
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args(argv)
    if len(args.shape) < 3 or min(args.shape) < 1:
        ap.error(f"--shape: C_out C_in and at least one kernel size, all >= 1, got {args.shape}")
    if args.threads < 1 or args.repeats < 1 or args.warmup < 0:
        ap.error("--threads and --repeats must be >= 1, --warmup >= 0")
    torch.set_num_threads(args.threads)
    print(json.dumps(measure(args.shape, getattr(torch, args.dtype), args.repeats, args.warmup)))


if __name__ == "__main__":
    main()
