"""The native decode attention kernel against torch's SDPA, and the packed dense weights."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from inference.kernels import load_decode_attention
from inference.quant import DenseLinear

pytestmark = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                                reason="no C compiler to build the kernel")


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):  # type: ignore[no-untyped-def]
    built = load_decode_attention(Path(tmp_path_factory.mktemp("kernels")))
    assert built is not None, "a C compiler is here, yet the kernel did not build"
    return built


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
