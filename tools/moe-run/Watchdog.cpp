//===- Watchdog.cpp - ends a run whose ranks stop making progress --------===//

#include "Watchdog.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

using namespace moerun;

Watchdog::Watchdog(double timeoutS, int firstRank, int ranks)
    : timeoutS_(timeoutS), firstRank_(firstRank), slots_(size_t(ranks)) {
  if (timeoutS_ > 0)
    thread_ = std::thread([this] { monitor(); });
}

Watchdog::~Watchdog() {
  {
    std::lock_guard<std::mutex> lock(m_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable())
    thread_.join();
}

void Watchdog::phase(int rank, const std::string &phase) {
  std::lock_guard<std::mutex> lock(m_);
  Slot &s = slots_[size_t(rank - firstRank_)];
  s.active = true;
  s.phase = phase;
  s.plan = nullptr;
  ++s.marks;
  s.since = Clock::now();
}

void Watchdog::step(int rank, const moert::Plan &plan, size_t index) {
  std::lock_guard<std::mutex> lock(m_);
  Slot &s = slots_[size_t(rank - firstRank_)];
  s.active = true;
  s.plan = &plan;
  s.step = index;
  ++s.marks;
  s.since = Clock::now();
}

void Watchdog::idle(int rank) {
  std::lock_guard<std::mutex> lock(m_);
  slots_[size_t(rank - firstRank_)].active = false;
}

std::string Watchdog::describe(const Slot &s) const {
  if (!s.plan)
    return s.phase;
  const moert::Step &st = s.plan->steps[s.step];
  std::string d = "step " + std::to_string(s.step) + " (" + st.op();
  if (!st.loc.empty())
    d += " at '" + st.loc + "'";
  return d + ")";
}

void Watchdog::monitor() {
  std::unique_lock<std::mutex> lock(m_);
  auto tick = std::chrono::milliseconds(timeoutS_ < 2    ? 50
                                        : timeoutS_ < 60 ? 250
                                                         : 1000);
  while (!stop_) {
    cv_.wait_for(lock, tick, [this] { return stop_; });
    if (stop_)
      return;
    Clock::time_point now = Clock::now();
    // Fires when a rank has waited past the timeout; names the rank that
    // made the least progress (with thread ranks, the one that hangs while
    // the others wait for it in a later collective), then the longest
    // waiting.
    bool late = false;
    size_t worst = slots_.size();
    double waited = 0;
    for (size_t i = 0; i < slots_.size(); ++i) {
      if (!slots_[i].active)
        continue;
      double w = std::chrono::duration<double>(now - slots_[i].since).count();
      late |= w > timeoutS_;
      if (worst == slots_.size() || slots_[i].marks < slots_[worst].marks ||
          (slots_[i].marks == slots_[worst].marks && w > waited)) {
        worst = i;
        waited = w;
      }
    }
    if (late)
      fire(worst, waited);
  }
}

void Watchdog::fire(size_t slot, double waited) {
  // Called with the lock held: the marks do not change under us.
  char secs[64];
  std::snprintf(secs, sizeof(secs), "%.0f s (--timeout %g)", waited, timeoutS_);
  std::string msg = "rank " + std::to_string(firstRank_ + int(slot)) +
                    " made no progress for " + secs + " in " +
                    describe(slots_[slot]);
  std::string others;
  for (size_t i = 0; i < slots_.size(); ++i)
    if (i != slot && slots_[i].active)
      others += (others.empty() ? "" : ", ") + std::string("rank ") +
                std::to_string(firstRank_ + int(i)) + " in " +
                describe(slots_[i]);
  if (!others.empty())
    msg += "; the others wait: " + others;
  if (slots_.size() == 1)
    msg += "; a rank it waits for may be hung or stopped";
  std::fprintf(stderr, "moe-run: error: %s; ending every rank\n", msg.c_str());
  std::fflush(stderr);
  std::fflush(stdout);
  // No destructors, no MPI_Finalize: a peer may never answer. Under
  // mpirun a rank that exits non-zero ends the job.
  std::_Exit(1);
}

namespace {
/// MOERT_TEST_STALL parsed once: RANK:STEP:SECONDS or RANK:init:SECONDS.
struct StallSpec {
  int rank = -1;
  bool init = false;
  unsigned long step = 0;
  double seconds = 0;
};

const StallSpec &stallSpec() {
  static const StallSpec spec = [] {
    StallSpec s;
    const char *env = std::getenv("MOERT_TEST_STALL");
    if (!env)
      return s;
    if (std::sscanf(env, "%d:init:%lf", &s.rank, &s.seconds) == 2)
      s.init = true;
    else if (std::sscanf(env, "%d:%lu:%lf", &s.rank, &s.step, &s.seconds) != 3)
      s = StallSpec();
    return s;
  }();
  return spec;
}
} // namespace

double moerun::testStallSeconds(int rank, size_t step) {
  const StallSpec &s = stallSpec();
  return !s.init && s.rank == rank && s.step == step ? s.seconds : 0;
}

double moerun::testStallInitSeconds(int rank) {
  const StallSpec &s = stallSpec();
  return s.init && s.rank == rank ? s.seconds : 0;
}
