// Unit tests of the quantization primitives kvq::quantize_value / kvq::per_token_scale (the
// definition every kernel matches bit-exactly) against hand-computed values and against the
// test suite's independent definition (tests/common/paged_cache.h).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "kvq/kvq.h"
#include "tests/common/paged_cache.h"
#include "tests/common/rng.h"

namespace kvq::test {
namespace {

TEST(QuantizeValue, RoundsHalfToEven) {
  EXPECT_EQ(kvq::quantize_value(2.5f, 1.f), 2);
  EXPECT_EQ(kvq::quantize_value(-2.5f, 1.f), -2);
  EXPECT_EQ(kvq::quantize_value(3.5f, 1.f), 4);
  EXPECT_EQ(kvq::quantize_value(-3.5f, 1.f), -4);
  EXPECT_EQ(kvq::quantize_value(0.5f, 1.f), 0);
  EXPECT_EQ(kvq::quantize_value(-0.5f, 1.f), 0);
  EXPECT_EQ(kvq::quantize_value(1.5f, 1.f), 2);
  EXPECT_EQ(kvq::quantize_value(2.4999998f, 1.f), 2);
  EXPECT_EQ(kvq::quantize_value(2.5000002f, 1.f), 3);
  EXPECT_EQ(kvq::quantize_value(126.5f, 1.f), 126);
}

TEST(QuantizeValue, DividesByScale) {
  EXPECT_EQ(kvq::quantize_value(5.f, 2.f), 2);     // 2.5 -> 2
  EXPECT_EQ(kvq::quantize_value(7.f, 2.f), 4);     // 3.5 -> 4
  EXPECT_EQ(kvq::quantize_value(-0.75f, 0.5f), -2);  // -1.5 -> -2
  EXPECT_EQ(kvq::quantize_value(1.f, 0.25f), 4);
  EXPECT_EQ(kvq::quantize_value(0.f, 1e-5f), 0);
  EXPECT_EQ(kvq::quantize_value(1.27f, 0.01f), 127);
}

TEST(QuantizeValue, ClampsToInt8Range) {
  EXPECT_EQ(kvq::quantize_value(127.f, 1.f), 127);
  EXPECT_EQ(kvq::quantize_value(127.5f, 1.f), 127);  // rounds to 128, clamped
  EXPECT_EQ(kvq::quantize_value(128.f, 1.f), 127);
  EXPECT_EQ(kvq::quantize_value(1e9f, 1.f), 127);
  EXPECT_EQ(kvq::quantize_value(-128.f, 1.f), -128);
  EXPECT_EQ(kvq::quantize_value(-128.4f, 1.f), -128);
  EXPECT_EQ(kvq::quantize_value(-128.5f, 1.f), -128);
  EXPECT_EQ(kvq::quantize_value(-129.f, 1.f), -128);
  EXPECT_EQ(kvq::quantize_value(-1e9f, 1.f), -128);
  EXPECT_EQ(kvq::quantize_value(std::numeric_limits<float>::infinity(), 1.f), 127);
  EXPECT_EQ(kvq::quantize_value(-std::numeric_limits<float>::infinity(), 1.f), -128);
}

TEST(QuantizeValue, MatchesIndependentDefinition) {
  Rng rng(7);
  for (int i = 0; i < 500000; ++i) {
    const float scale = static_cast<float>(std::ldexp(rng.uniform(0.5, 1.0), static_cast<int>(rng.randint(-20, 4))));
    // Mostly in range, some saturating, and many exact ties (integers + 0.5 times scale).
    float x;
    const int kind = static_cast<int>(rng.randint(0, 3));
    if (kind == 0) x = static_cast<float>(rng.normal() * 60.0) * scale;
    else if (kind == 1) x = static_cast<float>(rng.uniform(-300.0, 300.0)) * scale;
    else x = (static_cast<float>(rng.randint(-140, 140)) + 0.5f) * scale;
    ASSERT_EQ(kvq::quantize_value(x, scale), ref_quantize(x, scale)) << "x=" << x << " scale=" << scale;
  }
}

TEST(PerTokenScale, HandComputed) {
  EXPECT_EQ(kvq::per_token_scale(127.f), 1.f);
  EXPECT_EQ(kvq::per_token_scale(254.f), 2.f);
  EXPECT_FLOAT_EQ(kvq::per_token_scale(1.f), 1.f / 127.f);
  EXPECT_EQ(kvq::per_token_scale(1.f), 1.f / 127.f);
  EXPECT_EQ(kvq::per_token_scale(0.f), 1e-8f);     // floor
  EXPECT_EQ(kvq::per_token_scale(1e-7f), 1e-8f);   // 7.9e-10 < 1e-8
  EXPECT_EQ(kvq::per_token_scale(1.27e-6f), std::max(1.27e-6f / 127.f, 1e-8f));
  Rng rng(11);
  for (int i = 0; i < 100000; ++i) {
    const float amax = static_cast<float>(std::ldexp(rng.uniform(0.0, 1.0), static_cast<int>(rng.randint(-30, 10))));
    ASSERT_EQ(kvq::per_token_scale(amax), ref_per_token_scale(amax)) << amax;
  }
}

TEST(PerTokenScale, QuantizedAmaxHitsFullRange) {
  // With scale = amax/127 the largest element maps to +-127 and nothing clamps.
  Rng rng(5);
  for (int i = 0; i < 10000; ++i) {
    const float amax = static_cast<float>(rng.uniform(0.01, 100.0));
    const float s = kvq::per_token_scale(amax);
    EXPECT_EQ(std::abs(kvq::quantize_value(amax, s)), 127);
    EXPECT_EQ(kvq::quantize_value(-amax, s), -127);
  }
}

}  // namespace
}  // namespace kvq::test
