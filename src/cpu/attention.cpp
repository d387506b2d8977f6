// src/cpu/attention.cpp — paged prefill and decode on the CPU: the reference backend.
//
// What it computes (docs/design.md §1): for every sequence b, q head h and query i of b,
//     O_i = sum_j softmax_j(S_ij) v_j over the visible keys j of the query's position
//           p = kv_len - q_len + i, with S_ij = softmax_scale * <q_i, k_j>,
// reading K and V through the block table from an int8 cache (per-channel or per-token
// scales) or a bf16/fp16 cache, in HND or NHD layout, with any strides.
//
// Work split. One *job* is (sequence, kv head, a chunk of up to 64 query positions); it
// computes every q head of that kv head's GQA group for those positions, i.e. a block of
// rows = positions x group_size query rows, ordered position-major (row r is position
// i0 + r / group_size, group member r % group_size) so that neighbouring rows see nearly the
// same causal key range. Jobs run on std::threads (src/cpu/parallel.h); each writes only its
// own rows of out/lse and computes them identically whatever thread runs it, so results are
// bit-identical for any thread count. Decode is the same code with q_len = 1 per sequence.
//
// Inside a job (all buffers per worker, reused between jobs):
//   1. The key range [key_lo, key_hi) any row of the job can see is dequantized once into
//      contiguous panels: K as [key/8][head_dim][8] and V as [dim/8][key][8] (zero padded).
//   2. S = Q·Kᵀ by a 4-row x (8 or 16)-column register micro-kernel (micro_kernel) that
//      accumulates over its inner dimension in order, so every dot product is summed
//      sequentially over head_dim. Key panels that no row of a 4-row block can see (causal,
//      window) are skipped; K is walked in ~32 KiB tiles that every row block reuses.
//   3. Two-pass softmax per row with the exact row max m: p_j = exp(S_j - m), l = sum p_j in
//      key order, then P rounded as the compute mode says.
//   4. O = P·V by the same micro-kernel, now summing over keys in order (in tiles of 256
//      keys whose running sums are carried through memory), then O / l.
// The hot loops (2, 4) are compiled twice, with SSE2-width and AVX2-width vectors; only the
// vector width differs (no FMA), so both give the same bits (KVQ_CPU_SIMD=generic forces the
// first). Memory per worker ~ 4 B x (2 x head_dim x key range + rows x key range), rows <= 64 x
// group_size and rows x key range capped near 2M elements by shortening the position chunk.
//
// Numerics, per compute mode:
//   kNative (fp32):  K/V dequantized in fp32 (int8 * scale, one rounding), q as stored, scores
//                    accumulated in fp32, softmax in fp32, p rounded to the query dtype (bf16 /
//                    fp16) before P·V as FlashAttention does, l = sum of the *unrounded* p in
//                    fp32, O accumulated in fp32, output rounded to nearest-even.
//   kInt8 (fp32):    SageAttention-style (docs/design.md §1): int8 Q·Kᵀ, 16-bit P·V. q' = q *
//                    k_scale (per-channel K; q' = q for per-token K), s_q = max|q'| / 127 (1 below
//                    1e-6), q' split per (token, head) into two int8 parts, hi = clamp(round(q' /
//                    s_q), -127, 127) and lo = clamp(round((q' / s_q - hi) * 128), -127, 127), so
//                    q' = s_q (hi + lo / 128) to s_q / 256; S = (hi·k8 + (lo·k8) / 128) * (s_q *
//                    softmax_scale) [* k_scale_j for per-token K]. Each int8 product sum is exact:
//                    |q8*k8| <= 128 * 128 and head_dim <= 256, so every fp32 partial sum is an
//                    integer of magnitude <= 2^22 (what an int32 accumulator holds); hi·k8 +
//                    (lo·k8) / 128 is one fp32 rounding (= float(128 hi·k8 + lo·k8) / 128 in int32).
//                    K is read as the int8 values themselves, never dequantized. P·V as in
//                    kNative: p rounded to the query's float dtype (bf16 for an int8 q), times
//                    v_scale_j for per-token V, against the exact int8 V values, summed in fp32;
//                    O = that * v_scale[d] / l for per-channel V, that / l for per-token V. An
//                    int8 query with q_scale is used as is (hi = q, lo = 0, s_q = q_scale) with
//                    per-token K; with per-channel K it is dequantized (q8 * q_scale) and split as
//                    above. (Retired: the recipe that quantized P to uint8 with scale 1/255, which
//                    lost the small p of rows whose mass sits on keys far below the max, and the
//                    single-part q8 = hi, which left the channels of q' beside a few large ones
//                    (K outlier channels) a few levels.)
//   fp64 (tests):    set_fp64_accumulation(true): everything in double, no rounding of p, q as
//                    its real value (q8 * q_scale for int8 q): exact attention over the
//                    dequantized cache, the oracle of every GPU path. Compute mode is ignored.
// A row with no visible key gets zeros and lse = -inf. lse = m + log(l) (natural log).
// Non-finite values: a visible NaN or +inf score, or visible scores that are all -inf, make the row
// NaN (out and lse); a NaN or Inf in a value reaches the output through P·V (docs/design.md §1).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "kvq/error.h"
#include "src/core/backend.h"
#include "src/core/validate.h"
#include "src/cpu/parallel.h"
#include "src/cpu/quant.h"
#include "src/cpu/tensor_access.h"

namespace kvq::cpu {
namespace {

using detail::AttnProblem;

constexpr int64_t kRowBlock = 4;          // query rows of the micro-kernel
constexpr int64_t kColBlock = 8;          // keys (Q·Kᵀ) or head-dim channels (P·V) of the micro-kernel
constexpr int64_t kMaxChunkPositions = 64;
constexpr int64_t kMaxScoreElements = int64_t{1} << 21;  // per-job score buffer bound
constexpr int64_t kPvTileKeys = 256;     // keys per P·V tile
// What a row's softmax found: keys to weigh, none visible, or a non-finite score.
constexpr uint8_t kRowNormal = 0, kRowEmpty = 1, kRowNaN = 2;
// int8 Q·Kᵀ in fp32: |q8 * k8| <= 128 * 128 (an int8 q may hold -128) summed over head_dim <= 256
// channels stays an exact integer.
static_assert(256 * 128 * 128 <= (int64_t{1} << 24), "int8 Q·Kᵀ must sum exactly in fp32");

// The hot loops are inlined into their ISA-specific callers, whose target they then take.
#if defined(__GNUC__) || defined(__clang__)
#define KVQ_CPU_INLINE inline __attribute__((always_inline))
#else
#define KVQ_CPU_INLINE inline
#endif

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }
int64_t ceil_div(int64_t x, int64_t m) { return (x + m - 1) / m; }

// C[4][8 * kPanels] += A[4][k_len] · B[k_len][8 * kPanels], summing over k in order. A's rows
// are a + r * lda; B is kPanels packed panels (8 contiguous values per k), panel q at
// b + q * panel_stride. Written with GCC/Clang vector extensions of the machine's width
// (kBytes: 16 for SSE2, 32 for AVX2) so that the accumulators stay in registers; plain loops get
// vectorized over k, through shuffles and spills. A vector op is the same IEEE op in every lane
// and there is no fused multiply-add, so every sum is bit-identical to the scalar loop's whatever
// kBytes and kPanels are.
template <typename T, int kBytes, int kPanels>
KVQ_CPU_INLINE void micro_kernel(const T* __restrict a, int64_t lda, const T* __restrict b,
                         int64_t panel_stride, int64_t k_len, T* __restrict c) {
  typedef T V __attribute__((vector_size(kBytes)));
  constexpr int kLanes = kBytes / static_cast<int>(sizeof(T));
  constexpr int kPanelVecs = static_cast<int>(kColBlock) / kLanes;
  constexpr int kVecs = kPanels * kPanelVecs;
  constexpr int64_t kWidth = kColBlock * kPanels;
  V acc[kRowBlock][kVecs];
  for (int r = 0; r < kRowBlock; ++r)
    for (int v = 0; v < kVecs; ++v) std::memcpy(&acc[r][v], c + r * kWidth + v * kLanes, sizeof(V));
  for (int64_t k = 0; k < k_len; ++k) {
    V bk[kVecs];
    for (int q = 0; q < kPanels; ++q)
      for (int v = 0; v < kPanelVecs; ++v)
        std::memcpy(&bk[q * kPanelVecs + v], b + q * panel_stride + k * kColBlock + v * kLanes, sizeof(V));
    for (int r = 0; r < kRowBlock; ++r) {
      const T x = a[r * lda + k];
      for (int v = 0; v < kVecs; ++v) acc[r][v] += bk[v] * x;
    }
  }
  for (int r = 0; r < kRowBlock; ++r)
    for (int v = 0; v < kVecs; ++v) std::memcpy(c + r * kWidth + v * kLanes, &acc[r][v], sizeof(V));
}

// The packed operands of one job and the spans each 4-row block computes.
template <typename T>
struct JobTiles {
  const T* q_rows = nullptr;    // [rows_pad][head_dim]
  const T* k_panels = nullptr;  // [n_pad / 8][head_dim][8]
  const T* v_panels = nullptr;  // [d_pad / 8][n_pad][8]
  T* scores = nullptr;          // [rows_pad][n_pad]
  T* o_rows = nullptr;          // [rows_pad][d_pad]
  const int64_t* span_begin = nullptr;  // key panels [span_begin, span_end) per 4-row block
  const int64_t* span_end = nullptr;
  int64_t head_dim = 0, n_pad = 0, d_pad = 0, num_row_blocks = 0;
};

// Scores of row block rb against kP panels starting at `panel`.
template <typename T, int kBytes, int kP>
KVQ_CPU_INLINE void score_block(const JobTiles<T>& t, int64_t rb, int64_t panel) {
  const int64_t panel_stride = t.head_dim * kColBlock;
  T acc[kRowBlock * kColBlock * kP] = {};
  micro_kernel<T, kBytes, kP>(t.q_rows + rb * kRowBlock * t.head_dim, t.head_dim,
                              t.k_panels + panel * panel_stride, panel_stride, t.head_dim, acc);
  T* out = t.scores + rb * kRowBlock * t.n_pad + panel * kColBlock;
  for (int64_t r = 0; r < kRowBlock; ++r)
    std::memcpy(out + r * t.n_pad, acc + r * kColBlock * kP, sizeof(T) * kColBlock * kP);
}

// S = Q·Kᵀ on the panels each row block may see, in key tiles of ~32 KiB so that a tile of K
// stays in L1/L2 while every row block of the job passes over it.
template <typename T, int kBytes, int kPanels>
KVQ_CPU_INLINE void score_tiles(const JobTiles<T>& t) {
  const int64_t num_panels = t.n_pad / kColBlock;
  const int64_t panel_bytes = t.head_dim * kColBlock * static_cast<int64_t>(sizeof(T));
  const int64_t tile_panels = std::max<int64_t>(kPanels, (32 * 1024) / panel_bytes);
  for (int64_t tile0 = 0; tile0 < num_panels; tile0 += tile_panels) {
    const int64_t tile1 = std::min(num_panels, tile0 + tile_panels);
    for (int64_t rb = 0; rb < t.num_row_blocks; ++rb) {
      const int64_t pe = std::min(tile1, t.span_end[rb]);
      int64_t panel = std::max(tile0, t.span_begin[rb]);
      for (; panel + kPanels <= pe; panel += kPanels) score_block<T, kBytes, kPanels>(t, rb, panel);
      for (; panel < pe; ++panel) score_block<T, kBytes, 1>(t, rb, panel);
    }
  }
}

// O[rb rows, dp*8 : (dp+kP)*8] += P[rb rows, jb:je] · V[jb:je, same dims].
template <typename T, int kBytes, int kP>
KVQ_CPU_INLINE void pv_block(const JobTiles<T>& t, int64_t rb, int64_t dp, int64_t jb, int64_t je) {
  constexpr int64_t kWidth = kColBlock * kP;
  const int64_t panel_stride = t.n_pad * kColBlock;
  T acc[kRowBlock * kWidth];
  T* o = t.o_rows + rb * kRowBlock * t.d_pad + dp * kColBlock;
  for (int64_t r = 0; r < kRowBlock; ++r) std::memcpy(acc + r * kWidth, o + r * t.d_pad, sizeof(T) * kWidth);
  micro_kernel<T, kBytes, kP>(t.scores + rb * kRowBlock * t.n_pad + jb, t.n_pad,
                              t.v_panels + dp * panel_stride + jb * kColBlock, panel_stride, je - jb, acc);
  for (int64_t r = 0; r < kRowBlock; ++r) std::memcpy(o + r * t.d_pad, acc + r * kWidth, sizeof(T) * kWidth);
}

// O = P·V, in key tiles: a tile of V (kPvTileKeys x d_pad) stays in L2 while every row block
// passes over it, its accumulators carried through o_rows. Each output still sums over its keys
// in order (the tile split only stores and reloads the running sum).
template <typename T, int kBytes, int kPanels>
KVQ_CPU_INLINE void pv_tiles(const JobTiles<T>& t) {
  const int64_t num_dpanels = t.d_pad / kColBlock;
  const int64_t rows_pad = t.num_row_blocks * kRowBlock;
  std::fill(t.o_rows, t.o_rows + rows_pad * t.d_pad, T(0));
  for (int64_t j0 = 0; j0 < t.n_pad; j0 += kPvTileKeys) {
    for (int64_t rb = 0; rb < t.num_row_blocks; ++rb) {
      const int64_t jb = std::max(j0, t.span_begin[rb] * kColBlock);
      const int64_t je = std::min(j0 + kPvTileKeys, t.span_end[rb] * kColBlock);
      if (jb >= je) continue;
      int64_t dp = 0;
      for (; dp + kPanels <= num_dpanels; dp += kPanels) pv_block<T, kBytes, kPanels>(t, rb, dp, jb, je);
      for (; dp < num_dpanels; ++dp) pv_block<T, kBytes, 1>(t, rb, dp, jb, je);
    }
  }
}

// ISA dispatch: AVX2 clones of the two hot loops where the compiler and CPU have it (x86-64
// GCC/Clang), SSE2-width vectors elsewhere. Only the vector width differs, never the arithmetic
// (no FMA is enabled), so both give identical bits. KVQ_CPU_SIMD=generic forces the baseline.
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define KVQ_CPU_HAS_AVX2_CLONES 1
__attribute__((target("avx2"))) void score_tiles_avx2(const JobTiles<float>& t) { score_tiles<float, 32, 2>(t); }
__attribute__((target("avx2"))) void score_tiles_avx2(const JobTiles<double>& t) { score_tiles<double, 32, 1>(t); }
__attribute__((target("avx2"))) void pv_tiles_avx2(const JobTiles<float>& t) { pv_tiles<float, 32, 2>(t); }
__attribute__((target("avx2"))) void pv_tiles_avx2(const JobTiles<double>& t) { pv_tiles<double, 32, 1>(t); }
#endif

bool use_avx2() {
#ifdef KVQ_CPU_HAS_AVX2_CLONES
  const char* env = std::getenv("KVQ_CPU_SIMD");
  if (env && std::string(env) == "generic") return false;
  return __builtin_cpu_supports("avx2");
#else
  return false;
#endif
}

template <typename T>
void score_tiles_dispatch(const JobTiles<T>& t, bool avx2) {
#ifdef KVQ_CPU_HAS_AVX2_CLONES
  if (avx2) return score_tiles_avx2(t);
#endif
  score_tiles<T, 16, 1>(t);
}

template <typename T>
void pv_tiles_dispatch(const JobTiles<T>& t, bool avx2) {
#ifdef KVQ_CPU_HAS_AVX2_CLONES
  if (avx2) return pv_tiles_avx2(t);
#endif
  pv_tiles<T, 16, 1>(t);
}

// One sequence as the jobs see it.
struct SeqInfo {
  int64_t batch_idx = 0;    // row of block_tables / kv_lens
  int64_t q_row0 = 0;       // first row of q / out / lse
  int64_t q_len = 0;
  int64_t kv_len = 0;
  int64_t mask_offset = 0;  // element offset of this sequence's [q_len, kv_len] mask
};

struct Job {
  int64_t seq = 0;
  int64_t kv_head = 0;
  int64_t pos_begin = 0;    // query indices [pos_begin, pos_end) within the sequence
  int64_t pos_end = 0;
  int64_t cost = 0;         // estimated rows x keys, for scheduling only
};

// Everything a job reads, gathered from PrefillArgs or DecodeArgs.
struct AttnCall {
  const AttnProblem* p = nullptr;
  TensorView q, q_scale, out, lse, mask, block_tables;
  PagedKvCache kv;
  bool fp64 = false;
  bool avx2 = false;
  std::vector<SeqInfo> seqs;
  std::vector<Job> jobs;
};

// First key the query at `pos` may see (before causal/mask checks), clamped at 0.
inline int64_t window_first_key(const AttnProblem& p, int64_t pos) {
  if (p.local_window >= 0 && p.global_window <= 0) return std::max<int64_t>(0, pos - p.local_window);
  return 0;
}

// One past the last key the query at `pos` may see, for a sequence of kv_len keys.
inline int64_t causal_end_key(const AttnProblem& p, int64_t pos, int64_t kv_len) {
  return p.causal ? std::clamp<int64_t>(pos + 1, 0, kv_len) : kv_len;
}

// Per-worker scratch, reused across jobs.
template <typename T>
struct Scratch {
  std::vector<T> k_panels;    // [n_pad / 8][head_dim][8]
  std::vector<T> v_panels;    // [d_pad / 8][n_pad][8]
  std::vector<T> q_rows;      // [rows_pad][head_dim]; int8 mode: the high parts of q
  std::vector<T> q_lo_rows;   // int8 mode: [rows_pad][head_dim], the low parts of q
  std::vector<T> scores;      // [rows_pad][n_pad]: S, then P (int8 mode: hi·k8 first)
  std::vector<T> scores_lo;   // int8 mode: [rows_pad][n_pad], lo·k8
  std::vector<T> o_rows;      // [rows_pad][d_pad]
  std::vector<T> row_max, row_sum;
  std::vector<uint8_t> row_state;    // kRowNormal / kRowEmpty / kRowNaN
  std::vector<float> row_factor;     // int8 mode: s_q * softmax_scale
  std::vector<float> k_token_scale;  // int8 mode with per-token K: [n]
  std::vector<float> v_token_scale;  // int8 mode with per-token V: [n_pad] (1 past n)
  std::vector<int64_t> span_begin, span_end;  // per 4-row block: key panels computed
  std::vector<float> tmp, tmp2, k_channel_scale, v_channel_scale;
};

template <typename T>
void grow(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
}

// Per-channel scales of kv head h: scale[h][d] as fp32.
void load_channel_scales(const TensorView& scale, int64_t h, int64_t head_dim, std::vector<float>& dst) {
  grow(dst, head_dim);
  for (int64_t d = 0; d < head_dim; ++d)
    dst[d] = load_f32(scale.data, scale.dtype, h * scale.strides[0] + d * scale.strides[1]);
}

template <typename T>
void run_job(const AttnCall& call, const Job& job, Scratch<T>& w) {
  const AttnProblem& p = *call.p;
  const SeqInfo& seq = call.seqs[job.seq];
  const int64_t head_dim = p.head_dim;
  const int64_t group = p.group_size;
  const int64_t kv_head = job.kv_head;
  const bool int8_mode = !call.fp64 && p.compute == ComputeMode::kInt8;
  const bool round_p = !call.fp64;  // both compute modes round p before P·V (to p_dtype)
  // The 16-bit type P·V consumes: the query's float dtype, bf16 for an int8 query (= out's dtype).
  const DType p_dtype = p.q_dtype == DType::kFloat16 ? DType::kFloat16 : DType::kBFloat16;
  const ScaleMode k_mode = p.k_scale_mode;
  const ScaleMode v_mode = p.v_scale_mode;
  const int64_t first_pos = seq.kv_len - seq.q_len;  // absolute position of query 0
  const int64_t rows = (job.pos_end - job.pos_begin) * group;
  const int64_t rows_pad = round_up(rows, kRowBlock);
  const int64_t num_row_blocks = rows_pad / kRowBlock;
  const int64_t d_pad = round_up(head_dim, kColBlock);

  auto row_pos_idx = [&](int64_t r) { return job.pos_begin + std::min(r, rows - 1) / group; };
  auto row_head = [&](int64_t r) {
    const int64_t g = std::min(r, rows - 1) % group;
    return p.gqa_layout == GqaLayout::kGrouped ? kv_head * group + g : g * p.num_kv_heads + kv_head;
  };

  // Keys any row of this job may see.
  const int64_t key_hi = causal_end_key(p, first_pos + job.pos_end - 1, seq.kv_len);
  const int64_t key_lo = std::min(window_first_key(p, first_pos + job.pos_begin), key_hi);
  const int64_t n = key_hi - key_lo;
  const int64_t n_pad = round_up(n, kColBlock);

  grow(w.tmp, head_dim);
  grow(w.tmp2, head_dim);
  if (k_mode == ScaleMode::kPerChannel) load_channel_scales(call.kv.k_scale, kv_head, head_dim, w.k_channel_scale);
  if (v_mode == ScaleMode::kPerChannel) load_channel_scales(call.kv.v_scale, kv_head, head_dim, w.v_channel_scale);

  // ---- 1. dequantize K and V of [key_lo, key_hi) into panels ----
  grow(w.k_panels, static_cast<size_t>(n_pad * head_dim));
  grow(w.v_panels, static_cast<size_t>(d_pad * n_pad));
  if (int8_mode && k_mode == ScaleMode::kPerToken) grow(w.k_token_scale, n);
  const bool v_token_on_p = int8_mode && v_mode == ScaleMode::kPerToken;  // s_j multiplies p_j
  if (v_token_on_p) {
    grow(w.v_token_scale, n_pad);
    std::fill(w.v_token_scale.begin() + n, w.v_token_scale.begin() + n_pad, 1.f);
  }
  const TensorView& kc = call.kv.k_cache;
  const TensorView& vc = call.kv.v_cache;
  for (int64_t j = 0; j < n_pad; ++j) {
    T* kdst = w.k_panels.data() + (j / kColBlock) * head_dim * kColBlock + (j % kColBlock);
    T* vdst = w.v_panels.data() + j * kColBlock;
    if (j >= n) {
      for (int64_t d = 0; d < head_dim; ++d) kdst[d * kColBlock] = T(0);
      for (int64_t d = 0; d < d_pad; ++d) vdst[(d / kColBlock) * n_pad * kColBlock + d % kColBlock] = T(0);
      continue;
    }
    const int64_t key = key_lo + j;
    const int64_t blk = read_index2(call.block_tables, seq.batch_idx, key / p.page_size);
    const int64_t off = key % p.page_size;
    load_row_f32(kc.data, kc.dtype, paged_offset(kc, p.layout, blk, kv_head, off), head_dim, w.tmp.data());
    load_row_f32(vc.data, vc.dtype, paged_offset(vc, p.layout, blk, kv_head, off), head_dim, w.tmp2.data());
    const float k_tok = k_mode == ScaleMode::kPerToken
                            ? load_f32(call.kv.k_scale.data, call.kv.k_scale.dtype,
                                       paged_offset(call.kv.k_scale, p.layout, blk, kv_head, off))
                            : 1.f;
    const float v_tok = v_mode == ScaleMode::kPerToken
                            ? load_f32(call.kv.v_scale.data, call.kv.v_scale.dtype,
                                       paged_offset(call.kv.v_scale, p.layout, blk, kv_head, off))
                            : 1.f;
    if (int8_mode && k_mode == ScaleMode::kPerToken) w.k_token_scale[j] = k_tok;
    if (v_token_on_p) w.v_token_scale[j] = v_tok;
    // value = int8 * scale in T (fp32: one rounding; fp64: exact). int8 mode keeps the int8 values
    // (exact in T) and applies every scale elsewhere: K's to q or S, V's to p or O. Absent scales
    // multiply by 1.
    const bool k_channel = k_mode == ScaleMode::kPerChannel && !int8_mode;
    const T k_row = T(k_mode == ScaleMode::kPerToken && !int8_mode ? k_tok : 1.f);
    const bool v_channel = v_mode == ScaleMode::kPerChannel && !int8_mode;
    const T v_row = T(v_mode == ScaleMode::kPerToken && !int8_mode ? v_tok : 1.f);
    for (int64_t d = 0; d < head_dim; ++d)
      kdst[d * kColBlock] = T(w.tmp[d]) * (k_channel ? T(w.k_channel_scale[d]) : k_row);
    for (int64_t d = 0; d < head_dim; ++d)
      vdst[(d / kColBlock) * n_pad * kColBlock + d % kColBlock] =
          T(w.tmp2[d]) * (v_channel ? T(w.v_channel_scale[d]) : v_row);
    for (int64_t d = head_dim; d < d_pad; ++d)
      vdst[(d / kColBlock) * n_pad * kColBlock + d % kColBlock] = T(0);
  }

  // ---- load (and in int8 mode quantize) the query rows ----
  grow(w.q_rows, static_cast<size_t>(rows_pad * head_dim));
  grow(w.row_factor, rows_pad);
  const TensorView& qv = call.q;
  const bool q_is_int8 = qv.dtype == DType::kInt8;
  // int8 mode splits q into two int8 parts, but for an int8 q taken as is (per-token K: no scale
  // to fold in), whose low part is 0.
  const bool q_as_is = int8_mode && q_is_int8 && k_mode != ScaleMode::kPerChannel;
  const bool two_part = int8_mode && !q_as_is;
  if (two_part) grow(w.q_lo_rows, static_cast<size_t>(rows_pad * head_dim));
  for (int64_t r = 0; r < rows_pad; ++r) {
    T* qdst = w.q_rows.data() + r * head_dim;
    T* qlo = two_part ? w.q_lo_rows.data() + r * head_dim : nullptr;
    if (r >= rows) {
      std::fill(qdst, qdst + head_dim, T(0));
      if (two_part) std::fill(qlo, qlo + head_dim, T(0));
      w.row_factor[r] = 0.f;
      continue;
    }
    const int64_t t = seq.q_row0 + row_pos_idx(r);
    const int64_t h = row_head(r);
    float* x = w.tmp.data();
    load_row_f32(qv.data, qv.dtype, t * qv.strides[0] + h * qv.strides[1], head_dim, x);
    const float qs = q_is_int8 ? load_f32(call.q_scale.data, call.q_scale.dtype,
                                          t * call.q_scale.strides[0] + h * call.q_scale.strides[1])
                               : 1.f;
    if (!int8_mode) {
      for (int64_t d = 0; d < head_dim; ++d)
        qdst[d] = call.fp64 ? T(static_cast<double>(x[d]) * static_cast<double>(qs))
                            : T(q_is_int8 ? x[d] * qs : x[d]);
      continue;
    }
    if (q_as_is) {
      for (int64_t d = 0; d < head_dim; ++d) qdst[d] = T(x[d]);
      w.row_factor[r] = qs * p.softmax_scale;
      continue;
    }
    float amax = 0.f;
    bool has_nan = false;
    for (int64_t d = 0; d < head_dim; ++d) {
      float v = q_is_int8 ? x[d] * qs : x[d];
      if (k_mode == ScaleMode::kPerChannel) v *= w.k_channel_scale[d];
      x[d] = v;
      amax = amax_update(amax, v);
      has_nan |= v != v;
    }
    const float s_q = query_scale_of(amax);
    for (int64_t d = 0; d < head_dim; ++d) {
      const int8_t hi = quantize_q(x[d], s_q);
      qdst[d] = T(static_cast<float>(hi));
      qlo[d] = T(static_cast<float>(quantize_q_lo(x[d], s_q, hi)));
    }
    // fmax-amax skips a NaN and quantize() maps it to 0: carry it in the row's factor instead, so
    // that it reaches the scores (docs/design.md §1 "Non-finite values").
    w.row_factor[r] = has_nan ? std::numeric_limits<float>::quiet_NaN() : s_q * p.softmax_scale;
  }

  // ---- 2. S = Q·Kᵀ over the key panels each 4-row block may see ----
  grow(w.scores, static_cast<size_t>(rows_pad * n_pad));
  grow(w.span_begin, num_row_blocks);
  grow(w.span_end, num_row_blocks);
  for (int64_t rb = 0; rb < num_row_blocks; ++rb) {
    const int64_t pos_first = first_pos + row_pos_idx(rb * kRowBlock);
    const int64_t pos_last = first_pos + row_pos_idx(rb * kRowBlock + kRowBlock - 1);
    const int64_t hi = std::min(causal_end_key(p, pos_last, seq.kv_len), key_hi);
    const int64_t lo = std::clamp(window_first_key(p, pos_first), key_lo, key_hi);
    if (hi <= lo) {
      w.span_begin[rb] = w.span_end[rb] = 0;
    } else {
      w.span_begin[rb] = (lo - key_lo) / kColBlock;
      w.span_end[rb] = ceil_div(hi - key_lo, kColBlock);
    }
  }
  JobTiles<T> tiles;
  tiles.q_rows = w.q_rows.data();
  tiles.k_panels = w.k_panels.data();
  tiles.v_panels = w.v_panels.data();
  tiles.scores = w.scores.data();
  tiles.span_begin = w.span_begin.data();
  tiles.span_end = w.span_end.data();
  tiles.head_dim = head_dim;
  tiles.n_pad = n_pad;
  tiles.d_pad = d_pad;
  tiles.num_row_blocks = num_row_blocks;
  score_tiles_dispatch(tiles, call.avx2);
  if (two_part) {  // lo·k8 over the same panels, into its own buffer
    grow(w.scores_lo, static_cast<size_t>(rows_pad * n_pad));
    JobTiles<T> lo_tiles = tiles;
    lo_tiles.q_rows = w.q_lo_rows.data();
    lo_tiles.scores = w.scores_lo.data();
    score_tiles_dispatch(lo_tiles, call.avx2);
  }

  // ---- 3. softmax per row: exact max, p = exp(S - m), l = sum p ----
  grow(w.row_max, rows_pad);
  grow(w.row_sum, rows_pad);
  grow(w.row_state, rows_pad);
  const T neg_inf = -std::numeric_limits<T>::infinity();
  const bool has_mask = p.has_mask && call.mask.defined();
  const int64_t mask_stride = call.mask.ndim == 1 ? call.mask.strides[0] : 1;
  const uint8_t* mask_data = has_mask ? static_cast<const uint8_t*>(call.mask.data) : nullptr;
  const T scale = T(p.softmax_scale);
  for (int64_t r = 0; r < rows_pad; ++r) {
    const int64_t rb = r / kRowBlock;
    const int64_t jb = w.span_begin[rb] * kColBlock;
    const int64_t je = w.span_end[rb] * kColBlock;
    T* srow = w.scores.data() + r * n_pad;
    const T* slo = two_part ? w.scores_lo.data() + r * n_pad : nullptr;
    if (r >= rows) {
      for (int64_t j = jb; j < je; ++j) srow[j] = T(0);
      w.row_max[r] = neg_inf;
      w.row_sum[r] = T(0);
      w.row_state[r] = kRowEmpty;
      continue;
    }
    const int64_t i = row_pos_idx(r);
    const int64_t pos = first_pos + i;
    // Visible keys of this row: [vis_lo, vis_hi) plus, under a local window, the global prefix
    // [0, global_hi) (detail::is_visible, as ranges).
    const int64_t vis_hi = std::min(key_hi, causal_end_key(p, pos, seq.kv_len));
    const int64_t vis_lo = p.local_window >= 0 ? pos - p.local_window : 0;
    const int64_t global_hi = p.local_window >= 0 ? std::min<int64_t>(p.global_window, vis_hi) : 0;
    // In score-buffer indices: [jb, global_end) and [vis_begin, vis_end) are visible.
    const int64_t vis_end = std::clamp(vis_hi - key_lo, jb, je);
    const int64_t vis_begin = std::clamp(vis_lo - key_lo, jb, vis_end);
    const int64_t global_end = std::clamp(global_hi - key_lo, jb, vis_begin);
    auto score = [&](int64_t j) -> T {
      if (!int8_mode) return srow[j] * scale;
      // hi·k8 + (lo·k8) / 128: both exact integers, the division exact, one rounding in the sum.
      float sf = static_cast<float>(srow[j]);
      if (two_part) sf += static_cast<float>(slo[j]) * (1.f / 128.f);
      sf *= w.row_factor[r];
      if (k_mode == ScaleMode::kPerToken) sf *= w.k_token_scale[j];
      return T(sf);
    };
    const int64_t mask_row = has_mask ? seq.mask_offset + i * seq.kv_len : 0;
    // Visible scores, counted and screened for non-finite values; invisible ones become -inf.
    int64_t num_visible = 0;
    bool poisoned = false;  // a visible score is NaN or +inf
    auto visit = [&](int64_t j) {
      if (has_mask && mask_data[(mask_row + key_lo + j) * mask_stride] == 0) {
        srow[j] = neg_inf;
        return;
      }
      const T sj = score(j);
      srow[j] = sj;
      ++num_visible;
      if (sj != sj || sj == -neg_inf) poisoned = true;
    };
    for (int64_t j = jb; j < global_end; ++j) visit(j);
    for (int64_t j = global_end; j < vis_begin; ++j) srow[j] = neg_inf;
    for (int64_t j = vis_begin; j < vis_end; ++j) visit(j);
    for (int64_t j = vis_end; j < je; ++j) srow[j] = neg_inf;
    // Exact max: any association order gives the same value, so it is taken over 8 lanes.
    T lane_max[kColBlock];
    std::fill(lane_max, lane_max + kColBlock, neg_inf);
    for (int64_t j = jb; j < je; j += kColBlock)
      for (int64_t x = 0; x < kColBlock; ++x) lane_max[x] = std::max(lane_max[x], srow[j + x]);
    T m = neg_inf;
    for (int64_t x = 0; x < kColBlock; ++x) m = std::max(m, lane_max[x]);
    w.row_max[r] = m;
    // Non-finite values (docs/design.md §1): no visible key -> an empty row (zeros, lse -inf); a visible
    // NaN or +inf score, or visible scores that are all -inf (0/0) -> a NaN row (out and lse NaN).
    // A -inf score among finite ones has weight exp(-inf) = 0.
    w.row_state[r] = num_visible == 0 ? kRowEmpty : (poisoned || m == neg_inf ? kRowNaN : kRowNormal);
    T l = T(0);
    if (w.row_state[r] != kRowNormal) {
      for (int64_t j = jb; j < je; ++j) srow[j] = T(0);
    } else {
      for (int64_t j = jb; j < je; ++j) {
        const T pj = std::exp(srow[j] - m);  // exp(-inf) = 0 for invisible keys
        l += pj;
        srow[j] = pj;
      }
      // P as P·V consumes it (both compute modes): p rounded to p_dtype, l keeping the unrounded
      // sum; int8 mode then multiplies the rounded p_j by a per-token V scale.
      if (round_p && p_dtype == DType::kBFloat16) {
        for (int64_t j = jb; j < je; ++j) srow[j] = T(round_to_bf16(static_cast<float>(srow[j])));
      } else if (round_p) {
        for (int64_t j = jb; j < je; ++j) srow[j] = T(round_to_f16(static_cast<float>(srow[j])));
      }
      if (v_token_on_p)
        for (int64_t j = jb; j < je; ++j) srow[j] = T(static_cast<float>(srow[j]) * w.v_token_scale[j]);
    }
    w.row_sum[r] = l;
  }

  // ---- 4. O = P·V ----
  grow(w.o_rows, static_cast<size_t>(rows_pad * d_pad));
  tiles.o_rows = w.o_rows.data();
  pv_tiles_dispatch(tiles, call.avx2);

  // ---- epilogue: normalise, write out and lse ----
  const TensorView& out = call.out;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t t = seq.q_row0 + row_pos_idx(r);
    const int64_t h = row_head(r);
    const T l = w.row_sum[r];
    const T* o = w.o_rows.data() + r * d_pad;
    float* y = w.tmp.data();
    const bool empty = w.row_state[r] == kRowEmpty;
    const bool nan_row = w.row_state[r] == kRowNaN;
    constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
    for (int64_t d = 0; d < head_dim; ++d) {
      if (empty) {
        y[d] = 0.f;
      } else if (nan_row) {
        y[d] = kNaN;
      } else if (int8_mode) {
        float v = static_cast<float>(o[d]);
        if (v_mode == ScaleMode::kPerChannel) v *= w.v_channel_scale[d];
        y[d] = v / static_cast<float>(l);
      } else {
        y[d] = static_cast<float>(o[d] / l);
      }
    }
    store_row_f32(out.data, out.dtype, t * out.strides[0] + h * out.strides[1], head_dim, y);
    if (p.has_lse && call.lse.defined()) {
      const float lse = empty     ? -std::numeric_limits<float>::infinity()
                        : nan_row ? kNaN
                                  : static_cast<float>(w.row_max[r] + std::log(l));
      store_f32(call.lse.data, call.lse.dtype, t * call.lse.strides[0] + h * call.lse.strides[1], lse);
    }
  }
}

void check_int8_compute(const AttnCall& call, const char* func) {
  const AttnProblem& p = *call.p;
  if (call.fp64 || p.compute != ComputeMode::kInt8) return;
  KVQ_CHECK(p.kv_dtype == DType::kInt8 && p.k_scale_mode != ScaleMode::kNone &&
                p.v_scale_mode != ScaleMode::kNone,
            func, "compute", "expected an int8 cache with scales for int8 compute, got a "
                                 << to_string(p.kv_dtype) << " cache");
}

// Splits every (sequence, kv head) into chunks of query positions, costliest first.
void make_jobs(AttnCall& call) {
  const AttnProblem& p = *call.p;
  for (int64_t s = 0; s < static_cast<int64_t>(call.seqs.size()); ++s) {
    const SeqInfo& seq = call.seqs[s];
    if (seq.q_len <= 0) continue;
    const int64_t per_position = p.group_size * std::max<int64_t>(seq.kv_len, 1);
    const int64_t chunk = std::clamp<int64_t>(kMaxScoreElements / per_position, 1, kMaxChunkPositions);
    for (int64_t h = 0; h < p.num_kv_heads; ++h) {
      for (int64_t i0 = 0; i0 < seq.q_len; i0 += chunk) {
        const int64_t i1 = std::min(seq.q_len, i0 + chunk);
        const int64_t pos_end = seq.kv_len - seq.q_len + i1;
        const int64_t keys = std::max<int64_t>(1, p.causal ? std::min(pos_end, seq.kv_len) : seq.kv_len);
        call.jobs.push_back({s, h, i0, i1, (i1 - i0) * keys});
      }
    }
  }
  std::stable_sort(call.jobs.begin(), call.jobs.end(),
                   [](const Job& a, const Job& b) { return a.cost > b.cost; });
}

template <typename T>
void run_all(const AttnCall& call) {
  const int64_t num_jobs = static_cast<int64_t>(call.jobs.size());
  std::vector<Scratch<T>> scratch(num_workers_for(num_jobs));
  parallel_for(num_jobs, [&](int64_t j, int worker) { run_job<T>(call, call.jobs[j], scratch[worker]); });
}

void run(AttnCall& call, const char* func) {
  check_int8_compute(call, func);
  make_jobs(call);
  call.avx2 = use_avx2();
  if (call.fp64)
    run_all<double>(call);
  else
    run_all<float>(call);
}

}  // namespace

void paged_prefill(const PrefillArgs& args, const AttnProblem& p) {
  const char* func = "paged_prefill";
  AttnCall call;
  call.p = &p;
  call.q = args.q;
  call.q_scale = args.q_scale;
  call.out = args.out;
  call.lse = args.lse;
  call.mask = args.mask;
  call.block_tables = args.block_tables;
  call.kv = args.kv;
  call.fp64 = fp64_accumulation();
  KVQ_CHECK(args.q.dtype != DType::kInt8 || args.q_scale.defined(), func, "q_scale",
            "expected fp32 [total_q, num_qo_heads] with int8 q, got " << args.q_scale.describe());

  // The metadata the jobs index with, checked before anything is written. These are src/core's
  // checks (validate.h), which the dispatcher already ran on this call: they keep the backend safe
  // on its own, and a refusal reads as on every backend.
  const int32_t* cu = args.cu_q_lens.ptr<const int32_t>();
  detail::check_cu_q_lens_values(func, "cu_q_lens", cu, p.batch_size, p.total_q);
  detail::check_lens_and_table_data(func, args.kv_lens, args.block_tables, p.page_size, p.num_blocks);
  if (p.has_mask && args.mask.defined())
    detail::check_mask_length(func, args.mask, cu, args.kv_lens.ptr<const int32_t>(), p.batch_size);

  int64_t mask_offset = 0;
  for (int64_t b = 0; b < p.batch_size; ++b) {
    const int64_t q0 = read_index(args.cu_q_lens, b);
    const int64_t q1 = read_index(args.cu_q_lens, b + 1);
    SeqInfo s;
    s.batch_idx = b;
    s.q_row0 = q0;
    s.q_len = q1 - q0;
    s.kv_len = read_index(args.kv_lens, b);
    s.mask_offset = mask_offset;
    if (s.kv_len > 0) mask_offset += s.q_len * s.kv_len;
    call.seqs.push_back(s);
  }
  run(call, func);
}

void paged_decode(const DecodeArgs& args, const AttnProblem& p) {
  const char* func = "paged_decode";
  AttnCall call;
  call.p = &p;
  call.q = args.q;
  call.out = args.out;
  call.lse = args.lse;
  call.block_tables = args.block_tables;
  call.kv = args.kv;
  call.fp64 = fp64_accumulation();
  // src/core's checks of what the jobs index with, as in paged_prefill.
  detail::check_lens_and_table_data(func, args.kv_lens, args.block_tables, p.page_size, p.num_blocks);
  for (int64_t b = 0; b < p.batch_size; ++b) {
    SeqInfo s;
    s.batch_idx = b;
    s.q_row0 = b;
    s.q_len = 1;
    s.kv_len = read_index(args.kv_lens, b);
    call.seqs.push_back(s);
  }
  run(call, func);
}

}  // namespace kvq::cpu
