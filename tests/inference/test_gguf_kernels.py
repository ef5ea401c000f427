"""The GGUF block kernels (``inference/kernels/gguf_blocks.c``) against gguf-py and torch.

Each instruction-set build this CPU can run is tested: ``native`` (``-march=native``), ``avx2``
(``-march=haswell``) and ``scalar`` (``-march=x86-64``, the portable C paths). On a CPU with
AVX512F/BW/VL the native build reports "avx512" (llama.cpp's AVX2 kernels compiled with the
AVX-512 and VNNI forms available), on an AVX2 one "avx2".

Tolerance of ``linear``: the kernel quantizes each x row to 8 bits per block (Q8_0/Q8_1 blocks
of 32, Q8_K blocks of 256, as llama.cpp does), so each x value moves by up to half a step,
amax(block) / 254, and the block scale is rounded to float16 (2^-11). Summed over K with random
signs that is about 0.7% of the output's scale (rms over the outputs) for Gaussian x; bf16
outputs add their own rounding (2^-9 of the value). Checked: the rms error is at most 1.5% of the
output's rms and the largest error at most 6% of it; a wrong block decode is off by ~100%.
"""
from __future__ import annotations

import platform
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from inference.kernels import ISA_ENV, load_native

pytestmark = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                                reason="no C compiler to build the kernel")

TYPES = {2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K"}
K_TYPES = {12, 13, 14}


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


FLAGS = _cpu_flags()
X86 = platform.machine() in ("x86_64", "AMD64")
HAS_AVX2 = {"avx2", "fma", "f16c"} <= FLAGS
HAS_AVX512 = HAS_AVX2 and {"avx512f", "avx512bw", "avx512vl"} <= FLAGS


def _expected_isa(isa: str) -> str:
    if isa == "native":
        return "avx512" if HAS_AVX512 else "avx2" if HAS_AVX2 else "scalar"
    return isa


ISAS = [
    "native",
    pytest.param("avx2", marks=pytest.mark.skipif(not (X86 and HAS_AVX2), reason="needs an x86 CPU with AVX2")),
    pytest.param("scalar", marks=pytest.mark.skipif(not X86, reason="-march=x86-64 is for x86")),
]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):  # type: ignore[no-untyped-def]
    return Path(tmp_path_factory.mktemp("gguf_kernels"))


@pytest.fixture(scope="module", params=ISAS)
def build(request, cache_dir):  # type: ignore[no-untyped-def]
    native = load_native(cache_dir, request.param)
    assert native is not None, f"a C compiler is here, yet the {request.param} kernels did not build"
    return request.param, native.gguf_blocks


def make_blocks(type_id: int, n: int, k: int, seed: int = 0) -> np.ndarray:
    """Valid blocks ``[n, row_bytes]`` uint8: gguf-py's quantization of Gaussian weights where
    gguf-py can quantize the type, else random quants with sane float16 scale fields."""
    rng = np.random.default_rng(seed + 1000 * type_id + n + k)
    qtype = gguf.GGMLQuantizationType(type_id)
    elems, size = gguf.GGML_QUANT_SIZES[qtype]
    if type_id not in K_TYPES:
        weights = rng.standard_normal((n, k)).astype(np.float32) * 0.05
        blocks = gguf.quants.quantize(weights, qtype)
        assert blocks.shape == (n, k // elems * size)
        return np.ascontiguousarray(blocks)
    blocks = rng.integers(0, 256, size=(n, k // elems, size), dtype=np.uint8)

    def halves(low: float, high: float) -> np.ndarray:
        return rng.uniform(low, high, size=(n, k // elems)).astype(np.float16).view(np.uint8).reshape(n, -1, 2)

    if type_id in (12, 13):  # d, dmin, scales[12], (qh[32],) qs[128]
        blocks[..., 0:2] = halves(1e-3, 2e-3)
        blocks[..., 2:4] = halves(1e-3, 4e-3)
    else:  # Q6_K: ql[128], qh[64], scales[16] (int8), d
        blocks[..., 208:210] = halves(1e-4, 3e-4)
    return blocks.reshape(n, -1)


def reference(type_id: int, blocks: np.ndarray, n: int, k: int) -> torch.Tensor:
    weights = gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType(type_id))
    return torch.from_numpy(np.ascontiguousarray(weights.reshape(n, k), dtype=np.float32))


def shapes(type_id: int) -> list[tuple[int, int]]:
    ks = [256, 512, 768] if type_id in K_TYPES else [96, 256, 512, 768]
    return [(n, k) for n in (64, 100) for k in ks]


def test_isa_reports_what_was_built(build) -> None:  # type: ignore[no-untyped-def]
    isa, kernels = build
    assert kernels.isa == _expected_isa(isa)
    assert kernels.TYPES == TYPES
    for type_id in TYPES:
        assert kernels.supports(type_id)
        elems, size = kernels.block_info(type_id)
        assert (elems, size) == gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(type_id)]
    assert not kernels.supports(10)  # Q2_K: no kernel


def test_setting_chooses_the_build(cache_dir, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    if not X86:
        pytest.skip("-march=x86-64 is for x86")
    monkeypatch.setenv(ISA_ENV, "scalar")
    native = load_native(cache_dir)
    assert native is not None and native.gguf_blocks.isa == "scalar"
    monkeypatch.setenv(ISA_ENV, "native")
    native = load_native(cache_dir)
    assert native is not None and native.gguf_blocks.isa == _expected_isa("native")
    with pytest.raises(ValueError):
        load_native(cache_dir, "avx9")


@pytest.mark.parametrize("type_id", list(TYPES))
def test_dequantize_matches_gguf_py(build, type_id) -> None:  # type: ignore[no-untyped-def]
    _, kernels = build
    for n, k in shapes(type_id):
        blocks_np = make_blocks(type_id, n, k)
        blocks = torch.from_numpy(blocks_np)
        ref = reference(type_id, blocks_np, n, k)
        got = kernels.dequantize(type_id, blocks, n, k, torch.float32)
        assert got.dtype == torch.float32 and got.shape == (n, k)
        assert torch.equal(got, ref), (TYPES[type_id], n, k, (got - ref).abs().max())
        got = kernels.dequantize(type_id, blocks, n, k, torch.bfloat16)
        assert got.dtype == torch.bfloat16 and torch.equal(got, ref.to(torch.bfloat16))
        rows = torch.tensor([n - 1, 0, 5, 5, 17], dtype=torch.int64)
        for dtype in (torch.float32, torch.bfloat16):
            got = kernels.dequantize(type_id, blocks, n, k, dtype, rows=rows)
            assert torch.equal(got, ref[rows].to(dtype))
        empty = kernels.dequantize(type_id, blocks, n, k, torch.float32, rows=torch.empty(0, dtype=torch.int64))
        assert empty.shape == (0, k)


def _close(got: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    scale = ref.pow(2).mean().sqrt().item() + 1e-12
    err = (got.float() - ref).abs()
    rms, worst = err.pow(2).mean().sqrt().item() / scale, err.max().item() / scale
    assert rms <= 0.015 and worst <= 0.06, f"{what}: rms error {rms:.4f}, max {worst:.4f} of the output's rms"


@pytest.mark.parametrize("type_id", list(TYPES))
def test_linear_matches_dense(build, type_id) -> None:  # type: ignore[no-untyped-def]
    isa, kernels = build
    torch.manual_seed(type_id)
    for n, k in shapes(type_id):
        blocks_np = make_blocks(type_id, n, k, seed=1)
        blocks = torch.from_numpy(blocks_np)
        weight = reference(type_id, blocks_np, n, k)
        call = kernels.bind(type_id, blocks, n, k)
        for m in (1, 2, 3, 5, 8, 16):
            wide = torch.randn(m, k + 40)  # rows of a wider tensor: strided
            for dtype in (torch.float32, torch.bfloat16):
                x = wide.to(dtype)[:, 8:8 + k]
                assert x.stride(0) == k + 40
                ref = F.linear(x.float(), weight)
                got = call(x)
                assert got.dtype == dtype and got.shape == (m, n)
                _close(got, ref, f"{isa} {TYPES[type_id]} n={n} k={k} m={m} {dtype}")
        x = torch.randn(3, k)
        assert torch.equal(kernels.linear(type_id, blocks, n, k, x), call(x))
        assert call(torch.empty(0, k)).shape == (0, n)


def test_linear_one_thread_and_unaligned_blocks(build) -> None:  # type: ignore[no-untyped-def]
    """Whole rows per thread: one thread gives what two give; blocks at an odd address work."""
    _, kernels = build
    n, k = 300, 1024  # big enough to share between threads
    threads = torch.get_num_threads()
    try:
        for type_id in TYPES:
            blocks_np = make_blocks(type_id, n, k, seed=2)
            aligned = torch.from_numpy(blocks_np)
            odd = torch.empty(aligned.numel() + 1, dtype=torch.uint8)[1:]
            odd.copy_(aligned.reshape(-1))
            assert odd.data_ptr() % 2 == 1
            x = torch.randn(4, k)
            torch.set_num_threads(2)
            many = kernels.linear(type_id, aligned, n, k, x)
            torch.set_num_threads(1)
            one = kernels.linear(type_id, odd, n, k, x)
            assert torch.equal(many, one), TYPES[type_id]
            _close(one, F.linear(x, reference(type_id, blocks_np, n, k)), TYPES[type_id])
            assert torch.equal(kernels.dequantize(type_id, odd, n, k, torch.float32),
                               reference(type_id, blocks_np, n, k))
    finally:
        torch.set_num_threads(threads)


def test_bad_layouts_raise(build) -> None:  # type: ignore[no-untyped-def]
    _, kernels = build
    n, k = 64, 256
    blocks = torch.from_numpy(make_blocks(12, n, k))
    x = torch.randn(2, k)
    with pytest.raises(ValueError):
        kernels.bind(10, blocks, n, k)  # unsupported type
    with pytest.raises(ValueError):
        kernels.bind(12, blocks, n, 96)  # k not a multiple of 256
    with pytest.raises(ValueError):
        kernels.bind(12, blocks, n + 1, k)  # too few bytes
    with pytest.raises(ValueError):
        kernels.bind(12, blocks[:, :100], n, k)  # not contiguous
    with pytest.raises(ValueError):
        kernels.bind(12, blocks.view(torch.int8), n, k)  # not uint8
    with pytest.raises(ValueError):
        kernels.bind(12, blocks.reshape(2, -1), n, k)  # rows not [n, row_bytes]
    call = kernels.bind(12, blocks, n, k)
    with pytest.raises(ValueError):
        call(torch.randn(2, k + 256))  # wrong k
    with pytest.raises(ValueError):
        call(torch.randn(k, 2).t())  # columns strided
    with pytest.raises(ValueError):
        call(x.half())  # no float16 path
    with pytest.raises(ValueError):
        call(x[0])  # not 2-D
    with pytest.raises(ValueError):
        kernels.dequantize(12, blocks, n, k, torch.float16)
    with pytest.raises(ValueError):
        kernels.dequantize(12, blocks, n, k, torch.float32, rows=torch.tensor([0, n]))  # out of range
    with pytest.raises(ValueError):
        kernels.dequantize(12, blocks, n, k, torch.float32, rows=torch.tensor([-1]))
    with pytest.raises(ValueError):
        kernels.dequantize(12, blocks, n, k, torch.float32, rows=torch.tensor([0], dtype=torch.int32))
    with pytest.raises(ValueError):
        kernels.block_info(10)
