// VKD_CPU_CLONES: compile a CPU kernel's inner function for AVX-512, AVX2 + FMA and the
// baseline, the variant picked at load time for the CPU running it. The extension is
// built for the baseline x86-64, whose 4-wide SSE would run a 16-lane tile in 4 steps
// (torch.compile's code is built for the host). Everything the function calls must be
// inline, so it is compiled with it.
#pragma once

#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__))
#define VKD_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define VKD_CPU_CLONES
#endif
