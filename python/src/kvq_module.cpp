// python/src/kvq_module.cpp — kvq._C: the C++ API (include/kvq/kvq.h) over DLPack tensors.
//
// Every tensor argument is any object with __dlpack__ (torch.Tensor, numpy.ndarray, cupy.ndarray)
// or a "dltensor" capsule. It is viewed in place, never copied: the capsule stays alive (owned by
// a Borrow list) for the duration of the call and is released, unconsumed, by its producer's
// destructor afterwards. DLPack strides are in elements like kvq::TensorView's; null strides mean
// row-major contiguous. The device of the tensors picks the backend (the C++ dispatcher does that);
// CUDA work runs on the stream the Python layer passes as an integer (cudaStream_t).
//
// kvq::Error becomes ValueError (kValue), TypeError (kType), NotImplementedError
// (kNotImplemented) or RuntimeError (kRuntime), with the C++ message unchanged.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#if defined(KVQ_DLPACK_FROM_ATEN)
#include <ATen/dlpack.h>
#else
#include <dlpack/dlpack.h>
#endif

#include "kvq/kvq.h"

namespace py = pybind11;

namespace {

// DLPack codes that older dlpack.h headers do not name (kDLBool arrived in DLPack 0.8).
constexpr uint8_t kDLBoolCode = 6;

// Owns the DLPack capsules (and the objects they came from) for the duration of one call.
struct Borrow {
  std::vector<py::object> keep;
};

[[noreturn]] void type_error(const std::string& func, const std::string& arg, const std::string& msg) {
  throw kvq::Error(kvq::ErrorKind::kType, func, arg, msg);
}
[[noreturn]] void value_error(const std::string& func, const std::string& arg, const std::string& msg) {
  throw kvq::Error(kvq::ErrorKind::kValue, func, arg, msg);
}

std::string type_name(py::handle obj) {
  return py::str(py::type::handle_of(obj).attr("__name__")).cast<std::string>();
}

std::string dl_dtype_name(DLDataType t) {
  const char* code = t.code == kDLInt ? "int" : t.code == kDLUInt ? "uint" : t.code == kDLFloat ? "float"
                     : t.code == kDLBfloat ? "bfloat" : t.code == kDLBoolCode ? "bool" : "code";
  std::string s = std::string(code) + std::to_string(t.bits);
  if (t.lanes != 1) s += "x" + std::to_string(t.lanes);
  return s;
}

kvq::DType dtype_from_dlpack(DLDataType t, const std::string& func, const std::string& arg) {
  if (t.lanes == 1) {
    switch (t.code) {
      case kDLFloat:
        if (t.bits == 32) return kvq::DType::kFloat32;
        if (t.bits == 16) return kvq::DType::kFloat16;
        break;
      case kDLBfloat:
        if (t.bits == 16) return kvq::DType::kBFloat16;
        break;
      case kDLInt:
        if (t.bits == 8) return kvq::DType::kInt8;
        if (t.bits == 32) return kvq::DType::kInt32;
        if (t.bits == 64) return kvq::DType::kInt64;
        break;
      case kDLUInt:
        if (t.bits == 8) return kvq::DType::kUInt8;
        break;
      case kDLBoolCode:
        if (t.bits == 8) return kvq::DType::kBool;
        break;
      default:
        break;
    }
  }
  type_error(func, arg, "expected one of fp32, fp16, bf16, int8, uint8, int32, int64, bool, got " +
                            dl_dtype_name(t));
}

kvq::TensorView view_of_dltensor(const DLTensor& t, const std::string& func, const std::string& arg) {
  kvq::TensorView v;
  switch (t.device.device_type) {
    case kDLCPU:
    case kDLCUDAHost:  // pinned host memory is plain CPU memory to the CPU backend
      v.device = kvq::Device::kCPU;
      break;
    case kDLCUDA:
    case kDLCUDAManaged:
      v.device = kvq::Device::kCUDA;
      break;
    default:
      type_error(func, arg, "expected a CPU or CUDA tensor, got DLPack device type " +
                                std::to_string(static_cast<int>(t.device.device_type)));
  }
  v.device_index = t.device.device_id;
  if (t.ndim < 0 || t.ndim > kvq::kMaxDims) {
    value_error(func, arg, "expected at most " + std::to_string(kvq::kMaxDims) + " dimensions, got " +
                               std::to_string(t.ndim));
  }
  v.dtype = dtype_from_dlpack(t.dtype, func, arg);
  v.ndim = t.ndim;
  v.data = static_cast<char*>(t.data) + t.byte_offset;
  int64_t stride = 1;
  for (int d = t.ndim - 1; d >= 0; --d) {
    v.shape[d] = t.shape[d];
    v.strides[d] = t.strides ? t.strides[d] : stride;
    stride *= t.shape[d];
  }
  return v;
}

// The view of one argument. None: absent (ndim -1). dlpack_stream is passed to __dlpack__ for CUDA
// arrays (the consumer stream of the DLPack protocol; -1 = no synchronization).
kvq::TensorView to_view(py::handle obj, const std::string& func, const std::string& arg, Borrow& borrow,
                        const py::object& dlpack_stream) {
  if (obj.is_none()) return kvq::TensorView{};
  py::object capsule;
  if (PyCapsule_CheckExact(obj.ptr())) {
    capsule = py::reinterpret_borrow<py::object>(obj);
  } else if (py::hasattr(obj, "__dlpack__")) {
    try {
      bool on_cuda = false;
      if (!dlpack_stream.is_none() && py::hasattr(obj, "__dlpack_device__")) {
        py::tuple dev = obj.attr("__dlpack_device__")();
        int type = dev[0].cast<int>();
        on_cuda = type == kDLCUDA || type == kDLCUDAManaged;
      }
      capsule = on_cuda ? obj.attr("__dlpack__")(py::arg("stream") = dlpack_stream)
                        : obj.attr("__dlpack__")();
    } catch (py::error_already_set& e) {
      type_error(func, arg, "expected a tensor exportable through DLPack, got " + type_name(obj) +
                                " whose __dlpack__ failed: " + e.what());
    }
  } else {
    type_error(func, arg, "expected a tensor (an object with __dlpack__: torch.Tensor, numpy.ndarray, "
                          "cupy.ndarray) or None, got " + type_name(obj));
  }
  if (!PyCapsule_IsValid(capsule.ptr(), "dltensor")) {
    type_error(func, arg, "expected an unconsumed \"dltensor\" DLPack capsule, got a capsule named \"" +
                              std::string(PyCapsule_GetName(capsule.ptr()) ? PyCapsule_GetName(capsule.ptr()) : "") +
                              "\"");
  }
  auto* managed = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(capsule.ptr(), "dltensor"));
  borrow.keep.push_back(capsule);
  return view_of_dltensor(managed->dl_tensor, func, arg);
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

kvq::KvLayout parse_layout(const std::string& s, const std::string& func) {
  std::string l = lower(s);
  if (l == "hnd") return kvq::KvLayout::kHND;
  if (l == "nhd") return kvq::KvLayout::kNHD;
  value_error(func, "layout", "expected \"HND\" or \"NHD\", got \"" + s + "\"");
}

kvq::GqaLayout parse_gqa(const std::string& s, const std::string& func) {
  std::string l = lower(s);
  if (l == "aabb" || l == "grouped") return kvq::GqaLayout::kGrouped;
  if (l == "abab" || l == "interleaved") return kvq::GqaLayout::kInterleaved;
  value_error(func, "gqa_layout", "expected \"AABB\" (grouped) or \"ABAB\" (interleaved), got \"" + s + "\"");
}

kvq::ComputeMode parse_compute(const std::string& s, const std::string& func) {
  std::string l = lower(s);
  if (l == "bf16" || l == "fp16" || l == "native") return kvq::ComputeMode::kNative;
  if (l == "int8") return kvq::ComputeMode::kInt8;
  value_error(func, "compute", "expected \"bf16\" (native) or \"int8\", got \"" + s + "\"");
}

kvq::PrefillPath parse_path(const std::string& s, const std::string& func) {
  std::string l = lower(s);
  if (l == "auto") return kvq::PrefillPath::kAuto;
  if (l == "fused") return kvq::PrefillPath::kFused;
  if (l == "dequant") return kvq::PrefillPath::kDequant;
  if (l == "generic") return kvq::PrefillPath::kGeneric;
  value_error(func, "path", "expected \"auto\", \"fused\", \"dequant\" or \"generic\", got \"" + s + "\"");
}

int window_of(const py::object& w, const std::string& func, const char* arg, int absent) {
  if (w.is_none()) return absent;
  long long v = w.cast<long long>();
  if (v < INT32_MIN || v > INT32_MAX) value_error(func, arg, "expected a 32-bit integer, got " + std::to_string(v));
  return static_cast<int>(v);
}

float scale_of(const py::object& s) { return s.is_none() ? 0.f : s.cast<float>(); }

void* stream_of(const py::object& s) {
  if (s.is_none()) return nullptr;
  return reinterpret_cast<void*>(static_cast<uintptr_t>(s.cast<unsigned long long>()));
}

kvq::Workspace workspace_of(const kvq::TensorView& v) {
  kvq::Workspace w;
  if (v.defined()) {
    w.data = v.data;
    w.bytes = static_cast<size_t>(v.numel()) * kvq::dtype_size(v.dtype);
  }
  return w;
}

// Scratch memory of `bytes` from the caller's allocator (a Python callable: bytes -> 1-D uint8 tensor
// on the tensors' device), viewed and kept alive by `borrow`.
kvq::Workspace allocate_workspace(size_t bytes, const py::object& alloc, const std::string& func,
                                  Borrow& borrow, const py::object& dlpack_stream) {
  if (bytes == 0) return {};
  if (alloc.is_none()) {
    value_error(func, "workspace", "expected a workspace of " + std::to_string(bytes) +
                                       " bytes (or an allocator), got none");
  }
  py::object buf = alloc(bytes);
  borrow.keep.push_back(buf);
  kvq::Workspace w = workspace_of(to_view(buf, func, "workspace", borrow, dlpack_stream));
  if (w.bytes < bytes) {
    value_error(func, "workspace", "expected at least " + std::to_string(bytes) + " bytes, got " +
                                       std::to_string(w.bytes));
  }
  return w;
}

std::optional<std::vector<int32_t>> host_lengths(const py::object& obj, const std::string& func, const char* arg) {
  if (obj.is_none()) return std::nullopt;
  try {
    return obj.cast<std::vector<int32_t>>();
  } catch (py::cast_error&) {
    type_error(func, arg, "expected a host sequence of int32 lengths (list or CPU array), got " + type_name(obj));
  }
}

// The keyword arguments of one call: each read by name (None where absent), tensors as views
// borrowed for the call.
struct KwArgs {
  const py::dict& kw;
  const std::string& func;
  Borrow& borrow;
  const py::object& dlpack_stream;
  py::object get(const char* name) const {
    return kw.contains(name) ? py::reinterpret_borrow<py::object>(kw[name]) : py::none();
  }
  kvq::TensorView tensor(const char* name) const { return to_view(get(name), func, name, borrow, dlpack_stream); }
  std::string text(const char* name, const char* fallback) const {
    py::object v = get(name);
    return v.is_none() ? fallback : v.cast<std::string>();
  }
  bool flag(const char* name, bool fallback) const {
    py::object v = get(name);
    return v.is_none() ? fallback : v.cast<bool>();
  }
  // k_cache, v_cache, their scales and the layout (HND unless given).
  kvq::PagedKvCache cache() const {
    kvq::PagedKvCache kv;
    kv.k_cache = tensor("k_cache");
    kv.v_cache = tensor("v_cache");
    kv.k_scale = tensor("k_scale");
    kv.v_scale = tensor("v_scale");
    kv.layout = parse_layout(text("layout", "HND"), func);
    return kv;
  }
};

kvq::PrefillArgs make_prefill_args(const py::dict& kw, const std::string& func, Borrow& borrow,
                                   const py::object& dlpack_stream) {
  const KwArgs in{kw, func, borrow, dlpack_stream};
  kvq::PrefillArgs a;
  a.q = in.tensor("q");
  a.q_scale = in.tensor("q_scale");
  a.kv = in.cache();
  a.block_tables = in.tensor("block_tables");
  a.cu_q_lens = in.tensor("cu_q_lens");
  a.kv_lens = in.tensor("kv_lens");
  a.mask = in.tensor("mask");
  a.out = in.tensor("out");
  a.lse = in.tensor("lse");
  a.mask_options.causal = in.flag("causal", true);
  a.mask_options.local_window = window_of(in.get("local_window"), func, "local_window", -1);
  a.mask_options.global_window = window_of(in.get("global_window"), func, "global_window", 0);
  a.softmax_scale = scale_of(in.get("softmax_scale"));
  a.gqa_layout = parse_gqa(in.text("gqa_layout", "AABB"), func);
  a.compute = parse_compute(in.text("compute", "bf16"), func);
  a.path = parse_path(in.text("path", "auto"), func);
  a.check = in.flag("check", false);
  a.stream = stream_of(in.get("stream"));
  return a;
}

kvq::DecodeArgs make_decode_args(const py::dict& kw, const std::string& func, Borrow& borrow,
                                 const py::object& dlpack_stream) {
  const KwArgs in{kw, func, borrow, dlpack_stream};
  kvq::DecodeArgs a;
  a.q = in.tensor("q");
  a.kv = in.cache();
  a.block_tables = in.tensor("block_tables");
  a.kv_lens = in.tensor("kv_lens");
  a.out = in.tensor("out");
  a.lse = in.tensor("lse");
  a.local_window = window_of(in.get("local_window"), func, "local_window", -1);
  a.global_window = window_of(in.get("global_window"), func, "global_window", 0);
  a.softmax_scale = scale_of(in.get("softmax_scale"));
  a.gqa_layout = parse_gqa(in.text("gqa_layout", "AABB"), func);
  a.check = in.flag("check", false);
  py::object splits = in.get("num_splits");
  a.num_splits = splits.is_none() ? 0 : splits.cast<int>();
  a.stream = stream_of(in.get("stream"));
  return a;
}

// Keyword names every entry point accepts besides its tensors.
const char* kFuncKey = "func";
const char* kDlpackStreamKey = "dlpack_stream";

std::string func_of(const py::dict& kw, const char* fallback) {
  return kw.contains(kFuncKey) ? kw[kFuncKey].cast<std::string>() : std::string(fallback);
}
py::object dlpack_stream_of(const py::dict& kw) {
  return kw.contains(kDlpackStreamKey) ? py::reinterpret_borrow<py::object>(kw[kDlpackStreamKey]) : py::none();
}
py::object kw_get(const py::dict& kw, const char* name) {
  return kw.contains(name) ? py::reinterpret_borrow<py::object>(kw[name]) : py::none();
}

// _C.paged_prefill(**kw): q, k_cache, v_cache, block_tables, cu_q_lens, kv_lens, k_scale, v_scale, q_scale,
// mask, out, lse, causal, local_window, global_window, softmax_scale, layout, gqa_layout, compute, path,
// check, stream, plan (PrefillPlan or None), workspace (tensor or None), workspace_alloc (callable or None).
// Without a plan, CUDA calls are planned from upper bounds (no host sync) and the workspace comes
// from workspace_alloc.
void paged_prefill_py(py::kwargs kw) {
  std::string func = func_of(kw, "paged_prefill");
  py::object dls = dlpack_stream_of(kw);
  Borrow borrow;
  kvq::PrefillArgs a = make_prefill_args(kw, func, borrow, dls);
  py::object plan_obj = kw_get(kw, "plan");
  kvq::PrefillPlan local_plan;
  if (!plan_obj.is_none()) {
    a.plan = plan_obj.cast<const kvq::PrefillPlan*>();
    a.workspace = workspace_of(to_view(kw_get(kw, "workspace"), func, "workspace", borrow, dls));
    if (a.workspace.bytes < a.plan->workspace_bytes) {
      value_error(func, "workspace", "expected at least " + std::to_string(a.plan->workspace_bytes) +
                                         " bytes (plan.workspace_bytes), got " + std::to_string(a.workspace.bytes));
    }
  } else if (a.q.defined() && a.q.device == kvq::Device::kCUDA) {
    local_plan = kvq::plan_prefill(a, nullptr, nullptr);
    a.plan = &local_plan;
    a.workspace = allocate_workspace(local_plan.workspace_bytes, kw_get(kw, "workspace_alloc"), func, borrow, dls);
  }
  py::gil_scoped_release release;
  kvq::paged_prefill(a);
}

kvq::PrefillPlan plan_prefill_py(py::kwargs kw) {
  std::string func = func_of(kw, "plan_prefill");
  Borrow borrow;
  kvq::PrefillArgs a = make_prefill_args(kw, func, borrow, dlpack_stream_of(kw));
  auto cu = host_lengths(kw_get(kw, "cu_q_lens_host"), func, "cu_q_lens_host");
  auto kv = host_lengths(kw_get(kw, "kv_lens_host"), func, "kv_lens_host");
  if (cu && kv && cu->size() != kv->size() + 1) {
    value_error(func, "cu_q_lens_host", "expected batch_size + 1 = " + std::to_string(kv->size() + 1) +
                                            " entries (kv_lens_host has " + std::to_string(kv->size()) + "), got " +
                                            std::to_string(cu->size()));
  }
  int64_t batch = a.block_tables.defined() ? a.block_tables.size(0) : -1;
  if (kv && batch >= 0 && static_cast<int64_t>(kv->size()) != batch) {
    value_error(func, "kv_lens_host", "expected batch_size = " + std::to_string(batch) +
                                          " entries (block_tables rows), got " + std::to_string(kv->size()));
  }
  if (cu && batch >= 0 && static_cast<int64_t>(cu->size()) != batch + 1) {
    value_error(func, "cu_q_lens_host", "expected batch_size + 1 = " + std::to_string(batch + 1) +
                                            " entries, got " + std::to_string(cu->size()));
  }
  return kvq::plan_prefill(a, cu ? cu->data() : nullptr, kv ? kv->data() : nullptr);
}

// _C.paged_decode(**kw): q, k_cache, v_cache, block_tables, kv_lens, k_scale, v_scale, out, lse,
// local_window, global_window, softmax_scale, layout, gqa_layout, check, num_splits, stream,
// workspace (tensor or None), workspace_alloc (callable or None).
void paged_decode_py(py::kwargs kw) {
  std::string func = func_of(kw, "paged_decode");
  py::object dls = dlpack_stream_of(kw);
  Borrow borrow;
  kvq::DecodeArgs a = make_decode_args(kw, func, borrow, dls);
  py::object ws = kw_get(kw, "workspace");
  if (!ws.is_none()) {
    a.workspace = workspace_of(to_view(ws, func, "workspace", borrow, dls));
  } else if (a.q.defined() && a.q.device == kvq::Device::kCUDA) {
    size_t bytes = kvq::decode_workspace_size(a);
    a.workspace = allocate_workspace(bytes, kw_get(kw, "workspace_alloc"), func, borrow, dls);
  }
  py::gil_scoped_release release;
  kvq::paged_decode(a);
}

size_t decode_workspace_size_py(py::kwargs kw) {
  std::string func = func_of(kw, "decode_workspace_size");
  Borrow borrow;
  kvq::DecodeArgs a = make_decode_args(kw, func, borrow, dlpack_stream_of(kw));
  return kvq::decode_workspace_size(a);
}

// _C.append(**kw): k, v, slot_mapping, k_cache, v_cache, k_scale, v_scale, layout, check, stream.
void append_py(py::kwargs kw) {
  std::string func = func_of(kw, "append");
  py::object dls = dlpack_stream_of(kw);
  Borrow borrow;
  auto tensor = [&](const char* name) { return to_view(kw_get(kw, name), func, name, borrow, dls); };
  kvq::AppendArgs a;
  a.k_new = tensor("k");
  a.v_new = tensor("v");
  a.slot_mapping = tensor("slot_mapping");
  a.kv.k_cache = tensor("k_cache");
  a.kv.v_cache = tensor("v_cache");
  a.kv.k_scale = tensor("k_scale");
  a.kv.v_scale = tensor("v_scale");
  py::object layout = kw_get(kw, "layout");
  a.kv.layout = parse_layout(layout.is_none() ? "HND" : layout.cast<std::string>(), func);
  py::object check = kw_get(kw, "check");
  a.check = !check.is_none() && check.cast<bool>();
  a.stream = stream_of(kw_get(kw, "stream"));
  py::gil_scoped_release release;
  kvq::append(a);
}

// _C.dequantize_blocks(**kw): cache, scale, block_tables, kv_lens, out, out_block_tables, layout, check, stream.
void dequantize_blocks_py(py::kwargs kw) {
  std::string func = func_of(kw, "dequantize_blocks");
  py::object dls = dlpack_stream_of(kw);
  Borrow borrow;
  auto tensor = [&](const char* name) { return to_view(kw_get(kw, name), func, name, borrow, dls); };
  kvq::DequantArgs a;
  a.cache = tensor("cache");
  a.scale = tensor("scale");
  a.block_tables = tensor("block_tables");
  a.kv_lens = tensor("kv_lens");
  a.out = tensor("out");
  a.out_block_tables = tensor("out_block_tables");
  py::object layout = kw_get(kw, "layout");
  a.layout = parse_layout(layout.is_none() ? "HND" : layout.cast<std::string>(), func);
  py::object check = kw_get(kw, "check");
  a.check = !check.is_none() && check.cast<bool>();
  a.stream = stream_of(kw_get(kw, "stream"));
  py::gil_scoped_release release;
  kvq::dequantize_blocks(a);
}

// _C.calibrate(x=..., out=..., stream=None).
void calibrate_py(py::kwargs kw) {
  std::string func = func_of(kw, "calibrate");
  py::object dls = dlpack_stream_of(kw);
  Borrow borrow;
  kvq::TensorView x = to_view(kw_get(kw, "x"), func, "x", borrow, dls);
  kvq::TensorView out = to_view(kw_get(kw, "out"), func, "out", borrow, dls);
  void* stream = stream_of(kw_get(kw, "stream"));
  py::gil_scoped_release release;
  kvq::calibrate(x, out, stream);
}

// The TensorView a tensor maps to, as a dict: the test of the DLPack mapping itself.
py::dict describe_view(py::object obj, py::object dlpack_stream) {
  Borrow borrow;
  kvq::TensorView v = to_view(obj, "describe_view", "x", borrow, dlpack_stream);
  py::dict d;
  d["defined"] = v.defined();
  if (!v.defined()) return d;
  d["dtype"] = std::string(kvq::to_string(v.dtype));
  d["device"] = std::string(kvq::to_string(v.device));
  d["device_index"] = v.device_index;
  d["shape"] = std::vector<int64_t>(v.shape, v.shape + v.ndim);
  d["strides"] = std::vector<int64_t>(v.strides, v.strides + v.ndim);
  d["data"] = reinterpret_cast<uintptr_t>(v.data);
  d["contiguous"] = v.is_contiguous();
  d["describe"] = v.describe();
  return d;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "kvq C++ bindings over DLPack tensors (use the kvq package, not this module)";

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const kvq::Error& e) {
      switch (e.kind()) {
        case kvq::ErrorKind::kType: PyErr_SetString(PyExc_TypeError, e.what()); break;
        case kvq::ErrorKind::kNotImplemented: PyErr_SetString(PyExc_NotImplementedError, e.what()); break;
        case kvq::ErrorKind::kRuntime: PyErr_SetString(PyExc_RuntimeError, e.what()); break;
        case kvq::ErrorKind::kValue:
        default: PyErr_SetString(PyExc_ValueError, e.what()); break;
      }
    }
  });

  py::class_<kvq::PrefillPlan>(m, "PrefillPlan", "The host-side plan of a paged prefill (kvq::PrefillPlan).")
      .def_property_readonly("path", [](const kvq::PrefillPlan& p) { return std::string(kvq::to_string(p.path)); })
      .def_property_readonly("kernel", [](const kvq::PrefillPlan& p) { return std::string(kvq::to_string(p.kernel)); })
      .def_property_readonly("mainloop",
                             [](const kvq::PrefillPlan& p) { return std::string(kvq::to_string(p.mainloop)); })
      .def_property_readonly("decode_variant",
                             [](const kvq::PrefillPlan& p) { return std::string(kvq::to_string(p.decode_variant)); })
      .def_property_readonly("device", [](const kvq::PrefillPlan& p) { return std::string(kvq::to_string(p.device)); })
      .def_readonly("batch_size", &kvq::PrefillPlan::batch_size)
      .def_readonly("total_q", &kvq::PrefillPlan::total_q)
      .def_readonly("num_referenced_blocks", &kvq::PrefillPlan::num_referenced_blocks)
      .def_readonly("max_q_len", &kvq::PrefillPlan::max_q_len)
      .def_readonly("max_kv_len", &kvq::PrefillPlan::max_kv_len)
      .def_readonly("num_splits", &kvq::PrefillPlan::num_splits)
      .def_readonly("workspace_bytes", &kvq::PrefillPlan::workspace_bytes)
      .def("__repr__", [](const kvq::PrefillPlan& p) {
        return "PrefillPlan(path=" + std::string(kvq::to_string(p.path)) + ", kernel=" + kvq::to_string(p.kernel) +
               ", mainloop=" + kvq::to_string(p.mainloop) + ", decode_variant=" + kvq::to_string(p.decode_variant) +
               ", device=" + kvq::to_string(p.device) +
               ", batch_size=" + std::to_string(p.batch_size) + ", total_q=" + std::to_string(p.total_q) +
               ", max_q_len=" + std::to_string(p.max_q_len) + ", max_kv_len=" + std::to_string(p.max_kv_len) +
               ", num_splits=" + std::to_string(p.num_splits) + ", workspace_bytes=" +
               std::to_string(p.workspace_bytes) + ")";
      });

  m.def("paged_prefill", &paged_prefill_py);
  m.def("plan_prefill", &plan_prefill_py);
  m.def("paged_decode", &paged_decode_py);
  m.def("decode_workspace_size", &decode_workspace_size_py);
  m.def("append", &append_py);
  m.def("dequantize_blocks", &dequantize_blocks_py);
  m.def("calibrate", &calibrate_py);
  m.def("describe_view", &describe_view, py::arg("x"), py::arg("dlpack_stream") = py::none());
  // Test hook for the exception translation: throws kvq::Error of kind 0..3 (kValue, kType,
  // kNotImplemented, kRuntime) with the given function, argument and message.
  m.def("_raise_error", [](int kind, const std::string& func, const std::string& arg, const std::string& msg) {
    if (kind < 0 || kind > 3) value_error("_raise_error", "kind", "expected 0..3, got " + std::to_string(kind));
    throw kvq::Error(static_cast<kvq::ErrorKind>(kind), func, arg, msg);
  });
  m.def("cuda_built", &kvq::cuda_built);
  m.def("cuda_available", &kvq::cuda_available);
  m.def("fast_head_dims", &kvq::fast_head_dims);
  m.def("quantize_value", &kvq::quantize_value, py::arg("x"), py::arg("scale"));
  m.def("per_token_scale", &kvq::per_token_scale, py::arg("amax"));
}
