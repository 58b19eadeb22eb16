//===- ProgressTest.cpp - the weight progress meter (moert/Progress.h) ----===//
//
// On a fake clock: silent for work under a second, then bytes, rate and
// time left; redrawn in place on a terminal at most 4 times a second, plain
// lines every 10 s in lines mode; nothing when off.
//
//===----------------------------------------------------------------------===//

#include "moert/Progress.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <string>

using namespace moert;

namespace {

/// What the meter wrote to a temporary file.
std::string contents(std::FILE *f) {
  std::fflush(f);
  std::rewind(f);
  std::string s;
  char buf[256];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0)
    s.append(buf, n);
  return s;
}

constexpr uint64_t kGiB = uint64_t(1) << 30;

} // namespace

TEST(Progress, Format) {
  EXPECT_EQ(ProgressMeter::format("moec: writing weights", kGiB, 4 * kGiB, 2.0,
                                  false),
            "moec: writing weights  1.00 GiB of 4.00 GiB (25%), 512.00 MiB/s, "
            "6 s left");
  EXPECT_EQ(ProgressMeter::format("x", 4 * kGiB, 4 * kGiB, 8.0, true),
            "x  4.00 GiB of 4.00 GiB (100%), 512.00 MiB/s, 8.0 s");
  EXPECT_EQ(ProgressMeter::format("x", 4 * kGiB, 4 * kGiB, 0.004, true),
            "x  4.00 GiB of 4.00 GiB (100%), 1000.00 GiB/s, 0.0 s");
  // Minutes and hours; nothing done yet: no rate.
  EXPECT_EQ(ProgressMeter::format("x", kGiB, 100 * kGiB, 10.0, false),
            "x  1.00 GiB of 100.00 GiB (1%), 102.40 MiB/s, 16 min 30 s left");
  EXPECT_EQ(ProgressMeter::format("x", kGiB, 1000 * kGiB, 10.0, false),
            "x  1.00 GiB of 1000.00 GiB (0%), 102.40 MiB/s, 2 h 46 min left");
  EXPECT_EQ(ProgressMeter::format("x", 0, 512, 1.0, false),
            "x  0 B of 512 B (0%)");
}

TEST(Progress, SilentUnderASecondThenRedrawnInPlace) {
  std::FILE *f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  double now = 100;
  {
    ProgressMeter m("load", 4 * kGiB, ProgressMeter::Mode::Terminal, f,
                    [&] { return now; });
    now += 0.5;
    m.update(kGiB);
    EXPECT_FALSE(m.shown());
    EXPECT_EQ(contents(f), "");
    now += 0.5; // 1 s: shown
    m.update(2 * kGiB);
    EXPECT_TRUE(m.shown());
    now += 0.1; // within 0.25 s of the last line: not redrawn
    m.update(3 * kGiB);
    now += 0.9;
    m.update(4 * kGiB);
  } // the destructor finishes it
  std::string text = contents(f);
  EXPECT_EQ(std::count(text.begin(), text.end(), '\r'), 3) << text;
  EXPECT_EQ(text.rfind("\rload  2.00 GiB of 4.00 GiB (50%), 2.00 GiB/s, 1 s "
                       "left",
                       0),
            0u)
      << text;
  EXPECT_EQ(text.find("3.00 GiB"), std::string::npos) << text;
  EXPECT_NE(text.find("\rload  4.00 GiB of 4.00 GiB (100%), 2.00 GiB/s  "),
            std::string::npos)
      << text;
  // The last line says how long it took, blanks what the longer first one
  // left, and ends the line.
  size_t last = text.rfind('\r');
  EXPECT_EQ(text.substr(last, 54),
            "\rload  4.00 GiB of 4.00 GiB (100%), 2.00 GiB/s, 2.0 s ")
      << text;
  EXPECT_EQ(text.back(), '\n');
  EXPECT_EQ(text.size() - last - 2, size_t(54)) << text; // the first's width
  std::fclose(f);
}

TEST(Progress, ShortWorkStaysSilent) {
  std::FILE *f = std::tmpfile();
  double now = 0;
  ProgressMeter m("load", 100, ProgressMeter::Mode::Terminal, f,
                  [&] { return now; });
  m.update(100);
  now = 0.9;
  m.finish();
  m.finish();
  EXPECT_FALSE(m.shown());
  // Nothing done (a check that was skipped) is silent however long it took.
  ProgressMeter idle("idle", 100, ProgressMeter::Mode::Terminal, f,
                     [&] { return now += 5; });
  idle.finish();
  EXPECT_EQ(contents(f), "");
  std::fclose(f);
}

TEST(Progress, LinesEveryTenSecondsAndOff) {
  std::FILE *f = std::tmpfile();
  double now = 0;
  {
    ProgressMeter m("write", 30 * kGiB, ProgressMeter::Mode::Lines, f,
                    [&] { return now; });
    for (int s = 1; s <= 30; ++s) {
      now = s;
      m.update(uint64_t(s) * kGiB);
    }
  }
  std::string text = contents(f);
  // At 1 s (first), 11 s, 21 s, and the final line.
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 4) << text;
  EXPECT_EQ(text.find('\r'), std::string::npos) << text;
  EXPECT_NE(text.find("write  11.00 GiB of 30.00 GiB (36%)"), std::string::npos)
      << text;
  EXPECT_NE(
      text.find("write  30.00 GiB of 30.00 GiB (100%), 1.00 GiB/s, 30 s\n"),
      std::string::npos)
      << text;
  std::fclose(f);

  f = std::tmpfile();
  {
    ProgressMeter m("off", kGiB, ProgressMeter::Mode::Off, f,
                    [&] { return now += 5; });
    m.update(kGiB / 2);
  }
  EXPECT_EQ(contents(f), "");
  std::fclose(f);
  // A file is not a terminal: off unless lines are asked for; --quiet wins.
  f = std::tmpfile();
  EXPECT_EQ(ProgressMeter::modeFor(false, false, f), ProgressMeter::Mode::Off);
  EXPECT_EQ(ProgressMeter::modeFor(false, true, f), ProgressMeter::Mode::Lines);
  EXPECT_EQ(ProgressMeter::modeFor(true, true, f), ProgressMeter::Mode::Off);
  std::fclose(f);
}
