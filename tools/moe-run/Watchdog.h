//===- Watchdog.h - ends a run whose ranks stop making progress -*- C++ -*-===//
//
// moe-run's guard against hung ranks (a rank stopped with SIGSTOP, a rank
// that never reaches a collective): every rank marks what it is doing (a
// phase such as "gathering the outputs", or a plan step); a monitor thread
// checks the marks and, when one has not changed for the timeout, prints
// one error naming the rank, the step (op and ONNX node) and how long it
// waited, then ends the process with exit status 1. Under mpirun that ends
// every rank (mpirun kills the job when one rank exits non-zero); with
// --threads the ranks are this process.
//
//===----------------------------------------------------------------------===//

#ifndef MOERUN_WATCHDOG_H
#define MOERUN_WATCHDOG_H

#include "moert/Plan.h"

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace moerun {

class Watchdog {
public:
  /// Watches `ranks` slots (the ranks of this process; `firstRank` is the
  /// global rank of slot 0). `timeoutS` <= 0: never fires.
  Watchdog(double timeoutS, int firstRank, int ranks);
  ~Watchdog();
  Watchdog(const Watchdog &) = delete;
  Watchdog &operator=(const Watchdog &) = delete;

  /// Rank `rank` starts `phase` (a collective or local work outside the
  /// steps).
  void phase(int rank, const std::string &phase);
  /// Rank `rank` starts step `index` of `plan`.
  void step(int rank, const moert::Plan &plan, size_t index);
  /// Rank `rank` is done: no more timeouts for it.
  void idle(int rank);

private:
  using Clock = std::chrono::steady_clock;
  struct Slot {
    bool active = false;
    std::string phase; ///< when not in a step
    const moert::Plan *plan = nullptr;
    size_t step = 0;
    uint64_t marks = 0; ///< progress: phases and steps started
    Clock::time_point since;
  };
  std::string describe(const Slot &s) const;
  void monitor();
  [[noreturn]] void fire(size_t slot, double waited);

  double timeoutS_;
  int firstRank_;
  std::vector<Slot> slots_;
  std::mutex m_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

/// The test-only fault hook: MOERT_TEST_STALL=RANK:STEP:SECONDS makes rank
/// RANK sleep SECONDS before step STEP (a rank that hangs inside a run).
/// Returns the seconds to sleep at (`rank`, `step`), else 0.
double testStallSeconds(int rank, size_t step);
/// MOERT_TEST_STALL=RANK:init:SECONDS makes MPI rank RANK sleep SECONDS
/// before MPI_Init, without a watchdog of its own (a rank stopped before
/// the job starts). Returns the seconds to sleep for `rank`, else 0.
double testStallInitSeconds(int rank);

} // namespace moerun

#endif // MOERUN_WATCHDOG_H
