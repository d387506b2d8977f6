"""Every error path of the Python API: the exception type (ValueError / TypeError) and the argument
named in the message; and a failing call writes nothing."""
import re

import numpy as np
import pytest

import kvq
from kvq_ref import PagedCase

SENT = np.float16(5.0)


def base_prefill():
    c = PagedCase(2, 4, 2, 16, 4, q_lens=[2, 3], kv_lens=[5, 3], seed=0)
    kw = dict(q=c.q, k_cache=c.k_cache, v_cache=c.v_cache, block_tables=c.block_tables, cu_q_lens=c.cu_q_lens,
              kv_lens=c.kv_lens, k_scale=c.k_scale, v_scale=c.v_scale, out=np.full(c.q.shape, SENT))
    return c, kw


def call_prefill(kw):
    kw = dict(kw)
    pos = [kw.pop(n) for n in ("q", "k_cache", "v_cache", "block_tables", "cu_q_lens")]
    return kvq.paged_prefill(*pos, **kw)


def _ro(a):
    a = a.copy()
    a.flags.writeable = False
    return a


PREFILL_ERRORS = [
    # (name, mutation of the keyword dict, exception, argument named in the message)
    ("q_not_tensor", lambda c, kw: kw.update(q=c.q.tolist()), TypeError, "q"),
    ("q_fp64", lambda c, kw: kw.update(q=c.q.astype(np.float64)), TypeError, "q"),
    ("q_fp32", lambda c, kw: kw.update(q=c.q.astype(np.float32), out=np.zeros(c.q.shape, np.float32)),
     TypeError, "q"),
    ("q_rank2", lambda c, kw: kw.update(q=c.q[:, 0]), ValueError, "q"),
    ("q_heads_not_multiple", lambda c, kw: kw.update(q=c.q[:, :3], out=kw["out"][:, :3]), ValueError, "q"),
    ("q_last_dim_strided", lambda c, kw: kw.update(q=np.repeat(c.q, 2, axis=2)[:, :, ::2]), ValueError, "q"),
    ("q_negative_strides", lambda c, kw: kw.update(q=c.q[::-1]), ValueError, "q"),
    ("q_too_many_dims", lambda c, kw: kw.update(q=c.q.reshape((1,) * 4 + c.q.shape)), ValueError, "q"),
    ("k_cache_dtype", lambda c, kw: kw.update(k_cache=c.k_cache.astype(np.int32)), TypeError, "k_cache"),
    ("k_cache_head_dim", lambda c, kw: kw.update(k_cache=c.k_cache[..., :8], v_cache=c.v_cache[..., :8],
                                                 k_scale=c.k_scale[:, :8], v_scale=c.v_scale[:, :8]),
     ValueError, "k_cache"),
    ("v_cache_shape", lambda c, kw: kw.update(v_cache=c.v_cache[:-1]), ValueError, "v_cache"),
    ("v_cache_dtype", lambda c, kw: kw.update(v_cache=c.v_cache.astype(np.float16)), TypeError, "v_cache"),
    ("k_scale_missing", lambda c, kw: kw.update(k_scale=None), ValueError, "k_scale"),
    ("k_scale_shape", lambda c, kw: kw.update(k_scale=c.k_scale[:, :8]), ValueError, "k_scale"),
    ("k_scale_dtype", lambda c, kw: kw.update(k_scale=c.k_scale.astype(np.int32)), TypeError, "k_scale"),
    ("v_scale_rank", lambda c, kw: kw.update(v_scale=c.v_scale[0]), ValueError, "v_scale"),
    ("block_tables_dtype", lambda c, kw: kw.update(block_tables=c.block_tables.astype(np.int64)), TypeError,
     "block_tables"),
    ("block_tables_rows", lambda c, kw: kw.update(block_tables=c.block_tables[:1]), ValueError, "block_tables"),
    ("block_id_out_of_range", lambda c, kw: c.block_tables.__setitem__((0, 0), 1000), ValueError, "block_tables"),
    ("cu_q_lens_length", lambda c, kw: kw.update(cu_q_lens=c.cu_q_lens[:2]), ValueError, "cu_q_lens"),
    ("cu_q_lens_dtype", lambda c, kw: kw.update(cu_q_lens=c.cu_q_lens.astype(np.int64)), TypeError,
     "cu_q_lens"),
    ("cu_q_lens_first", lambda c, kw: kw.update(cu_q_lens=np.array([1, 3, 5], np.int32)), ValueError,
     "cu_q_lens"),
    ("cu_q_lens_decreasing", lambda c, kw: kw.update(cu_q_lens=np.array([0, 4, 3], np.int32)), ValueError,
     "cu_q_lens"),
    ("cu_q_lens_past_q", lambda c, kw: kw.update(cu_q_lens=np.array([0, 2, 9], np.int32)), ValueError,
     "cu_q_lens"),
    ("kv_lens_dtype", lambda c, kw: kw.update(kv_lens=c.kv_lens.astype(np.int64)), TypeError, "kv_lens"),
    ("kv_lens_negative", lambda c, kw: kw.update(kv_lens=np.array([5, -1], np.int32)), ValueError, "kv_lens"),
    ("kv_lens_shorter_than_q", lambda c, kw: kw.update(kv_lens=np.array([1, 3], np.int32)), ValueError,
     "kv_lens"),
    ("kv_lens_past_table", lambda c, kw: kw.update(kv_lens=np.array([5, 300], np.int32)), ValueError,
     "kv_lens"),
    ("kv_lens_and_cu_kv_lens", lambda c, kw: kw.update(cu_kv_lens=c.cu_kv_lens), ValueError, "cu_kv_lens"),
    ("no_kv_lens", lambda c, kw: kw.pop("kv_lens"), ValueError, "kv_lens"),
    ("cu_kv_lens_rank", lambda c, kw: (kw.pop("kv_lens"), kw.update(cu_kv_lens=c.cu_kv_lens[None])),
     ValueError, "cu_kv_lens"),
    ("out_dtype", lambda c, kw: kw.update(out=np.zeros(c.q.shape, np.float32)), TypeError, "out"),
    ("out_shape", lambda c, kw: kw.update(out=np.zeros(c.q.shape[:2] + (8,), np.float16)), ValueError, "out"),
    ("out_aliases_q", lambda c, kw: kw.update(out=kw["q"]), ValueError, "out"),
    ("out_readonly", lambda c, kw: kw.update(out=_ro(kw["out"])), TypeError, "out"),
    ("mask_with_causal", lambda c, kw: kw.update(mask=np.ones(2 * 5 + 3 * 3, np.uint8)), ValueError, "mask"),
    ("mask_length", lambda c, kw: kw.update(mask=np.ones(7, np.uint8), causal=False), ValueError, "mask"),
    ("window_without_causal", lambda c, kw: kw.update(causal=False, local_window=4), ValueError,
     "local_window"),
    ("global_window_negative", lambda c, kw: kw.update(local_window=4, global_window=-2), ValueError,
     "global_window"),
    ("softmax_scale_nan", lambda c, kw: kw.update(softmax_scale=float("nan")), ValueError, "softmax_scale"),
    ("layout_string", lambda c, kw: kw.update(layout="HDN"), ValueError, "layout"),
    ("gqa_layout_string", lambda c, kw: kw.update(gqa_layout="AB"), ValueError, "gqa_layout"),
    ("compute_string", lambda c, kw: kw.update(compute="fp8"), ValueError, "compute"),
    ("path_string", lambda c, kw: kw.update(path="fast"), ValueError, "path"),
    ("q_scale_with_fp16_q", lambda c, kw: kw.update(q_scale=np.ones(c.q.shape[:2], np.float32)), ValueError,
     "q_scale"),
    ("int8_q_numpy_needs_out", lambda c, kw: (kw.update(q=np.ones(c.q.shape, np.int8), q_scale=np.ones(
        c.q.shape[:2], np.float32)), kw.pop("out")), TypeError, "out"),
]


@pytest.mark.parametrize("name,mutate,exc,arg", PREFILL_ERRORS, ids=[e[0] for e in PREFILL_ERRORS])
def test_prefill_errors(name, mutate, exc, arg):
    c, kw = base_prefill()
    mutate(c, kw)
    out = kw.get("out")
    out_before = None if out is None or not hasattr(out, "copy") else out.copy()
    kw["check"] = True
    with pytest.raises(exc) as info:
        call_prefill(kw)
    msg = str(info.value)
    assert re.search(rf"\b{re.escape(arg)}\b", msg), f"argument {arg!r} not named in: {msg}"
    assert "expected" in msg, msg
    if out_before is not None and out is not None and out is not kw["q"]:
        np.testing.assert_array_equal(out, out_before)  # nothing written when validation fails


def test_error_message_format():
    c, kw = base_prefill()
    kw["kv_lens"] = c.kv_lens.astype(np.int64)
    with pytest.raises(TypeError) as info:
        call_prefill(kw)
    assert str(info.value) == "paged_prefill: kv_lens: expected int32 [batch_size], got int64 [2]"


def base_decode():
    c = PagedCase(2, 4, 2, 16, 4, q_lens=[1, 1], kv_lens=[5, 3], seed=1)
    return c, dict(k_scale=c.k_scale, v_scale=c.v_scale)


DECODE_ERRORS = [
    ("q_rank", lambda c, a, kw: a.__setitem__(0, c.q[0]), ValueError, "q"),
    ("q_dtype", lambda c, a, kw: a.__setitem__(0, c.q.astype(np.float64)), TypeError, "q"),
    ("kv_lens_rows", lambda c, a, kw: a.__setitem__(4, c.kv_lens[:1]), ValueError, "kv_lens|block_tables"),
    ("num_splits", lambda c, a, kw: kw.update(num_splits=-1), ValueError, "num_splits"),
    ("out_dtype", lambda c, a, kw: kw.update(out=np.zeros(c.q.shape, np.float32)), TypeError, "out"),
    ("k_scale_missing", lambda c, a, kw: kw.update(k_scale=None), ValueError, "k_scale"),
    ("block_id_out_of_range", lambda c, a, kw: c.block_tables.__setitem__((1, 0), -5), ValueError,
     "block_tables"),
    ("layout_string", lambda c, a, kw: kw.update(layout="x"), ValueError, "layout"),
]


@pytest.mark.parametrize("name,mutate,exc,arg", DECODE_ERRORS, ids=[e[0] for e in DECODE_ERRORS])
def test_decode_errors(name, mutate, exc, arg):
    c, kw = base_decode()
    args = [c.q, c.k_cache, c.v_cache, c.block_tables, c.kv_lens]
    mutate(c, args, kw)
    with pytest.raises(exc, match=rf"\b({arg})\b"):
        kvq.paged_decode(*args, check=True, **kw)


def base_append():
    rng = np.random.default_rng(2)
    kc = np.zeros((4, 2, 4, 8), np.int8)
    vc = np.zeros((4, 2, 4, 8), np.int8)
    k = rng.standard_normal((5, 2, 8)).astype(np.float32)
    v = rng.standard_normal((5, 2, 8)).astype(np.float32)
    s = np.full((2, 8), 0.02, np.float32)
    return dict(k=k, v=v, slot_mapping=np.arange(5, dtype=np.int64), k_cache=kc, v_cache=vc, k_scale=s,
                v_scale=s.copy())


APPEND_ERRORS = [
    ("k_not_tensor", lambda kw: kw.update(k=1.0), TypeError, "k|k_new"),
    ("v_shape", lambda kw: kw.update(v=kw["v"][:4]), ValueError, "v|v_new"),
    ("v_dtype", lambda kw: kw.update(v=kw["v"].astype(np.float16)), TypeError, "v|v_new"),
    ("slot_dtype", lambda kw: kw.update(slot_mapping=kw["slot_mapping"].astype(np.float32)), TypeError,
     "slot_mapping"),
    ("slot_count", lambda kw: kw.update(slot_mapping=kw["slot_mapping"][:3]), ValueError, "slot_mapping|k|k_new"),
    ("slot_out_of_range", lambda kw: kw["slot_mapping"].__setitem__(2, 16), ValueError, "slot_mapping"),
    ("k_cache_dtype", lambda kw: kw.update(k_cache=kw["k_cache"].astype(np.float32)), TypeError,
     "k_cache|k_scale"),
    ("k_scale_shape", lambda kw: kw.update(k_scale=kw["k_scale"][:, :4]), ValueError, "k_scale"),
    ("k_head_dim", lambda kw: kw.update(k=kw["k"][..., :4], v=kw["v"][..., :4]), ValueError, "k|k_new"),
]


@pytest.mark.parametrize("name,mutate,exc,arg", APPEND_ERRORS, ids=[e[0] for e in APPEND_ERRORS])
def test_append_errors(name, mutate, exc, arg):
    kw = base_append()
    mutate(kw)
    caches = [kw["k_cache"].copy(), kw["v_cache"].copy()]
    with pytest.raises(exc, match=rf"\b({arg})\b"):
        kvq.append(kw.pop("k"), kw.pop("v"), kw.pop("slot_mapping"), kw.pop("k_cache"), kw.pop("v_cache"),
                   check=True, **kw)
    assert not caches[0].any() and not caches[1].any()


def test_append_writes_nothing_on_failure():
    kw = base_append()
    kw["slot_mapping"][4] = 1000
    kc, vc = kw["k_cache"], kw["v_cache"]
    with pytest.raises(ValueError, match="slot_mapping"):
        kvq.append(kw["k"], kw["v"], kw["slot_mapping"], kc, vc, k_scale=kw["k_scale"], v_scale=kw["v_scale"])
    assert not kc.any() and not vc.any()


def test_dequantize_errors():
    c = PagedCase(2, 4, 2, 8, 4, q_lens=[1, 1], kv_lens=[5, 3], seed=3)
    with pytest.raises(ValueError, match=r"\bout\b"):
        kvq.dequantize_blocks(c.k_cache, c.k_scale, c.block_tables, c.kv_lens,
                              out=np.zeros(c.k_cache.shape[1:], np.float16))
    with pytest.raises(ValueError, match=r"\bout\b"):
        kvq.dequantize_blocks(c.k_cache, c.k_scale, c.block_tables, c.kv_lens, compact=True, num_out_blocks=1)
    with pytest.raises(TypeError, match=r"\bcache\b"):
        kvq.dequantize_blocks(c.k_cache.astype(np.float16), c.k_scale, c.block_tables, c.kv_lens)
    with pytest.raises(ValueError, match=r"\bscale\b"):
        kvq.dequantize_blocks(c.k_cache, c.k_scale[:1], c.block_tables, c.kv_lens)
    with pytest.raises(TypeError, match=r"\bcache\b"):
        kvq.dequantize_blocks([1, 2], c.k_scale, c.block_tables, c.kv_lens)


def test_calibrate_errors():
    with pytest.raises(ValueError, match=r"\bx\b"):
        kvq.calibrate(np.zeros((4, 8), np.float32))
    with pytest.raises(TypeError, match=r"\bx\b"):
        kvq.calibrate("not a tensor")
    with pytest.raises(TypeError, match=r"\bx\b"):
        kvq.calibrate(np.zeros((4, 2, 8), np.int32))
    with pytest.raises((ValueError, TypeError), match=r"\bout\b|scale_out"):
        kvq.calibrate(np.ones((4, 2, 8), np.float32), out=np.zeros((2, 4), np.float32))


@pytest.mark.parametrize("kind,exc", [(0, ValueError), (1, TypeError), (2, NotImplementedError), (3, RuntimeError)])
def test_error_kinds_map_to_python_exceptions(kind, exc):
    from kvq import _C
    with pytest.raises(exc) as info:
        _C._raise_error(kind, "paged_prefill", "head_dim", "expected one of 64, 128, got 80")
    assert type(info.value) is exc
    assert str(info.value) == "paged_prefill: head_dim: expected one of 64, 128, got 80"


def test_debug_mode_turns_data_checks_on(monkeypatch):
    # kv_len < q_len under causal is a device-data check: off by default, on with check=True or in
    # debug mode (KVQ_DEBUG=1, docs/design.md §3).
    c, kw = base_prefill()
    kw["kv_lens"] = np.array([1, 3], np.int32)  # sequence 0: q_len 2 > kv_len 1
    call_prefill(kw)  # check off: runs (rows of sequence 0 see what is visible)
    import kvq.ops
    monkeypatch.setattr(kvq.ops, "_DEBUG", True)
    with pytest.raises(ValueError, match="kv_lens"):
        call_prefill(kw)
