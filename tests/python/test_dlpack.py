"""The DLPack mapping of kvq._C: dtypes, strides (elements), offsets, capsules, zero copies."""
import numpy as np
import pytest

import kvq
from kvq import _C
from kvq_ref import PagedCase, ref_attention, assert_close_attention


@pytest.mark.parametrize("dtype,name", [(np.float32, "fp32"), (np.float16, "fp16"), (np.int8, "int8"),
                                        (np.uint8, "uint8"), (np.int32, "int32"), (np.int64, "int64")])
def test_dtypes(dtype, name):
    v = _C.describe_view(np.zeros((2, 3), dtype))
    assert v["dtype"] == name and v["device"] == "cpu"
    assert v["shape"] == [2, 3] and v["strides"] == [3, 1] and v["contiguous"]


@pytest.mark.parametrize("dtype", [np.float64, np.complex64, np.int16, np.uint32])
def test_unsupported_dtypes_are_type_errors(dtype):
    with pytest.raises(TypeError, match=r"describe_view: x: expected one of fp32, fp16, bf16"):
        _C.describe_view(np.zeros(3, dtype))


def test_strides_are_elements_and_offsets_are_applied():
    base = np.zeros((4, 6, 8), np.float16)
    view = base[1:, ::2, 2:6]
    v = _C.describe_view(view)
    assert v["shape"] == [3, 3, 4]
    assert v["strides"] == [48, 16, 1]  # elements, not bytes
    assert v["data"] == view.__array_interface__["data"][0]  # byte offset folded into the pointer
    assert v["data"] == base.__array_interface__["data"][0] + (48 + 2) * 2
    assert not v["contiguous"]
    assert v["describe"] == "fp16 [3, 3, 4]"


def test_zero_dim_and_empty_tensors():
    v = _C.describe_view(np.zeros((0, 4), np.float32))
    assert v["shape"] == [0, 4]
    s = _C.describe_view(np.array(3.0, np.float32))
    assert s["shape"] == [] and s["strides"] == []


def test_none_is_absent():
    assert _C.describe_view(None) == {"defined": False}


def test_capsule_input_is_accepted():
    a = np.arange(12, dtype=np.int32).reshape(3, 4)
    cap = a.__dlpack__()
    v = _C.describe_view(cap)
    assert v["shape"] == [3, 4] and v["data"] == a.__array_interface__["data"][0]
    assert v["dtype"] == "int32"


def test_consumed_capsule_is_rejected():
    a = np.arange(4, dtype=np.int32)
    cap = a.__dlpack__()
    np.from_dlpack(_Wrap(cap))  # numpy consumes (renames) the capsule
    with pytest.raises(TypeError, match="capsule"):
        _C.describe_view(cap)


class _Wrap:
    """A producer handing out a given capsule (to make numpy consume it)."""

    def __init__(self, cap):
        self.cap = cap

    def __dlpack__(self, stream=None):
        return self.cap

    def __dlpack_device__(self):
        return (1, 0)


class ForeignArray:
    """A minimal third-party DLPack producer wrapping a numpy array (like a library kvq never heard of)."""

    def __init__(self, a):
        self.a = a
        self.shape = a.shape
        self.dtype = a.dtype
        self.calls = 0

    def __dlpack__(self, stream=None):
        self.calls += 1
        return self.a.__dlpack__()

    def __dlpack_device__(self):
        return self.a.__dlpack_device__()


def test_any_dlpack_producer_works_without_copies():
    c = PagedCase(2, 4, 2, 16, 4, q_lens=[2, 3], kv_lens=[5, 3], seed=0)
    fq = ForeignArray(c.q)
    out = np.zeros(c.q.shape, np.float16)
    fout = ForeignArray(out)
    kvq.paged_prefill(fq, ForeignArray(c.k_cache), c.v_cache, c.block_tables, c.cu_q_lens, c.kv_lens,
                      k_scale=c.k_scale, v_scale=c.v_scale, out=fout)
    assert fq.calls == 1 and fout.calls == 1
    ref, _ = ref_attention(c.q, c.dense_k(), c.dense_v(), c.cu_q_lens, c.kv_lens, num_kv_heads=c.Hkv)
    assert_close_attention(out, ref, c.cu_q_lens, c.B)  # written through the foreign view: no copy


def test_foreign_cpu_producer_gets_numpy_output():
    c = PagedCase(1, 2, 2, 8, 4, q_lens=[3], kv_lens=[3], seed=1)
    out = kvq.paged_prefill(ForeignArray(c.q), c.k_cache, c.v_cache, c.block_tables, c.cu_q_lens, c.kv_lens,
                            k_scale=c.k_scale, v_scale=c.v_scale)
    assert isinstance(out, np.ndarray) and out.dtype == np.float16


def test_dlpack_round_trip_output_is_the_given_buffer():
    # out= is written in place: the returned object is the caller's, its memory the one kvq wrote.
    c = PagedCase(1, 2, 2, 8, 4, q_lens=[3], kv_lens=[3], seed=2)
    out = np.zeros(c.q.shape, np.float16)
    ptr = out.__array_interface__["data"][0]
    res = kvq.paged_prefill(c.q, c.k_cache, c.v_cache, c.block_tables, c.cu_q_lens, c.kv_lens, k_scale=c.k_scale,
                            v_scale=c.v_scale, out=out)
    assert res is out and res.__array_interface__["data"][0] == ptr and np.abs(out).sum() > 0
    back = np.from_dlpack(res)
    assert back.__array_interface__["data"][0] == ptr
    np.testing.assert_array_equal(back, out)


def test_bool_mask_numpy_is_viewed_as_uint8():
    c = PagedCase(1, 2, 2, 8, 4, q_lens=[3], kv_lens=[4], seed=3)
    m = np.random.default_rng(0).random((3, 4)) < 0.7
    m[:, 0] = True
    a = kvq.paged_prefill(c.q, c.k_cache, c.v_cache, c.block_tables, c.cu_q_lens, c.kv_lens, k_scale=c.k_scale,
                          v_scale=c.v_scale, causal=False, mask=m.reshape(-1))
    b = kvq.paged_prefill(c.q, c.k_cache, c.v_cache, c.block_tables, c.cu_q_lens, c.kv_lens, k_scale=c.k_scale,
                          v_scale=c.v_scale, causal=False, mask=m.reshape(-1).astype(np.uint8))
    np.testing.assert_array_equal(a, b)
    ref, _ = ref_attention(c.q, c.dense_k(), c.dense_v(), c.cu_q_lens, c.kv_lens, num_kv_heads=c.Hkv,
                           causal=False, masks=[m])
    assert_close_attention(a, ref, c.cu_q_lens, c.B)


def test_build_info():
    assert isinstance(kvq.cuda_built(), bool)
    assert isinstance(kvq.cuda_available(), bool)
    if not kvq.cuda_built():
        assert not kvq.cuda_available()
    dims = kvq.fast_head_dims()
    assert all(isinstance(d, int) for d in dims) and 128 in dims
