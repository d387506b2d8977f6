// The kvq CLI's flag parsing, option validation, usage text and number formatting
// (bench/cli/options.h). The binary itself is exercised by tests/cli/cli_test.py.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "bench/cli/options.h"

namespace kvq_cli {
namespace {

using Args = std::vector<std::string>;

// The UsageError message of f(), or "" when it does not throw.
template <typename F>
std::string usage_error(F f) {
  try {
    f();
  } catch (const UsageError& e) {
    return e.what();
  }
  return "";
}

TEST(CliFlags, BooleanWords) {
  for (const char* t : {"true", "1", "yes", "TRUE", "Yes"}) EXPECT_TRUE(parse_bool("causal", t)) << t;
  for (const char* f : {"false", "0", "no", "False", "NO"}) EXPECT_FALSE(parse_bool("causal", f)) << f;
  EXPECT_EQ(usage_error([] { parse_bool("causal", "maybe"); }),
            "--causal: expected true, false, 1, 0, yes or no, got 'maybe'");
  EXPECT_EQ(usage_error([] { parse_bool("json", ""); }), "--json: expected true, false, 1, 0, yes or no, got ''");
}

TEST(CliFlags, SpaceSeparatedBooleanValue) {
  Flags f(Args{"--causal", "false", "--q-len", "8"}, bench_flags());
  EXPECT_FALSE(f.boolean("causal"));
  EXPECT_EQ(f.i64("q-len", 0, 100), 8);
  EXPECT_TRUE(f.given("causal"));
  EXPECT_FALSE(f.given("kv-len"));
}

TEST(CliFlags, EqualsValueForEveryKind) {
  Flags f(Args{"--causal=no", "--json=1", "--mode=decode", "--kv-len=77"}, bench_flags());
  EXPECT_FALSE(f.boolean("causal"));
  EXPECT_TRUE(f.boolean("json"));
  EXPECT_EQ(f.str("mode"), "decode");
  EXPECT_EQ(f.i64("kv-len", 0, 100), 77);
}

TEST(CliFlags, SpaceSeparatedValueForEveryFlag) {
  // Every value flag of both commands takes its value as the next word.
  for (const auto* specs : {&demo_flags(), &bench_flags()}) {
    for (const FlagSpec& s : *specs) {
      const std::string v = s.boolean() ? "yes" : "x" + s.name;
      Flags f(Args{"--" + s.name, v}, *specs);
      EXPECT_TRUE(f.given(s.name)) << s.name;
      if (s.boolean()) EXPECT_TRUE(f.boolean(s.name)) << s.name;
      else EXPECT_EQ(f.str(s.name), v) << s.name;
    }
  }
}

TEST(CliFlags, BareBooleanIsTrueAndDoesNotEatTheNextFlag) {
  Flags f(Args{"--cpu", "--json", "--causal"}, bench_flags());
  EXPECT_TRUE(f.boolean("cpu"));
  EXPECT_TRUE(f.boolean("json"));
  EXPECT_TRUE(f.boolean("causal"));
  Flags g(Args{"--random-queries", "--seed", "3"}, demo_flags());
  EXPECT_TRUE(g.boolean("random-queries"));
  EXPECT_EQ(g.i64("seed", 0, 10), 3);
}

TEST(CliFlags, DefaultsWhenAbsent) {
  Flags f(Args{}, bench_flags());
  EXPECT_TRUE(f.boolean("causal"));
  EXPECT_FALSE(f.boolean("json"));
  EXPECT_EQ(f.str("path"), "auto");
  EXPECT_EQ(f.i64("iters", 1, 1000), 20);
}

TEST(CliFlags, BadBooleanValueNamesTheFlag) {
  EXPECT_EQ(usage_error([] { Flags(Args{"--causal", "maybe"}, bench_flags()); }),
            "--causal: expected true, false, 1, 0, yes or no, got 'maybe'");
  EXPECT_EQ(usage_error([] { Flags(Args{"--json=2"}, bench_flags()); }),
            "--json: expected true, false, 1, 0, yes or no, got '2'");
  EXPECT_EQ(usage_error([] { Flags(Args{"--random-queries", "lots"}, demo_flags()); }),
            "--random-queries: expected true, false, 1, 0, yes or no, got 'lots'");
}

TEST(CliFlags, OtherBadCommandLines) {
  EXPECT_EQ(usage_error([] { Flags(Args{"--mode"}, bench_flags()); }),
            "--mode: expected a value (prefill|decode), got none");
  EXPECT_EQ(usage_error([] { Flags(Args{"--mode", "--json"}, bench_flags()); }),
            "--mode: expected a value (prefill|decode), got none");
  EXPECT_EQ(usage_error([] { Flags(Args{"--bogus", "1"}, bench_flags()); }),
            "unknown flag --bogus (--help lists the flags)");
  EXPECT_EQ(usage_error([] { Flags(Args{"extra"}, demo_flags()); }),
            "unexpected argument 'extra': flags start with -- (--help lists them)");
  Flags f(Args{"--head-dim", "0", "--batch", "x1"}, bench_flags());
  EXPECT_EQ(usage_error([&] { f.i64("head-dim", 1, 256); }), "--head-dim: expected a value in [1, 256], got 0");
  EXPECT_EQ(usage_error([&] { f.i64("batch", 1, 10); }), "--batch: expected an integer, got 'x1'");
}

TEST(CliFlags, HelpAnywhere) {
  EXPECT_TRUE(Flags(Args{"--help"}, demo_flags()).help());
  EXPECT_TRUE(Flags(Args{"--cpu", "-h"}, bench_flags()).help());
  EXPECT_FALSE(Flags(Args{"--cpu"}, bench_flags()).help());
}

// The line of `text` that starts with `prefix`, or "".
std::string line_starting(const std::string& text, const std::string& prefix) {
  const size_t at = text.find("\n" + prefix);
  if (at == std::string::npos) return "";
  return text.substr(at + 1, text.find('\n', at + 1) - at - 1);
}

TEST(CliUsage, ListsEveryFlagWithItsDefault) {
  for (const std::string cmd : {"demo", "bench"}) {
    const std::string text = usage(cmd), all = usage("");
    for (const FlagSpec& s : cmd == "demo" ? demo_flags() : bench_flags()) {
      // "  --name <values>   default: <default>", then the help line.
      const std::string head = "  --" + s.name + (s.boolean() ? " [true|false]" : " " + s.value) + " ";
      const std::string line = line_starting(text, head);
      EXPECT_NE(line.find("default: " + s.fallback), std::string::npos) << cmd << " --" << s.name << "\n" << text;
      EXPECT_NE(text.find(s.help), std::string::npos) << cmd << " --" << s.name;
      EXPECT_NE(line_starting(all, head).find("default: " + s.fallback), std::string::npos)
          << "kvq --help lacks " << cmd << " --" << s.name;
    }
  }
}

TEST(CliBench, DecodeRejectsWhatItCannotHonour) {
  EXPECT_EQ(usage_error([] { parse_bench(Flags(Args{"--mode", "decode", "--path", "fused"}, bench_flags())); }),
            "--path: expected auto in decode mode (decode has one kernel), got 'fused'");
  EXPECT_EQ(usage_error([] { parse_bench(Flags(Args{"--mode", "decode", "--path", "all"}, bench_flags())); }),
            "--path: expected auto in decode mode (decode has one kernel), got 'all'");
  EXPECT_EQ(usage_error([] { parse_bench(Flags(Args{"--mode", "decode", "--q-len", "4"}, bench_flags())); }),
            "--q-len: expected 1 in decode mode (one query token per sequence), got 4");
  // What decode honours: the default q-len (1024 for prefill) becomes 1; an explicit 1 and auto pass.
  BenchOptions d = parse_bench(Flags(Args{"--mode", "decode", "--kv-len", "16"}, bench_flags()));
  EXPECT_EQ(d.q_len, 1);
  EXPECT_EQ(d.paths, std::vector<std::string>{"decode"});
  d = parse_bench(Flags(Args{"--mode", "decode", "--q-len", "1", "--path", "auto", "--kv-len", "16"}, bench_flags()));
  EXPECT_EQ(d.q_len, 1);
}

TEST(CliBench, ValidatesEveryFlag) {
  auto err = [](Args a) { return usage_error([&] { parse_bench(Flags(a, bench_flags())); }); };
  EXPECT_EQ(err({"--mode", "train"}), "--mode: expected prefill or decode, got 'train'");
  EXPECT_EQ(err({"--layout", "HDN"}), "--layout: expected HND or NHD, got 'HDN'");
  EXPECT_EQ(err({"--kv-dtype", "fp8"}), "--kv-dtype: expected int8 or bf16, got 'fp8'");
  EXPECT_EQ(err({"--path", "fast"}), "--path: expected auto, fused, dequant, generic or all, got 'fast'");
  EXPECT_EQ(err({"--num-qo-heads", "12"}), "--num-qo-heads: expected a multiple of --num-kv-heads (8), got 12");
  EXPECT_EQ(err({"--q-len", "64", "--kv-len", "32"}), "--kv-len: expected >= --q-len (64) when causal, got 32");
  EXPECT_EQ(err({"--iters", "0"}), "--iters: expected a value in [1, 100000], got 0");
  EXPECT_EQ(err({"--causal", "false", "--q-len", "64", "--kv-len", "32"}), "");  // non-causal: any lengths
  const BenchOptions all = parse_bench(Flags(Args{"--path", "all"}, bench_flags()));
  EXPECT_EQ(all.paths, (std::vector<std::string>{"fused", "dequant", "generic"}));
  const BenchOptions bf16 = parse_bench(Flags(Args{"--path", "all", "--kv-dtype", "bf16"}, bench_flags()));
  EXPECT_EQ(bf16.paths, (std::vector<std::string>{"fused", "generic"}));
}

TEST(CliDemo, ScaleModes) {
  DemoOptions d = parse_demo(Flags(Args{}, demo_flags()));
  EXPECT_FALSE(d.k_per_token);
  EXPECT_TRUE(d.v_per_token);
  d = parse_demo(Flags(Args{"--k-scale", "per-token", "--v-scale", "per-channel", "--random-queries", "1"},
                       demo_flags()));
  EXPECT_TRUE(d.k_per_token);
  EXPECT_FALSE(d.v_per_token);
  EXPECT_TRUE(d.random_queries);
  EXPECT_EQ(usage_error([] { parse_demo(Flags(Args{"--k-scale", "per-head"}, demo_flags())); }),
            "--k-scale: expected per-channel or per-token, got 'per-head'");
}

TEST(CliFormat, ThreeSignificantDigits) {
  EXPECT_EQ(sig3(0), "0");
  EXPECT_EQ(sig3(0.012345), "0.0123");
  EXPECT_EQ(sig3(0.5), "0.500");
  EXPECT_EQ(sig3(4.567), "4.57");
  EXPECT_EQ(sig3(45.67), "45.7");
  EXPECT_EQ(sig3(99.96), "100");
  EXPECT_EQ(sig3(789.4), "789");
  EXPECT_EQ(sig3(12345), "12300");
  EXPECT_EQ(sig3(1.1e-4), "1.10e-04");
  EXPECT_EQ(sig3(std::numeric_limits<double>::infinity()), "-");
}

TEST(CliFormat, RatesPickTheirUnitByMagnitude) {
  EXPECT_EQ(flops_rate(2.4e10), "24.0 GFLOP/s");  // a CPU figure: was "0.0 TFLOP/s"
  EXPECT_EQ(flops_rate(1.2e8), "0.120 GFLOP/s");
  EXPECT_EQ(flops_rate(3.456e14), "346 TFLOP/s");
  EXPECT_EQ(flops_rate(1e12), "1.00 TFLOP/s");
  EXPECT_EQ(bytes_rate(3.18e8), "0.318 GB/s");
  EXPECT_EQ(bytes_rate(4.29e12), "4.29 TB/s");
  EXPECT_EQ(flops_rate(std::nan("")), "-");
}

TEST(CliFormat, JsonHasNoInfOrNan) {
  EXPECT_EQ(json_number(std::numeric_limits<double>::infinity()), "null");
  EXPECT_EQ(json_number(-std::numeric_limits<double>::infinity()), "null");
  EXPECT_EQ(json_number(std::nan("")), "null");
  EXPECT_EQ(json_number(0.0241), "0.0241");
  EXPECT_EQ(json_number(1.5e-7), "1.5e-07");
  EXPECT_EQ(json_number(17509376), "17509376");  // integers exactly
  EXPECT_EQ(json_number(-3), "-3");
  EXPECT_EQ(json_escape("a\"b\\c\n"), "a\\\"b\\\\c\\u000a");
}

}  // namespace
}  // namespace kvq_cli
