"""Test helpers: paged int8 caches built in numpy and the fp64 references of every kvq op.

Written from docs/design.md §1 alone (not from src/): the references dequantize the same int8 bytes
and scales the library reads, so a comparison measures the kernel's error, not quantization's.
"""
import math

import numpy as np


# ---------------------------------------------------------------------------------------------
# Quantization (docs/design.md §1, src/cpu/quant.h's definition): fp32 IEEE division, round half even.
# ---------------------------------------------------------------------------------------------

def quantize(x, scale):
    r = np.rint(np.asarray(x, np.float32) / np.asarray(scale, np.float32))
    r = np.where(np.isnan(r), 0, r)
    return np.clip(r, -128, 127).astype(np.int8)


def per_token_scale(amax):
    return np.maximum(np.asarray(amax, np.float32) / np.float32(127), np.float32(1e-8)).astype(np.float32)


def calibrate_scale(x):
    amax = np.abs(np.asarray(x, np.float32)).max(axis=0)
    return np.maximum(amax / np.float32(127), np.float32(1e-5)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Paged cache construction
# ---------------------------------------------------------------------------------------------

class PagedCase:
    """A batch over a shuffled paged int8 cache, with the dense fp64 K/V each sequence sees."""

    def __init__(self, batch_size, num_qo_heads, num_kv_heads, head_dim, page_size, q_lens, kv_lens, *,
                 layout="HND", k_mode="per_channel", v_mode="per_channel", kv_dtype="int8", q_dtype=np.float16,
                 extra_blocks=3, extra_table_cols=1, seed=0, q_pad_rows=0):
        rng = np.random.default_rng(seed)
        self.rng = rng
        self.B, self.Hq, self.Hkv, self.D, self.ps = batch_size, num_qo_heads, num_kv_heads, head_dim, page_size
        self.layout = layout
        self.q_lens = np.asarray(q_lens, np.int64)
        self.kv_lens_np = np.asarray(kv_lens, np.int64)
        nblk = [math.ceil(n / page_size) for n in self.kv_lens_np]
        self.num_blocks = sum(nblk) + extra_blocks
        width = max(nblk + [1]) + extra_table_cols
        perm = rng.permutation(self.num_blocks)
        bt = np.full((batch_size, width), -1, np.int32)
        k = 0
        for b, n in enumerate(nblk):
            bt[b, :n] = perm[k:k + n]
            k += n
        self.block_tables = bt
        self.cu_q_lens = np.concatenate([[0], np.cumsum(self.q_lens)]).astype(np.int32)
        self.kv_lens = self.kv_lens_np.astype(np.int32)
        self.cu_kv_lens = np.concatenate([[0], np.cumsum(self.kv_lens_np)]).astype(np.int32)
        T = int(self.cu_q_lens[-1]) + q_pad_rows
        self.q = rng.standard_normal((T, num_qo_heads, head_dim)).astype(q_dtype)

        shape = ((self.num_blocks, num_kv_heads, page_size, head_dim) if layout == "HND"
                 else (self.num_blocks, page_size, num_kv_heads, head_dim))
        pt_shape = ((self.num_blocks, num_kv_heads, page_size) if layout == "HND"
                    else (self.num_blocks, page_size, num_kv_heads))
        self.kv_dtype = kv_dtype
        if kv_dtype == "int8":
            self.k_cache = rng.integers(-128, 128, shape, dtype=np.int8)
            self.v_cache = rng.integers(-128, 128, shape, dtype=np.int8)
            self.k_scale = self._scale(rng, k_mode, pt_shape)
            self.v_scale = self._scale(rng, v_mode, pt_shape)
        else:
            self.k_cache = rng.standard_normal(shape).astype(kv_dtype)
            self.v_cache = rng.standard_normal(shape).astype(kv_dtype)
            self.k_scale = self.v_scale = None

    def _scale(self, rng, mode, pt_shape):
        if mode == "per_channel":
            return (0.005 + 0.02 * rng.random((self.Hkv, self.D))).astype(np.float32)
        return (0.005 + 0.02 * rng.random(pt_shape)).astype(np.float32)

    def dense(self, cache, scale):
        """Per sequence: the fp64 dequantized [kv_len, Hkv, D] it reads through its block table."""
        out = []
        for b in range(self.B):
            n = int(self.kv_lens_np[b])
            rows = np.zeros((n, self.Hkv, self.D))
            for j in range(n):
                blk = self.block_tables[b, j // self.ps]
                off = j % self.ps
                if self.layout == "HND":
                    v = cache[blk, :, off, :].astype(np.float64)
                    s = None if scale is None else (scale if scale.ndim == 2 else scale[blk, :, off][:, None])
                else:
                    v = cache[blk, off, :, :].astype(np.float64)
                    s = None if scale is None else (scale if scale.ndim == 2 else scale[blk, off, :][:, None])
                rows[j] = v if s is None else v * np.asarray(s, np.float64)
            out.append(rows)
        return out

    def dense_k(self):
        return self.dense(self.k_cache, self.k_scale)

    def dense_v(self):
        return self.dense(self.v_cache, self.v_scale)


# ---------------------------------------------------------------------------------------------
# Attention reference (fp64)
# ---------------------------------------------------------------------------------------------

def kv_head_of(h, group, num_kv_heads, gqa_layout):
    return h // group if gqa_layout == "AABB" else h % num_kv_heads


def ref_attention(q, K, V, cu_q_lens, kv_lens, *, num_kv_heads, causal=True, softmax_scale=None,
                  gqa_layout="AABB", local_window=None, global_window=None, masks=None):
    """out [T, Hq, D] fp64 and lse [T, Hq] for the rows of the batch (padding rows stay 0 / -inf).

    masks: per sequence [q_len, kv_len] bool (True = visible) or None."""
    T, Hq, D = q.shape
    group = Hq // num_kv_heads
    scale = softmax_scale or 1.0 / math.sqrt(D)
    out = np.zeros((T, Hq, D))
    lse = np.full((T, Hq), -np.inf)
    for b in range(len(kv_lens)):
        s, e = int(cu_q_lens[b]), int(cu_q_lens[b + 1])
        ql, kl = e - s, int(kv_lens[b])
        if ql == 0:
            continue
        pos = kl - ql + np.arange(ql)
        j = np.arange(kl)
        vis = np.ones((ql, kl), bool)
        if causal:
            vis &= j[None, :] <= pos[:, None]
        if local_window is not None and local_window >= 0:
            g = global_window or 0
            vis &= (pos[:, None] - j[None, :] <= local_window) | (j[None, :] < g)
        if masks is not None:
            vis &= masks[b]
        for h in range(Hq):
            kh = kv_head_of(h, group, num_kv_heads, gqa_layout)
            S = scale * (q[s:e, h].astype(np.float64) @ K[b][:, kh].T)
            S = np.where(vis, S, -np.inf)
            m = S.max(axis=1, initial=-np.inf)
            live = np.isfinite(m)
            P = np.where(live[:, None], np.exp(S - np.where(live, m, 0)[:, None]), 0.0)
            den = P.sum(axis=1)
            o = np.where(live[:, None], (P @ V[b][:, kh]) / np.where(live, den, 1)[:, None], 0.0)
            out[s:e, h] = o
            lse[s:e, h] = np.where(live, m + np.log(np.where(live, den, 1)), -np.inf)
    return out, lse


def assert_close_attention(out, ref, cu_q_lens, num_seqs, tol=1e-2, what="out"):
    """Relative norm error <= tol per (sequence, head), and no NaN/Inf."""
    out = np.asarray(out, np.float64)
    assert np.isfinite(out[: int(cu_q_lens[num_seqs])]).all(), f"{what}: NaN/Inf in the defined rows"
    for b in range(num_seqs):
        s, e = int(cu_q_lens[b]), int(cu_q_lens[b + 1])
        if e == s:
            continue
        for h in range(ref.shape[1]):
            r = ref[s:e, h]
            d = np.linalg.norm(out[s:e, h] - r)
            n = np.linalg.norm(r)
            err = d / n if n > 0 else d
            assert err <= tol, f"{what}: seq {b} head {h}: rel err {err:.3g} > {tol}"


def assert_close_lse(lse, ref_lse, rows, atol=2e-3):
    lse = np.asarray(lse, np.float64)[:rows]
    ref = ref_lse[:rows]
    assert np.array_equal(np.isneginf(lse), np.isneginf(ref)), "lse: -inf rows differ"
    fin = np.isfinite(ref)
    assert np.isfinite(lse[fin]).all()
    np.testing.assert_allclose(lse[fin], ref[fin], atol=atol, rtol=1e-4)


# ---------------------------------------------------------------------------------------------
# Cache ops references
# ---------------------------------------------------------------------------------------------

def ref_append(k, v, slots, k_cache, v_cache, k_scale, v_scale, layout="HND"):
    """Returns new (k_cache, v_cache, k_scale, v_scale) copies after writing the tokens."""
    kc, vc = k_cache.copy(), v_cache.copy()
    ks = None if k_scale is None else k_scale.copy()
    vs = None if v_scale is None else v_scale.copy()
    ps = kc.shape[2] if layout == "HND" else kc.shape[1]
    for n, slot in enumerate(slots):
        if slot < 0:
            continue
        blk, off = int(slot) // ps, int(slot) % ps
        for x, cache, scale in ((k[n], kc, ks), (v[n], vc, vs)):
            x32 = np.asarray(x, np.float32)  # [Hkv, D]
            if scale.ndim == 2:
                s = scale
            else:
                s = per_token_scale(np.abs(x32).max(axis=1))  # [Hkv]
                if layout == "HND":
                    scale[blk, :, off] = s
                else:
                    scale[blk, off, :] = s
                s = s[:, None]
            qx = quantize(x32, s)
            if layout == "HND":
                cache[blk, :, off, :] = qx
            else:
                cache[blk, off, :, :] = qx
    return kc, vc, ks, vs


def ref_dequant_block(cache, scale, blk, layout="HND"):
    """fp64 [., ., D] of one block of an int8 cache."""
    x = cache[blk].astype(np.float64)
    if scale.ndim == 2:  # per-channel [Hkv, D]
        return x * (scale[:, None, :] if layout == "HND" else scale[None, :, :])
    s = scale[blk].astype(np.float64)  # HND [Hkv, ps] / NHD [ps, Hkv]
    return x * s[:, :, None]
