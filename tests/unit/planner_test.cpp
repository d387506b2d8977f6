// tests/unit/planner_test.cpp — the planner's kernel choices (src/core/plan.cpp), observed without
// a GPU: CUDA-device views at made-up addresses (the planner reads shapes, strides and pointer
// alignment, never data), a fake device description (detail::DeviceInfo: sm_90 or not, SM count,
// the tensor-core decode's occupancy per form) and the KVQ_* overrides passed as a PlannerEnv.
// Covers each choice the planner owns — the tensor-core prefill's mainloop (mma.sync / Hopper,
// serial / ping-pong), the tensor-core decode's form (cp.async / TMA / TMA with int8 Q·Kᵀ), the
// short-chunk route and its split count, the decode route (KVQ_DECODE_PATH) — and how a call's
// views and device take a planned choice down (resolve_*_launch), with the errors of forced paths.
// The same functions plan every real call, so these are the choices a GPU run makes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "kvq/kvq.h"
#include "src/core/kernels.h"
#include "src/core/plan.h"
#include "src/core/validate.h"

namespace {

using kvq::DecodeVariant;
using kvq::Device;
using kvq::DType;
using kvq::PrefillKernel;
using kvq::PrefillMainloop;
using kvq::PrefillPath;
using kvq::TensorView;
using kvq::detail::AttnProblem;
using kvq::detail::DeviceInfo;
using kvq::detail::KernelLaunch;
using kvq::detail::LaunchKernel;
using kvq::detail::PlannerEnv;

// Resident CTAs per SM the fake device reports for each tensor-core decode form (distinct, so a
// split count shows which form it was sized for).
int fake_ctas_per_sm(const AttnProblem&, int64_t, DecodeVariant variant, int) {
  return variant == DecodeVariant::kCpAsync ? 3 : variant == DecodeVariant::kTma ? 2 : 1;
}

DeviceInfo fake_device(bool sm90, int sm_count = 132) {
  DeviceInfo d;
  d.usable = true;
  d.sm_count = sm_count;
  d.sm90 = sm90;
  d.mma_decode_ctas_per_sm = &fake_ctas_per_sm;
  return d;
}

const DeviceInfo kH200 = fake_device(true);
const DeviceInfo kA100 = fake_device(false, 108);
const DeviceInfo kNoDevice{};

bool default_lists() {
  return kvq::detail::tc_head_dim_built(64) && kvq::detail::tc_head_dim_built(96) &&
         kvq::detail::tc_head_dim_built(128) && kvq::detail::wg_has_head_dim(64) &&
         kvq::detail::wg_has_head_dim(128) && !kvq::detail::wg_has_head_dim(96) &&
         kvq::detail::mma_decode_has_head_dim(128) && !kvq::detail::mma_decode_has_head_dim(96);
}

#define REQUIRE_DEFAULT_LISTS()                                                                  \
  if (!default_lists()) GTEST_SKIP() << "written for the default head-dim lists of CMakeLists.txt"

// Views of a CUDA call at made-up device addresses, each in its own 2^36-byte range (never
// dereferenced: the planner and validation read shapes, strides and addresses only).
struct FakeCall {
  int64_t batch = 2, hq = 8, hkv = 2, head_dim = 128, page = 16, blocks = 64, max_blocks = 16;
  std::vector<int64_t> q_lens{3, 5}, kv_lens{40, 200};
  DType q_dtype = DType::kBFloat16, kv_dtype = DType::kInt8;
  uintptr_t q_offset = 0, out_offset = 0;  // a few bytes: a misaligned view
  bool v_block_stride_differs = false;     // V blocks interleaved with K blocks: other strides

  std::vector<int32_t> cu_host, kv_host;

  static void* at(int slot, uintptr_t offset = 0) {
    return reinterpret_cast<void*>((static_cast<uintptr_t>(slot) << 36) + offset);
  }
  TensorView cuda(void* data, DType dtype, std::initializer_list<int64_t> shape) const {
    return TensorView::make(data, dtype, shape, Device::kCUDA, 0);
  }
  int64_t total_q() const {
    int64_t t = 0;
    for (int64_t q : q_lens) t += q;
    return t;
  }

  void fill_cache(kvq::PagedKvCache& kv) {
    kv.k_cache = cuda(at(3), kv_dtype, {blocks, hkv, page, head_dim});
    if (v_block_stride_differs) {
      const int64_t block = hkv * page * head_dim;
      kv.v_cache = TensorView::make_strided(at(4), kv_dtype, {blocks, hkv, page, head_dim},
                                            {2 * block, page * head_dim, head_dim, 1}, Device::kCUDA, 0);
    } else {
      kv.v_cache = cuda(at(4), kv_dtype, {blocks, hkv, page, head_dim});
    }
    if (kv_dtype == DType::kInt8) {
      kv.k_scale = cuda(at(5), DType::kFloat32, {hkv, head_dim});
      kv.v_scale = cuda(at(6), DType::kFloat32, {hkv, head_dim});
    }
  }

  kvq::PrefillArgs prefill(PrefillPath path = PrefillPath::kAuto) {
    cu_host.assign(1, 0);
    for (int64_t q : q_lens) cu_host.push_back(static_cast<int32_t>(cu_host.back() + q));
    kv_host.assign(kv_lens.begin(), kv_lens.end());
    kvq::PrefillArgs a;
    const int64_t t = total_q();
    a.q = cuda(at(1, q_offset), q_dtype, {t, hq, head_dim});
    a.out = cuda(at(2, out_offset), q_dtype, {t, hq, head_dim});
    fill_cache(a.kv);
    a.block_tables = cuda(at(7), DType::kInt32, {batch, max_blocks});
    a.cu_q_lens = cuda(at(8), DType::kInt32, {batch + 1});
    a.kv_lens = cuda(at(9), DType::kInt32, {batch});
    a.path = path;
    return a;
  }

  kvq::DecodeArgs decode() {
    kvq::DecodeArgs a;
    a.q = cuda(at(1, q_offset), q_dtype, {batch, hq, head_dim});
    a.out = cuda(at(2, out_offset), q_dtype, {batch, hq, head_dim});
    fill_cache(a.kv);
    a.block_tables = cuda(at(7), DType::kInt32, {batch, max_blocks});
    a.kv_lens = cuda(at(9), DType::kInt32, {batch});
    return a;
  }
};

struct Planned {
  AttnProblem p;
  kvq::PrefillPlan plan;
};

Planned plan_of(FakeCall& c, const kvq::PrefillArgs& a, const DeviceInfo& dev, const PlannerEnv& env = {},
                bool host_lengths = true) {
  Planned r;
  r.p = kvq::detail::validate_prefill(a, "planner_test");
  r.plan = kvq::detail::make_prefill_plan(a, r.p, host_lengths ? c.cu_host.data() : nullptr,
                                          host_lengths ? c.kv_host.data() : nullptr, "planner_test", dev, env);
  return r;
}

PlannerEnv env_with(std::string PlannerEnv::*field, const char* value) {
  PlannerEnv e;
  e.*field = value;
  return e;
}

// ---- the tensor-core prefill's mainloop ----

TEST(PlannerMainloop, HopperFromTheRowThresholdOnSm90Only) {
  REQUIRE_DEFAULT_LISTS();
  using kvq::detail::choose_tc_mainloop;
  using kvq::detail::kWgMinPackedRows;
  const PlannerEnv env;
  EXPECT_EQ(choose_tc_mainloop(128, kWgMinPackedRows, kH200, env), PrefillMainloop::kWgmma);
  EXPECT_EQ(choose_tc_mainloop(128, kWgMinPackedRows - 1, kH200, env), PrefillMainloop::kMmaSync);
  EXPECT_EQ(choose_tc_mainloop(128, 1 << 20, kA100, env), PrefillMainloop::kMmaSync) << "not sm_90";
  EXPECT_EQ(choose_tc_mainloop(128, 1 << 20, kNoDevice, env), PrefillMainloop::kMmaSync) << "no device";
  EXPECT_EQ(choose_tc_mainloop(96, 1 << 20, kH200, env), PrefillMainloop::kMmaSync) << "no Hopper head dim 96";
  EXPECT_EQ(choose_tc_mainloop(48, 1 << 20, kH200, env), PrefillMainloop::kWgmma) << "48 pads to 64";
  EXPECT_EQ(choose_tc_mainloop(80, 1 << 20, kH200, env), PrefillMainloop::kMmaSync) << "80 pads to 96";
}

TEST(PlannerMainloop, EnvironmentOverrides) {
  REQUIRE_DEFAULT_LISTS();
  using kvq::detail::choose_tc_mainloop;
  const PlannerEnv wgmma = env_with(&PlannerEnv::prefill_kernel, "wgmma");
  const PlannerEnv mma = env_with(&PlannerEnv::prefill_kernel, "mma");
  EXPECT_EQ(choose_tc_mainloop(128, 1, kH200, wgmma), PrefillMainloop::kWgmma) << "wgmma: any rows";
  EXPECT_EQ(choose_tc_mainloop(128, 1, kA100, wgmma), PrefillMainloop::kMmaSync) << "wgmma: sm_90 only";
  EXPECT_EQ(choose_tc_mainloop(96, 1, kH200, wgmma), PrefillMainloop::kMmaSync) << "wgmma: Hopper head dims only";
  EXPECT_EQ(choose_tc_mainloop(128, 1 << 20, kH200, mma), PrefillMainloop::kMmaSync);
  EXPECT_EQ(choose_tc_mainloop(128, 1 << 20, kH200, env_with(&PlannerEnv::prefill_kernel, "other")),
            PrefillMainloop::kWgmma) << "other values: automatic";
  PlannerEnv order = wgmma;
  order.wg_mainloop = "pingpong";
  EXPECT_EQ(choose_tc_mainloop(128, 1, kH200, order), PrefillMainloop::kWgmmaPingPong);
  order.wg_mainloop = "serial";
  EXPECT_EQ(choose_tc_mainloop(128, 1, kH200, order), PrefillMainloop::kWgmma);
  order.wg_mainloop = "bogus";  // warned on stderr once, then serial
  EXPECT_EQ(choose_tc_mainloop(128, 1, kH200, order), PrefillMainloop::kWgmma);
  order.prefill_kernel = "mma";
  order.wg_mainloop = "pingpong";
  EXPECT_EQ(choose_tc_mainloop(128, 1 << 20, kH200, order), PrefillMainloop::kMmaSync) << "the order needs Hopper";
}

TEST(PlannerMainloop, RecordedInThePrefillPlan) {
  REQUIRE_DEFAULT_LISTS();
  FakeCall c;
  c.q_lens = {1024, 700};  // 1024 x group 4 = 4096 packed rows
  c.kv_lens = {1024, 700};
  c.max_blocks = 64;
  const kvq::PrefillArgs a = c.prefill();
  Planned h = plan_of(c, a, kH200);
  EXPECT_EQ(h.plan.path, PrefillPath::kFused);
  EXPECT_EQ(h.plan.kernel, PrefillKernel::kPath);
  EXPECT_EQ(h.plan.mainloop, PrefillMainloop::kWgmma);
  EXPECT_EQ(h.plan.decode_variant, DecodeVariant::kNone);
  EXPECT_STREQ(kvq::to_string(h.plan.mainloop), "wgmma");
  EXPECT_EQ(plan_of(c, a, kA100).plan.mainloop, PrefillMainloop::kMmaSync);
  EXPECT_EQ(plan_of(c, a, kNoDevice).plan.mainloop, PrefillMainloop::kMmaSync);
  // Without host lengths the tiles cover total_q rows per sequence, as the launch sizes them.
  EXPECT_EQ(plan_of(c, a, kH200, {}, /*host_lengths=*/false).plan.mainloop, PrefillMainloop::kWgmma);
  c.q_lens = {1023, 700};  // 4092 rows
  c.kv_lens = {1023, 700};
  const kvq::PrefillArgs shorter = c.prefill();
  EXPECT_EQ(plan_of(c, shorter, kH200).plan.mainloop, PrefillMainloop::kMmaSync);
  // Without host lengths the bound is total_q = 1723 rows per sequence: 6892 packed rows.
  EXPECT_EQ(plan_of(c, shorter, kH200, {}, false).plan.mainloop, PrefillMainloop::kWgmma);
  EXPECT_EQ(plan_of(c, shorter, kH200, env_with(&PlannerEnv::prefill_kernel, "wgmma")).plan.mainloop,
            PrefillMainloop::kWgmma);
}

TEST(PlannerMainloop, NoneWhereNoTensorCorePrefillRuns) {
  REQUIRE_DEFAULT_LISTS();
  FakeCall c;
  c.q_lens = {2000, 2000};
  c.kv_lens = {2000, 2000};
  c.max_blocks = 128;
  c.blocks = 256;
  const PlannerEnv wgmma = env_with(&PlannerEnv::prefill_kernel, "wgmma");
  EXPECT_EQ(plan_of(c, c.prefill(PrefillPath::kGeneric), kH200, wgmma).plan.mainloop, PrefillMainloop::kNone);
  // Forced dequant: the tensor-core kernel over the bf16 copy.
  const Planned d = plan_of(c, c.prefill(PrefillPath::kDequant), kH200);
  EXPECT_EQ(d.plan.path, PrefillPath::kDequant);
  EXPECT_EQ(d.plan.mainloop, PrefillMainloop::kWgmma);
  // A head dim without a fast instantiation: auto takes generic.
  c.head_dim = 72;
  const Planned g = plan_of(c, c.prefill(), kH200, wgmma);
  EXPECT_EQ(g.plan.path, PrefillPath::kGeneric);
  EXPECT_EQ(g.plan.mainloop, PrefillMainloop::kNone);
  // CPU tensors: the CPU backend.
  c.head_dim = 128;
  kvq::PrefillArgs cpu = c.prefill();
  for (TensorView* t : {&cpu.q, &cpu.out, &cpu.kv.k_cache, &cpu.kv.v_cache, &cpu.kv.k_scale, &cpu.kv.v_scale,
                        &cpu.block_tables, &cpu.cu_q_lens, &cpu.kv_lens})
    t->device = Device::kCPU;
  const AttnProblem pc = kvq::detail::validate_prefill(cpu, "planner_test");
  const kvq::PrefillPlan planc = kvq::detail::make_prefill_plan(cpu, pc, nullptr, nullptr, "planner_test", kH200, wgmma);
  EXPECT_EQ(planc.path, PrefillPath::kGeneric);
  EXPECT_EQ(planc.mainloop, PrefillMainloop::kNone);
}

// ---- the tensor-core decode's form ----

TEST(PlannerDecodeVariant, TmaOnSm90WhereTheShapeHasIt) {
  REQUIRE_DEFAULT_LISTS();
  using kvq::detail::choose_mma_decode_variant;
  AttnProblem p;
  p.head_dim = 128;
  p.page_size = 16;
  p.kv_dtype = DType::kInt8;
  const PlannerEnv env;
  const PlannerEnv s8 = env_with(&PlannerEnv::decode_kernel, "s8");
  const PlannerEnv v5 = env_with(&PlannerEnv::decode_kernel, "v5");
  EXPECT_EQ(choose_mma_decode_variant(p, kH200, env), DecodeVariant::kTma);
  EXPECT_EQ(choose_mma_decode_variant(p, kH200, s8), DecodeVariant::kTmaS8);
  EXPECT_EQ(choose_mma_decode_variant(p, kH200, v5), DecodeVariant::kCpAsync);
  EXPECT_EQ(choose_mma_decode_variant(p, kA100, env), DecodeVariant::kCpAsync);
  EXPECT_EQ(choose_mma_decode_variant(p, kA100, s8), DecodeVariant::kCpAsync);
  p.page_size = 8;  // 16-key steps would cross pages
  EXPECT_EQ(choose_mma_decode_variant(p, kH200, env), DecodeVariant::kCpAsync);
  p.page_size = 32;
  p.head_dim = 64;  // 64-byte int8 rows
  EXPECT_EQ(choose_mma_decode_variant(p, kH200, env), DecodeVariant::kCpAsync);
  p.kv_dtype = DType::kBFloat16;  // 128-byte rows
  EXPECT_EQ(choose_mma_decode_variant(p, kH200, env), DecodeVariant::kTma);
  EXPECT_EQ(choose_mma_decode_variant(p, kH200, s8), DecodeVariant::kTma) << "s8: int8 caches only";
  EXPECT_STREQ(kvq::to_string(DecodeVariant::kTmaS8), "tma_s8");
}

TEST(PlannerDecodeSplits, AboutTwoCtasPerSmRoundedAndCapped) {
  using kvq::detail::mma_decode_splits;
  AttnProblem p;
  p.head_dim = 128;
  p.page_size = 16;
  p.num_kv_heads = 8;
  auto splits = [&](int64_t batch, int64_t kv, int ctas_per_sm, int requested = 0) {
    p.batch_size = batch;
    p.max_blocks_per_seq = kv / p.page_size;
    return mma_decode_splits(p, requested, 132, ctas_per_sm);
  };
  // 264 CTAs aimed at (132 SMs x 2): 8 heads x 33, 64 x 4 (264 / 64 = 4.1), 512 alone.
  EXPECT_EQ(splits(1, 131072, 4), 33);
  EXPECT_EQ(splits(8, 32768, 4), 4);
  EXPECT_EQ(splits(64, 4096, 4), 1);
  EXPECT_EQ(splits(128, 2048, 3), 1);
  EXPECT_EQ(splits(32, 4096, 4), 1) << "264 / 256 rounds to 1";
  EXPECT_EQ(splits(16, 4096, 4), 2);
  // At most one split per 256 keys: 4096 keys give 16, 300 keys 2, 1 key 1.
  EXPECT_EQ(splits(1, 4096, 4), 16);
  EXPECT_EQ(splits(1, 304, 4), 2);
  EXPECT_EQ(splits(1, 16, 4), 1);
  // One CTA per SM: half the target (132 / 8 = 16.5 -> 17).
  EXPECT_EQ(splits(1, 131072, 1), 17);
  // A requested count is taken as it is, capped at the kernel's maximum.
  EXPECT_EQ(splits(64, 4096, 4, 7), 7);
  EXPECT_EQ(splits(1, 4096, 4, 100000), kvq::detail::kMmaDecodeMaxSplits);
}

// ---- short prefill chunks on the tensor-core decode ----

TEST(PlannerShortChunks, DecodeKernelWithItsFormAndSplits) {
  REQUIRE_DEFAULT_LISTS();
  FakeCall c;
  c.q_lens = {3, 4};  // 4 x group 4 = 16 rows
  c.kv_lens = {40, 200};
  const kvq::PrefillArgs a = c.prefill();
  for (const DeviceInfo* dev : {&kH200, &kA100}) {
    const Planned r = plan_of(c, a, *dev);
    ASSERT_EQ(r.plan.kernel, PrefillKernel::kMmaDecode);
    EXPECT_EQ(r.plan.path, PrefillPath::kFused);
    EXPECT_EQ(r.plan.mainloop, PrefillMainloop::kNone);
    const DecodeVariant v = dev->sm90 ? DecodeVariant::kTma : DecodeVariant::kCpAsync;
    EXPECT_EQ(r.plan.decode_variant, v);
    const int splits = kvq::detail::mma_decode_splits(r.p, 0, dev->sm_count, fake_ctas_per_sm(r.p, 4, v, 0));
    EXPECT_EQ(r.plan.num_splits, splits) << "sized for the planned form's occupancy";
    EXPECT_EQ(r.plan.workspace_bytes, kvq::detail::mma_decode_workspace_bytes(r.p, r.p.total_q, splits));
    EXPECT_EQ(kvq::detail::small_q_decode_refusal(a, r.p, r.plan), "");
  }
  EXPECT_EQ(plan_of(c, a, kH200, env_with(&PlannerEnv::decode_kernel, "s8")).plan.decode_variant,
            DecodeVariant::kTmaS8);
  // No usable device, no host lengths, or the switch off: the prefill kernel.
  EXPECT_EQ(plan_of(c, a, kNoDevice).plan.kernel, PrefillKernel::kPath);
  EXPECT_EQ(plan_of(c, a, kH200, {}, /*host_lengths=*/false).plan.kernel, PrefillKernel::kPath);
  PlannerEnv off;
  off.small_q_decode = false;
  const Planned o = plan_of(c, a, kH200, off);
  EXPECT_EQ(o.plan.kernel, PrefillKernel::kPath);
  EXPECT_EQ(o.plan.mainloop, PrefillMainloop::kMmaSync);
  EXPECT_EQ(o.plan.decode_variant, DecodeVariant::kNone);
  EXPECT_EQ(o.plan.num_splits, 1);
  // 5 x 4 = 20 rows: the prefill kernel.
  c.q_lens = {5, 1};
  EXPECT_EQ(plan_of(c, c.prefill(), kH200).plan.kernel, PrefillKernel::kPath);
}

// ---- a plan applied to a call ----

TEST(PlannerResolve, ViewsAndDeviceTakeAPlannedFormDownAStep) {
  REQUIRE_DEFAULT_LISTS();
  FakeCall c;
  c.q_lens = {4096, 10};
  c.kv_lens = {4096, 10};
  c.max_blocks = 256;
  c.blocks = 300;
  const kvq::PrefillArgs a = c.prefill();
  const Planned r = plan_of(c, a, kH200);
  ASSERT_EQ(r.plan.mainloop, PrefillMainloop::kWgmma);
  KernelLaunch l = kvq::detail::resolve_prefill_launch(a, r.p, r.plan, kH200);
  EXPECT_EQ(l.kernel, LaunchKernel::kTcPrefill);
  EXPECT_EQ(l.mainloop, PrefillMainloop::kWgmma);
  EXPECT_EQ(l.max_q_len, 4096);
  // The same plan run on a device that is not sm_90: mma.sync.
  EXPECT_EQ(kvq::detail::resolve_prefill_launch(a, r.p, r.plan, kA100).mainloop, PrefillMainloop::kMmaSync);
  // K and V views of different strides (one buffer, blocks alternating): mma.sync.
  c.v_block_stride_differs = true;
  const kvq::PrefillArgs kv_apart = c.prefill();
  l = kvq::detail::resolve_prefill_launch(kv_apart, r.p, r.plan, kH200);
  EXPECT_EQ(l.kernel, LaunchKernel::kTcPrefill);
  EXPECT_EQ(l.mainloop, PrefillMainloop::kMmaSync);
  c.v_block_stride_differs = false;
  // An out view the tensor-core kernel cannot load: generic under auto, an error when forced.
  c.out_offset = 8;
  const kvq::PrefillArgs unaligned = c.prefill();
  EXPECT_EQ(kvq::detail::resolve_prefill_launch(unaligned, r.p, r.plan, kH200).kernel, LaunchKernel::kGeneric);
  kvq::PrefillArgs forced = unaligned;
  forced.path = PrefillPath::kFused;
  kvq::PrefillPlan forced_plan = r.plan;  // as plan_prefill makes it for path fused
  try {
    kvq::detail::resolve_prefill_launch(forced, r.p, forced_plan, kH200);
    FAIL() << "a forced fused path over views it cannot load must be an error";
  } catch (const kvq::Error& e) {
    EXPECT_EQ(e.argument(), "path");
    EXPECT_NE(std::string(e.what()).find("path=fused was forced"), std::string::npos) << e.what();
  }
  // A plan whose mainloop says none (not made for a problem the kernel serves): mma.sync.
  kvq::PrefillPlan none = r.plan;
  none.mainloop = PrefillMainloop::kNone;
  EXPECT_EQ(kvq::detail::resolve_prefill_launch(a, r.p, none, kH200).mainloop, PrefillMainloop::kMmaSync);
}

// compute="int8": the Hopper kernel's int8 Q·Kᵀ (serial) at every size on sm_90 for padded head
// dims 128 and 256; elsewhere the generic kernel (auto), or an error naming path (fused forced).
TEST(PlannerResolve, Int8ComputeOnTheHopperKernelOrGeneric) {
  REQUIRE_DEFAULT_LISTS();
  FakeCall c;  // 3 and 5 query rows: far below the row threshold
  kvq::PrefillArgs a = c.prefill();
  a.compute = kvq::ComputeMode::kInt8;
  const Planned r = plan_of(c, a, kH200);
  EXPECT_EQ(r.plan.path, PrefillPath::kFused);
  EXPECT_EQ(r.plan.mainloop, PrefillMainloop::kWgmma);
  KernelLaunch l = kvq::detail::resolve_prefill_launch(a, r.p, r.plan, kH200);
  EXPECT_EQ(l.kernel, LaunchKernel::kTcPrefill);
  EXPECT_EQ(l.mainloop, PrefillMainloop::kWgmma);
  // Ping-pong asked for: int8 compute stays serial.
  PlannerEnv pingpong;
  pingpong.wg_mainloop = "pingpong";
  const Planned pp = plan_of(c, a, kH200, pingpong);
  EXPECT_EQ(pp.plan.mainloop, PrefillMainloop::kWgmma);
  // Not sm_90, or KVQ_PREFILL_KERNEL=mma: the generic kernel.
  EXPECT_EQ(kvq::detail::resolve_prefill_launch(a, r.p, r.plan, kA100).kernel, LaunchKernel::kGeneric);
  const Planned mma = plan_of(c, a, kH200, env_with(&PlannerEnv::prefill_kernel, "mma"));
  EXPECT_EQ(mma.plan.mainloop, PrefillMainloop::kNone);
  EXPECT_EQ(plan_of(c, a, kA100).plan.mainloop, PrefillMainloop::kNone);
  EXPECT_EQ(kvq::detail::resolve_prefill_launch(a, mma.p, mma.plan, kH200).kernel, LaunchKernel::kGeneric);
  // K and V of different strides (the Hopper kernel needs them equal): generic.
  c.v_block_stride_differs = true;
  kvq::PrefillArgs apart = c.prefill();
  apart.compute = kvq::ComputeMode::kInt8;
  EXPECT_EQ(kvq::detail::resolve_prefill_launch(apart, r.p, r.plan, kH200).kernel, LaunchKernel::kGeneric);
  c.v_block_stride_differs = false;
  // Head dim 64: generic; forced fused there: an error naming path and int8 compute.
  c.head_dim = 64;
  kvq::PrefillArgs d64 = c.prefill();
  d64.compute = kvq::ComputeMode::kInt8;
  const Planned r64 = plan_of(c, d64, kH200);
  EXPECT_EQ(kvq::detail::resolve_prefill_launch(d64, r64.p, r64.plan, kH200).kernel, LaunchKernel::kGeneric);
  d64.path = PrefillPath::kFused;
  const Planned f64 = plan_of(c, d64, kH200);
  try {
    kvq::detail::resolve_prefill_launch(d64, f64.p, f64.plan, kH200);
    FAIL() << "int8 compute forced onto the fused path at head dim 64 must be an error";
  } catch (const kvq::Error& e) {
    EXPECT_EQ(e.argument(), "path");
    EXPECT_NE(std::string(e.what()).find("with int8 compute"), std::string::npos) << e.what();
  }
}

TEST(PlannerResolve, ShortChunksAndDequant) {
  REQUIRE_DEFAULT_LISTS();
  FakeCall c;
  c.q_lens = {2, 4};
  const kvq::PrefillArgs a = c.prefill();
  const Planned r = plan_of(c, a, kH200);
  ASSERT_EQ(r.plan.kernel, PrefillKernel::kMmaDecode);
  KernelLaunch l = kvq::detail::resolve_prefill_launch(a, r.p, r.plan, kH200);
  EXPECT_EQ(l.kernel, LaunchKernel::kMmaDecode);
  EXPECT_EQ(l.variant, DecodeVariant::kTma);
  EXPECT_EQ(l.num_splits, r.plan.num_splits);
  EXPECT_EQ(l.max_q_len, 4);
  EXPECT_EQ(kvq::detail::resolve_prefill_launch(a, r.p, r.plan, kA100).variant, DecodeVariant::kCpAsync);

  kvq::PrefillArgs d = c.prefill(PrefillPath::kDequant);
  const Planned rd = plan_of(c, d, kH200, env_with(&PlannerEnv::prefill_kernel, "wgmma"));
  ASSERT_EQ(rd.plan.mainloop, PrefillMainloop::kWgmma);
  d.workspace = {FakeCall::at(10), rd.plan.workspace_bytes};
  l = kvq::detail::resolve_prefill_launch(d, rd.p, rd.plan, kH200);
  EXPECT_EQ(l.kernel, LaunchKernel::kDequantPrefill);
  EXPECT_EQ(l.mainloop, PrefillMainloop::kWgmma) << "the copy's K and V share strides";
  d.workspace = {FakeCall::at(10, 8), rd.plan.workspace_bytes};  // the copy would be misaligned
  try {
    kvq::detail::resolve_prefill_launch(d, rd.p, rd.plan, kH200);
    FAIL() << "a forced dequant path over a copy it cannot load must be an error";
  } catch (const kvq::Error& e) {
    EXPECT_EQ(e.argument(), "path");
    EXPECT_NE(std::string(e.what()).find("path=dequant was forced"), std::string::npos) << e.what();
  }
}

TEST(PlannerResolve, AGivenPlanWithAnUnknownFormIsRefused) {
  FakeCall c;
  const kvq::PrefillArgs a = c.prefill();
  const Planned r = plan_of(c, a, kH200);
  kvq::PrefillPlan bad = r.plan;
  bad.mainloop = static_cast<PrefillMainloop>(42);
  try {
    kvq::detail::check_plan_and_workspace(a, r.p, bad, "paged_prefill");
    FAIL() << "expected an error on plan";
  } catch (const kvq::Error& e) {
    EXPECT_EQ(e.argument(), "plan") << e.what();
  }
  bad = r.plan;
  bad.decode_variant = static_cast<DecodeVariant>(-3);
  EXPECT_THROW(kvq::detail::check_plan_and_workspace(a, r.p, bad, "paged_prefill"), kvq::Error);
}

// ---- decode ----

struct DecodePlanned {
  AttnProblem p;
  kvq::detail::DecodePlan plan;
};

DecodePlanned decode_plan_of(const kvq::DecodeArgs& a, const DeviceInfo& dev, const PlannerEnv& env = {}) {
  DecodePlanned r;
  r.p = kvq::detail::validate_decode(a, "planner_test");
  r.plan = kvq::detail::make_decode_plan(a, r.p, dev, env);
  return r;
}

TEST(PlannerDecode, RouteFormSplitsAndWorkspace) {
  REQUIRE_DEFAULT_LISTS();
  FakeCall c;
  c.batch = 4;
  c.kv_lens = {100, 4000, 30, 2048};
  c.max_blocks = 256;
  c.blocks = 1024;
  const kvq::DecodeArgs a = c.decode();
  for (const DeviceInfo* dev : {&kH200, &kA100}) {
    const DecodePlanned r = decode_plan_of(a, *dev);
    const KernelLaunch& l = r.plan.launch;
    EXPECT_EQ(l.kernel, LaunchKernel::kMmaDecode);
    EXPECT_FALSE(r.plan.forced);
    const DecodeVariant v = dev->sm90 ? DecodeVariant::kTma : DecodeVariant::kCpAsync;
    EXPECT_EQ(l.variant, v);
    const int splits = kvq::detail::mma_decode_splits(r.p, 0, dev->sm_count, fake_ctas_per_sm(r.p, 1, v, 0));
    EXPECT_EQ(l.num_splits, splits);
    EXPECT_EQ(r.plan.split_num_splits, kvq::detail::split_decode_splits(r.p, 0, dev->sm_count));
    EXPECT_EQ(r.plan.workspace_bytes,
              std::max(kvq::detail::split_decode_workspace_bytes(r.p, r.plan.split_num_splits),
                       kvq::detail::mma_decode_workspace_bytes(r.p, c.batch, splits)))
        << "room for the route and the CUDA-core fallback";
    const KernelLaunch run = kvq::detail::resolve_decode_launch(a, r.p, r.plan, *dev);
    EXPECT_EQ(run.kernel, LaunchKernel::kMmaDecode);
    EXPECT_EQ(run.variant, v);
  }
  kvq::DecodeArgs fixed = a;
  fixed.num_splits = 7;
  EXPECT_EQ(decode_plan_of(fixed, kH200).plan.launch.num_splits, 7);
  EXPECT_EQ(decode_plan_of(fixed, kH200).plan.split_num_splits, 7);
  EXPECT_EQ(decode_plan_of(a, kH200, env_with(&PlannerEnv::decode_kernel, "s8")).plan.launch.variant,
            DecodeVariant::kTmaS8);
  EXPECT_EQ(decode_plan_of(a, kH200, env_with(&PlannerEnv::decode_kernel, "v5")).plan.launch.variant,
            DecodeVariant::kCpAsync);
}

TEST(PlannerDecode, DecodePathOverrides) {
  REQUIRE_DEFAULT_LISTS();
  FakeCall c;
  const kvq::DecodeArgs a = c.decode();
  const DecodePlanned split = decode_plan_of(a, kH200, env_with(&PlannerEnv::decode_path, "split"));
  EXPECT_EQ(split.plan.launch.kernel, LaunchKernel::kSplitDecode);
  EXPECT_EQ(split.plan.launch.num_splits, split.plan.split_num_splits);
  const DecodePlanned tc = decode_plan_of(a, kH200, env_with(&PlannerEnv::decode_path, "tc"));
  EXPECT_EQ(tc.plan.launch.kernel, LaunchKernel::kTcPrefill);
  EXPECT_EQ(tc.plan.launch.mainloop, PrefillMainloop::kMmaSync) << "8 packed rows";
  EXPECT_GE(tc.plan.workspace_bytes, kvq::detail::tc_decode_workspace_bytes(tc.p));
  PlannerEnv tc_wgmma = env_with(&PlannerEnv::decode_path, "tc");
  tc_wgmma.prefill_kernel = "wgmma";
  EXPECT_EQ(decode_plan_of(a, kH200, tc_wgmma).plan.launch.mainloop, PrefillMainloop::kWgmma);
  EXPECT_EQ(decode_plan_of(a, kA100, tc_wgmma).plan.launch.mainloop, PrefillMainloop::kMmaSync);
  const DecodePlanned mma = decode_plan_of(a, kH200, env_with(&PlannerEnv::decode_path, "mma"));
  EXPECT_EQ(mma.plan.launch.kernel, LaunchKernel::kMmaDecode);
  EXPECT_TRUE(mma.plan.forced);
  // Views the tensor-core kernels cannot load: the CUDA-core kernel, or with =mma an error.
  c.q_offset = 2;  // q rows not 4-byte aligned
  const kvq::DecodeArgs odd = c.decode();
  const DecodePlanned r = decode_plan_of(odd, kH200);
  const KernelLaunch fallback = kvq::detail::resolve_decode_launch(odd, r.p, r.plan, kH200);
  EXPECT_EQ(fallback.kernel, LaunchKernel::kSplitDecode);
  EXPECT_EQ(fallback.num_splits, r.plan.split_num_splits);
  const DecodePlanned tc_odd = decode_plan_of(odd, kH200, env_with(&PlannerEnv::decode_path, "tc"));
  EXPECT_EQ(kvq::detail::resolve_decode_launch(odd, tc_odd.p, tc_odd.plan, kH200).kernel, LaunchKernel::kSplitDecode);
  const DecodePlanned mma_odd = decode_plan_of(odd, kH200, env_with(&PlannerEnv::decode_path, "mma"));
  try {
    kvq::detail::resolve_decode_launch(odd, mma_odd.p, mma_odd.plan, kH200);
    FAIL() << "KVQ_DECODE_PATH=mma over views it cannot load must be an error";
  } catch (const kvq::Error& e) {
    EXPECT_EQ(e.argument(), "k_cache");
    EXPECT_NE(std::string(e.what()).find("not implemented"), std::string::npos) << e.what();
  }
  // A shape the tensor-core decode does not serve: the CUDA-core kernel, or with =mma an error.
  c.q_offset = 0;
  c.head_dim = 96;
  const kvq::DecodeArgs d96 = c.decode();
  EXPECT_EQ(decode_plan_of(d96, kH200).plan.launch.kernel, LaunchKernel::kSplitDecode);
  try {
    decode_plan_of(d96, kH200, env_with(&PlannerEnv::decode_path, "mma"));
    FAIL() << "KVQ_DECODE_PATH=mma with head_dim 96 must be an error";
  } catch (const kvq::Error& e) {
    EXPECT_EQ(e.argument(), "KVQ_DECODE_PATH");
    EXPECT_NE(std::string(e.what()).find("not implemented"), std::string::npos) << e.what();
  }
}

// ---- the environment, read when planning ----

class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    const char* old = std::getenv(name);
    had_ = old != nullptr;
    if (had_) old_ = old;
    if (value) {
      setenv(name, value, 1);
    } else {
      unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (had_) {
      setenv(name_.c_str(), old_.c_str(), 1);
    } else {
      unsetenv(name_.c_str());
    }
  }

 private:
  std::string name_, old_;
  bool had_ = false;
};

TEST(PlannerEnvironment, ReadsTheOverrides) {
  {
    ScopedEnv a("KVQ_SMALL_Q_DECODE", "0"), b("KVQ_PREFILL_KERNEL", "wgmma"), c("KVQ_WG_MAINLOOP", "pingpong"),
        d("KVQ_DECODE_KERNEL", "s8"), e("KVQ_DECODE_PATH", "tc");
    const PlannerEnv env = PlannerEnv::from_environment();
    EXPECT_FALSE(env.small_q_decode);
    EXPECT_EQ(env.prefill_kernel, "wgmma");
    ASSERT_TRUE(env.wg_mainloop.has_value());
    EXPECT_EQ(*env.wg_mainloop, "pingpong");
    EXPECT_EQ(env.decode_kernel, "s8");
    EXPECT_EQ(env.decode_path, "tc");
  }
  {
    ScopedEnv a("KVQ_SMALL_Q_DECODE", nullptr), b("KVQ_PREFILL_KERNEL", nullptr), c("KVQ_WG_MAINLOOP", nullptr),
        d("KVQ_DECODE_KERNEL", nullptr), e("KVQ_DECODE_PATH", nullptr);
    const PlannerEnv env = PlannerEnv::from_environment();
    EXPECT_TRUE(env.small_q_decode);
    EXPECT_EQ(env.prefill_kernel, "");
    EXPECT_FALSE(env.wg_mainloop.has_value());
    EXPECT_EQ(env.decode_kernel, "");
    EXPECT_EQ(env.decode_path, "");
  }
}

// A plan from plan_prefill keeps what the environment said when it was made (here: no device, so
// the choices that need none).
TEST(PlannerEnvironment, PlanPrefillOnCudaViewsWithoutADevice) {
  if (kvq::cuda_available()) GTEST_SKIP() << "a CUDA device is present: the GPU suite covers plan_prefill there";
  FakeCall c;
  c.q_lens = {2, 4};
  const kvq::PrefillArgs a = c.prefill();
  ScopedEnv w("KVQ_PREFILL_KERNEL", "wgmma");
  const kvq::PrefillPlan plan = kvq::plan_prefill(a, c.cu_host.data(), c.kv_host.data());
  EXPECT_EQ(plan.kernel, PrefillKernel::kPath) << "no usable device: the path's kernel";
  EXPECT_EQ(plan.mainloop, PrefillMainloop::kMmaSync) << "no sm_90 device: mma.sync";
  EXPECT_EQ(plan.decode_variant, DecodeVariant::kNone);
}

// ---- what the tensor-core prefill serves (moved from the GPU suite: a host predicate) ----

TEST(TcPrefill, SupportsReportsWhatItServes) {
  AttnProblem p;
  p.batch_size = 1;
  p.num_qo_heads = 8;
  p.num_kv_heads = 2;
  p.group_size = 4;
  p.head_dim = 128;
  p.page_size = 16;
  p.q_dtype = p.out_dtype = DType::kBFloat16;
  p.kv_dtype = DType::kInt8;
  if (!kvq::detail::tc_head_dim_built(128) || !kvq::detail::tc_head_dim_built(96))
    GTEST_SKIP() << "written for the default KVQ_HEAD_DIMS";
  EXPECT_TRUE(kvq::detail::tc_prefill_supports(p));
  p.head_dim = 72;  // padded up to 96 for bf16 caches, but int8 rows need 16-byte multiples
  EXPECT_FALSE(kvq::detail::tc_prefill_supports(p));
  p.kv_dtype = DType::kBFloat16;
  EXPECT_TRUE(kvq::detail::tc_prefill_supports(p));
  p.head_dim = 100;  // not a multiple of 8: generic
  EXPECT_FALSE(kvq::detail::tc_prefill_supports(p));
  p.head_dim = 128;
  p.compute = kvq::ComputeMode::kInt8;
  EXPECT_FALSE(kvq::detail::tc_prefill_supports(p));
  p.compute = kvq::ComputeMode::kNative;
  p.has_mask = true;
  EXPECT_FALSE(kvq::detail::tc_prefill_supports(p));
}

}  // namespace
