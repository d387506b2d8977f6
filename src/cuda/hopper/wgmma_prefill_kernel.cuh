// src/cuda/hopper/wgmma_prefill_kernel.cuh — the Hopper (sm_90a) paged prefill: warp-specialized,
// wgmma tensor cores, an mbarrier-guarded shared-memory ring, over a bf16/fp16 cache or an int8
// cache converted exactly on the way into shared memory.
//
// What it computes is what the tensor-core prefill (src/cuda/prefill/tc_prefill_kernel.cuh)
// computes, with the same parameters (TcPrefillParams), the same packed GQA rows, masking, hostile
// metadata handling, scale identities and non-finite rules (docs/design.md §1, docs/api.md); only
// the mainloop differs. One CTA = (tile of 128 packed query rows, kv head, sequence).
//
// Threads: three warpgroups (four for int8 caches with kProducerWGs 2: two producers splitting
// each tile's rows, the consumers being warpgroups 2 and 3).
// - Warpgroup 0, the producer (setmaxnreg down to kProducerRegs): for each KV tile of the
//   iteration order it reads the tile's block-table entries and per-token scales one tile ahead
//   (registers, and row offsets in shared memory), waits for the ring slot's K half to be free
//   (mbarrier `empty_k`), publishes the tile's validity bytes and scales, loads the K rows through
//   the block table with 16-byte copies (any page size, HND/NHD, invalid blocks and tokens past
//   kv_len zero-filled), converts int8 exactly to the q dtype (common/mma_int8.cuh
//   int8x4_to_pairs) into the 128-byte swizzled panel layout wgmma reads (common/wgmma.cuh),
//   fences the generic-proxy stores for the async proxy and arrives on `full_k`; then the same for
//   V once `empty_v` says its half is free, arriving on `full_v`.
// - Warpgroups 1 and 2, the consumers (setmaxnreg up to kConsumerRegs), 64 rows each: S = Q·Kᵀ by
//   wgmma m64nNk16 with both operands in shared memory, the online softmax in registers (the
//   accumulator fragment is mma.sync's, so this is the tensor-core prefill's softmax, verbatim),
//   P rounded to the q dtype into wgmma A fragments (then `empty_k` is arrived: the tile's K and
//   metadata are consumed), O += P·V by wgmma with P from registers and V MN-major (no transpose),
//   then `empty_v`. Two orders (kOrder): serial (the default: each GEMM waited for before the
//   softmax or the next tile) and ping-pong (FlashAttention-3's: S(it) and P·V(it - 1) issued
//   together, the softmax of S(it) under P·V(it - 1), and the two consumers taking turns to issue,
//   named barriers 4 and 5). They measure the same on the H200 today (docs/perf-notes.md: the
//   producer's copies and conversion bound the kernel, not the consumers' order).
// Ring: kStages slots of (K tile, V tile, scales, validity); full_k[s] counts the producer's 128
// threads (int8) or 128 plain + 128 cp.async arrivals (16-bit caches), full_v[s] 128, empty_k[s]
// and empty_v[s] the consumers' 256. Iteration `it` uses slot it % kStages in phase
// (it / kStages) & 1; the producer waits on the opposite parity of `empty_*`, which a fresh barrier
// reports complete, so the first kStages tiles need no consumer.
#pragma once
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "src/cuda/common/mma_int8.cuh"
#include "src/cuda/common/wgmma.cuh"
#include "src/cuda/prefill/tc_prefill_kernel.cuh"

namespace kvq::cuda::hopper {

using tc::TcPrefillParams;

constexpr int wg_tile_q() { return 128; }

// The consumers' mainloop orders (KVQ_WG_MAINLOOP=serial|pingpong; kWgOverlap is the ping-pong
// order without the turns, not instantiated).
constexpr int kWgSerial = 0;    // S(it), softmax(it), P·V(it), each waited for
constexpr int kWgOverlap = 1;   // FlashAttention-3's intra-warpgroup order
constexpr int kWgPingPong = 2;  // the same, and the two consumers take turns issuing GEMMs
constexpr int wg_tile_kv(int head_dim) { return head_dim <= 128 ? 128 : 64; }

// kFp16Math (bf16 q over an int8 cache): the MMAs run in fp16. int8 K/V convert to fp16 exactly
// with half the instructions of bf16 (common/convert.cuh), the producer's conversion being what
// bounds the int8 kernel (docs/perf-notes.md); Q (with the per-channel K scale folded in) is scaled
// per warpgroup by a power of two that puts its largest finite |value| in [2^14, 2^15) and rounded
// to fp16 (11 significant bits against bf16's 8, so every bf16 q is exact unless it is below 2^-28
// of the warpgroup's largest); P is rounded to fp16 (finer than bf16); per-token V scales are
// factored out of P as for fp16 q (kFactorV). out and lse are written as always.
// kProducerWGs_ 2 (int8 caches, head dims up to 128, the default; KVQ_WG_INT8_PRODUCERS=1 gives 1): two producer warpgroups stage and convert
// each tile, half its rows each, so the conversion's dependent chains have two warps per SM
// sub-partition instead of one (the int8 kernel measured latency-bound there, docs/perf-notes.md);
// 512 threads, the consumers' registers down to 200.
// kQkInt8_ (compute="int8", int8 caches, head dims 128 and 256): docs/design.md §1's int8 recipe.
// Each consumer quantizes its Q rows (K's per-channel scale folded in) per (token, head) into two
// int8 parts, q' = s_q (hi + lo / 128), into two K-major int8 tiles; S = Q·Kᵀ is int8 wgmma
// (s8 x s8 -> s32) straight from the int8 K tile, which the producer copies as it is (TMA, or
// cp.async where the page size allows no box) into the ring in the 128-byte swizzled panel layout
// (an int8 panel is 128 columns): hi·k8 and lo·k8 in two int32 accumulators (exact), S = hi·k8 +
// lo·k8 / 128 in one rounding, each row's s_q in the softmax's scale (qk_issue_s8 says how, without
// an int -> float conversion instruction). Only V is staged and converted (to the q dtype); P·V is
// the bf16 mode's. Serial order only.
template <int kHeadDim_, typename DTypeQ_, bool kKvInt8_, bool kFactorV_ = false, bool kFp16Math_ = false,
          int kProducerWGs_ = 1, bool kQkInt8_ = false>
struct WgPrefillTraits {
  static constexpr int kHeadDim = kHeadDim_;
  using DTypeQ = DTypeQ_;
  static constexpr bool kFp16Math = kFp16Math_;
  using DTypeMma = std::conditional_t<kFp16Math_, __half, DTypeQ_>;  // the MMAs' operands
  static constexpr bool kKvInt8 = kKvInt8_;
  static constexpr bool kFactorV = kFactorV_;
  static constexpr bool kQkInt8 = kQkInt8_;
  static constexpr int kTileQ = wg_tile_q();
  static constexpr int kTileKv = wg_tile_kv(kHeadDim);
  static constexpr int kStages = 2;
  static constexpr int kProducerWGs = kProducerWGs_;
  static constexpr int kProducerThreads = 128 * kProducerWGs;
  static constexpr int kNumThreads = kProducerThreads + 256;
  static constexpr int kLaunchRegs = kNumThreads == 384 ? 168 : 128;  // per thread, one CTA per SM
  static constexpr int kProducerRegs = kKvInt8 ? 56 : 40;  // int8: the staging + conversion needs 56 (spills at 40)
  static constexpr int kConsumerRegs = kProducerWGs == 2 ? 200 : (kKvInt8 ? 224 : 232);
  static constexpr int kQPanelBytes = kTileQ * 128;
  static constexpr int kQBytes = kTileQ * kHeadDim * 2;  // kQkInt8: the hi tile, then the lo tile (int8)
  static constexpr int kQ8PartBytes = kTileQ * kHeadDim;
  static constexpr int kKvPanelBytes = kTileKv * 128;
  static constexpr int kKvTileBytes = kTileKv * kHeadDim * 2;
  static constexpr int kStageBytes = 2 * kKvTileBytes;
  // int8 caches: the raw tile lands here (cp.async) before the producer converts it into the ring.
  static constexpr int kStagTileBytes = kKvInt8 ? kTileKv * kHeadDim : 0;  // one K or V tile, int8
  // Staging slots: a K and a V tile (cp.async); three for int8 D128, where TMA may fill them in the
  // order K(0), V(0), K(1), ... two tiles ahead of the conversion (shared memory has room there).
  // (kQkInt8: two V staging slots.)
  static constexpr int kStagSlots = (kKvInt8 && kHeadDim == 128 && !kQkInt8) ? 3 : 2;
  static constexpr int kStagOff = kQBytes + kStages * kStageBytes;
  static constexpr int kScaleOff = kStagOff + kStagSlots * kStagTileBytes;     // float [kStages][2][kTileKv]
  static constexpr int kVmaxOff = kScaleOff + kStages * 2 * kTileKv * 4;  // float [kStages][kTileKv / 32]
  static constexpr int kValidOff = kVmaxOff + kStages * (kTileKv / 32) * 4;  // uint8 [kStages][kTileKv]
  static constexpr int kOffOff = (kValidOff + kStages * kTileKv + 15) / 16 * 16;  // int64 [kStages][kTileKv]
  // TMA (16-bit caches): per box of a tile (at most kTileKv / 8), its block id (-1: absent) and in-page offset.
  static constexpr int kMaxBoxes = kTileKv / 8;
  static constexpr int kBoxOff = kOffOff + kStages * kTileKv * 8;  // int2 [kStages][kMaxBoxes]
  static constexpr int kFlagOff = kBoxOff + kStages * kMaxBoxes * 8;  // int [kStages]
  static constexpr int kQmaxOff = kFlagOff + kStages * 4;  // float [2 consumers][4 warps] (kFp16Math)
  static constexpr int kSqOff = kQmaxOff + 8 * 4;  // float [kTileQ] (kQkInt8): each row's s_q
  static constexpr int kBarOff = (kSqOff + (kQkInt8 ? kTileQ * 4 : 0) + 7) / 8 * 8;  // uint64 full_k, full_v, empty_k, empty_v [kStages]
  // The dynamic shared memory base is 1024-aligned on sm_90 (checked by the kernel).
  // ... then stag_full[3] (int8 D128 by TMA).
  static constexpr int kSmemBytes = kBarOff + 4 * kStages * 8 + 3 * 8;

  static_assert(kHeadDim % 64 == 0 && kHeadDim <= 256, "head dims are whole 64-column panels up to 256");
  static_assert(kTileKv <= 128 && kTileKv % 32 == 0, "one producer thread per token; whole warps of V scales");
  static_assert(kKvTileBytes % 1024 == 0 && kQBytes % 1024 == 0, "panels start at 1024-byte boundaries");
  static_assert(!kFp16Math || (kKvInt8 && std::is_same_v<DTypeQ_, __nv_bfloat16>), "fp16 math: bf16 q over int8");
  static_assert(kSmemBytes <= 232448, "shared memory of one CTA on sm_90");
  static_assert(kProducerWGs == 1 || (kProducerWGs == 2 && kKvInt8), "two producer warpgroups: int8 caches");
  static_assert(!kQkInt8 || (kKvInt8 && !kFp16Math && kHeadDim >= 128), "int8 Q·Kᵀ: int8 caches, D 128 or 256");
  static_assert(kProducerRegs * kProducerThreads + kConsumerRegs * 256 <= kLaunchRegs * kNumThreads,
                "setmaxnreg within the launch allocation");
};

// The Hopper prefill over a 16-bit cache: K and V tiles by TMA through these maps (box 128 bytes x
// box_rows positions, common/tensor_map.h) when `use`; else 16-byte cp.async. A kernel parameter of
// its own: growing TcPrefillParams, which the mma.sync kernel shares, made that kernel spill.
struct WgTmaMaps {
  CUtensorMap k, v;
  int use = 0;
  int pos_first = 0;  // the maps' dim 1 is the in-page position (HND), else the kv head
  int box_rows = 0;   // divides page_size and the KV tile; a multiple of 8
  // int8 caches: the conversion's stores in plain order (KVQ_WG_PLAIN_STORES=1, for A/B runs; the
  // default orders them free of bank conflicts). Results are identical either way.
  int plain_stores = 0;
};

template <typename Tr, int kOrder>
__device__ __forceinline__ void wg_prefill_device(const TcPrefillParams& p, const WgTmaMaps& maps, uint8_t* smem_raw) {
#if KVQ_SM90_ENABLED
  using T = typename Tr::DTypeMma;  // the MMAs' operands (the converted K/V, Q in shared memory, P)
  using TQ = typename Tr::DTypeQ;   // q and out
  constexpr int kHeadDim = Tr::kHeadDim;
  constexpr int kTileQ = Tr::kTileQ;
  constexpr int kTileKv = Tr::kTileKv;
  constexpr int kStages = Tr::kStages;
  constexpr int kNbKv = kTileKv / 8;  // n8 blocks of S
  constexpr int kNbD = kHeadDim / 8;  // n8 blocks of O
  const float kNegInf = -__int_as_float(0x7f800000);

  // The swizzle phase is taken from address bits 7-9, so panels must sit at 1024-byte boundaries:
  // the base of dynamic shared memory is (no static shared memory in this kernel).
  uint8_t* smem = smem_raw;
  if ((tc::smem_addr(smem) & 1023u) != 0) __trap();
  const int tid = threadIdx.x;
  const int lane = tid % 32;
  const int kv_head = blockIdx.x % p.num_kv_heads;
  const int q_tile = p.num_q_tiles - 1 - static_cast<int>(blockIdx.x / p.num_kv_heads);  // heavy tiles first
  const int batch_idx = blockIdx.y;

  // ---- the tile's metadata, as the tensor-core prefill reads it (every thread, uniform) ----
  const int q_start = min(max(p.cu_q_lens[batch_idx * p.cu_stride], 0), p.total_q);
  const int q_len = min(max(p.cu_q_lens[(batch_idx + 1) * p.cu_stride], q_start), p.total_q) - q_start;
  const int64_t table_cap = static_cast<int64_t>(p.max_blocks_per_seq) * p.page_div.d;
  const int kv_len = static_cast<int>(min(static_cast<int64_t>(max(p.kv_lens[batch_idx * p.kvl_stride], 0)), table_cap));
  const int group = static_cast<int>(p.group_div.d);
  const int packed_len = q_len * group;
  const int row0 = q_tile * kTileQ;
  if (q_len <= 0 || row0 >= packed_len) return;
  {
    bool bad = false;
    for (int i = tid; i <= batch_idx; i += Tr::kNumThreads) {
      const int lo = p.cu_q_lens[i * p.cu_stride], hi = p.cu_q_lens[(i + 1) * p.cu_stride];
      bad = bad || hi < lo || lo < 0 || hi > p.total_q;
    }
    if (__syncthreads_or(bad)) return;
  }
  const int delta = kv_len - q_len;
  const int tok_min = static_cast<int>(p.group_div.div(row0));
  const int tok_max = min(q_len - 1, static_cast<int>(p.group_div.div(row0 + kTileQ - 1)));
  const int pos_min = delta + tok_min;
  const int pos_max = delta + tok_max;
  const KvTileRange range =
      kv_tile_range(kv_len, pos_min, pos_max, kTileKv, p.causal != 0, p.local_window, p.global_window);
  const int n_iter = range.n_iter;
  auto tile_of = [&](int it) { return range.tile(it); };

  const bool k_per_token = Tr::kKvInt8 && p.k_scale_mode == kScalePerToken;
  const bool v_per_token = Tr::kKvInt8 && p.v_scale_mode == kScalePerToken;
  const bool k_per_channel = Tr::kKvInt8 && p.k_scale_mode == kScalePerChannel;
  const bool v_per_channel = Tr::kKvInt8 && p.v_scale_mode == kScalePerChannel;

  uint8_t* s_q = smem;
  float* s_scale = reinterpret_cast<float*>(smem + Tr::kScaleOff);
  float* s_vmax = reinterpret_cast<float*>(smem + Tr::kVmaxOff);
  uint8_t* s_valid = smem + Tr::kValidOff;
  int* s_flag = reinterpret_cast<int*>(smem + Tr::kFlagOff);
  // Byte offset (from the kv head's base; K and V caches share strides, checked by the host) of
  // each token row of a tile; -1: absent.
  int64_t* s_off = reinterpret_cast<int64_t*>(smem + Tr::kOffOff);
  int2* s_box = reinterpret_cast<int2*>(smem + Tr::kBoxOff);
  uint64_t* full_k = reinterpret_cast<uint64_t*>(smem + Tr::kBarOff);
  uint64_t* full_v = full_k + kStages;
  uint64_t* empty_k = full_v + kStages;
  uint64_t* empty_v = empty_k + kStages;
  auto stage_k = [&](int slot) { return smem + Tr::kQBytes + slot * Tr::kStageBytes; };

  if (tid == 0) {
    for (int s = 0; s < kStages; ++s) {
      // full_k: the producer's 128 threads (and, 16-bit caches by cp.async, their 128 copy
      // arrivals; by TMA thread 0's arrival carries the tile's bytes); full_v: 128 copy or
      // conversion arrivals, or one TMA arrival.
      // (kQkInt8: K as the 16-bit caches load it, by TMA or cp.async.)
      const bool k_plain_count = Tr::kKvInt8 && !Tr::kQkInt8;
      wg::mbar_init(&full_k[s], (k_plain_count || maps.use) ? Tr::kProducerThreads : 2 * Tr::kProducerThreads);
      wg::mbar_init(&full_v[s], (!Tr::kKvInt8 && maps.use) ? 1 : Tr::kProducerThreads);
      wg::mbar_init(&empty_k[s], 256);
      wg::mbar_init(&empty_v[s], 256);
    }
    if (Tr::kStagSlots == 3)
      for (int s = 0; s < 3; ++s) wg::mbar_init(&empty_v[kStages + s], 1);  // stag_full: thread 0's expect_tx
    wg::mbar_init_fence();
  }
  __syncthreads();

  const int32_t* bt_row = p.block_tables + batch_idx * p.bt_stride;
  auto locate = [&](int j, int& block, uint32_t& off) {
    uint32_t page;
    p.page_div.divmod(static_cast<uint32_t>(j), page, off);
    block = -1;
    if (j < kv_len && page < static_cast<uint32_t>(p.max_blocks_per_seq)) block = bt_row[page];
    return block >= 0 && block < p.num_blocks;
  };

  const int warpgroup = tid / 128;
  if (warpgroup < Tr::kProducerWGs) {
    // ================= producer =================
    wg::regs_dec<Tr::kProducerRegs>();
    const int ptid = tid;
    constexpr int kElemBytes = Tr::kKvInt8 ? 1 : 2;
    constexpr int kSrcElems = 16 / kElemBytes;        // elements per 16-byte copy
    constexpr int kSrcChunks = kHeadDim / kSrcElems;  // copies per row
    constexpr int kPThreads = Tr::kProducerThreads;
    constexpr int kRowsPerPass = kPThreads / kSrcChunks;
    constexpr int kPasses = kTileKv / kRowsPerPass;
    static_assert(kPThreads % kSrcChunks == 0 && kTileKv % kRowsPerPass == 0, "producer thread mapping");
    const int pc = ptid % kSrcChunks;
    const int pr0 = ptid / kSrcChunks;
    const uint8_t* k_base = static_cast<const uint8_t*>(p.k_cache) + kv_head * p.k_stride_head * kElemBytes;
    const uint8_t* v_base = static_cast<const uint8_t*>(p.v_cache) + kv_head * p.v_stride_head * kElemBytes;
    const bool col_ok = pc * kSrcElems < p.head_dim;
    uint8_t* s_stag_k = smem + Tr::kStagOff;
    uint8_t* s_stag_v = s_stag_k + Tr::kStagTileBytes;

    // 16-byte cp.async of this thread's chunk of every row of the tile in `slot` (K or V) into
    // `dst_at(r)`, from the row offsets fetch() left in shared memory; absent tokens and
    // head-dim padding are zero-filled.
    auto issue = [&](int slot, bool is_v, auto dst_at) {
      if (p.diag & 1) return;
      const uint8_t* base = is_v ? v_base : k_base;
      const int64_t* offs = s_off + slot * kTileKv;
#pragma unroll 8
      for (int pass = 0; pass < kPasses; ++pass) {
        const int r = pr0 + pass * kRowsPerPass;
        const int64_t o = offs[r];
        const bool ok = o >= 0 && col_ok;
        tc::cp_async_16(dst_at(r), ok ? base + o + pc * 16 : base, ok ? 16u : 0u);
      }
    };
    auto ring_at = [&](uint8_t* tile_base) {
      return [=](int r) { return tc::smem_addr(tile_base + wg::tile_offset(kTileKv, r, pc * 8)); };
    };
    auto stag_at = [&](uint8_t* stag) { return [=](int r) { return tc::smem_addr(stag + r * kHeadDim + pc * 16); }; };
    // Staged int8 tile -> q dtype, into the ring's swizzled panels (exact). Each thread's 16 values
    // are two 16-byte chunks of one panel row; the 8 threads of a store's shared-memory phase (one
    // row, 128 bytes of int8) cover two panels, whose rows sit on the same banks, so the threads
    // of odd panels store their high chunk first: the phase then hits 8 distinct chunks (no bank
    // conflict) instead of 4 twice. (maps.plain_stores: low chunk first everywhere, for A/B runs.)
    const bool hi_first = !maps.plain_stores && ((pc * 16) / 64) % 2 == 1;
    const int c_first = pc * 16 + (hi_first ? 8 : 0);
    const int c_second = pc * 16 + (hi_first ? 0 : 8);
    // swz: the staged tile came by TMA with the 128-byte swizzle (int8 D128: a row is one 128-byte
    // panel row, its 16-byte chunk c at c ^ (row % 8)); else rows are plain.
    auto convert = [&](const uint8_t* stag, uint8_t* dst, bool swz) {
      if (p.diag & 4) return;
#pragma unroll 4
      for (int pass = 0; pass < kPasses; ++pass) {
        const int r = pr0 + pass * kRowsPerPass;
        const uint8_t* src = swz ? stag + r * 128 + ((pc ^ (r & 7)) << 4) : stag + r * kHeadDim + pc * 16;
        const uint4 w = *reinterpret_cast<const uint4*>(src);
        const uint32_t w0 = hi_first ? w.z : w.x, w1 = hi_first ? w.w : w.y;
        const uint32_t w2 = hi_first ? w.x : w.z, w3 = hi_first ? w.y : w.w;
        uint4 first, second;
        tc::int8x4_to_pairs<T>(w0, first.x, first.y);
        tc::int8x4_to_pairs<T>(w1, first.z, first.w);
        tc::int8x4_to_pairs<T>(w2, second.x, second.y);
        tc::int8x4_to_pairs<T>(w3, second.z, second.w);
        *reinterpret_cast<uint4*>(dst + wg::tile_offset(kTileKv, r, c_first)) = first;
        *reinterpret_cast<uint4*>(dst + wg::tile_offset(kTileKv, r, c_second)) = second;
      }
    };
    // Token ptid of a tile, read ahead of its ring slot being free: its block-table lookup, its
    // row offset written to s_off[slot] (read by the producer's copies only), and what the consumers
    // will read (validity, per-token scales with K's times softmax_scale * log2 e) kept in registers
    // until publish() writes it into the slot.
    struct TokMeta {
      bool ok = false;    // a valid token
      bool hole = false;  // inside kv_len without a valid block
      float ks = 0.f, vs = 0.f;
    };
    auto fetch = [&](int it, int slot) {
      TokMeta t;
      if (ptid >= kTileKv) return t;
      int block;
      uint32_t off;
      const int j = tile_of(it) * kTileKv + ptid;
      t.ok = locate(j, block, off);
      t.hole = !t.ok && j < kv_len;
      s_off[slot * kTileKv + ptid] = t.ok ? (block * p.k_stride_block + off * p.k_stride_pos) * kElemBytes : -1;
      if ((!Tr::kKvInt8 || Tr::kQkInt8) && maps.use && ptid % maps.box_rows == 0)
        s_box[slot * Tr::kMaxBoxes + ptid / maps.box_rows] = make_int2(t.ok ? block : -1, static_cast<int>(off));
      if constexpr (Tr::kKvInt8) {
        if (t.ok && k_per_token)
          t.ks = tc::load_scale_any(p.k_scale, block * p.ks_stride_a + kv_head * p.ks_stride_b + off * p.ks_stride_c,
                                    p.k_scale_dtype) *
                 p.sm_scale_log2;
        if (t.ok && v_per_token)
          t.vs = tc::load_scale_any(p.v_scale, block * p.vs_stride_a + kv_head * p.vs_stride_b + off * p.vs_stride_c,
                                    p.v_scale_dtype);
      }
      return t;
    };
    // Every producer thread, once `slot` is free: the consumers' metadata of the tile, and the
    // "has an invalid token" flag ORed over the warpgroup (the barrier also orders every thread's
    // s_off writes before the copies that read them).
    auto publish = [&](const TokMeta& t, int slot) {
      if (ptid < kTileKv) {  // whole warps
        s_valid[slot * kTileKv + ptid] = t.ok ? 1 : 0;
        if constexpr (Tr::kKvInt8) {
          s_scale[(slot * 2) * kTileKv + ptid] = t.ks;
          s_scale[(slot * 2 + 1) * kTileKv + ptid] = t.vs;
          if constexpr (Tr::kFactorV) {
            const unsigned a = __reduce_max_sync(0xffffffffu, t.vs == t.vs ? __float_as_uint(fabsf(t.vs)) : 0u);
            if (lane == 0) s_vmax[slot * (kTileKv / 32) + ptid / 32] = __uint_as_float(a);
          }
        }
      }
      const bool any_invalid = wg::named_sync_or(1, kPThreads, t.hole);
      if (ptid == 0) s_flag[slot] = any_invalid ? 1 : 0;
    };

    // A K or V tile straight into the ring by TMA (16-bit caches, and int8 K under kQkInt8), by
    // thread 0: one box of 128 bytes of head dim x maps.box_rows positions per (page run, panel),
    // from the block ids and in-page offsets fetch() left in s_box[slot], completing on `bar` with
    // the tile's bytes. A box of an absent block reads block -1, out of the map, and lands as
    // zeros (still counting its bytes).
    auto issue_tma = [&](const CUtensorMap* map, uint8_t* dst, int slot, uint64_t* bar) {
#if KVQ_SM90_ENABLED
      constexpr int kBoxCols = 128 / kElemBytes;  // head-dim columns of a box: one panel row
      (void)::cuda::ptx::mbarrier_arrive_expect_tx(::cuda::ptx::sem_release, ::cuda::ptx::scope_cta,
                                                   ::cuda::ptx::space_shared, bar, kTileKv * kHeadDim * kElemBytes);
      const int n_box = kTileKv / maps.box_rows;
      for (int b = 0; b < n_box; ++b) {
        const int2 bo = s_box[slot * Tr::kMaxBoxes + b];
        const int32_t c1 = maps.pos_first ? bo.y : kv_head;
        const int32_t c2 = maps.pos_first ? kv_head : bo.y;
#pragma unroll
        for (int pnl = 0; pnl < kHeadDim / kBoxCols; ++pnl) {
          const int32_t crd[4] = {pnl * kBoxCols, c1, c2, bo.x};
          ::cuda::ptx::cp_async_bulk_tensor(::cuda::ptx::space_cluster, ::cuda::ptx::space_global,
                                            dst + pnl * Tr::kKvPanelBytes + b * maps.box_rows * 128, map, crd, bar);
        }
      }
#endif
    };

    TokMeta meta;
    if constexpr (Tr::kQkInt8) {
      // int8 Q·Kᵀ: K(it) goes into the ring as it is, in the swizzled panel layout (a 16-byte chunk
      // c of a row is int8 columns [16c, 16c + 16): chunk c of the 16-bit layout's addressing),
      // by TMA (thread 0, one box per page run and 128-column panel, completing on full_k with the
      // tile's bytes) or by cp.async (each thread's copies one noinc arrival on full_k after its
      // plain one). V is staged by cp.async into two staging slots, V(it + 1) issued before V(it)
      // is converted, so its latency hides under that conversion and the consumers' work.
      // Groups: V(0) alone, then per iteration {K(it) cp.async, V(it + 1)}; the wait for all but
      // the newest group lands V(it).
      auto stag = [&](int i) { return (i & 1) ? s_stag_v : s_stag_k; };  // V(i)'s staging slot
      if (n_iter > 0) {
        meta = fetch(0, 0);
        wg::named_sync(1, kPThreads);
        issue(0, true, stag_at(stag(0)));
        tc::cp_async_commit();
      }
      for (int it = 0; it < n_iter; ++it) {
        const int slot = it % kStages;
        uint8_t* s_k = stage_k(slot);
        wg::mbar_wait(&empty_k[slot], ((it / kStages) & 1) ^ 1);
        publish(meta, slot);
        if (maps.use) {
          if (ptid == 0)
            issue_tma(&maps.k, s_k, slot, &full_k[slot]);
          else
            wg::mbar_arrive(&full_k[slot]);
        } else {
          wg::mbar_arrive(&full_k[slot]);
          issue(slot, false, ring_at(s_k));
          wg::cp_async_arrive_noinc(&full_k[slot]);
        }
        if (it + 1 < n_iter) {
          // Tile it + 1's row offsets and boxes go to the other slot (its last readers, the copies
          // of tile it - 1, were issued before this iteration's publish barrier).
          meta = fetch(it + 1, (it + 1) % kStages);
          wg::named_sync(1, kPThreads);  // s_off of it + 1 written by everyone; V(it - 1) converted
          issue((it + 1) % kStages, true, stag_at(stag(it + 1)));
        }
        tc::cp_async_commit();
        tc::cp_async_wait<1>();
        wg::named_sync(1, kPThreads);  // V(it) staged by every producer thread
        wg::mbar_wait(&empty_v[slot], ((it / kStages) & 1) ^ 1);
        convert(stag(it), s_k + Tr::kKvTileBytes, false);
        wg::fence_async_smem();
        wg::mbar_arrive(&full_v[slot]);
      }
      tc::cp_async_wait<0>();
      return;
    }
    if constexpr (Tr::kKvInt8 && Tr::kStagSlots == 3) {
      if (maps.use) {
#if KVQ_SM90_ENABLED
        // int8 D128 by TMA (maps.use): thread 0 loads half-tile h (K(h / 2) for even h, V(h / 2)
        // for odd) into staging slot h % 3, one box per page run of maps.box_rows tokens, completing
        // on stag_full[h % 3] with the half-tile's bytes (absent blocks read block -1: zeros). Three
        // half-tiles are in flight when the loop starts; each conversion frees its slot for h + 3,
        // so a tile's loads have the two conversions before it to land under. Rows past kv_len in a
        // present block are copied as they are: int8 is finite, and they meet P = 0 or a masked score.
        uint64_t* stag_full = empty_v + kStages;
        const int n_half = 2 * n_iter;
        auto stag_slot = [&](int h) { return smem + Tr::kStagOff + (h % 3) * Tr::kStagTileBytes; };
        auto issue_stag = [&](int h) {
          uint64_t* bar = &stag_full[h % 3];
          (void)::cuda::ptx::mbarrier_arrive_expect_tx(::cuda::ptx::sem_release, ::cuda::ptx::scope_cta,
                                                       ::cuda::ptx::space_shared, bar, kTileKv * 128);
          const int t0 = tile_of(h / 2) * kTileKv;
          for (int b = 0; b < kTileKv / maps.box_rows; ++b) {
            int block;
            uint32_t off;
            if (!locate(t0 + b * maps.box_rows, block, off)) block = -1;
            const int32_t c1 = maps.pos_first ? static_cast<int32_t>(off) : kv_head;
            const int32_t c2 = maps.pos_first ? kv_head : static_cast<int32_t>(off);
            const int32_t crd[4] = {0, c1, c2, block};
            ::cuda::ptx::cp_async_bulk_tensor(::cuda::ptx::space_cluster, ::cuda::ptx::space_global,
                                              stag_slot(h) + b * maps.box_rows * 128, (h & 1) ? &maps.v : &maps.k,
                                              crd, bar);
          }
        };
        if (n_iter > 0) meta = fetch(0, 0);
        if (ptid == 0)
          for (int h = 0; h < min(3, n_half); ++h) issue_stag(h);
        for (int it = 0; it < n_iter; ++it) {
          const int slot = it % kStages;
          uint8_t* s_k = stage_k(slot);
          wg::mbar_wait(&empty_k[slot], ((it / kStages) & 1) ^ 1);
          publish(meta, slot);
          if (it + 1 < n_iter) meta = fetch(it + 1, (it + 1) % kStages);
          const int hk = 2 * it, hv = hk + 1;
          wg::mbar_wait(&stag_full[hk % 3], (hk / 3) & 1);
          convert(stag_slot(hk), s_k, true);
          wg::fence_async_smem();
          wg::mbar_arrive(&full_k[slot]);
          wg::named_sync(1, kPThreads);  // K(it)'s staging slot read by everyone
          if (ptid == 0 && hk + 3 < n_half) issue_stag(hk + 3);
          wg::mbar_wait(&stag_full[hv % 3], (hv / 3) & 1);
          wg::mbar_wait(&empty_v[slot], ((it / kStages) & 1) ^ 1);
          convert(stag_slot(hv), s_k + Tr::kKvTileBytes, true);
          wg::fence_async_smem();
          wg::mbar_arrive(&full_v[slot]);
          wg::named_sync(1, kPThreads);  // V(it)'s staging slot read by everyone
          if (ptid == 0 && hv + 3 < n_half) issue_stag(hv + 3);
        }
#endif
        return;
      }
    }
    if constexpr (Tr::kKvInt8) {
      // int8 rows are staged by cp.async (one K and one V staging tile), then converted into the
      // ring. Groups in flight at the top of iteration it, oldest first: K(it), V(it). K(it + 1) is
      // issued as soon as K(it) is converted, so its latency hides under V(it)'s conversion and the
      // consumers' work; tile it + 1's metadata is fetched (s_off[(it + 1) % 2], registers) before
      // its ring slot is free, just before K(it)'s conversion (the barrier after the staging wait
      // publishes s_off to the copies of it + 1).
      if (n_iter > 0) {
        meta = fetch(0, 0);
        wg::named_sync(1, kPThreads);
        issue(0, false, stag_at(s_stag_k));
        tc::cp_async_commit();
        issue(0, true, stag_at(s_stag_v));
        tc::cp_async_commit();
      }
      for (int it = 0; it < n_iter; ++it) {
        const int slot = it % kStages;
        const bool more = it + 1 < n_iter;
        uint8_t* s_k = stage_k(slot);
        wg::mbar_wait(&empty_k[slot], ((it / kStages) & 1) ^ 1);
        publish(meta, slot);
        if (more) meta = fetch(it + 1, (it + 1) % kStages);
        tc::cp_async_wait<1>();
        wg::named_sync(1, kPThreads);  // K(it) staged by every producer thread
        convert(s_stag_k, s_k, false);
        wg::fence_async_smem();
        wg::mbar_arrive(&full_k[slot]);
        wg::named_sync(1, kPThreads);  // staging K read by everyone
        if (more) issue((it + 1) % kStages, false, stag_at(s_stag_k));
        tc::cp_async_commit();
        tc::cp_async_wait<1>();
        wg::named_sync(1, kPThreads);  // V(it) staged
        wg::mbar_wait(&empty_v[slot], ((it / kStages) & 1) ^ 1);
        convert(s_stag_v, s_k + Tr::kKvTileBytes, false);
        wg::fence_async_smem();
        wg::mbar_arrive(&full_v[slot]);
        wg::named_sync(1, kPThreads);  // staging V read by everyone
        if (more) issue((it + 1) % kStages, true, stag_at(s_stag_v));
        tc::cp_async_commit();
      }
    } else if (maps.use) {
#if KVQ_SM90_ENABLED
      // q-dtype cache by TMA (issue_tma): straight into the ring's swizzled panels (the TMA 128-byte
      // swizzle is the panel layout). Rows past kv_len inside a present block are copied as they
      // are; the consumers zero them in V (K's are masked).
      if (n_iter > 0) meta = fetch(0, 0);
      for (int it = 0; it < n_iter; ++it) {
        const int slot = it % kStages;
        uint8_t* s_k = stage_k(slot);
        wg::mbar_wait(&empty_k[slot], ((it / kStages) & 1) ^ 1);
        publish(meta, slot);
        if (ptid == 0)
          issue_tma(&maps.k, s_k, slot, &full_k[slot]);
        else
          wg::mbar_arrive(&full_k[slot]);
        wg::mbar_wait(&empty_v[slot], ((it / kStages) & 1) ^ 1);
        if (ptid == 0) issue_tma(&maps.v, s_k + Tr::kKvTileBytes, slot, &full_v[slot]);
        if (it + 1 < n_iter) {
          // Tile it + 1's box entries go to the other slot: thread 0 has read this slot's above,
          // and the next publish barrier orders the writes before its reads.
          meta = fetch(it + 1, (it + 1) % kStages);
        }
      }
#endif
    } else {
      // q-dtype cache: straight into the ring's swizzled panels, never blocking on the copies: each
      // thread's K copies complete one arrival on full_k (cp.async.mbarrier.arrive.noinc), its V
      // copies one on full_v; a plain arrival on full_k releases the tile's metadata. The consumers
      // fence the landed tile for the async proxy before wgmma reads it. Tile it + 1's metadata is
      // fetched right after tile it's copies are issued.
      if (n_iter > 0) meta = fetch(0, 0);
      for (int it = 0; it < n_iter; ++it) {
        const int slot = it % kStages;
        wg::mbar_wait(&empty_k[slot], ((it / kStages) & 1) ^ 1);
        publish(meta, slot);
        wg::mbar_arrive(&full_k[slot]);
        uint8_t* s_k = stage_k(slot);
        issue(slot, false, ring_at(s_k));
        wg::cp_async_arrive_noinc(&full_k[slot]);
        wg::mbar_wait(&empty_v[slot], ((it / kStages) & 1) ^ 1);
        issue(slot, true, ring_at(s_k + Tr::kKvTileBytes));
        wg::cp_async_arrive_noinc(&full_v[slot]);
        if (it + 1 < n_iter) meta = fetch(it + 1, (it + 1) % kStages);
      }
    }
    tc::cp_async_wait<0>();
    return;
  }

  // ================= consumers =================
  wg::regs_inc<Tr::kConsumerRegs>();
  const int cw = warpgroup - Tr::kProducerWGs;  // 0 or 1: rows [64 cw, 64 cw + 64) of the tile
  const int ctid = tid - 128 * warpgroup;
  const int warp_in = ctid / 32;
  auto q_head_of = [&](int head_in_group) {
    return p.gqa_interleaved ? head_in_group * p.num_kv_heads + kv_head : kv_head * group + head_in_group;
  };

  // ---- Q rows of this warpgroup -> shared (swizzled panels; K's per-channel scale folded in) ----
  float q_pow2 = 1.f;  // kFp16Math: Q was stored times 1 / q_pow2 (a power of two); S is scaled back
  {
    const TQ* q_ptr = static_cast<const TQ*>(p.q);
    constexpr int kQChunks = kHeadDim / 8;
    // Chunk idx of this warpgroup's rows (8 values): false for padding rows and columns (zeros).
    auto q_src = [&](int idx) -> const TQ* {
      const int r = cw * 64 + idx / kQChunks;
      const int ch = idx % kQChunks;
      const int pr = row0 + r;
      if (!(pr < packed_len && ch * 8 < p.head_dim)) return nullptr;
      uint32_t tok, hin;
      p.group_div.divmod(static_cast<uint32_t>(pr), tok, hin);
      return q_ptr + (static_cast<int64_t>(q_start) + tok) * p.q_stride_n +
             static_cast<int64_t>(q_head_of(static_cast<int>(hin))) * p.q_stride_h + ch * 8;
    };
    // The chunk as fp32, times K's per-channel scale.
    auto load_chunk = [&](const TQ* src, int ch, float (&x)[8]) {
      const uint4 v = *reinterpret_cast<const uint4*>(src);
      const uint32_t* w = reinterpret_cast<const uint32_t*>(&v);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float2 f = tc::unpack2<TQ>(w[e]);
        x[2 * e] = f.x;
        x[2 * e + 1] = f.y;
        if (k_per_channel) {
          const int d = ch * 8 + 2 * e;
          x[2 * e] *= tc::load_scale_any(p.k_scale, kv_head * p.ks_stride_a + d * p.ks_stride_b, p.k_scale_dtype);
          x[2 * e + 1] *=
              tc::load_scale_any(p.k_scale, kv_head * p.ks_stride_a + (d + 1) * p.ks_stride_b, p.k_scale_dtype);
        }
      }
    };
    if constexpr (Tr::kQkInt8) {
      // Two threads per row (64 rows, 128 threads), half the row's 8-value chunks each: the row's
      // max|q'| (fmaxf: a NaN is skipped and carried in the row's factor instead, as src/cpu
      // does), s_q = max / 127 (1 below 1e-6), then hi = clamp(round(q' / s_q), -127, 127) and
      // lo = clamp(round((q' / s_q - hi) * 128), -127, 127) (the IEEE quotient; the difference and
      // the * 128 are exact) into the hi and lo tiles. Padding rows and columns stay zero.
      const int r = cw * 64 + ctid / 2;
      const int half = ctid & 1;
      constexpr int kHalfChunks = kQChunks / 2;
      const TQ* row_src = q_src((r - cw * 64) * kQChunks);  // chunk 0 of the row (null: padding row)
      float amax = 0.f;
      bool has_nan = false;
      for (int c = 0; c < kHalfChunks; ++c) {
        const int ch = half * kHalfChunks + c;
        if (row_src == nullptr || ch * 8 >= p.head_dim) continue;
        float x[8];
        load_chunk(row_src + ch * 8, ch, x);
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          amax = fmaxf(amax, fabsf(x[e]));
          has_nan = has_nan || x[e] != x[e];
        }
      }
      amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 1));
      has_nan = (__shfl_xor_sync(0xffffffffu, has_nan ? 1 : 0, 1) != 0) || has_nan;
      float s_q8 = amax / 127.f;
      if (s_q8 < 1e-6f) s_q8 = 1.f;
      uint8_t* s_hi = s_q;
      uint8_t* s_lo = s_q + Tr::kQ8PartBytes;
      for (int c = 0; c < kHalfChunks; ++c) {
        const int ch = half * kHalfChunks + c;
        uint32_t hw[2] = {0u, 0u}, lw[2] = {0u, 0u};
        if (row_src != nullptr && ch * 8 < p.head_dim) {
          float x[8];
          load_chunk(row_src + ch * 8, ch, x);
#pragma unroll
          for (int e = 0; e < 8; ++e) {
            const float t = __fdiv_rn(x[e], s_q8);
            int hi = __float2int_rn(t);  // NaN: 0
            hi = hi < -127 ? -127 : (hi > 127 ? 127 : hi);
            int lo = __float2int_rn(__fmul_rn(__fsub_rn(t, static_cast<float>(hi)), 128.f));
            lo = lo < -127 ? -127 : (lo > 127 ? 127 : lo);
            hw[e / 4] |= (static_cast<uint32_t>(hi) & 0xffu) << (8 * (e % 4));
            lw[e / 4] |= (static_cast<uint32_t>(lo) & 0xffu) << (8 * (e % 4));
          }
        }
        // Byte column 8 ch: 16-byte chunk ch / 2 of the int8 panels (addressed as the 16-bit
        // layout's column 8 (ch / 2)), half ch % 2 of it.
        const uint32_t off = wg::tile_offset(kTileQ, r, (ch / 2) * 8) + (ch % 2) * 8;
        *reinterpret_cast<uint2*>(s_hi + off) = make_uint2(hw[0], hw[1]);
        *reinterpret_cast<uint2*>(s_lo + off) = make_uint2(lw[0], lw[1]);
      }
      if (half == 0)
        reinterpret_cast<float*>(smem + Tr::kSqOff)[r] = has_nan ? __int_as_float(0x7fc00000) : s_q8;
    } else {
      float q_inv = 1.f;
      if constexpr (Tr::kFp16Math) {
        // The largest finite |q'| of the warpgroup's rows (non-finite values stay non-finite in fp16
        // and make their rows NaN as in bf16 math).
        float amax = 0.f;
        for (int idx = ctid; idx < 64 * kQChunks; idx += 128) {
          const TQ* src = q_src(idx);
          if (src == nullptr) continue;
          float x[8];
          load_chunk(src, idx % kQChunks, x);
  #pragma unroll
          for (int e = 0; e < 8; ++e)
            if (fabsf(x[e]) <= 3.402823466e38f) amax = fmaxf(amax, fabsf(x[e]));
        }
        const unsigned wmax = __reduce_max_sync(0xffffffffu, __float_as_uint(amax));  // non-negative floats
        float* s_qmax = reinterpret_cast<float*>(smem + Tr::kQmaxOff) + cw * 4;
        if (lane == 0) s_qmax[warp_in] = __uint_as_float(wmax);
        wg::named_sync(2 + cw, 128);
        amax = fmaxf(fmaxf(s_qmax[0], s_qmax[1]), fmaxf(s_qmax[2], s_qmax[3]));
        // 2^e with e in [-120, 120]: both 2^e and 2^-e are normal floats.
        const int e = amax > 0.f ? min(max(ilogbf(amax) - 14, -120), 120) : 0;
        q_pow2 = ldexpf(1.f, e);
        q_inv = ldexpf(1.f, -e);
      }
      for (int idx = ctid; idx < 64 * kQChunks; idx += 128) {
        const int r = cw * 64 + idx / kQChunks;
        const int ch = idx % kQChunks;
        const TQ* src = q_src(idx);
        uint4 v = make_uint4(0, 0, 0, 0);
        if (src != nullptr) {
          if (!k_per_channel && !Tr::kFp16Math) {
            v = *reinterpret_cast<const uint4*>(src);  // as it is
          } else {
            float x[8];
            load_chunk(src, ch, x);
            v.x = tc::pack2<T>(x[0] * q_inv, x[1] * q_inv);
            v.y = tc::pack2<T>(x[2] * q_inv, x[3] * q_inv);
            v.z = tc::pack2<T>(x[4] * q_inv, x[5] * q_inv);
            v.w = tc::pack2<T>(x[6] * q_inv, x[7] * q_inv);
          }
        }
        *reinterpret_cast<uint4*>(s_q + wg::tile_offset(kTileQ, r, ch * 8)) = v;
      }
    }
    wg::fence_async_smem();
    wg::named_sync(2 + cw, 128);
  }

  auto row_of = [&](int rr) { return row0 + cw * 64 + warp_in * 16 + rr * 8 + lane / 4; };
  auto row_pos = [&](int rr) {
    return delta + min(static_cast<int>(p.group_div.div(static_cast<uint32_t>(row_of(rr)))), q_len - 1);
  };

  float o[kHeadDim / 2];
#pragma unroll
  for (int i = 0; i < kHeadDim / 2; ++i) o[i] = 0.f;
  float m[2] = {kNegInf, kNegInf};
  float l[2] = {-0.f, -0.f};  // -0 until a visible key is met (tells empty rows from all -inf ones)
  float sigma = 0.f;
  float o_scale[2] = {1.f, 1.f};  // the rescale of O that the last softmax asks for (applied before its P·V)
  float v_inv = 1.f;              // kFactorV: 1 / sigma of the last softmax (multiplies P's V scales)

  const uint32_t q_addr = tc::smem_addr(s_q) + cw * 64 * 128;
  uint32_t pa[kTileKv / 16][4];
  float s[kTileKv / 2];

  // ---- the mainloop's stages (the orderings below compose them) ----
  // Issues S = Q·Kᵀ of the tile in `slot` (one committed wgmma group; the caller waits).
  auto qk_issue = [&](int slot) {
    const uint32_t k_addr = tc::smem_addr(stage_k(slot));
    wg::fence();
#pragma unroll
    for (int kk = 0; kk < kHeadDim / 16; ++kk) {
      const uint64_t da = wg::desc_k_major(q_addr + (kk / 4) * Tr::kQPanelBytes + (kk % 4) * 32);
      const uint64_t db = wg::desc_k_major(k_addr + (kk / 4) * Tr::kKvPanelBytes + (kk % 4) * 32);
      wg::Mma<kTileKv, T>::template ss<0>(s, da, db, kk > 0 ? 1 : 0);
    }
    wg::commit();
  };
  // kQkInt8: S = Q·Kᵀ in int32 from the int8 tiles, hi·k8 and lo·k8 in two accumulators issued
  // together (one committed group; the caller waits), each started at the bits of 1.5 * 2^23:
  // |hi·k8| <= 127 * 127 * 256 and |lo·k8| <= 64 * 128 * 256 are below 2^22, so each sum read as a
  // float is exactly 1.5 * 2^23 + the sum, and s8_to_scores makes S = hi·k8 + lo·k8 / 128 with one
  // fused multiply-add (one rounding, as float(128 hi·k8 + lo·k8) / 128) and no int -> float
  // conversion instruction (a quarter-rate one). Each row's s_q joins the softmax's scale.
  constexpr uint32_t kMagicBits = 0x4B400000u;  // 1.5 * 2^23
  uint32_t si[Tr::kQkInt8 ? kTileKv / 2 : 1], sl[Tr::kQkInt8 ? kTileKv / 2 : 1];
  float row_sq[2] = {1.f, 1.f};
  if constexpr (Tr::kQkInt8) {
#pragma unroll
    for (int rr = 0; rr < 2; ++rr)
      row_sq[rr] = reinterpret_cast<const float*>(smem + Tr::kSqOff)[cw * 64 + warp_in * 16 + rr * 8 + lane / 4];
  }
  auto qk_issue_s8 = [&](int slot) {
    if constexpr (Tr::kQkInt8) {
      const uint32_t k_addr = tc::smem_addr(stage_k(slot));
#pragma unroll
      for (int i = 0; i < kTileKv / 2; ++i) si[i] = sl[i] = kMagicBits;
      // Pinned before the fence: an accumulator written after it would make ptxas serialize the wgmmas.
      wg::fence_operand(si);
      wg::fence_operand(sl);
      wg::fence();
#pragma unroll
      for (int kk = 0; kk < kHeadDim / 32; ++kk) {
        const uint64_t db = wg::desc_k_major(k_addr + (kk / 4) * Tr::kKvPanelBytes + (kk % 4) * 32);
        const uint32_t qa = q_addr + (kk / 4) * Tr::kQPanelBytes + (kk % 4) * 32;
        wg::MmaS8<kTileKv>::ss(si, wg::desc_k_major(qa), db, 1);
        wg::MmaS8<kTileKv>::ss(sl, wg::desc_k_major(qa + Tr::kQ8PartBytes), db, 1);
      }
      wg::commit();
    }
  };
  auto s8_to_scores = [&]() {
    if constexpr (Tr::kQkInt8) {
      // (1.5 * 2^23 + hi) - (1.5 * 2^23 + 1.5 * 2^16) is exact; + (1.5 * 2^23 + lo) / 128 rounds once.
      constexpr float kOffset = 12582912.f + 98304.f;
#pragma unroll
      for (int i = 0; i < kTileKv / 2; ++i)
        s[i] = fmaf(__uint_as_float(sl[i]), 1.f / 128.f, __uint_as_float(si[i]) - kOffset);
    }
  };
  // Issues O += P·V of the tile in `slot` with P in pa (one committed group).
  auto pv_issue = [&](int slot) {
    const uint32_t v_addr = tc::smem_addr(stage_k(slot)) + Tr::kKvTileBytes;
    wg::fence();
#pragma unroll
    for (int kt = 0; kt < kTileKv / 16; ++kt) {
      const uint64_t dv = wg::desc_mn_major(v_addr + kt * 16 * 128, Tr::kKvPanelBytes);
      wg::Mma<kHeadDim, T>::template rs<1>(o, pa[kt], dv, 1);
    }
    wg::commit();
  };
  // Scale, mask, online softmax of S (log2 domain; the tensor-core prefill's, one m16 tile): S
  // becomes P (fp32), m and l move on, o_scale / v_inv say how O and P must be scaled. Touches
  // neither O nor pa, so it may run while a P·V is in flight.
  auto softmax = [&](int slot, int kv0) {
    const float* s_ks = s_scale + slot * 2 * kTileKv;
    const bool tile_has_invalid = s_flag[slot] != 0;
    const bool need_mask = tile_has_invalid || tile_needs_mask(kv0, kTileKv, kv_len, pos_min, pos_max, p.causal != 0,
                                                               p.local_window, p.global_window);
    const float sc_mul = (k_per_token ? 1.f : p.sm_scale_log2) * q_pow2;
    if (k_per_token) {
#pragma unroll
      for (int nb = 0; nb < kNbKv; ++nb) {
        const float2 sc = *reinterpret_cast<const float2*>(s_ks + nb * 8 + 2 * (lane % 4));
        s[4 * nb + 0] *= sc.x;
        s[4 * nb + 1] *= sc.y;
        s[4 * nb + 2] *= sc.x;
        s[4 * nb + 3] *= sc.y;
      }
    }
    bool row_any[2] = {true, true};
    if (need_mask) {
      const uint8_t* valid = s_valid + slot * kTileKv;
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        const int pos = row_pos(rr);
        const RowBounds rb = row_bounds(pos, kv_len, p.causal != 0, p.local_window);
        bool any = false;
#pragma unroll
        for (int nb = 0; nb < kNbKv; ++nb) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int c = nb * 8 + 2 * (lane % 4) + e;
            const int j = kv0 + c;
            const bool vis = key_visible(j, rb, p.global_window) && valid[c] != 0;
            if (!vis) s[4 * nb + 2 * rr + e] = kNegInf;
            any = any || vis;
          }
        }
        row_any[rr] = any;
      }
    }
    float v_rescale = 1.f;
    if constexpr (Tr::kFactorV) {
      float tile_max = s_vmax[slot * (kTileKv / 32)];
#pragma unroll
      for (int w = 1; w < kTileKv / 32; ++w) tile_max = fmaxf(tile_max, s_vmax[slot * (kTileKv / 32) + w]);
      const float sigma_new = fmaxf(sigma, tile_max);
      v_rescale = sigma_new > 0.f ? sigma / sigma_new : 1.f;
      v_inv = sigma_new > 0.f ? 1.f / sigma_new : 0.f;
      sigma = sigma_new;
    }
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      float mx = kNegInf;
#pragma unroll
      for (int nb = 0; nb < kNbKv; ++nb) mx = fmaxf(mx, fmaxf(s[4 * nb + 2 * rr], s[4 * nb + 2 * rr + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float sc_row = sc_mul * row_sq[rr];  // kQkInt8: the row's s_q (NaN: a NaN in q'); else 1
      mx = fmaxf(m[rr], __fmul_ru(mx, sc_row));
      const float m_use = mx == kNegInf ? 0.f : mx;
      const float alpha = tc::fast_exp2(m[rr] - m_use);
      m[rr] = mx;
      float sum = 0.f;
#pragma unroll
      for (int nb = 0; nb < kNbKv; ++nb) {
        const float p0 = tc::fast_exp2(fmaf(s[4 * nb + 2 * rr], sc_row, -m_use));
        const float p1 = tc::fast_exp2(fmaf(s[4 * nb + 2 * rr + 1], sc_row, -m_use));
        s[4 * nb + 2 * rr] = p0;
        s[4 * nb + 2 * rr + 1] = p1;
        sum += p0 + p1;
      }
      l[rr] = row_any[rr] ? l[rr] * alpha + sum : l[rr] * alpha;
      o_scale[rr] = alpha * v_rescale;
    }
  };
  auto rescale_o = [&]() {
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
#pragma unroll
      for (int nb = 0; nb < kNbD; ++nb) {
        o[4 * nb + 2 * rr] *= o_scale[rr];
        o[4 * nb + 2 * rr + 1] *= o_scale[rr];
      }
    }
  };
  // P -> wgmma A fragments in the q dtype, the per-token V scale applied first.
  auto convert_p = [&](int slot) {
    const float* s_vs = s_scale + slot * 2 * kTileKv + kTileKv;
#pragma unroll
    for (int kt = 0; kt < kTileKv / 16; ++kt) {
      float2 vs0 = make_float2(1.f, 1.f), vs1 = make_float2(1.f, 1.f);
      if (v_per_token) {
        vs0 = *reinterpret_cast<const float2*>(s_vs + kt * 16 + 2 * (lane % 4));
        vs1 = *reinterpret_cast<const float2*>(s_vs + kt * 16 + 8 + 2 * (lane % 4));
        if constexpr (Tr::kFactorV) {
          vs0.x *= v_inv;
          vs0.y *= v_inv;
          vs1.x *= v_inv;
          vs1.y *= v_inv;
        }
      }
      pa[kt][0] = tc::pack2<T>(s[8 * kt + 0] * vs0.x, s[8 * kt + 1] * vs0.y);
      pa[kt][1] = tc::pack2<T>(s[8 * kt + 2] * vs0.x, s[8 * kt + 3] * vs0.y);
      pa[kt][2] = tc::pack2<T>(s[8 * kt + 4] * vs1.x, s[8 * kt + 5] * vs1.y);
      pa[kt][3] = tc::pack2<T>(s[8 * kt + 6] * vs1.x, s[8 * kt + 7] * vs1.y);
    }
  };
  auto wait_k = [&](int it) {
    wg::mbar_wait(&full_k[it % kStages], (it / kStages) & 1);
    if constexpr (!Tr::kKvInt8 || Tr::kQkInt8) wg::fence_async_smem();  // tile written by cp.async (generic proxy)
  };
  auto wait_v = [&](int it) {
    wg::mbar_wait(&full_v[it % kStages], (it / kStages) & 1);
    if constexpr (!Tr::kKvInt8) {
      wg::fence_async_smem();
      // TMA copies whole boxes: V rows of the tile at or past kv_len hold whatever the cache has
      // there (maybe NaN, and P is 0 there, 0 x NaN = NaN). Both consumers zero them, then meet
      // (named barrier 6) so neither's P·V reads the tile before. Only the tile that holds kv_len.
      const int r0 = max(kv_len - tile_of(it) * kTileKv, 0);
      if (maps.use && r0 < kTileKv) {
        uint8_t* vt = stage_k(it % kStages) + Tr::kKvTileBytes;
        constexpr int kChunks = kHeadDim / 8;
        for (int idx = tid - Tr::kProducerThreads; idx < (kTileKv - r0) * kChunks; idx += 256) {
          const int r = r0 + idx / kChunks, c = idx % kChunks;
          *reinterpret_cast<uint4*>(vt + wg::tile_offset(kTileKv, r, c * 8)) = make_uint4(0, 0, 0, 0);
        }
        wg::fence_async_smem();
        wg::named_sync(6, 256);
      }
    }
  };

  if constexpr (kOrder == kWgSerial) {
    // Serial order: S(it), softmax(it), P·V(it), each waited for before the next.
    for (int it = 0; it < n_iter; ++it) {
      const int slot = it % kStages;
      wait_k(it);
      if constexpr (Tr::kQkInt8) {
        qk_issue_s8(slot);
        wg::wait<0>();
        wg::fence_operand(si);
        wg::fence_operand(sl);
        s8_to_scores();
      } else {
        qk_issue(slot);
        wg::wait<0>();
        wg::fence_operand(s);
      }
      wg::fence_operand(o);
      if (!(p.diag & 2)) softmax(slot, tile_of(it) * kTileKv);
      rescale_o();
      convert_p(slot);
      wg::mbar_arrive(&empty_k[slot]);
      wait_v(it);
      pv_issue(slot);
      wg::wait<0>();
      wg::fence_operand(o);
      wg::mbar_arrive(&empty_v[slot]);
    }
  } else if (n_iter > 0) {
    static_assert(!Tr::kQkInt8, "int8 Q·Kᵀ: serial order only");
    // FlashAttention-3's order inside a warpgroup: S(it) is issued, then P·V(it - 1), and the
    // softmax of S(it) runs while P·V(it - 1) is still on the tensor cores. Inside each pair of
    // (commit, wait) no instruction touches the in-flight accumulators (S, then O and pa), so
    // ptxas keeps the wgmma pipeline.
    // kWgPingPong: the two consumers take turns issuing their GEMMs (named barriers 4 + cw; the
    // other consumer's arrival lets this one go), so one's softmax runs under the other's GEMMs.
    int phase = 0;
    const int n_phases = n_iter + 1;
    auto turn_begin = [&]() {
      if constexpr (kOrder == kWgPingPong) wg::named_sync(4 + cw, 256);
    };
    auto turn_end = [&]() {
      if constexpr (kOrder == kWgPingPong) {
        // The second consumer's last turn hands over to no one (every sync is matched by one arrival).
        if (!(cw == 1 && phase == n_phases - 1)) wg::named_arrive(4 + (cw ^ 1), 256);
      }
      ++phase;
    };
    if constexpr (kOrder == kWgPingPong) {
      if (cw == 1) wg::named_arrive(4, 256);  // the first consumer goes first
    }
    wait_k(0);
    turn_begin();
    qk_issue(0);
    turn_end();
    wg::wait<0>();
    wg::fence_operand(s);
    softmax(0, tile_of(0) * kTileKv);
    convert_p(0);
    wg::mbar_arrive(&empty_k[0]);
    for (int it = 1; it < n_iter; ++it) {
      const int slot = it % kStages, prev = (it - 1) % kStages;
      wait_k(it);
      rescale_o();
      wg::fence_operand(o);
      wait_v(it - 1);
      turn_begin();
      qk_issue(slot);
      pv_issue(prev);
      turn_end();
      wg::wait<1>();  // S(it) done; P·V(it - 1) may still run
      wg::fence_operand(s);
      softmax(slot, tile_of(it) * kTileKv);
      wg::wait<0>();
      wg::fence_operand(o);
      wg::mbar_arrive(&empty_v[prev]);
      convert_p(slot);
      wg::mbar_arrive(&empty_k[slot]);
    }
    rescale_o();
    wg::fence_operand(o);
    wait_v(n_iter - 1);
    turn_begin();
    pv_issue((n_iter - 1) % kStages);
    turn_end();
    wg::wait<0>();
    wg::fence_operand(o);
    wg::mbar_arrive(&empty_v[(n_iter - 1) % kStages]);
  }

  // ---- epilogue: normalize, per-channel V scale, write rows that exist ----
  TQ* out_ptr = static_cast<TQ*>(p.out);
  constexpr float kLn2 = 0.693147180559945309f;
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    float lt = l[rr];
    lt += __shfl_xor_sync(0xffffffffu, lt, 1);
    lt += __shfl_xor_sync(0xffffffffu, lt, 2);
    const bool empty_row = __float_as_uint(lt) == 0x80000000u;
    const bool nan_row = !empty_row && !(lt > 0.f);
    const float kNaN = __int_as_float(0x7fc00000);
    const float inv = (empty_row || nan_row) ? 0.f : (Tr::kFactorV ? sigma : 1.f) / lt;
    const int pr = row_of(rr);
    if (pr >= packed_len) continue;
    uint32_t tok, hin;
    p.group_div.divmod(static_cast<uint32_t>(pr), tok, hin);
    const int64_t tq = static_cast<int64_t>(q_start) + tok;
    const int qh = q_head_of(static_cast<int>(hin));
    TQ* orow = out_ptr + tq * p.o_stride_n + static_cast<int64_t>(qh) * p.o_stride_h;
#pragma unroll
    for (int nb = 0; nb < kNbD; ++nb) {
      const int d = nb * 8 + 2 * (lane % 4);
      if (d < p.head_dim) {
        float v0 = o[4 * nb + 2 * rr] * inv;
        float v1 = o[4 * nb + 2 * rr + 1] * inv;
        if (v_per_channel && !empty_row && !nan_row) {
          v0 *= tc::load_scale_any(p.v_scale, kv_head * p.vs_stride_a + d * p.vs_stride_b, p.v_scale_dtype);
          v1 *= tc::load_scale_any(p.v_scale, kv_head * p.vs_stride_a + (d + 1) * p.vs_stride_b, p.v_scale_dtype);
        }
        if (empty_row) v0 = v1 = 0.f;
        if (nan_row) v0 = v1 = kNaN;
        *reinterpret_cast<uint32_t*>(orow + d) = tc::pack2<TQ>(v0, v1);
      }
    }
    if (p.lse != nullptr && lane % 4 == 0) {
      p.lse[tq * p.lse_stride_n + static_cast<int64_t>(qh) * p.lse_stride_h] =
          empty_row ? kNegInf : (nan_row ? kNaN : (m[rr] + __log2f(lt)) * kLn2);
    }
  }
#else
  __trap();  // the host launches this kernel on sm_90 only
#endif
}

template <typename Tr, int kOrder>
__global__ void __launch_bounds__(Tr::kNumThreads, 1) wg_prefill_kernel(const __grid_constant__ TcPrefillParams p,
                                                                          const __grid_constant__ WgTmaMaps maps) {
  extern __shared__ __align__(16) uint8_t smem[];
  wg_prefill_device<Tr, kOrder>(p, maps, smem);
}

}  // namespace kvq::cuda::hopper
