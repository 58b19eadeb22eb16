//===- Comm.h - communicators for the ranks of a plan -------------*- C++
//-*-===//
//
// The collectives the executor needs, over a group of ranks: the count
// all-to-all and the ragged byte all-to-all of dispatch/combine, the f32
// all-reduce of tensor parallelism and reduce-scatter of sequence
// parallelism, all-gather, gather-to-root of the outputs and reports,
// barrier and abort. Three implementations:
//
// * SelfComm: one rank, no communication.
// * ThreadComm: N ranks as threads of one process exchanging through shared
//   memory (tests, and the in-process multi-rank GPU path).
// * MpiComm: one rank per process over MPI (moert/MpiComm.h, built when MPI
//   is found; MOERT_HAVE_MPI is then defined).
//
// Every operation is collective over the communicator's ranks and must be
// called by all of them in the same order. Failures throw CommError; when
// another rank aborts, a ThreadComm rank waiting in a collective throws
// CommAborted (an MPI rank is ended by MPI_Abort instead).
//
//===----------------------------------------------------------------------===//

#ifndef MOERT_COMM_H
#define MOERT_COMM_H

#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace moert {

/// A failed collective (an MPI error, mismatched sizes between ranks).
class CommError : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

/// Thrown in the ranks of a ThreadComm world after one of them aborted;
/// what() is the aborting rank's message.
class CommAborted : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

class Comm {
public:
  virtual ~Comm();
  /// This rank's index in the communicator and the number of ranks.
  virtual int rank() const = 0;
  virtual int size() const = 0;
  /// What carries the data: "self", "threads" (shared memory of one
  /// process) or "mpi". Ranks of a "threads" communicator share an address
  /// space (and so, on a GPU, device pointers).
  virtual const char *kind() const = 0;

  /// Count all-to-all: `send` holds size()*n integers, block p going to rank
  /// p; `recv` receives size()*n integers, block p from rank p.
  virtual void allToAll(const int64_t *send, int64_t *recv, int64_t n) = 0;

  /// Ragged all-to-all of bytes: sendBytes[p] bytes at send+sendOffs[p] go
  /// to rank p, which receives recvBytes[q] bytes from each rank q at
  /// recv+recvOffs[q]. All arrays have size() entries; the receive sizes
  /// must match what the peers send (CommError otherwise).
  virtual void allToAllV(const void *send, const int64_t *sendBytes,
                         const int64_t *sendOffs, void *recv,
                         const int64_t *recvBytes, const int64_t *recvOffs) = 0;

  /// data[0..n) = the element-wise sum of every rank's data (in place).
  virtual void allReduceSum(float *data, int64_t n) = 0;

  /// recv[0..n) = the element-wise sum over every rank p of block rank() of
  /// p's `send` (size()*n floats, block q for rank q). recv must not
  /// overlap send.
  virtual void reduceScatterSum(const float *send, float *recv, int64_t n) = 0;

  /// recv (size()*bytes) = the concatenation of every rank's `bytes` bytes,
  /// in rank order.
  virtual void allGather(const void *send, int64_t bytes, void *recv) = 0;

  /// Rank 0 receives every rank's bytes (their sizes may differ) in
  /// `out[rank]`; other ranks' `out` is left empty.
  virtual void gatherToRoot(const void *send, int64_t bytes,
                            std::vector<std::vector<char>> &out) = 0;

  virtual void barrier() = 0;

  /// Ends every rank of the world with `message`. ThreadComm: wakes and
  /// fails the other threads (CommAborted) and throws CommAborted here;
  /// MpiComm: prints the message to stderr, then MPI_Abort (exit status 1),
  /// and does not return.
  [[noreturn]] virtual void abort(const std::string &message) = 0;

  /// The sub-communicator of the ranks with the same `color`, ordered by
  /// `key` (MPI_Comm_split semantics). Collective over this communicator.
  virtual std::unique_ptr<Comm> split(int color, int key) = 0;
};

/// A one-rank communicator: collectives are copies.
std::unique_ptr<Comm> createSelfComm();

/// The `n` rank communicators of one shared-memory world, for callers that
/// start their own threads (one communicator per thread).
std::vector<std::unique_ptr<Comm>> createThreadComms(int n);

/// Runs `body(comm)` on `n` threads, each with its rank's communicator of
/// one shared-memory world, and waits for them. The first exception a rank
/// throws aborts the others (their collectives throw CommAborted); it is
/// rethrown here after every thread has ended.
void runThreadRanks(int n, const std::function<void(Comm &)> &body);

} // namespace moert

#endif // MOERT_COMM_H
