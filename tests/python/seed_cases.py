"""mojo_opset's accuracy matrix (the tests of mojo_opset PR #361) and its data-generation rules, library-neutral
(lengths and tables as numpy arrays; the tests build tensors from them)."""
import math

import numpy as np

# ID: (B, Hq, Hkv, D, Q, KC, bs)
PREFILL = {
    "M_BF16": (2, 16, 4, 128, 1024, 0, 32),
    "M_BF16_PADDIM": (2, 16, 4, 96, 1024, 0, 128),
    "M_BF16_WITH_CACHE": (2, 8, 1, 128, 512, 1024, 128),
    "M_BF16_BIGPAGE": (2, 8, 1, 128, 1024, 2048, 1024),
    "M_BF16_GROUP": (2, 8, 2, 128, 1024, 0, 128),
    "M_BF16_VARLEN_BLK16_D64": (3, 12, 3, 64, 257, 513, 16),
    "M_BF16_VARLEN_BLK256_D192": (4, 20, 5, 192, 193, 769, 256),
    "M_BF16_VARLEN_BLK64_D80": (3, 24, 6, 80, 321, 641, 64),
    "M_BF16_SMALL_BLK16": (1, 16, 4, 128, 128, 0, 16),
    "M_BF16_H24_VARLEN": (2, 24, 6, 128, 255, 129, 32),
    "M_BF16_VARLEN_513": (3, 16, 4, 128, 513, 257, 64),
    "M_BF16_H24_BLK128": (4, 24, 6, 128, 769, 511, 128),
    "M_BF16_ODD_KV_333": (5, 16, 4, 128, 1025, 333, 256),
    "M_BF16_H24_ODD_777": (6, 24, 6, 128, 1537, 777, 128),
    "M_BF16_LONG_ODD": (5, 16, 4, 128, 2049, 1025, 256),
    "M_BF16_H24_LONG": (4, 24, 6, 128, 3073, 1537, 256),
}
PREFILL_TOL = 5e-2  # seed: atol = rtol = 5e-2, at least 90% of elements within

# ID: (B, Hq, Hkv, D, S, bs)
DECODE = {
    "M_BF16": (8, 16, 4, 128, 1024, 32),
    "M_BF16_PADDIM": (8, 16, 4, 96, 1024, 128),
    "M_BF16_LONG": (4, 8, 1, 128, 8192, 1024),
    "M_BF16_BIGPAGE": (4, 8, 1, 128, 2048, 1024),
    "M_BF16_GROUP": (4, 8, 2, 128, 2048, 128),
    "M_BF16_VARLEN_BLK16_D64": (5, 12, 3, 64, 257, 16),
    "M_BF16_VARLEN_BLK256_D192": (3, 20, 5, 192, 1537, 256),
    "M_BF16_VARLEN_BLK64_D80": (6, 24, 6, 80, 513, 64),
}
DECODE_TOL = 2e-2  # seed: atol = rtol = 2e-2 for every element

# (B, Hkv, D, bs, prefix lens (-1 = padded sequence), new lens)
CACHE_WRITE = {
    "two_seqs": (2, 2, 128, 128, [0, 0], [130, 33]),
    "bigpage": (2, 2, 128, 2048, [1023, 2047], [900, 1025]),
    "padded": (3, 2, 128, 128, [32, -1, 35], [1, 1, 1]),
    "eight": (8, 2, 128, 128, [224, 542, 34, 41, 54, 57, 65, 0], [432, 84, 977, 93, 23, 89, 31, 555]),
}

# Sliding-window variants (global, local) run on the prefill matrix.
WINDOWS = [(4, 255), (4, 1023)]


def prefill_lengths(B, Q, KC, rng):
    """q_len_b = ((randint(Q/2, Q) + b) % (Q-1)) + 1; prefix 0 when KC = 0, else
    ((randint(KC/2, KC) + b) % (KC-1)) + 1; kv_len = q_len + prefix."""
    q = np.array([((int(rng.integers(Q // 2, Q)) + b) % (Q - 1)) + 1 for b in range(B)], np.int64)
    if KC == 0:
        prefix = np.zeros(B, np.int64)
    else:
        prefix = np.array([((int(rng.integers(KC // 2, KC)) + b) % (KC - 1)) + 1 for b in range(B)], np.int64)
    return q, q + prefix


def decode_lengths(B, S, rng):
    """seq lens in [1, S-1]."""
    return rng.integers(1, S, B).astype(np.int64)


def paged_table(kv_lens, bs, rng, extra_blocks=10):
    """num_blocks = sum(ceil(kv_len/bs)) + extra; a random permutation; unused entries -1."""
    nblk = [math.ceil(int(n) / bs) for n in kv_lens]
    num_blocks = sum(nblk) + extra_blocks
    width = max(nblk + [1])
    perm = rng.permutation(num_blocks)
    bt = np.full((len(kv_lens), width), -1, np.int32)
    k = 0
    for b, n in enumerate(nblk):
        bt[b, :n] = perm[k:k + n]
        k += n
    return bt, num_blocks


def cumulative(lens):
    return np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)


def seed_pass(out, ref, tol):
    """The seed's criterion: at least 90% of elements with |out-ref| <= tol + tol*|ref|."""
    ok = np.abs(out - ref) <= tol + tol * np.abs(ref)
    return float(ok.mean()) >= 0.9, float(ok.mean())
