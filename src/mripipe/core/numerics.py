"""Pinned CPU numerics: cap the instruction set every numerical library dispatches to.

PyTorch's own vectorised kernels (ATen), oneDNN (convolutions), MKL (BLAS, FFT), OpenBLAS
(numpy/scipy's BLAS) and numpy's SIMD loops each pick a kernel by the CPU's instruction set at
run time. Two CPUs of one architecture therefore run different arithmetic; a chaotic training run
turns the last-bit differences into a different model. ``compute.cpu_isa`` caps every lever at one
level, so machines that all have that level run the same kernels:

- ``native``: no cap (the libraries' own choice; fastest, machine-dependent);
- ``avx2``: x86-64-v3, which every current x86-64 CPU has (the default);
- ``avx512``: x86-64-v4 without the Ice Lake / Sapphire Rapids extensions;
- ``sse4_2``: x86-64-v2, no vector kernels beyond it.

The levers are environment variables read when each library loads, so :func:`pinning_env` is
applied to the environment of every job (the Snakefile does it before any job starts).
``MKL_CBWR`` is MKL's conditional numerical reproducibility: the same results on every CPU that has
the named level (Intel documents it for Intel CPUs; on other vendors it is an intent, not a
guarantee). Not pinned: oneDNN's blocking by cache size, and a library's vendor-specific path
(MKL on non-Intel CPUs). On a non-x86 machine the cap does nothing and says so.
"""

from __future__ import annotations

import os
import platform

ISA_LEVELS = ("native", "avx512", "avx2", "sse4_2")

#: The numpy dispatch targets each cap keeps (numpy >= 2.4 names, and the older per-extension ones).
_NUMPY_ALLOWED = {
    "sse4_2": {"SSE", "SSE2", "SSE3", "SSSE3", "SSE41", "POPCNT", "SSE42", "X86_V2"},
    "avx2": {"AVX", "F16C", "FMA3", "AVX2", "X86_V3"},
    "avx512": {"AVX512F", "AVX512CD", "AVX512_SKX", "X86_V4"},
}
#: Per cap: ATen capability, oneDNN max ISA, MKL instructions/CBWR level, OpenBLAS core type.
_LEVERS = {
    "sse4_2": ("default", "SSE41", "SSE4_2", "Nehalem"),
    "avx2": ("avx2", "AVX2", "AVX2", "Haswell"),
    "avx512": ("avx512", "AVX512_CORE", "AVX512", "SkylakeX"),
}
#: The environment variables :func:`pinning_env` may set (reported in the fingerprint).
LEVER_VARS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS",
              "MKL_CBWR", "OPENBLAS_CORETYPE", "NPY_DISABLE_CPU_FEATURES")
#: CPU flags (``/proc/cpuinfo``) that decide which kernels the libraries dispatch to.
DISPATCH_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                  "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8")


def is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")


def _allowed_numpy(cap: str) -> set[str]:
    order = ["sse4_2", "avx2", "avx512"]
    keep: set[str] = set()
    for level in order[: order.index(cap) + 1]:
        keep |= _NUMPY_ALLOWED[level]
    return keep


def numpy_disabled(cap: str, dispatch: list[str] | None = None) -> list[str]:
    """numpy's dispatch targets above ``cap`` (what ``NPY_DISABLE_CPU_FEATURES`` must name)."""
    if dispatch is None:
        from numpy._core._multiarray_umath import __cpu_dispatch__

        dispatch = list(__cpu_dispatch__)
    keep = _allowed_numpy(cap)
    return [f for f in dispatch if f not in keep]


def pinning_env(cap: str) -> dict[str, str]:
    """The environment variables that cap every library at ``cap`` (empty for ``native`` and on a
    non-x86 machine). Raises ValueError on an unknown level."""
    if cap not in ISA_LEVELS:
        raise ValueError(f"compute.cpu_isa: unknown level {cap!r} (one of {', '.join(ISA_LEVELS)})")
    if cap == "native" or not is_x86():
        return {}
    aten, onednn, mkl, openblas = _LEVERS[cap]
    return {"ATEN_CPU_CAPABILITY": aten, "ONEDNN_MAX_CPU_ISA": onednn, "DNNL_MAX_CPU_ISA": onednn,
            "MKL_ENABLE_INSTRUCTIONS": mkl, "MKL_CBWR": mkl, "OPENBLAS_CORETYPE": openblas,
            "NPY_DISABLE_CPU_FEATURES": ",".join(numpy_disabled(cap))}


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    """The :data:`DISPATCH_FLAGS` this CPU has, in that order (empty where unknown)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    have = set(line.split(":", 1)[1].split())
                    return [f for f in DISPATCH_FLAGS if f in have]
    except OSError:
        pass
    return []


def dispatch_in_effect() -> dict[str, object]:
    """What this process dispatches to: torch's CPU capability, numpy's enabled SIMD targets, its
    BLAS, and the lever variables set (imports torch and numpy: call it in a job, not at parse)."""
    import numpy as np
    import torch
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    blas = "unknown"
    try:
        info = np.show_config(mode="dicts")
        dep = (info or {}).get("Build Dependencies", {}).get("blas", {})
        blas = f"{dep.get('name', '?')} {dep.get('version', '?')}"
    except (TypeError, AttributeError):
        pass
    return {
        "torch_cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
        "torch_blas": "mkl" if torch.backends.mkl.is_available() else "other",
        "numpy": np.__version__,
        "numpy_simd": [f for f in __cpu_dispatch__ if __cpu_features__.get(f)],
        "numpy_blas": blas,
        "levers": {k: os.environ[k] for k in LEVER_VARS if k in os.environ},
    }
