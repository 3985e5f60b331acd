"""Pinned CPU numerics: the levers each cap sets, and that a capped process really dispatches there."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mripipe.core import numerics
from mripipe.core.numerics import LEVER_VARS, numpy_disabled, pinning_env

NEW_NUMPY = ["X86_V3", "X86_V4", "AVX512_ICL", "AVX512_SPR"]
OLD_NUMPY = ["SSE41", "POPCNT", "SSE42", "AVX", "F16C", "FMA3", "AVX2", "AVX512F", "AVX512CD",
             "AVX512_KNL", "AVX512_SKX", "AVX512_CLX", "AVX512_ICL"]


def test_numpy_targets_above_the_cap_are_disabled() -> None:
    assert numpy_disabled("avx2", NEW_NUMPY) == ["X86_V4", "AVX512_ICL", "AVX512_SPR"]
    assert numpy_disabled("avx512", NEW_NUMPY) == ["AVX512_ICL", "AVX512_SPR"]
    assert numpy_disabled("sse4_2", NEW_NUMPY) == NEW_NUMPY
    assert numpy_disabled("avx2", OLD_NUMPY) == ["AVX512F", "AVX512CD", "AVX512_KNL", "AVX512_SKX",
                                                 "AVX512_CLX", "AVX512_ICL"]


@pytest.mark.skipif(not numerics.is_x86(), reason="the levers are x86 instruction sets")
def test_avx2_sets_every_lever() -> None:
    env = pinning_env("avx2")
    assert set(env) == set(LEVER_VARS)
    assert env["ATEN_CPU_CAPABILITY"] == "avx2" and env["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    assert env["MKL_CBWR"] == "AVX2" and env["OPENBLAS_CORETYPE"] == "Haswell"
    assert pinning_env("native") == {}
    with pytest.raises(ValueError, match="compute.cpu_isa: unknown level 'avx3'"):
        pinning_env("avx3")


@pytest.mark.skipif(not numerics.is_x86() or "avx2" not in numerics.cpu_flags(),
                    reason="needs an x86 CPU with AVX2")
def test_a_pinned_process_dispatches_at_the_cap() -> None:
    env = {k: v for k, v in os.environ.items() if k not in LEVER_VARS} | pinning_env("avx2")
    code = "import json; from mripipe.core.numerics import dispatch_in_effect; print(json.dumps(dispatch_in_effect()))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    got = json.loads(out.stdout)
    assert got["torch_cpu_capability"] == "AVX2"
    assert not {"X86_V4", "AVX512_ICL", "AVX512_SPR", "AVX512F", "AVX512_SKX"} & set(got["numpy_simd"])
    assert got["levers"]["MKL_CBWR"] == "AVX2"
