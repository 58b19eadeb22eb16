//===- CommMpi.cpp - the MPI communicator ---------------------------------===//

#include "moert/MpiComm.h"

#include <climits>
#include <cstdio>
#include <cstdlib>
// The C API only: not the deprecated C++ bindings (libmpi_cxx).
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

using namespace moert;

namespace {
/// Throws CommError naming `call` unless `rc` is MPI_SUCCESS.
void check(int rc, const char *call) {
  if (rc == MPI_SUCCESS)
    return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS)
    len = snprintf(text, sizeof(text), "error code %d", rc);
  throw CommError(std::string(call) + " failed: " + std::string(text, len));
}

/// MPI counts are ints.
int count(int64_t n, const char *call) {
  if (n < 0 || n > INT_MAX)
    throw CommError(std::string(call) + ": " + std::to_string(n) +
                    " elements exceed MPI's int counts");
  return int(n);
}

class MpiComm : public Comm {
public:
  MpiComm(MPI_Comm comm, bool owned) : comm_(comm), owned_(owned) {
    check(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN),
          "MPI_Comm_set_errhandler");
    check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
    check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
  }
  ~MpiComm() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owned_ && !finalized)
      MPI_Comm_free(&comm_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char *kind() const override { return "mpi"; }

  void allToAll(const int64_t *send, int64_t *recv, int64_t n) override {
    check(MPI_Alltoall(send, count(n, "MPI_Alltoall"), MPI_INT64_T, recv,
                       count(n, "MPI_Alltoall"), MPI_INT64_T, comm_),
          "MPI_Alltoall");
  }

  void allToAllV(const void *send, const int64_t *sendBytes,
                 const int64_t *sendOffs, void *recv, const int64_t *recvBytes,
                 const int64_t *recvOffs) override {
    std::vector<int> sc(size_), sd(size_), rc(size_), rd(size_);
    for (int p = 0; p < size_; ++p) {
      sc[p] = count(sendBytes[p], "MPI_Alltoallv");
      sd[p] = count(sendOffs[p], "MPI_Alltoallv");
      rc[p] = count(recvBytes[p], "MPI_Alltoallv");
      rd[p] = count(recvOffs[p], "MPI_Alltoallv");
    }
    check(MPI_Alltoallv(send, sc.data(), sd.data(), MPI_BYTE, recv, rc.data(),
                        rd.data(), MPI_BYTE, comm_),
          "MPI_Alltoallv");
  }

  void allReduceSum(float *data, int64_t n) override {
    check(MPI_Allreduce(MPI_IN_PLACE, data, count(n, "MPI_Allreduce"),
                        MPI_FLOAT, MPI_SUM, comm_),
          "MPI_Allreduce");
  }

  void reduceScatterSum(const float *send, float *recv, int64_t n) override {
    check(MPI_Reduce_scatter_block(send, recv,
                                   count(n, "MPI_Reduce_scatter_block"),
                                   MPI_FLOAT, MPI_SUM, comm_),
          "MPI_Reduce_scatter_block");
  }

  void allGather(const void *send, int64_t bytes, void *recv) override {
    int n = count(bytes, "MPI_Allgather");
    check(MPI_Allgather(send, n, MPI_BYTE, recv, n, MPI_BYTE, comm_),
          "MPI_Allgather");
  }

  void gatherToRoot(const void *send, int64_t bytes,
                    std::vector<std::vector<char>> &out) override {
    int n = count(bytes, "MPI_Gatherv");
    std::vector<int> sizes(size_), offs(size_);
    check(MPI_Gather(&n, 1, MPI_INT, sizes.data(), 1, MPI_INT, 0, comm_),
          "MPI_Gather");
    std::vector<char> all;
    if (rank_ == 0) {
      int64_t total = 0;
      for (int p = 0; p < size_; ++p) {
        offs[p] = count(total, "MPI_Gatherv");
        total += sizes[p];
      }
      all.resize(total);
    }
    check(MPI_Gatherv(send, n, MPI_BYTE, all.data(), sizes.data(), offs.data(),
                      MPI_BYTE, 0, comm_),
          "MPI_Gatherv");
    out.clear();
    if (rank_ == 0)
      for (int p = 0; p < size_; ++p)
        out.emplace_back(all.begin() + offs[p],
                         all.begin() + offs[p] + sizes[p]);
  }

  void barrier() override { check(MPI_Barrier(comm_), "MPI_Barrier"); }

  [[noreturn]] void abort(const std::string &message) override {
    abortMpi(message, 1);
  }

  std::unique_ptr<Comm> split(int color, int key) override {
    MPI_Comm sub;
    check(MPI_Comm_split(comm_, color, key, &sub), "MPI_Comm_split");
    return std::make_unique<MpiComm>(sub, true);
  }

private:
  MPI_Comm comm_;
  bool owned_;
  int rank_ = 0, size_ = 1;
};
} // namespace

std::unique_ptr<Comm> moert::initMpi(int *argc, char ***argv) {
  int provided = 0;
  check(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided),
        "MPI_Init_thread");
  return std::make_unique<MpiComm>(MPI_COMM_WORLD, false);
}

void moert::finalizeMpi() {
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  if (init && !fin)
    check(MPI_Finalize(), "MPI_Finalize");
}

void moert::abortMpi(const std::string &message, int code) {
  std::fprintf(stderr, "%s\n", message.c_str());
  std::fflush(stderr);
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  if (init && !fin)
    MPI_Abort(MPI_COMM_WORLD, code);
  std::exit(code);
}
