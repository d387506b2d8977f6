// tests/gpu/gpu_util.cpp — see gpu_util.h.
#include "tests/gpu/gpu_util.h"

#include <gtest/gtest.h>

#include <cmath>
#include <stdexcept>
#include <utility>

#include "src/core/backend.h"

namespace kvq::test {

namespace {
void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorName(e));
}
}  // namespace

DeviceTensor::DeviceTensor(const HostTensor& h) {
  if (!h.defined()) return;
  view_ = h.view();
  bytes_ = h.nbytes();
  check(cudaMalloc(&ptr_, bytes_ > 0 ? bytes_ : 1), "cudaMalloc");
  if (bytes_ > 0) check(cudaMemcpy(ptr_, h.data(), bytes_, cudaMemcpyHostToDevice), "cudaMemcpy H2D");
  view_.data = ptr_;
  view_.device = Device::kCUDA;
  check(cudaGetDevice(&view_.device_index), "cudaGetDevice");  // allocated on the current device
}

DeviceTensor DeviceTensor::bytes(size_t n) {
  DeviceTensor t;
  t.bytes_ = n;
  if (n > 0) check(cudaMalloc(&t.ptr_, n), "cudaMalloc");
  return t;
}

DeviceTensor::DeviceTensor(DeviceTensor&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_), view_(o.view_) {
  o.ptr_ = nullptr;
  o.bytes_ = 0;
}

DeviceTensor& DeviceTensor::operator=(DeviceTensor&& o) noexcept {
  if (this != &o) {
    if (ptr_) cudaFree(ptr_);
    ptr_ = o.ptr_;
    bytes_ = o.bytes_;
    view_ = o.view_;
    o.ptr_ = nullptr;
    o.bytes_ = 0;
  }
  return *this;
}

DeviceTensor::~DeviceTensor() {
  if (ptr_) cudaFree(ptr_);
}

void DeviceTensor::upload(const HostTensor& h) {
  if (bytes_ == 0) return;
  if (h.nbytes() != bytes_) throw std::runtime_error("DeviceTensor::upload: size mismatch");
  check(cudaMemcpy(ptr_, h.data(), bytes_, cudaMemcpyHostToDevice), "cudaMemcpy H2D");
}

void DeviceTensor::download(HostTensor& h) const {
  if (bytes_ == 0) return;
  if (h.nbytes() != bytes_) throw std::runtime_error("DeviceTensor::download: size mismatch");
  check(cudaMemcpy(h.data(), ptr_, bytes_, cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
}

void DeviceTensor::fill_bytes(int value) {
  if (bytes_ > 0) check(cudaMemset(ptr_, value, bytes_), "cudaMemset");
}

DeviceCase::DeviceCase(const PagedCase& c)
    : q(c.q), k_cache(c.k_cache), v_cache(c.v_cache), k_scale(c.k_scale), v_scale(c.v_scale),
      block_tables(c.block_tables), cu_q_lens(c.cu_q_lens), kv_lens(c.kv_lens), mask(c.mask), out(c.out),
      lse(c.lse), layout(c.spec.layout) {}

PagedKvCache DeviceCase::kv() const {
  PagedKvCache kv;
  kv.k_cache = k_cache.view();
  kv.v_cache = v_cache.view();
  kv.k_scale = k_scale.view();
  kv.v_scale = v_scale.view();
  kv.layout = layout;
  return kv;
}

PrefillArgs DeviceCase::prefill_args(const PrefillArgs& h) const {
  PrefillArgs a = h;
  a.q = q.view();
  a.q_scale = q_scale.view();
  a.kv = kv();
  a.block_tables = block_tables.view();
  a.cu_q_lens = cu_q_lens.view();
  a.kv_lens = kv_lens.view();
  a.mask = mask.view();
  a.out = out.view();
  a.lse = lse.view();
  a.plan = nullptr;
  a.workspace = {};
  a.stream = nullptr;
  return a;
}

DecodeArgs DeviceCase::decode_args(const DecodeArgs& h) const {
  DecodeArgs a = h;
  a.q = q.view();
  a.kv = kv();
  a.block_tables = block_tables.view();
  a.kv_lens = kv_lens.view();
  a.out = out.view();
  a.lse = lse.view();
  a.workspace = {};
  a.stream = nullptr;
  return a;
}

void make_int8_query(const HostTensor& q, HostTensor& q8, HostTensor& q_scale) {
  const int64_t T = q.size(0), H = q.size(1), D = q.size(2);
  q8 = HostTensor(DType::kInt8, {T, H, D});
  q_scale = HostTensor(DType::kFloat32, {T, H});
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < H; ++h) {
      float amax = 0.f;
      for (int64_t d = 0; d < D; ++d) amax = std::fmax(amax, std::fabs(static_cast<float>(q.at({t, h, d}))));
      const float s = amax > 0.f ? amax / 127.f : 1.f;
      q_scale.set({t, h}, s);
      for (int64_t d = 0; d < D; ++d) q8.set({t, h, d}, ref_quantize(static_cast<float>(q.at({t, h, d})), s));
    }
}

RefOutput cpu_prefill(const PrefillArgs& host_args, bool fp64) {
  PrefillArgs a = host_args;
  const DType out_dtype = a.q.dtype == DType::kInt8 ? DType::kBFloat16 : a.q.dtype;
  HostTensor out(out_dtype, {a.q.shape[0], a.q.shape[1], a.q.shape[2]});
  HostTensor lse(DType::kFloat32, {a.q.shape[0], a.q.shape[1]});
  out.poison();
  lse.poison();
  a.out = out.view();
  a.lse = lse.view();
  a.path = PrefillPath::kAuto;
  a.plan = nullptr;
  a.workspace = {};
  cpu::set_fp64_accumulation(fp64);
  try {
    paged_prefill(a);
  } catch (...) {
    cpu::set_fp64_accumulation(false);
    throw;
  }
  cpu::set_fp64_accumulation(false);
  return to_ref_output(out.view(), lse.view());
}

RefOutput cpu_decode(const DecodeArgs& host_args, bool fp64) {
  DecodeArgs a = host_args;
  HostTensor out(a.q.dtype, {a.q.shape[0], a.q.shape[1], a.q.shape[2]});
  HostTensor lse(DType::kFloat32, {a.q.shape[0], a.q.shape[1]});
  out.poison();
  lse.poison();
  a.out = out.view();
  a.lse = lse.view();
  a.workspace = {};
  cpu::set_fp64_accumulation(fp64);
  try {
    paged_decode(a);
  } catch (...) {
    cpu::set_fp64_accumulation(false);
    throw;
  }
  cpu::set_fp64_accumulation(false);
  return to_ref_output(out.view(), lse.view());
}

double prefill_cost(const PagedCase& c) {
  double s = 0;
  for (size_t b = 0; b < c.spec.q_lens.size(); ++b) s += double(c.spec.q_lens[b]) * c.spec.kv_lens[b];
  return s * c.spec.num_qo_heads * c.spec.head_dim;
}

const char* path_name(PrefillPath p) { return to_string(p); }

GpuRun run_gpu_prefill(PagedCase& c, DeviceCase& dc, const PrefillArgs& host_args, PrefillPath path) {
  GpuRun r;
  c.poison_outputs();
  r.out = c.out;
  if (c.lse.defined()) r.lse = c.lse;
  dc.out.upload(c.out);
  if (c.lse.defined()) dc.lse.upload(c.lse);
  PrefillArgs a = dc.prefill_args(host_args);
  a.path = path;
  PrefillPlan plan;
  DeviceTensor ws;
  try {
    plan = plan_prefill(a, c.cu_q_lens_host.data(), c.kv_lens.ptr<int32_t>());
    ws = DeviceTensor::bytes(plan.workspace_bytes);
    a.plan = &plan;
    a.workspace = {ws.data(), plan.workspace_bytes};
    paged_prefill(a);
  } catch (const Error& e) {
    if (path != PrefillPath::kAuto && path != PrefillPath::kGeneric && e.argument() == "path" &&
        e.kind() != ErrorKind::kRuntime) {
      r.served = false;
      r.refusal = e.what();
      return r;
    }
    throw;
  }
  if (cudaDeviceSynchronize() != cudaSuccess) throw std::runtime_error("cudaDeviceSynchronize failed after paged_prefill");
  dc.out.download(r.out);
  if (c.lse.defined()) dc.lse.download(r.lse);
  return r;
}

void expect_prefill_matches(const PagedCase& c, const GpuRun& run, const RefOutput& ref, double tol,
                            const std::string& what) {
  const ErrorStats st = compare_output(run.out.view(), ref, c.cu_q_lens_host);
  EXPECT_TRUE(st.ok(tol)) << what << ": " << st.describe() << " (tol " << tol << ", seed " << c.spec.seed << ")";
  EXPECT_EQ(count_written_outside(run.out, c.total_q), 0) << what << ": out written outside the valid rows";
  if (c.lse.defined()) {
    const LseStats ls = compare_lse(run.lse.view(), ref, c.total_q);
    EXPECT_EQ(ls.num_mismatch, 0) << what << ": " << ls.describe();
    EXPECT_LE(ls.max_abs, 2e-2) << what << ": " << ls.describe();
    EXPECT_EQ(count_written_outside(run.lse, c.total_q), 0) << what << ": lse written outside the valid rows";
  }
}

}  // namespace kvq::test
