// bench/cli/options.h — the `kvq` CLI's flags: one table per command (name, default, help), a parser
// that accepts `--flag value` and `--flag=value` for every flag (booleans also bare: `--causal`),
// the usage text generated from the tables (so --help lists every flag with its default), the
// validated options of `kvq demo` and `kvq bench`, and the number formatting of the output.
// Host-only, no CUDA; unit-tested by tests/cli/cli_options_test.cpp.
#pragma once
#include <cstdint>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "kvq/types.h"

namespace kvq_cli {

// A bad command line: the message names the flag, what was expected and what came. Exit code 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct FlagSpec {
  std::string name;     // without the leading "--"
  std::string value;    // placeholder in the usage text ("N", "prefill|decode"); empty: boolean
  std::string fallback; // default value, as text
  std::string help;     // one line; the default is appended by the usage text
  bool boolean() const { return value.empty(); }
};

// Booleans accept true/false, 1/0, yes/no (any case). Throws UsageError naming --flag otherwise.
bool parse_bool(const std::string& flag, const std::string& text);

class Flags {
 public:
  // Parses args (the words after the command). "--help"/"-h" anywhere sets help() and stops.
  Flags(const std::vector<std::string>& args, const std::vector<FlagSpec>& specs);
  Flags(int argc, char** argv, int first, const std::vector<FlagSpec>& specs);

  bool help() const { return help_; }
  std::string str(const std::string& name) const;
  bool boolean(const std::string& name) const;
  int64_t i64(const std::string& name, int64_t min_value, int64_t max_value) const;
  // Whether the flag was on the command line (not its default).
  bool given(const std::string& name) const { return given_.count(name) > 0; }

 private:
  const FlagSpec& spec(const std::string& name) const;
  std::vector<FlagSpec> specs_;
  std::map<std::string, std::string> values_;
  std::set<std::string> given_;
  bool help_ = false;
};

const std::vector<FlagSpec>& demo_flags();
const std::vector<FlagSpec>& bench_flags();

// "kvq demo" / "kvq bench" usage (every flag, its values and default); command "" gives all.
std::string usage(const std::string& command);

struct DemoOptions {
  bool cpu = false, json = false, random_queries = false;
  uint32_t seed = 0;
  bool k_per_token = false, v_per_token = true;
  std::string k_scale = "per-channel", v_scale = "per-token";
};
DemoOptions parse_demo(const Flags& flags);

struct BenchOptions {
  std::string mode = "prefill";  // prefill | decode
  int64_t batch = 1, q_len = 1024, kv_len = 1024;
  int64_t num_qo_heads = 32, num_kv_heads = 8, head_dim = 128, page_size = 64;
  kvq::KvLayout layout = kvq::KvLayout::kHND;
  std::vector<std::string> paths;  // prefill: fused/dequant/generic/auto; decode: {"decode"}
  std::string path = "auto";       // as given
  bool int8 = true;
  std::string kv_dtype = "int8";
  std::string compute = "native";  // prefill: "int8" = compute mode int8
  bool causal = true;
  int iters = 20;
  int num_splits = 0;  // decode: 0 = the planner's choice
  bool cpu = false, json = false;
};
// Validates every flag (range, choice, combination) and throws UsageError naming the flag.
BenchOptions parse_bench(const Flags& flags);

kvq::PrefillPath parse_path(const std::string& flag, const std::string& s);

// Output formatting. sig3: 3 significant digits, no exponent for values >= 1e-3 ("0.0123", "4.57",
// "789", "12300"). Rates: FLOP/s as "123 GFLOP/s" below 1e12, "1.23 TFLOP/s" above (bytes/s: GB/s,
// TB/s); "-" when not finite. json_number: integers exactly, other numbers with 6 significant
// digits, null when not finite (JSON has no inf/nan).
std::string sig3(double x);
std::string flops_rate(double flop_per_s);
std::string bytes_rate(double bytes_per_s);
std::string json_number(double x);
std::string json_escape(const std::string& s);

}  // namespace kvq_cli
