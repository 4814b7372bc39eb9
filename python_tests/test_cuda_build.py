"""What the GPU would run, read off the built extension: the SASS of every CUDA kernel
in vkd_kernels._C (cuobjdump -sass, per architecture and function). A kernel that never
stores to global memory computes nothing anyone can see: the empty head GroupNorm
kernels (a __host__ call from __host__ __device__ code, which nvcc only warns about)
compiled to `MOV R1, c[0x0][0x28]; EXIT` for every dtype.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

from vkd_kernels import _ext

# Opcodes that write global memory on sm_80 / sm_90: STG.E* (global store), ST.E* (generic
# store, global unless proven otherwise), RED*/ATOM*/ATOMG* (global reductions and
# atomics), and the sm_90 bulk / tensor-memory-accelerator stores.
_GLOBAL_WRITES = {"STG", "ST", "RED", "REDG", "ATOM", "ATOMG", "UTMASTG", "UTMAREDG", "UBLKCP", "UBLKRED"}
_INSTRUCTION = re.compile(r"^\s*/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P[0-9T]\s+)?([A-Z][A-Z0-9_]*)")


def _cuobjdump() -> str | None:
    found = shutil.which("cuobjdump")
    if found:
        return found
    try:
        import triton
    except ImportError:
        return None
    bundled = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    return str(bundled) if bundled.exists() else None


def _extension_path() -> str:
    if _ext.EXT is None:
        pytest.skip(f"vkd_kernels._C is not importable: {_ext.EXT_ERROR}")
    if not _ext.has_cuda_kernels():
        pytest.skip("vkd_kernels._C was built without CUDA kernels")
    return _ext.EXT.__file__


def _cuobjdump_output(flag: str) -> str:
    """What ``cuobjdump <flag>`` prints for the built extension (skips without the tool)."""
    path = _extension_path()
    tool = _cuobjdump()
    if tool is None:
        pytest.skip("cuobjdump not found (neither on PATH nor in Triton's bundled CUDA tools)")
    return subprocess.run([tool, flag, path], check=True, capture_output=True, text=True).stdout


def kernel_opcodes(sass: str) -> dict:
    """{(arch, function): set of opcodes} from `cuobjdump -sass` output."""
    kernels: dict = defaultdict(set)
    arch = function = None
    for line in sass.splitlines():
        if m := re.match(r"\s*code for (sm_\d+)", line):
            arch = m.group(1)
        elif m := re.match(r"\s*Function : (\S+)", line):
            function = m.group(1)
            kernels[(arch, function)]
        elif function and (m := _INSTRUCTION.match(line)):
            kernels[(arch, function)].add(m.group(1))
    return dict(kernels)


@pytest.fixture(scope="module")
def kernels() -> dict:
    parsed = kernel_opcodes(_cuobjdump_output("-sass"))
    assert parsed, f"cuobjdump -sass found no kernels in {_extension_path()}"
    return parsed


def test_parser_reads_stores():
    sample = """
	code for sm_90
		Function : k_store
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/              @!P0 STG.E.64 desc[UR4][R2.64], R4 ;
		Function : k_empty
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/                   EXIT ;
"""
    parsed = kernel_opcodes(sample)
    assert parsed[("sm_90", "k_store")] & _GLOBAL_WRITES
    assert not parsed[("sm_90", "k_empty")] & _GLOBAL_WRITES


def test_every_architecture_is_built(kernels):
    built = {arch for arch, _ in kernels}
    wanted = {f"sm_{a}" for a in str(_ext.EXT.build_info()["cuda_architectures"]).split(",")}
    assert wanted <= built, f"architectures {sorted(wanted - built)} missing from the extension"
    functions = {f for _, f in kernels}
    for arch in wanted:  # the same kernels for every architecture
        assert {f for a, f in kernels if a == arch} == functions, arch


def test_every_kernel_writes_global_memory(kernels):
    dead = sorted(f"{arch} {function}" for (arch, function), ops in kernels.items() if not ops & _GLOBAL_WRITES)
    assert not dead, "kernels that never store to global memory (compiled to nothing):\n" + "\n".join(dead)


def test_head_norm_kernels_are_present(kernels):
    """The kernels defect 1 emptied: forward and backward, 4 dtypes, every architecture."""
    for arch in {a for a, _ in kernels}:
        for name in ("head_forward_kernel", "head_backward_kernel"):
            found = [f for a, f in kernels if a == arch and name in f]
            assert len(found) == 4, (arch, name, found)



# ---- resources (issue 13): the kernels keep their per-thread arrays in registers (no
# stack frame, no local memory) ------------------------------------------------------------

# The attention ops' kernels, by the argument struct in their mangled names (csrc/kernels.h).
_ATTENTION_ARGS = ("16AttentionMapArgs", "12TransferArgs", "9ApplyArgs", "12HeadNormArgs")


def resource_usage(text: str) -> dict:
    """{(arch, function): {"REG": n, "STACK": n, ...}} from `cuobjdump -res-usage` output."""
    usage, arch, function = {}, None, None
    for line in text.splitlines():
        if m := re.search(r"arch = (sm_\d+)", line):
            arch = m.group(1)
        elif m := re.match(r"\s*Function (\S+):", line):
            function = m.group(1)
        elif function and "REG:" in line:
            usage[(arch, function)] = {k: int(v) for k, v in re.findall(r"([A-Z]+):(\d+)", line)}
            function = None
    return usage


@pytest.fixture(scope="module")
def resources() -> dict:
    """resource_usage of every kernel in the built extension."""
    return resource_usage(_cuobjdump_output("-res-usage"))


def test_resource_parser():
    sample = """
Fatbin elf code:
================
arch = sm_90
code version = [1,8]
 Function _ZN3vkd11gram_kernelIfEEvNS_10WeightArgsE:
  REG:32 STACK:0 SHARED:8448 LOCAL:0 CONSTANT[0]:544 TEXTURE:0 SURFACE:0 SAMPLER:0
"""
    use = resource_usage(sample)[("sm_90", "_ZN3vkd11gram_kernelIfEEvNS_10WeightArgsE")]
    assert (use["REG"], use["STACK"], use["SHARED"], use["LOCAL"]) == (32, 0, 8448, 0)


def test_weight_kernels_use_no_local_memory(resources):
    mine = {key: use for key, use in resources.items() if "weights_cu" in key[1]}
    archs = {arch for arch, _ in mine}
    names = ("gram_kernel", "gram_backward_kernel", "finish_kernel", "finish_backward_kernel")
    for arch in archs:  # 4 dtypes each for the gram passes, 2 accumulation types for the finish
        for name, count in zip(names, (4, 4, 2, 2)):
            assert len([f for a, f in mine if a == arch and f"{len(name)}{name}I" in f]) == count, (arch, name)
    bad = {key: use for key, use in mine.items() if use.get("STACK", 0) or use.get("LOCAL", 0)}
    assert mine and not bad, f"weight kernels with a stack frame or local memory: {bad}"


def test_attention_kernels_use_no_stack(resources):
    """No local-memory stack (spills, unrolled arrays indexed at run time) in the attention
    transfer, head and attention_apply kernels, on every architecture."""
    ours = {key: u for key, u in resources.items() if any(a in key[1] for a in _ATTENTION_ARGS)}
    assert len({f for _, f in ours}) >= 4 * len(_ATTENTION_ARGS), sorted(ours)
    stacked = sorted(f"{arch} {f}: {u}" for (arch, f), u in ours.items() if u.get("STACK", 0) or u.get("LOCAL", 0))
    assert not stacked, "kernels with a stack or local memory:\n" + "\n".join(stacked)


# The per-sample and per-group kernels, by their argument structs: the attention-transfer
# finish (forward, backward) and the head's three passes.
_PER_SAMPLE_ARGS = ("12TransferArgs", "12HeadNormArgs")


def test_per_sample_kernels_make_no_calls(kernels):
    """The attention-transfer finish and the head kernels contain no subroutine: their
    within-sample indices divide in 32 bits (inline; 64-bit division is a CALL to a ~70
    instruction routine, 40-157 call sites a kernel before) and their divisions and
    square roots come from the rsqrt unit (csrc/common/arith.h; the IEEE slow paths are
    CALLs, whose frames cost the fp64 finish backward 48 B of stack and 252 B of spills)."""
    ours = {key: ops for key, ops in kernels.items() if any(name in key[1] for name in _PER_SAMPLE_ARGS)}
    archs = {arch for arch, _ in ours}
    assert archs and len(ours) == len(archs) * (2 * 2 + 3 * 4), sorted(ours)  # finish: fp32/fp64; head: 4 dtypes
    # A subroutine ends with RET (a kernel with EXIT); a bare CALL is no proof: on sm_80 ptxas
    # leaves some loops by a CALL whose target is the kernel's EXIT.
    calling = sorted(f"{arch} {f}" for (arch, f), ops in ours.items() if "RET" in ops)
    assert not calling, "per-sample kernels with subroutines:\n" + "\n".join(calling)


def test_spectrum_kernels_use_no_local_memory(resources):
    """The spectrum kernels keep their line tiles in registers (the per-thread Tile arrays
    were 1.6-3.7 KB of stack): no stack frame (spills, local arrays or calls) and no local
    memory, for every size class, dtype and architecture."""
    mine = {key: use for key, use in resources.items() if "spectrum_cu" in key[1]}
    # 4 kernels (pixel / group, forward / backward) x 4 size classes x 4 dtypes per architecture
    archs = {arch for arch, _ in mine}
    assert archs and len(mine) == 64 * len(archs), sorted(mine)
    bad = sorted(f"{arch} {f}: {u}" for (arch, f), u in mine.items() if u.get("STACK", 0) or u.get("LOCAL", 0))
    assert not bad, "spectrum kernels with stack or local memory:\n" + "\n".join(bad)
