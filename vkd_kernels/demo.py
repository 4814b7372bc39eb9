"""``python -m vkd_kernels.demo``: a quick look at the temporal spectrum loss (the reference
trainer, ``vkd``, is the full use).

Distils the temporal spectrum of a frozen "teacher" feature map into a small student
(a Conv3d over the same clip), checks every available backend against the eager
reference, and times forward + backward of the fused loss against eager PyTorch.
"""
from __future__ import annotations

import time

import torch

import vkd_kernels
from vkd_kernels import _backend


def synthetic_clips(n: int, t: int = 16, size: int = 14) -> torch.Tensor:
    """Clips (n, 3, t, size, size) whose pixels oscillate at random temporal frequencies."""
    frequency = torch.randint(1, t // 2, (n, 3, 1, size, size)).float()
    phase = torch.rand(n, 3, 1, size, size) * 6.283
    time_axis = torch.arange(t).float().view(1, 1, t, 1, 1)
    return torch.sin(6.283 * frequency * time_axis / t + phase) + 0.1 * torch.randn(n, 3, t, size, size)


def distill(steps: int = 60) -> None:
    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Conv3d(3, 32, (5, 3, 3), padding=(2, 1, 1)), torch.nn.ReLU()).eval()
    student = torch.nn.Sequential(torch.nn.Conv3d(3, 32, (1, 3, 3), padding=(0, 1, 1)), torch.nn.ReLU(),
                                  torch.nn.Conv3d(32, 32, (3, 1, 1), padding=(1, 0, 0)))
    criterion = vkd_kernels.TemporalSpectrumLoss()
    optimizer = torch.optim.Adam(student.parameters(), lr=3e-3)
    print(f"distilling a teacher's temporal spectrum ({steps} steps, backend {_chosen()}):")
    for step in range(steps + 1):
        clips = synthetic_clips(8)
        with torch.no_grad():
            target = teacher(clips)
        loss = criterion(student(clips), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 15 == 0:
            print(f"  step {step:3d}  spectrum loss {loss.item():.5f}")


def _chosen() -> str:
    return _backend.resolve("temporal_spectrum_loss", "auto", torch.device("cpu"))


def agreement() -> None:
    torch.manual_seed(1)
    student, teacher = torch.randn(2, 8, 13, 7, 7), torch.randn(2, 8, 13, 7, 7)
    reference = vkd_kernels.temporal_spectrum_loss(student, teacher, backend="reference").item()
    print(f"backends on one input (reference {reference:.6f}):")
    for name in ("cpu", "triton", "cuda"):
        why = _backend.device_unsupported(name, torch.device("cpu"))
        if why:
            print(f"  {name:9s} unavailable here: {why}")
            continue
        value = vkd_kernels.temporal_spectrum_loss(student, teacher, backend=name).item()
        print(f"  {name:9s} {value:.6f}  (relative difference {abs(value - reference) / reference:.1e})")


def timing(shape=(8, 256, 8, 14, 14), reps: int = 5) -> None:
    student = torch.randn(shape, requires_grad=True)
    teacher = torch.randn(shape)
    print(f"forward + backward at (N, C, T, H, W) = {shape}, median of {reps}:")
    for backend in ("auto", "reference"):
        times = []
        for _ in range(reps + 1):
            start = time.perf_counter()
            vkd_kernels.temporal_spectrum_loss(student, teacher, backend=backend).backward()
            times.append(time.perf_counter() - start)
        label = f"vkd ({_chosen()})" if backend == "auto" else "eager torch.fft"
        print(f"  {label:16s} {sorted(times[1:])[reps // 2] * 1e3:8.1f} ms")
    print("full sweep (eager, torch.compile, memory, op counts): python benchmarks/run.py")


def main() -> None:
    print(f"vkd-kernels {vkd_kernels.__version__}, torch {torch.__version__}")
    distill()
    agreement()
    timing()


if __name__ == "__main__":
    main()
