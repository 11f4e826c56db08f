// RFC 3339 times as every part of liaison reads and writes them
// (wire::ParseRfc3339Millis / wire::Rfc3339, on Howard Hinnant's date
// library): offsets, fractions, lower case, and what must be refused.
#include <date/date.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <random>

#include "liaison/wire.h"

namespace liaison::wire {
namespace {

constexpr int64_t kAt = 1795512600000;  // 2026-11-24T09:30:00Z

TEST(Rfc3339Test, ReadsUtcOffsetsAndFractions) {
  EXPECT_EQ(kAt, ParseRfc3339Millis("2026-11-24T09:30:00Z"));
  EXPECT_EQ(kAt, ParseRfc3339Millis("2026-11-24t09:30:00z"));
  EXPECT_EQ(kAt, ParseRfc3339Millis("2026-11-24T12:30:00+03:00"));
  EXPECT_EQ(kAt, ParseRfc3339Millis("2026-11-24T06:00:00-03:30"));
  EXPECT_EQ(kAt, ParseRfc3339Millis("2026-11-24T09:30:00+00:00"));
  EXPECT_EQ(kAt, ParseRfc3339Millis("2026-11-24T09:30:00-00:00"));
  // An offset that crosses midnight and a month's end.
  EXPECT_EQ(ParseRfc3339Millis("2026-02-28T22:00:00Z"), ParseRfc3339Millis("2026-03-01T01:00:00+03:00"));
  // Fractions of any length up to nanoseconds, cut to milliseconds.
  EXPECT_EQ(kAt + 100, ParseRfc3339Millis("2026-11-24T09:30:00.1Z"));
  EXPECT_EQ(kAt + 123, ParseRfc3339Millis("2026-11-24T09:30:00.123Z"));
  EXPECT_EQ(kAt + 123, ParseRfc3339Millis("2026-11-24T09:30:00.123999Z"));
  EXPECT_EQ(kAt + 123, ParseRfc3339Millis("2026-11-24T09:30:00.123456789Z"));
  EXPECT_EQ(kAt + 123, ParseRfc3339Millis("2026-11-24T12:30:00.123+03:00"));
  // Far from now both ways (a key's last day, an old date of birth).
  EXPECT_EQ(32472144000000, ParseRfc3339Millis("2999-01-01T00:00:00Z"));
  EXPECT_EQ(-1, ParseRfc3339Millis("1969-12-31T23:59:59.999Z"));
  EXPECT_EQ(int64_t{951782400000}, ParseRfc3339Millis("2000-02-29T00:00:00Z"));
}

TEST(Rfc3339Test, RefusesMalformedAndOutOfRangeTimes) {
  for (const char* bad : {"", "yesterday", "2026-11-24", "2026-11-24T09:30:00", "2026-11-24 09:30:00Z",
                          "2026-11-24T09:30Z", "2026-1-24T09:30:00Z", "20261-11-24T09:30:00Z",
                          "+2026-11-24T09:30:00Z", "2026-13-01T00:00:00Z", "2026-00-01T00:00:00Z",
                          "2026-02-29T00:00:00Z", "2026-04-31T00:00:00Z", "2026-11-24T24:00:00Z",
                          "2026-11-24T23:60:00Z", "2026-11-24T23:59:60Z", "2026-11-24T09:30:00.Z",
                          "2026-11-24T09:30:00.1234567891Z", "2026-11-24T09:30:00+03",
                          "2026-11-24T09:30:00+0300", "2026-11-24T09:30:00+24:00",
                          "2026-11-24T09:30:00+03:60", "2026-11-24T09:30:00Zx", "2026-11-24T09:30:00+03:00x",
                          "2026-11-24T09:30:00 Z", "2026-13-45T99:99:99Z"}) {
    EXPECT_FALSE(ParseRfc3339Millis(bad).has_value()) << bad;
  }
}

TEST(Rfc3339Test, WritesUtcWithMillisecondsAndReadsItBack) {
  EXPECT_EQ("2026-11-24T09:30:00.000Z", Rfc3339(kAt));
  EXPECT_EQ("2026-11-24T09:30:00.123Z", Rfc3339(kAt + 123));
  EXPECT_EQ("1969-12-31T23:59:59.999Z", Rfc3339(-1));
  for (int64_t ms : {int64_t{0}, kAt, kAt + 999, int64_t{-1}, int64_t{32472144000000}}) {
    EXPECT_EQ(ms, ParseRfc3339Millis(Rfc3339(ms))) << ms;
  }
  const auto now = ParseRfc3339Millis(NowRfc3339());
  ASSERT_TRUE(now.has_value());
  EXPECT_GT(*now, kAt - 365LL * 86400 * 1000);
}

// The canonical shape has its own fast reader; whatever shape an agent
// writes, the same instant comes back: random instants from 1900 to 2999,
// written at random offsets with 0 to 9 fraction digits.
TEST(Rfc3339Test, EveryInstantReadsBackAtAnyOffsetAndPrecision) {
  std::mt19937_64 random(20261201);
  for (int i = 0; i < 20000; ++i) {
    const int64_t ms = std::uniform_int_distribution<int64_t>(-2208988800000, 32503679999999)(random);
    const int offset = std::uniform_int_distribution<int>(-1439, 1439)(random);
    const int digits = std::uniform_int_distribution<int>(0, 9)(random);
    // The local time at `offset`, written by hand (no shared code with the
    // reader): date-time fields, then the fraction, then the offset.
    const int64_t local = ms + offset * 60000LL;
    const auto day = date::floor<date::days>(date::sys_time<std::chrono::milliseconds>{
        std::chrono::milliseconds{local}});
    const date::year_month_day ymd{day};
    const int64_t in_day = local - std::chrono::duration_cast<std::chrono::milliseconds>(
                                       day.time_since_epoch()).count();
    char text[64];
    int n = std::snprintf(text, sizeof text, "%04d-%02u-%02uT%02lld:%02lld:%02lld", static_cast<int>(ymd.year()),
                          static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                          static_cast<long long>(in_day / 3600000), static_cast<long long>(in_day / 60000 % 60),
                          static_cast<long long>(in_day / 1000 % 60));
    std::string t(text, n);
    std::string fraction = std::to_string(1000 + in_day % 1000).substr(1) + "123456";
    if (digits > 0) t += "." + fraction.substr(0, digits);
    if (offset == 0 && i % 2 == 0) {
      t += i % 4 == 0 ? "Z" : "z";
    } else {
      n = std::snprintf(text, sizeof text, "%c%02d:%02d", offset < 0 ? '-' : '+', std::abs(offset) / 60,
                        std::abs(offset) % 60);
      t += std::string(text, n);
    }
    // Fewer than 3 digits cut the milliseconds.
    const int64_t cut = digits >= 3 ? 0 : (in_day % 1000) % (digits == 0 ? 1000 : digits == 1 ? 100 : 10);
    EXPECT_EQ(ms - cut, ParseRfc3339Millis(t)) << t;
  }
}

}  // namespace
}  // namespace liaison::wire
