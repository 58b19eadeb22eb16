//===- Progress.h - progress of long weight reads and writes ----*- C++ -*-===//
//
// `moec ... -o model.moeplan` writing (and computing) gigabytes of weights,
// `moe-run` checking and paging them in: a one-line meter on stderr with the
// bytes done, the rate and the time left, e.g.
//
//   moe-run: checking weights  1.25 of 5.00 GiB (25%), 410.3 MiB/s, 9 s left
//
// It appears only once the work has taken a second (short work stays
// silent; the environment variable MOERT_PROGRESS_DELAY=SECONDS changes the
// second, e.g. to 0 in tests), redraws in place at most 4 times a second on a
// terminal, and is quiet when stderr is not a terminal or the tool runs with
// --quiet, unless `lines` mode asks for plain lines (one every 10 s and one at
// the end), which moec --progress uses for logs.
//
//===----------------------------------------------------------------------===//

#ifndef MOERT_PROGRESS_H
#define MOERT_PROGRESS_H

#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>

namespace moert {

class ProgressMeter {
public:
  enum class Mode {
    Off,      ///< prints nothing
    Terminal, ///< one line redrawn with '\r', a newline at the end
    Lines,    ///< a line every 10 s and at the end (logs)
  };

  /// Off under `quiet`; else Terminal when `out` is a terminal, Lines when
  /// `forceLines`, Off otherwise.
  static Mode modeFor(bool quiet, bool forceLines, std::FILE *out = stderr);

  /// `label` starts the line ("moe-run: checking weights"); `total` bytes
  /// are expected. `clock` (seconds, monotonic) is for tests.
  ProgressMeter(std::string label, uint64_t total, Mode mode,
                std::FILE *out = stderr,
                std::function<double()> clock = nullptr);
  ~ProgressMeter();
  ProgressMeter(const ProgressMeter &) = delete;
  ProgressMeter &operator=(const ProgressMeter &) = delete;

  /// `done` of the total bytes are done (non-decreasing).
  void update(uint64_t done);
  /// The total, when it is known only once the work has started.
  void setTotal(uint64_t total) { total_ = total; }
  /// Ends the meter: a last line when anything was shown. Idempotent.
  void finish();
  /// Whether a line has been printed.
  bool shown() const { return shown_; }

  /// The meter's text for `done` of `total` bytes after `seconds`.
  static std::string format(const std::string &label, uint64_t done,
                            uint64_t total, double seconds, bool final);

  /// Seconds of work before the meter appears (MOERT_PROGRESS_DELAY
  /// overrides it).
  static constexpr double kDelay = 1.0;

private:
  void print(bool final);

  std::string label_;
  uint64_t total_, done_ = 0;
  Mode mode_;
  std::FILE *out_;
  std::function<double()> clock_;
  double start_, lastPrint_ = -1e30, delay_ = kDelay;
  bool shown_ = false, finished_ = false;
  size_t lastWidth_ = 0;
};

} // namespace moert

#endif // MOERT_PROGRESS_H
