"""The native CPU kernels and fast paths against what torch computes the plain way."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from inference.kernels import load_native
from inference.layers import AttentionBatch, PrefillRow, Rotary
from inference.layers.attention import attend_after_past
from inference.layers.norm import rms_norm
from inference.quant import DenseLinear, HybridLinear

pytestmark = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                                reason="no C compiler to build the kernel")


@pytest.fixture(scope="module")
def native(tmp_path_factory):  # type: ignore[no-untyped-def]
    built = load_native(Path(tmp_path_factory.mktemp("kernels")))
    assert built is not None, "a C compiler is here, yet the kernels did not build"
    return built


@pytest.fixture(scope="module")
def kernel(native):  # type: ignore[no-untyped-def]
    return native.decode_attention


def reference(q, cache_k, cache_v, tables, lengths, block_size):  # type: ignore[no-untyped-def]
    """Each row on its own: gather its keys through its block table, SDPA in float32."""
    nd, hq, d = q.shape
    hkv = cache_k.shape[1]
    outs = []
    for r in range(nd):
        n = int(lengths[r])
        slots = (tables[r].long()[:, None] * block_size + torch.arange(block_size)).reshape(-1)[:n]
        keys = cache_k[slots].transpose(0, 1)[None].float()  # [1, Hkv, n, D]
        values = cache_v[slots].transpose(0, 1)[None].float()
        query = q[r].reshape(hkv, hq // hkv, d)[None].float()  # [1, Hkv, G, D]
        outs.append(F.scaled_dot_product_attention(query, keys, values)[0].reshape(hq, d))
    return torch.stack(outs)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize(("hq", "hkv", "d"), [(9, 3, 64), (8, 8, 32), (32, 8, 128)])
def test_decode_attention_matches_sdpa_over_scattered_blocks_and_ragged_rows(kernel, dtype, hq, hkv, d) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    block_size, num_blocks = 16, 64
    cache_k = torch.randn(num_blocks * block_size, hkv, d).to(dtype)
    cache_v = torch.randn(num_blocks * block_size, hkv, d).to(dtype)
    lengths = torch.tensor([1, 16, 17, 200, 5, 63], dtype=torch.int32)  # block edges, one key, a long row
    width = -(-int(lengths.max()) // block_size)
    tables = torch.stack([torch.randperm(num_blocks - 1)[:width] + 1 for _ in lengths]).to(torch.int32)
    # queries as the model has them: rows of a wider q/k tensor, so rows are strided
    qk = torch.randn(len(lengths), hq + hkv, d).to(dtype)
    q = qk[:, :hq]
    out = torch.empty(len(lengths), hq, d, dtype=dtype)
    got = kernel(q, cache_k, cache_v, tables, lengths, block_size, out)
    want = reference(q, cache_k, cache_v, tables, lengths, block_size)
    tolerance = 1e-5 if dtype == torch.float32 else 1e-2  # bf16: the output's own rounding
    assert torch.allclose(got.float(), want, atol=tolerance, rtol=tolerance)


def test_a_row_sees_only_its_own_keys(kernel) -> None:  # type: ignore[no-untyped-def]
    """Keys past a row's length, and other rows' blocks, change nothing."""
    hq = hkv = 2
    d, block_size = 16, 4
    cache_k = torch.randn(64, hkv, d)
    cache_v = torch.randn(64, hkv, d)
    tables = torch.tensor([[1, 2, 3], [4, 5, 6]], dtype=torch.int32)
    lengths = torch.tensor([6, 9], dtype=torch.int32)
    q = torch.randn(2, hq, d)
    before = kernel(q, cache_k, cache_v, tables, lengths, block_size, torch.empty(2, hq, d)).clone()
    # row 0 holds slots 4-9 (blocks 1, 2, 3), row 1 slots 16-24 (blocks 4, 5, 6)
    for slots in (slice(10, 16), slice(25, 64), slice(0, 4)):  # past each row's keys, and unowned
        cache_k[slots] = 1e4
        cache_v[slots] = -1e4
    after = kernel(q, cache_k, cache_v, tables, lengths, block_size, torch.empty(2, hq, d))
    assert torch.equal(before, after)


def test_a_bad_layout_is_refused_not_read_out_of_bounds(kernel) -> None:  # type: ignore[no-untyped-def]
    cache = torch.randn(32, 2, 16)
    with pytest.raises(ValueError):
        kernel(torch.randn(1, 2, 16), cache, cache, torch.tensor([[1]], dtype=torch.int64),
               torch.tensor([3], dtype=torch.int32), 4, torch.empty(1, 2, 16))


@pytest.mark.parametrize("rows", [1, 3, 16, 37, 300])
def test_packed_dense_weights_compute_what_f_linear_computes(rows: int) -> None:
    torch.manual_seed(1)
    weight = (torch.randn(96, 64) * 0.1).to(torch.bfloat16)
    x = torch.randn(rows, 128).to(torch.bfloat16)[:, :64]  # strided rows, as the norm's output is
    layer = DenseLinear(weight)
    assert layer(x).shape == (rows, 96)
    assert torch.equal(layer(x), F.linear(x, weight))


def close(got: torch.Tensor, want: torch.Tensor) -> bool:
    tolerance = 1e-5 if got.dtype == torch.float32 else 2e-2  # bf16: one rounding either side
    return torch.allclose(got.float(), want.float(), atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("rows", [1, 5, 40])
def test_add_rms_norm_adds_the_residual_in_place_and_normalizes(native, dtype, rows) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(2)
    h, eps = 96, 1e-5
    weight = torch.randn(h).to(dtype)
    x = torch.randn(rows, h).to(dtype)
    delta = torch.randn(rows, h).to(dtype)
    want_x = x + delta
    want = rms_norm(want_x, weight.repeat(2), eps)
    got = native.layer_ops.add_rms_norm(x, delta, weight.repeat(2), eps)
    assert torch.equal(x, want_x)  # the residual stream, rounded as torch rounds it
    assert close(got, want)
    assert close(native.layer_ops.add_rms_norm(x, None, weight.repeat(2), eps), want)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("rows", [1, 3, 20])
def test_rope_store_rotates_q_and_k_and_writes_k_and_v_to_their_slots(native, dtype, rows) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(3)
    hq, hkv, d = 6, 2, 32
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    rotary = Rotary(inv_freq, 1.0, d, 512, dtype, "cpu", None)
    cos, sin = rotary.cos, rotary.sin
    qkv = torch.randn(rows, (hq + 2 * hkv) * d).to(dtype)
    positions = torch.randint(0, 512, (rows,))
    slots = torch.randperm(64)[:rows]
    cache_k, cache_v = torch.zeros(64, hkv, d, dtype=dtype), torch.zeros(64, hkv, d, dtype=dtype)
    qk = qkv[:, : (hq + hkv) * d].view(rows, hq + hkv, d).float()
    c, s = cos[positions][:, None].float(), sin[positions][:, None].float()
    want = qk * c + torch.roll(qk, d // 2, dims=-1) * s  # the torch path's formula, in float32
    v = qkv[:, (hq + hkv) * d :].view(rows, hkv, d).clone()
    native.layer_ops.rope_store(qkv, positions, cos, sin, (hq, hkv, d), cache_k, cache_v, slots)
    assert close(qkv[:, : (hq + hkv) * d].view(rows, hq + hkv, d), want)
    assert close(cache_k[slots], want[:, hq:])
    assert torch.equal(cache_v[slots], v)
    untouched = torch.ones(64, dtype=torch.bool)
    untouched[slots] = False
    assert not cache_k[untouched].any() and not cache_v[untouched].any()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_silu_mul_is_silu_of_the_gate_times_the_up_half(native, dtype) -> None:  # type: ignore[no-untyped-def]
    gu = torch.randn(7, 2 * 48).to(dtype)
    assert close(native.layer_ops.silu_mul(gu), F.silu(gu[:, :48].float()) * gu[:, 48:].float())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_gelu_tanh_mul_is_gemmas_gelu_of_the_gate_times_the_up_half(native, dtype) -> None:  # type: ignore[no-untyped-def]
    gu = torch.randn(9, 2 * 40).to(dtype)
    want = F.gelu(gu[:, :40].float(), approximate="tanh") * gu[:, 40:].float()
    assert close(native.layer_ops.gelu_tanh_mul(gu), want)


def test_the_model_with_native_ops_computes_what_torch_ops_compute() -> None:
    """The real model in float32, one prompt and then a decode step: logits agree."""
    import dataclasses

    from inference import pool
    from inference.loader import load_model
    from tests.support import builtin_spec

    settings = dataclasses.replace(pool.settings, dtype="float32")
    native_model = load_model(builtin_spec(), settings).model
    torch_model = load_model(builtin_spec(), dataclasses.replace(settings, native_kernels=False)).model
    for linear in native_model.linears():  # the GGUF's blocks through their dequantized weights, as torch's
        if isinstance(linear, HybridLinear):
            linear.max_kernel_rows = 0
    assert native_model.decode_attention is not None and torch_model.decode_attention is None
    a = native_model.args
    kv = torch.zeros(a.num_hidden_layers, 2, 64, a.num_key_value_heads, a.head_dim)
    ids = torch.tensor([1, 504, 3458, 314, 260, 2951, 30])
    n = len(ids)

    def run(model) -> torch.Tensor:  # type: ignore[no-untyped-def]
        native = model.decode_attention is not None
        kv.zero_()
        prompt = AttentionBatch(torch.arange(16, 16 + n - 1), torch.arange(n - 1), 0, None, None, 0, None, None,
                                [PrefillRow(0, n - 1, [(16, n - 1)], None)], None, block_size=16)
        model.forward(ids[:-1], prompt, kv)
        tables = torch.tensor([[1]], dtype=torch.int32)
        step = AttentionBatch(torch.tensor([16 + n - 1]), torch.tensor([n - 1]), 1, [(16, n)], None, n, None,
                              None, [], None, tables if native else None,
                              torch.tensor([n], dtype=torch.int32) if native else None, 16, decode_key_counts=[n])
        return model.forward(ids[-1:], step, kv)

    native_logits, torch_logits = run(native_model), run(torch_model)
    assert torch.allclose(native_logits, torch_logits, atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize(("chunk", "past"), [(70, 32), (64, 1), (200, 500)])
def test_a_chunk_after_a_past_attends_as_with_the_full_mask(chunk: int, past: int) -> None:
    """Past keys and the chunk's own keys in two parts, merged: what the [L, past + L] mask gives."""
    torch.manual_seed(4)
    q = torch.randn(1, 9, chunk, 64)
    keys, values = torch.randn(1, 3, past + chunk, 64), torch.randn(1, 3, past + chunk, 64)
    mask = torch.arange(past + chunk)[None, :] <= torch.arange(past, past + chunk)[:, None]
    want = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, enable_gqa=True)
    assert torch.allclose(attend_after_past(q, keys, values, past, None), want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 9])
@pytest.mark.parametrize(("n", "k"), [(576, 576), (48, 1536), (16, 32)])
def test_the_int4_kernel_multiplies_by_the_weights_it_packs(native, rows: int, n: int, k: int) -> None:  # type: ignore[no-untyped-def]
    """Against F.linear in float32 on the same 4-bit weights, rows strided, over row counts
    that cross its blocks of 4 rows and a matrix small enough to stay on one thread."""
    from inference.quant import Int4Linear, quantize_int4

    int4 = native.int4_linear
    if not int4.available:
        pytest.skip("this CPU has no AVX-512: torch's int4 kernel serves")
    torch.manual_seed(rows * n + k)
    weight = torch.randn(n, k) * 0.05
    q, scales, mins = quantize_int4(weight)
    linear = int4.bind(int4.pack(q, scales, mins), n, k)
    s16, m16 = int4.rounded(scales, mins)
    dequantized = (q.view(n, k // 32, 32).float() * s16[..., None] + m16[..., None]).view(n, k)
    x = torch.randn(rows, k + 8).to(torch.bfloat16)[:, :k]  # rows strided, each row contiguous
    want = F.linear(x.float(), dequantized)
    got = linear(x)
    assert got.dtype == torch.bfloat16 and got.shape == (rows, n)
    assert torch.allclose(got.float(), want, atol=0.02, rtol=0.01), (got.float() - want).abs().max()
    # the layer built with it gives the same, and its dense copy holds the same weights
    layer = Int4Linear(weight, torch.bfloat16, int4)
    assert layer.native is int4 and torch.equal(layer(x), got)
    assert torch.equal(layer.dequantized, dequantized)
    for wrong in (x.float(), x[:, : k - 32], x.t(), x[None]):
        with pytest.raises(ValueError, match="layout"):
            linear(wrong)
    with pytest.raises(ValueError, match="layout"):
        int4.bind(int4.pack(q, scales, mins), n + 16, k)


def test_int4_layers_the_kernel_cannot_take_stay_on_torchs_kernel(native) -> None:  # type: ignore[no-untyped-def]
    from inference.quant import Int4Linear

    wide = 16416  # inputs past the kernel's bound (16384)
    odd = Int4Linear(torch.randn(16, wide) * 0.05, torch.bfloat16, native.int4_linear)
    assert odd.native is None
    x = torch.randn(2, wide).to(torch.bfloat16)
    assert torch.allclose(odd(x).float(), F.linear(x.float(), odd.dequantized), atol=0.1, rtol=0.02)
    assert Int4Linear(torch.randn(64, 64), torch.float32, native.int4_linear).native is None  # bf16 only
