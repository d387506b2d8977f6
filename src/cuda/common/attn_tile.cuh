// src/cuda/common/attn_tile.cuh — the index math of the tensor-core prefill kernels (the mma.sync
// kernel and the Hopper kernel), in one place: which KV tiles a CTA of query rows iterates, which
// keys a row sees (docs/design.md §1: bottom-right causal, local and global windows), and which
// tiles need per-element masking. Host- and device-callable, so the CPU tests
// (tests/unit/attn_tile_test.cpp) check it against a brute-force enumeration of the visibility
// rule; the kernels inline it.
#pragma once

#if defined(__CUDACC__)
#define KVQ_HD __host__ __device__ __forceinline__
#else
#define KVQ_HD inline
#endif

namespace kvq::cuda {

KVQ_HD int imin(int a, int b) { return a < b ? a : b; }
KVQ_HD int imax(int a, int b) { return a > b ? a : b; }

// The KV tiles a CTA iterates, in order: tiles 0 .. n_global-1 (the global window's), then
// first_win, first_win + 1, ... (n_iter in all). Without a window, n_global = first_win = 0.
struct KvTileRange {
  int n_iter;
  int n_global;
  int first_win;
  KVQ_HD int tile(int it) const { return it < n_global ? it : it - n_global + first_win; }
};

// kv_len: keys of the sequence (already clamped to its block table); pos_min / pos_max: absolute
// positions (kv_len - q_len + i) of the CTA's first and last query row; local_window < 0: none;
// global_window >= 0 (validated). A row at a negative position sees nothing under causal, which a
// local window implies, so pos_min - local_window is only taken for pos_min >= 0 (no overflow).
KVQ_HD KvTileRange kv_tile_range(int kv_len, int pos_min, int pos_max, int tile_kv, bool causal, int local_window,
                                 int global_window) {
  int kv_hi = causal ? imin(kv_len, pos_max + 1) : kv_len;
  kv_hi = imax(kv_hi, 0);
  const int n_tiles = (kv_hi + tile_kv - 1) / tile_kv;
  int n_global = 0, first_win = 0;
  if (local_window >= 0) {
    const int lo = pos_min < 0 ? 0 : imax(pos_min - local_window, 0);
    first_win = imin(lo / tile_kv, n_tiles);
    const int global_keys = imin(global_window, kv_hi);
    n_global = imin((global_keys + tile_kv - 1) / tile_kv, n_tiles);
    if (first_win <= n_global) first_win = n_global = 0;  // contiguous from tile 0
  }
  KvTileRange r;
  r.n_iter = n_global + (n_tiles - first_win);
  r.n_global = n_global;
  r.first_win = first_win;
  return r;
}

// Key j is visible to the row at absolute position pos iff j <= hi && (j >= lo || j < global_window)
// (and its block is valid, which the kernels check separately).
struct RowBounds {
  int lo;
  int hi;
};
KVQ_HD RowBounds row_bounds(int pos, int kv_len, bool causal, int local_window) {
  RowBounds b;
  b.hi = causal ? imin(kv_len - 1, pos) : kv_len - 1;
  // pos < 0 sees nothing (hi < 0), so the difference is only taken where it cannot overflow.
  b.lo = local_window >= 0 && pos >= 0 ? pos - local_window : 0;
  return b;
}
KVQ_HD bool key_visible(int j, RowBounds b, int global_window) { return j <= b.hi && (j >= b.lo || j < global_window); }

// Whether tile [kv0, kv0 + tile_kv) can hold a key that some row in [pos_min, pos_max] does not see
// (past kv_len, above the causal diagonal, before a local window outside the global one); the
// kernels OR in "the tile has a token without a valid block". A CTA-uniform test, so full tiles
// skip the per-element mask.
KVQ_HD bool tile_needs_mask(int kv0, int tile_kv, int kv_len, int pos_min, int pos_max, bool causal, int local_window,
                            int global_window) {
  const int kv_end = kv0 + tile_kv;
  return kv_end > kv_len || (causal && kv_end - 1 > pos_min) ||
         (local_window >= 0 && pos_max >= 0 && kv0 < pos_max - local_window && kv_end > global_window);
}

}  // namespace kvq::cuda
