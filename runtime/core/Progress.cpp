//===- Progress.cpp - progress of long weight reads and writes ------------===//

#include "moert/Progress.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <unistd.h>

using namespace moert;

namespace {

double steadySeconds() {
  return std::chrono::duration<double>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string bytesText(double b) {
  const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024.0 && u < 4) {
    b /= 1024.0;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), u ? "%.2f %s" : "%.0f %s", b, units[u]);
  return buf;
}

/// "12 s", "3 min 05 s", "2 h 46 min"; under 10 s with a decimal when
/// `precise` (how long it took, rather than a time left).
std::string durationText(double s, bool precise) {
  char buf[32];
  if (precise && s < 10)
    std::snprintf(buf, sizeof(buf), "%.1f s", s);
  else if (s < 60)
    std::snprintf(buf, sizeof(buf), "%.0f s", std::ceil(s));
  else if (s < 3600)
    std::snprintf(buf, sizeof(buf), "%d min %02d s", int(s) / 60, int(s) % 60);
  else
    std::snprintf(buf, sizeof(buf), "%d h %02d min", int(s) / 3600,
                  int(s) / 60 % 60);
  return buf;
}

} // namespace

ProgressMeter::Mode ProgressMeter::modeFor(bool quiet, bool forceLines,
                                           std::FILE *out) {
  if (quiet)
    return Mode::Off;
  if (isatty(fileno(out)))
    return Mode::Terminal;
  return forceLines ? Mode::Lines : Mode::Off;
}

ProgressMeter::ProgressMeter(std::string label, uint64_t total, Mode mode,
                             std::FILE *out, std::function<double()> clock)
    : label_(std::move(label)), total_(total), mode_(mode), out_(out),
      clock_(clock ? std::move(clock) : steadySeconds), start_(clock_()) {
  if (const char *env = std::getenv("MOERT_PROGRESS_DELAY")) {
    char *end = nullptr;
    double d = std::strtod(env, &end);
    if (end != env && !*end && d >= 0)
      delay_ = d;
  }
}

ProgressMeter::~ProgressMeter() { finish(); }

std::string ProgressMeter::format(const std::string &label, uint64_t done,
                                  uint64_t total, double seconds, bool final) {
  std::string s = label + "  " + bytesText(double(done));
  if (total) {
    s += " of " + bytesText(double(total));
    char pct[16];
    std::snprintf(pct, sizeof(pct), " (%d%%)",
                  int(std::min<uint64_t>(100, done * 100 / total)));
    s += pct;
  }
  if (seconds > 0 && done) {
    double rate = double(done) / seconds;
    s += ", " + bytesText(rate) + "/s";
    if (final)
      s += ", " + durationText(seconds, true);
    else if (total > done)
      s += ", " + durationText(double(total - done) / rate, false) + " left";
  }
  return s;
}

void ProgressMeter::print(bool final) {
  double now = clock_();
  std::string line = format(label_, done_, total_, now - start_, final);
  if (mode_ == Mode::Terminal) {
    // Redraw in place; blank what a longer previous line left.
    line.resize(std::max(line.size(), lastWidth_), ' ');
    lastWidth_ = line.size();
    std::fprintf(out_, "\r%s%s", line.c_str(), final ? "\n" : "");
  } else {
    std::fprintf(out_, "%s\n", line.c_str());
  }
  std::fflush(out_);
  lastPrint_ = now;
  shown_ = true;
}

void ProgressMeter::update(uint64_t done) {
  done_ = std::max(done_, done);
  if (mode_ == Mode::Off || finished_)
    return;
  double now = clock_();
  if (now - start_ < delay_)
    return;
  double every = mode_ == Mode::Terminal ? 0.25 : 10.0;
  if (!shown_ || now - lastPrint_ >= every)
    print(false);
}

void ProgressMeter::finish() {
  if (finished_)
    return;
  finished_ = true;
  // Work that ended within the delay (or did nothing) stays silent;
  // otherwise the last line says how long it took.
  if (mode_ != Mode::Off &&
      (shown_ || (done_ > 0 && clock_() - start_ >= delay_)))
    print(true);
}
