//===- Runtime.cpp - moec.Plan's C++ half: load and run plans -------------===//
//
// _moec.PlanFile: a .moeplan opened through moert (moert/Plan.h), its
// manifest for describe() and the input/output signatures, and run():
// the ranks as threads of this process (moert::runThreadRanks), one rank
// in this process, or this process's rank of an MPI job (init_mpi). The
// GIL is released while the ranks run. Each rank's plan is opened once
// (its weights mapped and checked) and kept for the next runs.
//
// Inputs arrive as read-only C-contiguous CPU arrays (numpy, or any
// DLPack / buffer-protocol tensor nanobind takes without a copy); their
// bytes are copied once into the runtime's arrays (moert::NpyArray), from
// which each rank binds its block. Outputs are returned as numpy arrays
// over the runtime's buffers (no copy).
//
//===----------------------------------------------------------------------===//

#include "Bindings.h"

#include "moert/Comm.h"
#include "moert/Executor.h"
#include "moert/Generate.h"
#include "moert/Plan.h"
#ifdef MOERT_HAVE_MPI
#include "moert/MpiComm.h"
#endif

#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <nlohmann/json.hpp>

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>

namespace nb = nanobind;
using namespace moert;

namespace moecpy {
namespace {

/// The MPI world after init_mpi (null otherwise).
std::unique_ptr<Comm> &mpiWorld() {
  static std::unique_ptr<Comm> world;
  return world;
}

using InArray = nb::ndarray<nb::ro, nb::c_contig, nb::device::cpu>;
using OutArray = nb::ndarray<nb::numpy>;

/// The .npy descriptors moert reads and writes, and their DLPack dtypes:
/// one table for both directions.
struct DtypePair {
  const char *descr;
  nb::dlpack::dtype_code code;
  uint8_t bits;
};
constexpr DtypePair kDtypes[] = {
    {"<f4", nb::dlpack::dtype_code::Float, 32},
    {"<f8", nb::dlpack::dtype_code::Float, 64},
    {"<f2", nb::dlpack::dtype_code::Float, 16},
    {"<i8", nb::dlpack::dtype_code::Int, 64},
    {"<i4", nb::dlpack::dtype_code::Int, 32},
    {"|i1", nb::dlpack::dtype_code::Int, 8},
    {"|u1", nb::dlpack::dtype_code::UInt, 8},
    {"|b1", nb::dlpack::dtype_code::Bool, 8},
};

/// The .npy descriptor of a DLPack dtype, "" when moert has none.
std::string npyDescr(nb::dlpack::dtype t) {
  if (t.lanes != 1)
    return "";
  for (const DtypePair &d : kDtypes)
    if (t.code == uint8_t(d.code) && t.bits == d.bits)
      return d.descr;
  return "";
}

/// The DLPack dtype of a .npy descriptor moert writes.
nb::dlpack::dtype dlpackOf(const std::string &descr) {
  for (const DtypePair &d : kDtypes)
    if (descr == d.descr)
      return nb::dlpack::dtype{uint8_t(d.code), d.bits, 1};
  throw RunError("output of dtype '" + descr + "': not representable in numpy");
}

/// A numpy array that owns `a`'s bytes (moved, not copied).
OutArray toNumpy(NpyArray &&a) {
  auto *held = new NpyArray(std::move(a));
  nb::capsule owner(
      held, [](void *p) noexcept { delete static_cast<NpyArray *>(p); });
  std::vector<size_t> shape(held->shape.begin(), held->shape.end());
  return OutArray(held->data.data(), shape.size(), shape.data(), owner, nullptr,
                  dlpackOf(held->dtype));
}

std::string meshText(const Plan &plan) {
  std::string mesh;
  for (const MeshAxis &a : plan.mesh)
    mesh += (mesh.empty() ? "" : ",") + a.name + "=" + std::to_string(a.size);
  return mesh;
}

/// A plan file and each rank's opened copy (after the first run).
class PlanFile {
public:
  PlanFile(std::string path, bool verifyWeights)
      : path_(std::move(path)), verify_(verifyWeights) {
    std::string err;
    manifest_ = LoadedPlan::open(path_, -1, err);
    if (!manifest_)
      throw PlanError(err);
    // One slot per rank, made here: the rank threads only fill their own.
    ranks_.resize(size_t(manifest_->plan().worldSize()));
  }

  const Plan &plan() const { return manifest_->plan(); }
  const std::string &path() const { return path_; }

  /// (name, dtype, global shape) of the inputs or outputs.
  std::vector<std::tuple<std::string, std::string, std::vector<int64_t>>>
  signature(bool outputs) const {
    std::vector<std::tuple<std::string, std::string, std::vector<int64_t>>> s;
    for (const ModelIO &m : outputs ? plan().outputs : plan().inputs)
      s.emplace_back(m.name, dtypeName(m.dtype), m.shape);
    return s;
  }

  nb::tuple run(nb::dict inputs, std::optional<int> ranks, bool threads);
  nb::tuple generate(InArray ids, int64_t maxNewTokens,
                     std::optional<int> ranks, bool threads, double temperature,
                     uint64_t seed, PlanFile *decode);
  /// Rank `rank`'s plan, opened (and its weights checked) on first use.
  LoadedPlan &rankPlan(int rank) {
    std::unique_ptr<LoadedPlan> &lp = ranks_.at(size_t(rank));
    if (!lp) {
      std::string err;
      lp = LoadedPlan::open(path_, rank, err, verify_);
      if (!lp)
        throw PlanError(err);
    }
    return *lp;
  }

private:
  /// The ranks a call runs (`ranks`, the MPI world or the plan's), checked
  /// against the plan; `mpi` the MPI world when the ranks are processes.
  int rankCount(std::optional<int> ranks, bool threads, Comm *&mpi);
  /// Runs `body` on every rank of this process (the GIL released, one call
  /// of a plan at a time): the MPI rank, the one rank, or n thread ranks.
  /// Errors become PlanError or RunError; a failing MPI rank ends the job.
  void onRanks(Comm *mpi, int n, const std::function<void(Comm &)> &body);
  /// One rank's run; rank 0 (of `world`) fills `outs` and `reports`.
  void runRank(Comm &world, const std::map<std::string, NpyArray> &in,
               std::vector<std::pair<std::string, NpyArray>> &outs,
               std::vector<RunReport> &reports) {
    Executor ex(rankPlan(world.rank()), world, createCpuBackend());
    ex.setInputs(in);
    ex.run();
    auto o = ex.gatherOutputs();
    auto r = ex.gatherReports();
    if (world.rank() == 0) {
      outs = std::move(o);
      reports = std::move(r);
    }
  }

  std::string path_;
  bool verify_;
  std::unique_ptr<LoadedPlan> manifest_;
  std::vector<std::unique_ptr<LoadedPlan>> ranks_;
  std::mutex runMutex_;
};

int PlanFile::rankCount(std::optional<int> ranks, bool threads, Comm *&mpi) {
  int64_t world = plan().worldSize();
  mpi = threads ? nullptr : mpiWorld().get();
  int n = ranks ? *ranks : mpi ? mpi->size() : int(world);
  if (n != world)
    throw nb::value_error((path_ + ": the plan is for " +
                           std::to_string(world) + " ranks (mesh " +
                           meshText(plan()) +
                           "), run() was given ranks=" + std::to_string(n))
                              .c_str());
  if (mpi && mpi->size() != n)
    throw nb::value_error(("ranks=" + std::to_string(n) + " but " +
                           std::to_string(mpi->size()) +
                           " MPI ranks were started")
                              .c_str());
  if (!threads && !mpi && n > 1)
    throw nb::value_error(
        ("threads=False runs one rank per process: start the script under "
         "mpirun -n " +
         std::to_string(n) + " (or srun) and call moert.init() first")
            .c_str());
  return n;
}

void PlanFile::onRanks(Comm *mpi, int n,
                       const std::function<void(Comm &)> &body) {
  nb::gil_scoped_release release;
  // One run of a plan at a time (Python threads may share a Plan).
  std::lock_guard<std::mutex> lock(runMutex_);
  try {
    if (mpi) {
      // Every rank opens its plan; all fail together when one cannot
      // (no rank is left waiting in a collective).
      std::string message;
      try {
        rankPlan(mpi->rank());
      } catch (const PlanError &e) {
        message = e.what();
      }
      int32_t failedHere = !message.empty();
      std::vector<int32_t> all(mpi->size());
      mpi->allGather(&failedHere, sizeof(failedHere), all.data());
      for (int p = 0; p < mpi->size(); ++p)
        if (all[p])
          throw PlanError(p == mpi->rank() ? message
                                           : "rank " + std::to_string(p) +
                                                 " could not open the plan");
      try {
        body(*mpi);
      } catch (const std::exception &e) {
        // Other ranks wait in collectives: end the job, as moe-run does.
        mpi->abort(std::string("moec: error: ") + e.what());
      }
    } else if (n == 1) {
      auto self = createSelfComm();
      body(*self);
    } else {
      runThreadRanks(n, body);
    }
  } catch (const PlanError &) {
    throw;
  } catch (const nb::builtin_exception &) {
    throw;
  } catch (const std::bad_alloc &) {
    throw RunError("out of memory");
  } catch (const std::exception &e) {
    throw RunError(e.what());
  }
}

/// `a`'s dtype, shape and bytes as an NpyArray (`what` names it in errors).
NpyArray toNpy(const InArray &a, const std::string &what) {
  NpyArray arr;
  arr.dtype = npyDescr(a.dtype());
  if (arr.dtype.empty())
    throw nb::type_error((what + ": dtype not supported by moert (f32, f64, "
                                 "f16, i64, i32, i8, u8, bool)")
                             .c_str());
  for (size_t d = 0; d < a.ndim(); ++d)
    arr.shape.push_back(int64_t(a.shape(d)));
  const char *p = static_cast<const char *>(a.data());
  arr.data.assign(p, p + a.nbytes());
  return arr;
}

nb::tuple PlanFile::run(nb::dict inputs, std::optional<int> ranks,
                        bool threads) {
  Comm *mpi = nullptr;
  int n = rankCount(ranks, threads, mpi);
  std::map<std::string, NpyArray> in;
  for (auto [key, value] : inputs) {
    std::string name = nb::cast<std::string>(key);
    InArray a;
    if (!nb::try_cast(value, a))
      throw nb::type_error(("input '" + name +
                            "': expected a C-contiguous CPU array (numpy, "
                            "or a DLPack tensor on the CPU), got " +
                            nb::type_name(value.type()).c_str())
                               .c_str());
    in[name] = toNpy(a, "input '" + name + "'");
  }
  std::string err;
  if (!checkInputs(plan(), in, err))
    throw nb::value_error(err.c_str());

  std::vector<std::pair<std::string, NpyArray>> outs;
  std::vector<RunReport> reports;
  onRanks(mpi, n, [&](Comm &c) { runRank(c, in, outs, reports); });
  nb::dict result;
  for (auto &[name, arr] : outs)
    result[name.c_str()] = toNumpy(std::move(arr));
  std::vector<std::string> reportJson;
  for (const RunReport &r : reports)
    reportJson.push_back(r.toJson().dump());
  return nb::make_tuple(result, reportJson);
}

nb::tuple PlanFile::generate(InArray ids, int64_t maxNewTokens,
                             std::optional<int> ranks, bool threads,
                             double temperature, uint64_t seed,
                             PlanFile *decode) {
  Comm *mpi = nullptr;
  int n = rankCount(ranks, threads, mpi);
  NpyArray prompt = toNpy(ids, "ids");
  GenerateOptions o;
  o.maxNewTokens = maxNewTokens;
  o.temperature = temperature;
  o.seed = seed;
  if (decode && decode->plan().worldSize() != plan().worldSize())
    throw nb::value_error((decode->path() + ": the decode plan is for " +
                           std::to_string(decode->plan().worldSize()) +
                           " ranks, this plan for " +
                           std::to_string(plan().worldSize()))
                              .c_str());
  std::string why =
      decode ? generateWithCacheError(plan(), decode->plan(), prompt, o)
             : generateError(plan(), prompt, o);
  if (!why.empty())
    throw nb::value_error((path_ + ": generate: " + why).c_str());
  GenerateResult result;
  onRanks(mpi, n, [&](Comm &c) {
    Executor ex(rankPlan(c.rank()), c, createCpuBackend());
    GenerateResult g;
    if (decode) {
      Executor dx(decode->rankPlan(c.rank()), c, createCpuBackend());
      g = generateWithCache(ex, dx, c, plan(), decode->plan(), prompt, o);
    } else {
      g = moert::generate(ex, c, plan(), prompt, o);
    }
    if (c.rank() == 0)
      result = std::move(g);
  });
  if (result.ids.data.empty()) // an MPI rank other than 0
    return nb::make_tuple(nb::none(), result.prefillSeconds,
                          result.decodeSeconds);
  return nb::make_tuple(toNumpy(std::move(result.ids)), result.prefillSeconds,
                        result.decodeSeconds);
}

} // namespace

void bindRuntime(nb::module_ &m) {
  nb::class_<PlanFile>(m, "PlanFile")
      .def(nb::init<std::string, bool>(), nb::arg("path"),
           nb::arg("verify_weights") = true,
           "Opens the plan at `path` (its manifest; each rank's weights are "
           "mapped at its first run).")
      .def_prop_ro("path", &PlanFile::path)
      .def_prop_ro("world_size",
                   [](const PlanFile &p) { return p.plan().worldSize(); })
      .def_prop_ro("mesh",
                   [](const PlanFile &p) {
                     std::vector<std::pair<std::string, int64_t>> axes;
                     for (const MeshAxis &a : p.plan().mesh)
                       axes.emplace_back(a.name, a.size);
                     return axes;
                   })
      .def_prop_ro("source", [](const PlanFile &p) { return p.plan().source; })
      .def("inputs", [](const PlanFile &p) { return p.signature(false); })
      .def("outputs", [](const PlanFile &p) { return p.signature(true); })
      .def("describe", [](const PlanFile &p) { return describePlan(p.plan()); })
      .def("run", &PlanFile::run, nb::arg("inputs"),
           nb::arg("ranks").none() = nb::none(), nb::arg("threads") = true,
           "Runs the plan; returns (outputs, per-rank report JSON texts).")
      .def("generate", &PlanFile::generate, nb::arg("ids"),
           nb::arg("max_new_tokens"), nb::arg("ranks").none() = nb::none(),
           nb::arg("threads") = true, nb::arg("temperature") = 0.0,
           nb::arg("seed") = 0, nb::arg("decode").none() = nb::none(),
           "Generates (moert/Generate.h); returns (ids or None off rank 0, "
           "prefill seconds, decode seconds).");

  m.def(
      "init_mpi",
      []() {
#ifdef MOERT_HAVE_MPI
        std::unique_ptr<Comm> &w = mpiWorld();
        if (!w) {
          try {
            w = initMpi(nullptr, nullptr);
          } catch (const std::exception &e) {
            throw RunError(e.what());
          }
        }
        return std::make_pair(w->rank(), w->size());
#else
        throw RunError("this moec was built without MPI");
        return std::make_pair(0, 1);
#endif
      },
      "MPI_Init (once): returns (rank, size) of MPI_COMM_WORLD.");
  m.def("finalize_mpi", []() {
#ifdef MOERT_HAVE_MPI
    if (mpiWorld()) {
      mpiWorld().reset();
      finalizeMpi();
    }
#endif
  });
  m.attr("has_mpi") =
#ifdef MOERT_HAVE_MPI
      true;
#else
      false;
#endif
}

} // namespace moecpy
