// bench/cli/options.cpp — see options.h.
#include "bench/cli/options.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>

namespace kvq_cli {

namespace {

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string printf_str(const char* fmt, double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, x);
  return buf;
}

}  // namespace

bool parse_bool(const std::string& flag, const std::string& text) {
  const std::string t = lower(text);
  if (t == "true" || t == "1" || t == "yes") return true;
  if (t == "false" || t == "0" || t == "no") return false;
  throw UsageError("--" + flag + ": expected true, false, 1, 0, yes or no, got '" + text + "'");
}

Flags::Flags(int argc, char** argv, int first, const std::vector<FlagSpec>& specs)
    : Flags(std::vector<std::string>(argv + std::min(first, argc), argv + argc), specs) {}

Flags::Flags(const std::vector<std::string>& args, const std::vector<FlagSpec>& specs) : specs_(specs) {
  for (const FlagSpec& s : specs_) values_[s.name] = s.fallback;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--help" || arg == "-h") {
      help_ = true;
      return;
    }
    if (arg.rfind("--", 0) != 0 || arg.size() == 2)
      throw UsageError("unexpected argument '" + arg + "': flags start with -- (--help lists them)");
    std::string name = arg.substr(2), value;
    const auto eq = name.find('=');
    const bool inline_value = eq != std::string::npos;
    if (inline_value) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    const FlagSpec& s = spec(name);
    if (!inline_value) {
      // The next word is this flag's value unless it is a flag itself (values of booleans never
      // start with '-'; other values may, e.g. a negative number).
      const std::string next = i + 1 < args.size() ? args[i + 1] : "";
      const bool next_is_value = i + 1 < args.size() && next.rfind("--", 0) != 0 && next != "-h" &&
                                 !(s.boolean() && next.rfind("-", 0) == 0);
      if (s.boolean()) {
        value = next_is_value ? args[++i] : "true";  // bare --causal means true
      } else {
        if (!next_is_value) throw UsageError("--" + name + ": expected a value (" + s.value + "), got none");
        value = args[++i];
      }
    }
    if (s.boolean()) value = parse_bool(name, value) ? "true" : "false";
    values_[name] = value;
    given_.insert(name);
  }
}

const FlagSpec& Flags::spec(const std::string& name) const {
  for (const FlagSpec& s : specs_)
    if (s.name == name) return s;
  throw UsageError("unknown flag --" + name + " (--help lists the flags)");
}

std::string Flags::str(const std::string& name) const {
  spec(name);
  return values_.at(name);
}

bool Flags::boolean(const std::string& name) const { return parse_bool(name, str(name)); }

int64_t Flags::i64(const std::string& name, int64_t min_value, int64_t max_value) const {
  const std::string v = str(name);
  size_t used = 0;
  int64_t x = 0;
  const bool starts_ok = !v.empty() && (std::isdigit(static_cast<unsigned char>(v[0])) || v[0] == '-');
  try {
    if (starts_ok) x = std::stoll(v, &used);
  } catch (...) {
    used = 0;
  }
  if (!starts_ok || used != v.size())
    throw UsageError("--" + name + ": expected an integer, got '" + v + "'");
  if (x < min_value || x > max_value)
    throw UsageError("--" + name + ": expected a value in [" + std::to_string(min_value) + ", " +
                     std::to_string(max_value) + "], got " + v);
  return x;
}

const std::vector<FlagSpec>& demo_flags() {
  static const std::vector<FlagSpec> f = {
      {"cpu", "", "false", "run on the CPU backend even when a GPU is present"},
      {"seed", "N", "0", "random-number seed of the workload (K/V values, queries, block tables)"},
      {"k-scale", "per-channel|per-token", "per-channel",
       "K scales: static per-channel (calibrated; absorbs K's outlier channels) or per-token (computed by append)"},
      {"v-scale", "per-token|per-channel", "per-token",
       "V scales: per-token (computed by append) or static per-channel (calibrated)"},
      {"random-queries", "", "false",
       "random queries (near-uniform attention over thousands of keys) instead of queries aimed at earlier tokens"},
      {"json", "", "false", "print one JSON object as the last line"},
  };
  return f;
}

const std::vector<FlagSpec>& bench_flags() {
  static const std::vector<FlagSpec> f = {
      {"mode", "prefill|decode", "prefill", "what to time: paged prefill or paged decode"},
      {"batch", "B", "1", "sequences in the batch, all of the same lengths"},
      {"q-len", "Q", "1024", "new query tokens per sequence (prefill; decode takes 1 and accepts only 1)"},
      {"kv-len", "KV", "1024", "keys per sequence: the cached prefix plus the q-len new tokens"},
      {"num-qo-heads", "H", "32", "query heads, a multiple of --num-kv-heads"},
      {"num-kv-heads", "H", "8", "key/value heads"},
      {"head-dim", "D", "128", "head dim, 1..256"},
      {"page-size", "P", "64", "tokens per cache page"},
      {"layout", "HND|NHD", "HND", "cache layout: [blocks, heads, page, D] or [blocks, page, heads, D]"},
      {"path", "auto|fused|dequant|generic|all", "auto",
       "prefill kernel to time (all: each in turn); decode has one kernel and accepts only auto"},
      {"kv-dtype", "int8|bf16", "int8", "cache dtype (int8 with per-channel scales, or bf16)"},
      {"compute", "native|int8", "native",
       "prefill math: native (16-bit MMAs) or int8 (int8 Q·Kᵀ, int8 cache only; FLOP/s counted alike)"},
      {"causal", "", "true", "causal masking (prefill; a decode query sees every key either way)"},
      {"iters", "N", "20", "timed runs after the warmup; the median is reported"},
      {"num-splits", "S", "0", "decode: KV splits per sequence (0: the planner's choice)"},
      {"cpu", "", "false", "run on the CPU backend even when a GPU is present"},
      {"json", "", "false", "print one JSON object as the last line"},
  };
  return f;
}

namespace {

void flag_lines(std::ostringstream& o, const std::vector<FlagSpec>& specs) {
  for (const FlagSpec& s : specs) {
    std::string left = "  --" + s.name + (s.boolean() ? " [true|false]" : " " + s.value);
    if (left.size() < 42) left += std::string(42 - left.size(), ' ');
    else left += "  ";
    o << left << "default: " << s.fallback << "\n      " << s.help << "\n";
  }
}

const char* kDemoText =
    "  A Llama-3-8B attention step (Hq 32, Hkv 8, D 128, page 16): K/V written through append into an\n"
    "  int8 cache (K: calibrated per-channel scales, K with outlier channels; V: per-token scales), a\n"
    "  batch of prefill chunks with cached prefixes, and decode rows. Prints the kernels' error against\n"
    "  fp64 attention over the same int8 cache (bar 1e-2: decides PASS/FAIL and the exit code), the int8\n"
    "  quantization error against attention over the unquantized bf16 K/V (informational, with the\n"
    "  error int8 rounding of this cache predicts), the memory saved and the throughput.\n"
    "  Runs on the GPU when one is present, else on the CPU backend.\n";
const char* kBenchText =
    "  Times one shape, path by path (each path's output is checked to be written and finite first);\n"
    "  prints a table (time, FLOP/s of the visible scores, bytes/s of K/V + Q + O) and progress on\n"
    "  stderr. Exits 1 when no requested path could serve the shape.\n";
const char* kFlagsNote =
    "  Flags take their value as --flag VALUE or --flag=VALUE; boolean flags also stand alone (--flag\n"
    "  means true) and accept true/false, 1/0, yes/no.\n";

}  // namespace

std::string usage(const std::string& command) {
  std::ostringstream o;
  if (command.empty()) {
    o << "kvq — paged attention over an int8-quantized KV cache\n\n"
      << "usage: kvq demo [flags]      a serving step, checked (kvq demo --help)\n"
      << "       kvq bench [flags]     timings of one shape (kvq bench --help)\n"
      << "       kvq --help\n\n"
      << kFlagsNote << "  With --json the last line printed is one JSON object. Exit codes: 0 success,\n"
      << "  1 failure (FAIL, an error, nothing served), 2 a bad command line.\n\n";
  }
  if (command.empty() || command == "demo") {
    o << "kvq demo [flags]\n" << kDemoText;
    flag_lines(o, demo_flags());
    if (command.empty()) o << "\n";
  }
  if (command.empty() || command == "bench") {
    o << "kvq bench [flags]\n" << kBenchText;
    flag_lines(o, bench_flags());
  }
  if (!command.empty()) o << "\n" << kFlagsNote;
  return o.str();
}

DemoOptions parse_demo(const Flags& flags) {
  DemoOptions d;
  d.cpu = flags.boolean("cpu");
  d.json = flags.boolean("json");
  d.random_queries = flags.boolean("random-queries");
  d.seed = static_cast<uint32_t>(flags.i64("seed", 0, 1 << 30));
  for (const char* f : {"k-scale", "v-scale"}) {
    const std::string v = flags.str(f);
    if (v != "per-token" && v != "per-channel")
      throw UsageError(std::string("--") + f + ": expected per-channel or per-token, got '" + v + "'");
  }
  d.k_scale = flags.str("k-scale");
  d.v_scale = flags.str("v-scale");
  d.k_per_token = d.k_scale == "per-token";
  d.v_per_token = d.v_scale == "per-token";
  return d;
}

kvq::PrefillPath parse_path(const std::string& flag, const std::string& s) {
  if (s == "auto") return kvq::PrefillPath::kAuto;
  if (s == "fused") return kvq::PrefillPath::kFused;
  if (s == "dequant") return kvq::PrefillPath::kDequant;
  if (s == "generic") return kvq::PrefillPath::kGeneric;
  throw UsageError("--" + flag + ": expected auto, fused, dequant, generic or all, got '" + s + "'");
}

BenchOptions parse_bench(const Flags& flags) {
  BenchOptions b;
  b.mode = flags.str("mode");
  if (b.mode != "prefill" && b.mode != "decode")
    throw UsageError("--mode: expected prefill or decode, got '" + b.mode + "'");
  const bool decode = b.mode == "decode";
  b.batch = flags.i64("batch", 1, 1 << 16);
  b.q_len = flags.i64("q-len", 0, 1 << 20);
  b.kv_len = flags.i64("kv-len", 0, 1 << 22);
  b.num_qo_heads = flags.i64("num-qo-heads", 1, 1024);
  b.num_kv_heads = flags.i64("num-kv-heads", 1, 1024);
  b.head_dim = flags.i64("head-dim", 1, 256);
  b.page_size = flags.i64("page-size", 1, 1 << 20);
  const std::string layout = flags.str("layout");
  if (layout == "HND") b.layout = kvq::KvLayout::kHND;
  else if (layout == "NHD") b.layout = kvq::KvLayout::kNHD;
  else throw UsageError("--layout: expected HND or NHD, got '" + layout + "'");
  b.iters = static_cast<int>(flags.i64("iters", 1, 100000));
  b.num_splits = static_cast<int>(flags.i64("num-splits", 0, 1024));
  if (b.num_splits != 0 && !decode) throw UsageError("--num-splits: applies to --mode decode only");
  b.kv_dtype = flags.str("kv-dtype");
  if (b.kv_dtype != "int8" && b.kv_dtype != "bf16")
    throw UsageError("--kv-dtype: expected int8 or bf16, got '" + b.kv_dtype + "'");
  b.int8 = b.kv_dtype == "int8";
  b.compute = flags.str("compute");
  if (b.compute != "native" && b.compute != "int8")
    throw UsageError("--compute: expected native or int8, got '" + b.compute + "'");
  if (b.compute == "int8" && !b.int8) throw UsageError("--compute: int8 needs --kv-dtype int8");
  if (b.compute == "int8" && decode) throw UsageError("--compute: int8 applies to --mode prefill only");
  b.causal = flags.boolean("causal");
  b.cpu = flags.boolean("cpu");
  b.json = flags.boolean("json");
  if (b.num_qo_heads % b.num_kv_heads != 0)
    throw UsageError("--num-qo-heads: expected a multiple of --num-kv-heads (" + std::to_string(b.num_kv_heads) +
                     "), got " + std::to_string(b.num_qo_heads));
  b.path = flags.str("path");
  if (decode) {
    // Decode is one query token per sequence through one kernel: refuse what it cannot honour.
    if (flags.given("q-len") && b.q_len != 1)
      throw UsageError("--q-len: expected 1 in decode mode (one query token per sequence), got " +
                       std::to_string(b.q_len));
    if (b.path != "auto")
      throw UsageError("--path: expected auto in decode mode (decode has one kernel), got '" + b.path + "'");
    b.q_len = 1;
    b.paths = {"decode"};
  } else if (b.path == "all") {
    b.paths = b.int8 ? std::vector<std::string>{"fused", "dequant", "generic"}
                     : std::vector<std::string>{"fused", "generic"};  // dequant needs an int8 cache
  } else {
    parse_path("path", b.path);
    b.paths = {b.path};
  }
  if (b.causal && b.q_len > b.kv_len)
    throw UsageError("--kv-len: expected >= --q-len (" + std::to_string(b.q_len) + ") when causal, got " +
                     std::to_string(b.kv_len));
  return b;
}

std::string sig3(double x) {
  if (!std::isfinite(x)) return "-";
  if (x == 0) return "0";
  const double r = std::strtod(printf_str("%.3g", x).c_str(), nullptr);  // rounded to 3 digits
  const double a = std::fabs(r);
  if (a >= 100) return printf_str("%.0f", r);
  if (a >= 10) return printf_str("%.1f", r);
  if (a >= 1) return printf_str("%.2f", r);
  if (a >= 1e-3) {
    const int decimals = 2 - static_cast<int>(std::floor(std::log10(a)));
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f", decimals, r);
    return buf;
  }
  return printf_str("%.2e", r);
}

std::string flops_rate(double x) {
  if (!std::isfinite(x)) return "-";
  return x >= 1e12 ? sig3(x / 1e12) + " TFLOP/s" : sig3(x / 1e9) + " GFLOP/s";
}

std::string bytes_rate(double x) {
  if (!std::isfinite(x)) return "-";
  return x >= 1e12 ? sig3(x / 1e12) + " TB/s" : sig3(x / 1e9) + " GB/s";
}

std::string json_number(double x) {
  if (!std::isfinite(x)) return "null";
  if (x == std::floor(x) && std::fabs(x) < 1e15) return printf_str("%.0f", x);  // integers exactly
  return printf_str("%.6g", x);
}

std::string json_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') {
      o += '\\';
      o += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(static_cast<unsigned char>(c)));
      o += buf;
    } else {
      o += c;
    }
  }
  return o;
}

}  // namespace kvq_cli
