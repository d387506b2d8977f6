// Unit tests of the test suite's own bf16/fp16 conversions (tests/common/half.h): hand-picked
// values, ties to even, overflow, subnormals, NaN; and, where the compiler has _Float16, an
// exhaustive round trip and a sweep of random floats against the compiler's conversion.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "tests/common/half.h"
#include "tests/common/rng.h"

namespace kvq::test {
namespace {

TEST(HalfBf16, ExactValuesRoundTrip) {
  for (float f : {0.f, -0.f, 1.f, -1.f, 0.5f, 2.f, 3.f, 1.5f, -256.f, 0.0078125f, 65536.f}) {
    EXPECT_EQ(round_to_bf16(f), f) << f;
    EXPECT_EQ(float_bits(bf16_bits_to_float(float_to_bf16_bits(f))), float_bits(f)) << f;
  }
  EXPECT_EQ(float_to_bf16_bits(1.f), 0x3f80);
  EXPECT_EQ(float_to_bf16_bits(-2.f), 0xc000);
}

TEST(HalfBf16, RoundsToNearestTiesToEven) {
  // bf16 has 7 mantissa bits: near 1 the spacing is 2^-7.
  const float ulp = std::ldexp(1.f, -7);
  EXPECT_EQ(round_to_bf16(1.f + ulp / 2), 1.f);                    // tie -> even (1.0)
  EXPECT_EQ(round_to_bf16(1.f + 3 * ulp / 2), 1.f + 2 * ulp);      // tie -> even (1 + 2ulp)
  EXPECT_EQ(round_to_bf16(1.f + ulp / 2 + ulp / 64), 1.f + ulp);   // above the tie -> up
  EXPECT_EQ(round_to_bf16(1.f + ulp / 2 - ulp / 64), 1.f);         // below the tie -> down
  EXPECT_EQ(round_to_bf16(-(1.f + 3 * ulp / 2)), -(1.f + 2 * ulp));
  // 3.14159274 -> 3.140625 (0x4049)
  EXPECT_EQ(float_to_bf16_bits(3.14159274f), 0x4049);
}

TEST(HalfBf16, OverflowNanInf) {
  EXPECT_EQ(float_to_bf16_bits(std::numeric_limits<float>::infinity()), 0x7f80);
  EXPECT_EQ(float_to_bf16_bits(-std::numeric_limits<float>::infinity()), 0xff80);
  EXPECT_EQ(float_to_bf16_bits(std::numeric_limits<float>::max()), 0x7f80);  // rounds up to inf
  EXPECT_TRUE(std::isnan(round_to_bf16(std::numeric_limits<float>::quiet_NaN())));
  // A NaN whose payload sits only in the low 16 bits must stay NaN, not become inf.
  EXPECT_TRUE(std::isnan(bf16_bits_to_float(float_to_bf16_bits(bits_float(0x7f800001u)))));
  EXPECT_TRUE(std::isnan(bf16_bits_to_float(0x7fff)));
}

TEST(HalfFp16, HandPickedValues) {
  EXPECT_EQ(float_to_fp16_bits(1.f), 0x3c00);
  EXPECT_EQ(float_to_fp16_bits(-2.f), 0xc000);
  EXPECT_EQ(float_to_fp16_bits(65504.f), 0x7bff);
  EXPECT_EQ(float_to_fp16_bits(65519.f), 0x7bff);  // below the midpoint
  EXPECT_EQ(float_to_fp16_bits(65520.f), 0x7c00);  // midpoint, ties to even = inf
  EXPECT_EQ(float_to_fp16_bits(std::ldexp(1.f, -14)), 0x0400);  // smallest normal
  EXPECT_EQ(float_to_fp16_bits(std::ldexp(1.f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(float_to_fp16_bits(std::ldexp(1.f, -25)), 0x0000);  // tie between 0 and 2^-24 -> 0
  EXPECT_EQ(float_to_fp16_bits(std::ldexp(3.f, -25)), 0x0002);  // 1.5 * 2^-24 -> 2 (even)
  EXPECT_EQ(float_to_fp16_bits(-std::ldexp(1.f, -30)), 0x8000);  // -0
  EXPECT_EQ(fp16_bits_to_float(0x0001), std::ldexp(1.f, -24));
  EXPECT_EQ(fp16_bits_to_float(0x7bff), 65504.f);
  EXPECT_TRUE(std::isinf(fp16_bits_to_float(0x7c00)));
  EXPECT_TRUE(std::isnan(fp16_bits_to_float(0x7fff)));
  EXPECT_TRUE(std::isnan(round_to_fp16(std::numeric_limits<float>::quiet_NaN())));
  // Ties to even at 1: spacing 2^-10.
  const float ulp = std::ldexp(1.f, -10);
  EXPECT_EQ(round_to_fp16(1.f + ulp / 2), 1.f);
  EXPECT_EQ(round_to_fp16(1.f + 3 * ulp / 2), 1.f + 2 * ulp);
}

TEST(HalfFp16, EveryHalfRoundTrips) {
  for (uint32_t h = 0; h < 0x10000u; ++h) {
    const float f = fp16_bits_to_float(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(fp16_bits_to_float(float_to_fp16_bits(f))));
      continue;
    }
    ASSERT_EQ(float_to_fp16_bits(f), h) << std::hex << h;
  }
}

TEST(HalfBf16, EveryBf16RoundTrips) {
  for (uint32_t h = 0; h < 0x10000u; ++h) {
    const float f = bf16_bits_to_float(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(float_to_bf16_bits(f), h) << std::hex << h;
  }
}

#if defined(__FLT16_MAX__) && (defined(__x86_64__) || defined(__aarch64__))
TEST(HalfFp16, MatchesCompilerFloat16OnRandomFloats) {
  Rng rng(1234);
  for (int i = 0; i < 200000; ++i) {
    // Random bit patterns over the fp16 range, and its subnormal/overflow neighbourhoods.
    const float f = std::ldexp(static_cast<float>(rng.uniform(-2.0, 2.0)), static_cast<int>(rng.randint(-27, 17)));
    const _Float16 h = static_cast<_Float16>(f);
    uint16_t bits;
    std::memcpy(&bits, &h, sizeof(bits));
    ASSERT_EQ(float_to_fp16_bits(f), bits) << f;
  }
}
#endif

TEST(HalfBf16, MatchesExactRoundingOnRandomFloats) {
  // Independent check: round via double arithmetic on the 8-bit significand.
  Rng rng(99);
  for (int i = 0; i < 200000; ++i) {
    const float f = std::ldexp(static_cast<float>(rng.uniform(-2.0, 2.0)), static_cast<int>(rng.randint(-100, 100)));
    if (f == 0.f) continue;
    int e;
    const double m = std::frexp(static_cast<double>(f), &e);  // f = m * 2^e, 0.5 <= |m| < 1
    const double scaled = std::ldexp(m, 8);                   // 8 significant bits
    const double r = std::ldexp(std::nearbyint(scaled), e - 8);
    ASSERT_EQ(static_cast<double>(round_to_bf16(f)), r) << f;
  }
}

}  // namespace
}  // namespace kvq::test
