#!/usr/bin/env bash
# A lent GPU's whole session in one command (device time is short: every stage is
# bounded by what is left of BUDGET seconds, and each stage's results are saved as
# it ends). In the repository root of a machine whose python3 has torch, triton,
# nvcc, cmake, ninja, pybind11 and scikit-build-core:
#   bash benchmarks/lent_gpu.sh [BUDGET_S=540]
# 1. builds and installs vkd_kernels (CUDA kernels for this GPU's architecture only);
# 2. python -m vkd_kernels.check --quick --bench --sanitize (every op, backend, dtype on
#    each op's first case, side stream, sync-debug, CUDA graph, compute-sanitizer, the
#    headline timings);
# 3. a tiny trainer run of every method family (AMP on CUDA; when PyYAML and tqdm are there);
# 4. benchmarks/run.py --quick (headline shape per op vs eager and torch.compile);
# 5. python -m vkd_kernels.check --no-quick --only-correctness (every case) with the rest.
# Everything lands in $OUT/results.tgz (vkd-results/: env.txt, build.log, check-*/,
# bench/<gpu>/, *.log); the last lines printed are the summaries.
set -uo pipefail
BUDGET=${1:-540}
OUT=${OUT:-/tmp/vkd-gpu-out}
RES=/tmp/vkd-results
ROOT=$(pwd)
START=$(date +%s)
left() { echo $((BUDGET - ($(date +%s) - START))); }
save() { tar czf "$OUT/results.tgz" -C /tmp vkd-results; }
stage() { echo "== $1 at $(($(date +%s) - START)) s, $(left) s left"; }
# run LIMIT_S CMD...: under timeout (SIGTERM, then SIGKILL 10 s later: a hung kernel ignores
# Python's handler), skipped with a line when less than 20 s are given
run() { local limit=$1; shift
        if [ "$limit" -lt 20 ]; then echo "skipped: ${limit} s left"; return 124; fi
        timeout -k 10 "$limit" "$@"; }
rm -rf "$RES"; mkdir -p "$OUT" "$RES"   # nothing from an earlier run on a warm machine
export PYTHONUNBUFFERED=1 CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) PIP_BREAK_SYSTEM_PACKAGES=1
ARCH=$(python3 -c "import torch; print(''.join(map(str, torch.cuda.get_device_capability())))")
export CMAKE_ARGS="-DCMAKE_CUDA_ARCHITECTURES=$ARCH"
{ nvidia-smi; python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
  nvcc --version | tail -2; command -v compute-sanitizer; cmake --version | head -1
  python3 -c "import scikit_build_core, pybind11, ninja" || echo "missing a build requirement"; } > "$RES/env.txt" 2>&1
stage "build (sm_$ARCH)"
run "$(($(left) - 60))" python3 -m pip install -v --no-build-isolation --no-deps --no-index . > "$RES/build.log" 2>&1 \
  || { tail -40 "$RES/build.log"; save; exit 1; }
cd /tmp   # import the installed package, not the source tree (which has no _C)
python3 -c "from vkd_kernels import _ext; assert _ext.has_cuda_kernels() and not _ext.cuda_unavailable(), \
  (_ext.EXT_ERROR, _ext.cuda_unavailable())" >> "$RES/build.log" 2>&1 \
  || { echo "the CUDA kernels were not built (the cuda backend would only be skipped):"; tail -40 "$RES/build.log"; }
save
stage "check --quick --bench --sanitize"
LIMIT=$(($(left) * 2 / 5))
run "$LIMIT" python3 -m vkd_kernels.check --quick --bench --sanitize --sanitize-timeout $((LIMIT / 2)) \
  --out "$RES/check-quick" > "$RES/check-quick.log" 2>&1
echo "exit $?"; save
stage "trainer smoke run (AMP on CUDA, every method family, tiny)"
if python3 -c "import yaml, tqdm" 2>/dev/null; then
  run "$(( $(left) / 4 < 150 ? $(left) / 4 : 150 ))" python3 -c "from vkd_kernels.train.entry import main; main()" \
    reproduce --recipe synthetic-full --seeds 0 --set data.train.num_clips=24 --set data.val.num_clips=12 \
    --set data.size=16 --set teacher.model.width=4 --set teacher.train.epochs=1 --set student.model.width=2 \
    --set train.epochs=1 --set train.batch_size=8 --methods ce kd at fitnet collab collab_param gkd \
    --out "$RES/train-smoke" > "$RES/train-smoke.log" 2>&1
  echo "exit $?"; tail -14 "$RES/train-smoke.log"
else
  echo "skipped: the train extra (PyYAML, tqdm) is not installed here" | tee "$RES/train-smoke.log"
fi
save
stage "benchmarks --quick"
run "$(($(left) * 3 / 5))" python3 "$ROOT/benchmarks/run.py" --quick --device cuda --out "$RES/bench" \
  > "$RES/bench.log" 2>&1
echo "exit $?"; save
stage "check --no-quick --only-correctness"
run "$(($(left) - 25))" python3 -m vkd_kernels.check --no-quick --only-correctness \
  --out "$RES/check-full" > "$RES/check-full.log" 2>&1
echo "exit $?"; save
stage "summaries"
grep -h "FAIL\|checks,\|error\|Error" "$RES"/check-*.log "$RES"/bench.log 2>/dev/null | cut -c1-300 | tail -40
grep -h "^|" "$RES"/bench/*/*.md 2>/dev/null | cut -c1-200 | tail -40
