//===- Comm.cpp - one-rank and shared-memory (thread) communicators -------===//
//
// SelfComm copies; ThreadComm ranks publish pointers to their buffers in a
// shared table, meet at a barrier, copy straight from each other's buffers
// and meet again before anyone may reuse them. All groups of one world
// share a mutex and condition variable, so an abort wakes every waiter.
//
//===----------------------------------------------------------------------===//

#include "moert/Comm.h"

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <map>
#include <mutex>
#include <thread>
#include <tuple>

using namespace moert;

Comm::~Comm() = default;

//===----------------------------------------------------------------------===//
// SelfComm
//===----------------------------------------------------------------------===//

namespace {
class SelfComm : public Comm {
public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  const char *kind() const override { return "self"; }
  void allToAll(const int64_t *send, int64_t *recv, int64_t n) override {
    std::memmove(recv, send, n * sizeof(int64_t));
  }
  void allToAllV(const void *send, const int64_t *sendBytes,
                 const int64_t *sendOffs, void *recv, const int64_t *recvBytes,
                 const int64_t *recvOffs) override {
    if (sendBytes[0] != recvBytes[0])
      throw CommError("all-to-all-v: rank 0 expects " +
                      std::to_string(recvBytes[0]) + " bytes from itself, " +
                      "it sends " + std::to_string(sendBytes[0]));
    if (sendBytes[0] > 0) // an empty buffer may be null
      std::memmove(static_cast<char *>(recv) + recvOffs[0],
                   static_cast<const char *>(send) + sendOffs[0], sendBytes[0]);
  }
  void allReduceSum(float *, int64_t) override {}
  void reduceScatterSum(const float *send, float *recv, int64_t n) override {
    std::memmove(recv, send, n * sizeof(float));
  }
  void allGather(const void *send, int64_t bytes, void *recv) override {
    std::memmove(recv, send, bytes);
  }
  void gatherToRoot(const void *send, int64_t bytes,
                    std::vector<std::vector<char>> &out) override {
    const char *p = static_cast<const char *>(send);
    out.assign(1, std::vector<char>(p, p + bytes));
  }
  void barrier() override {}
  [[noreturn]] void abort(const std::string &message) override {
    throw CommAborted(message);
  }
  std::unique_ptr<Comm> split(int, int) override {
    return std::make_unique<SelfComm>();
  }
};
} // namespace

std::unique_ptr<Comm> moert::createSelfComm() {
  return std::make_unique<SelfComm>();
}

//===----------------------------------------------------------------------===//
// ThreadComm
//===----------------------------------------------------------------------===//

namespace {
struct Group;

/// State shared by every group of one thread world.
struct World {
  std::mutex m;
  std::condition_variable cv;
  bool aborted = false;
  std::string message;
  /// A group being created by split, by (parent, split number, color),
  /// until each of its `waiting` members has taken it: then the entry goes,
  /// so that no World -> Group -> World cycle outlives the split (it leaked
  /// every world, LeakSanitizer).
  struct PendingSplit {
    std::shared_ptr<Group> group;
    int waiting = 0;
  };
  std::map<std::tuple<const Group *, int64_t, int>, PendingSplit> splits;
};

/// The ranks of one communicator and their published buffers.
struct Group {
  Group(std::shared_ptr<World> w, int n)
      : world(std::move(w)), n(n), ptr(n), a(n), b(n), bytes(n), color(n),
        key(n) {}
  std::shared_ptr<World> world;
  int n;
  int arrived = 0;
  uint64_t generation = 0;
  std::vector<const void *> ptr;
  std::vector<const int64_t *> a, b;
  std::vector<int64_t> bytes;
  std::vector<int> color, key;
};

class ThreadComm : public Comm {
public:
  ThreadComm(std::shared_ptr<Group> g, int rank)
      : g_(std::move(g)), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return g_->n; }
  const char *kind() const override { return "threads"; }

  void allToAll(const int64_t *send, int64_t *recv, int64_t n) override {
    g_->ptr[rank_] = send;
    barrier();
    for (int p = 0; p < g_->n; ++p)
      std::memcpy(recv + p * n,
                  static_cast<const int64_t *>(g_->ptr[p]) + rank_ * n,
                  n * sizeof(int64_t));
    barrier();
  }

  void allToAllV(const void *send, const int64_t *sendBytes,
                 const int64_t *sendOffs, void *recv, const int64_t *recvBytes,
                 const int64_t *recvOffs) override {
    g_->ptr[rank_] = send;
    g_->a[rank_] = sendBytes;
    g_->b[rank_] = sendOffs;
    barrier();
    std::string error;
    for (int p = 0; p < g_->n; ++p) {
      int64_t n = g_->a[p][rank_];
      if (n != recvBytes[p]) {
        error = "all-to-all-v: rank " + std::to_string(rank_) + " expects " +
                std::to_string(recvBytes[p]) + " bytes from rank " +
                std::to_string(p) + ", which sends " + std::to_string(n);
        continue;
      }
      // Nothing to copy: the buffers may be null (an empty vector's data(),
      // a rank that receives no rows; memcpy's pointers must not be, UBSan).
      if (n > 0)
        std::memcpy(static_cast<char *>(recv) + recvOffs[p],
                    static_cast<const char *>(g_->ptr[p]) + g_->b[p][rank_], n);
    }
    barrier();
    if (!error.empty())
      throw CommError(error);
  }

  void allReduceSum(float *data, int64_t n) override {
    g_->ptr[rank_] = data;
    barrier();
    std::vector<float> sum(n, 0.0f);
    // Sum in rank order on every rank: identical results everywhere.
    for (int p = 0; p < g_->n; ++p) {
      const float *x = static_cast<const float *>(g_->ptr[p]);
      for (int64_t i = 0; i < n; ++i)
        sum[i] += x[i];
    }
    barrier();
    std::memcpy(data, sum.data(), n * sizeof(float));
  }

  void reduceScatterSum(const float *send, float *recv, int64_t n) override {
    g_->ptr[rank_] = send;
    barrier();
    // Block rank_ of every rank's buffer, summed in rank order (as
    // allReduceSum: the same bits as its all-reduce).
    std::fill(recv, recv + n, 0.0f);
    for (int p = 0; p < g_->n; ++p) {
      const float *x = static_cast<const float *>(g_->ptr[p]) + rank_ * n;
      for (int64_t i = 0; i < n; ++i)
        recv[i] += x[i];
    }
    barrier();
  }

  void allGather(const void *send, int64_t bytes, void *recv) override {
    g_->ptr[rank_] = send;
    barrier();
    for (int p = 0; p < g_->n; ++p)
      std::memcpy(static_cast<char *>(recv) + p * bytes, g_->ptr[p], bytes);
    barrier();
  }

  void gatherToRoot(const void *send, int64_t bytes,
                    std::vector<std::vector<char>> &out) override {
    g_->ptr[rank_] = send;
    g_->bytes[rank_] = bytes;
    barrier();
    out.clear();
    if (rank_ == 0) {
      out.resize(g_->n);
      for (int p = 0; p < g_->n; ++p) {
        const char *src = static_cast<const char *>(g_->ptr[p]);
        out[p].assign(src, src + g_->bytes[p]);
      }
    }
    barrier();
  }

  void barrier() override {
    World &w = *g_->world;
    std::unique_lock<std::mutex> lock(w.m);
    if (w.aborted)
      throw CommAborted(w.message);
    if (++g_->arrived == g_->n) {
      g_->arrived = 0;
      ++g_->generation;
      w.cv.notify_all();
      return;
    }
    uint64_t gen = g_->generation;
    w.cv.wait(lock, [&] { return g_->generation != gen || w.aborted; });
    if (g_->generation == gen)
      throw CommAborted(w.message);
  }

  [[noreturn]] void abort(const std::string &message) override {
    abortWorld(*g_->world, message);
    throw CommAborted(message);
  }

  static void abortWorld(World &w, const std::string &message) {
    std::lock_guard<std::mutex> lock(w.m);
    if (!w.aborted) {
      w.aborted = true;
      w.message = message;
    }
    w.cv.notify_all();
  }

  std::unique_ptr<Comm> split(int color, int key) override {
    g_->color[rank_] = color;
    g_->key[rank_] = key;
    barrier();
    std::vector<std::pair<int, int>> members; // (key, rank)
    for (int p = 0; p < g_->n; ++p)
      if (g_->color[p] == color)
        members.push_back({g_->key[p], p});
    std::sort(members.begin(), members.end());
    int index = 0;
    for (size_t i = 0; i < members.size(); ++i)
      if (members[i].second == rank_)
        index = int(i);
    std::shared_ptr<Group> sub;
    {
      World &w = *g_->world;
      std::lock_guard<std::mutex> lock(w.m);
      auto key = std::make_tuple(g_.get(), splits_, color);
      auto it = w.splits.find(key);
      if (it == w.splits.end()) {
        int n = int(members.size());
        it = w.splits
                 .emplace(key,
                          World::PendingSplit{
                              std::make_shared<Group>(g_->world, n), n})
                 .first;
      }
      sub = it->second.group;
      if (--it->second.waiting == 0)
        w.splits.erase(it);
    }
    ++splits_;
    barrier();
    return std::make_unique<ThreadComm>(sub, index);
  }

  World &world() { return *g_->world; }

private:
  std::shared_ptr<Group> g_;
  int rank_;
  int64_t splits_ = 0;
};
} // namespace

std::vector<std::unique_ptr<Comm>> moert::createThreadComms(int n) {
  auto world = std::make_shared<World>();
  auto group = std::make_shared<Group>(world, n);
  std::vector<std::unique_ptr<Comm>> comms;
  for (int r = 0; r < n; ++r)
    comms.push_back(std::make_unique<ThreadComm>(group, r));
  return comms;
}

void moert::runThreadRanks(int n, const std::function<void(Comm &)> &body) {
  std::vector<std::unique_ptr<Comm>> comms = createThreadComms(n);
  std::mutex m;
  std::exception_ptr first;
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      try {
        body(*comms[r]);
      } catch (const std::exception &e) {
        {
          std::lock_guard<std::mutex> lock(m);
          if (!first)
            first = std::current_exception();
        }
        ThreadComm::abortWorld(static_cast<ThreadComm &>(*comms[r]).world(),
                               e.what());
      } catch (...) {
        {
          std::lock_guard<std::mutex> lock(m);
          if (!first)
            first = std::current_exception();
        }
        ThreadComm::abortWorld(static_cast<ThreadComm &>(*comms[r]).world(),
                               "a rank failed with an unknown exception");
      }
    });
  }
  for (std::thread &t : threads)
    t.join();
  if (first)
    std::rethrow_exception(first);
}
