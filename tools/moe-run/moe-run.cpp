//===- moe-run.cpp - runs a .moeplan on CPU ranks -------------------------===//
//
// moe-run -n N model.moeplan --input NAME=FILE.npy ... [-o out.npy|out.npz]
//         [--json] [--record-routing FILE] [--threads] [--describe]
//         [--device cpu|cuda] [--timeout SECONDS] [--no-verify-weights]
//         [--quiet]
//
// Ranks: -n 1 runs in this process; --threads runs N ranks as threads
// (ThreadComm); otherwise, started alone with N > 1, moe-run re-launches
// itself through `mpirun -n N`, and under mpirun/srun it is one MPI rank.
// --device cuda runs the steps on GPUs (moert/cuda/CudaBackend.h; built
// where the CUDA toolkit is found): one GPU per MPI rank, or all thread
// ranks on the visible GPUs (several on one GPU when there is only one).
// Every error (a flag, the plan, rank count, inputs, a failing rank) prints
// one message and ends every rank with exit status 1. The command line goes
// through CLI11 (moe-run --help). A rank that makes no progress for
// --timeout seconds (a stopped or hung rank) ends every rank the same way
// (Watchdog.h). Each rank checks the weight segments it maps against their
// checksums (--no-verify-weights skips it). Checking and paging in the
// weights show a progress meter on rank 0 when they take over a second and
// stderr is a terminal (moert/Progress.h; --quiet: never).
//
//===----------------------------------------------------------------------===//

#include "Options.h"
#include "Watchdog.h"

#include "moert/Comm.h"
#include "moert/Executor.h"
#include "moert/Generate.h"
#include "moert/Npy.h"
#include "moert/Plan.h"
#include "moert/Progress.h"
#include "moert/RoutingLoad.h"
#ifdef MOERT_HAVE_MPI
#include "moert/MpiComm.h"
#endif
#ifdef MOERT_HAVE_CUDA_EXEC
#include "moert/cuda/CudaBackend.h"
#endif

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iomanip>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace moert;
using moerun::fail;
using moerun::Fatal;
using moerun::Options;
using moerun::parseArgs;
using moerun::testStallSeconds;
using moerun::Watchdog;

namespace {

/// Set in the processes moe-run starts through mpirun.
constexpr const char *kChildEnv = "MOE_RUN_RANK";

bool underMpiLauncher() {
  for (const char *v :
       {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "PMI_RANK", kChildEnv})
    if (std::getenv(v))
      return true;
  return false;
}

/// This process's rank as the launcher numbers it (before MPI_Init), 0
/// when no launcher variable says.
int launcherRank() {
  for (const char *v :
       {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"})
    if (const char *s = std::getenv(v)) {
      char *end = nullptr;
      long r = std::strtol(s, &end, 10);
      if (end != s && *end == '\0' && r >= 0 && r < (1 << 30))
        return int(r);
    }
  return 0;
}

/// Opens the manifest and checks the rank count and the inputs; throws
/// Fatal. `inputs` receives the arrays; `decode`, for generate with
/// --decode-plan, that plan.
std::unique_ptr<LoadedPlan>
openAndCheck(const Options &o, int rank,
             std::map<std::string, NpyArray> &inputs,
             std::unique_ptr<LoadedPlan> *decode = nullptr) {
  std::string error;
  ProgressMeter meter("moe-run: checking weights", 0,
                      rank == 0 ? ProgressMeter::modeFor(o.quiet, false)
                                : ProgressMeter::Mode::Off);
  auto lp = LoadedPlan::open(o.plan, rank, error, o.verifyWeights,
                             [&](uint64_t done, uint64_t total) {
                               meter.setTotal(total);
                               meter.update(done);
                             });
  meter.finish();
  if (!lp)
    throw Fatal{error};
  int64_t world = lp->plan().worldSize();
  if (o.n != world) {
    std::string mesh;
    for (const MeshAxis &a : lp->plan().mesh)
      mesh += (mesh.empty() ? "" : ",") + a.name + "=" + std::to_string(a.size);
    throw Fatal{o.plan + ": the plan is for " + std::to_string(world) +
                " ranks (mesh " + mesh + "), moe-run was started with -n " +
                std::to_string(o.n)};
  }
  if (o.generate) {
    NpyArray prompt;
    if (!readNpy(o.ids, prompt, error))
      throw Fatal{"--ids: " + error};
    std::string why;
    if (o.decodePlan.empty()) {
      why = generateError(lp->plan(), prompt, o.gen);
    } else {
      std::unique_ptr<LoadedPlan> dp =
          LoadedPlan::open(o.decodePlan, rank, error, o.verifyWeights);
      if (!dp)
        throw Fatal{"--decode-plan: " + error};
      if (dp->plan().worldSize() != world)
        throw Fatal{o.decodePlan + ": the decode plan is for " +
                    std::to_string(dp->plan().worldSize()) +
                    " ranks, the prefill plan for " + std::to_string(world)};
      why = generateWithCacheError(lp->plan(), dp->plan(), prompt, o.gen);
      if (decode)
        *decode = std::move(dp);
    }
    if (!why.empty())
      throw Fatal{o.plan + ": generate: " + why};
    inputs[o.gen.idsInput] = std::move(prompt);
    return lp;
  }
  for (auto &[name, file] : o.inputs) {
    if (inputs.count(name))
      throw Fatal{"input '" + name + "' given twice"};
    NpyArray a;
    if (!readNpy(file, a, error))
      throw Fatal{"input '" + name + "': " + error};
    inputs[name] = std::move(a);
  }
  if (!checkInputs(lp->plan(), inputs, error))
    throw Fatal{error};
  // Several outputs go to one .npz; an .npy holds one array.
  const std::vector<ModelIO> &outs = lp->plan().outputs;
  auto endsWith = [](const std::string &s, const char *tail) {
    size_t n = std::strlen(tail);
    return s.size() >= n && s.compare(s.size() - n, n, tail) == 0;
  };
  if (!o.output.empty() && outs.size() > 1 && !endsWith(o.output, ".npz")) {
    std::string names;
    for (const ModelIO &m : outs)
      names += (names.empty() ? "" : ", ") + m.name;
    throw Fatal{"-o " + o.output + ": the plan has " +
                std::to_string(outs.size()) + " outputs (" + names +
                "); write them to an .npz file"};
  }
  return lp;
}

/// Reads every mapped weight page once, with a progress meter on rank 0
/// (so the run's step times do not include page faults).
void prefault(const LoadedPlan &lp, int rank, bool quiet) {
  uint64_t total = 0;
  for (const Value &v : lp.plan().values)
    if (v.kind == ValueKind::constant && lp.constantData(v))
      total += v.byteSize();
  ProgressMeter meter("moe-run: loading weights", total,
                      rank == 0 ? ProgressMeter::modeFor(quiet, false)
                                : ProgressMeter::Mode::Off);
  uint64_t done = 0;
  volatile unsigned char sink = 0;
  for (const Value &v : lp.plan().values) {
    if (v.kind != ValueKind::constant)
      continue;
    const unsigned char *p =
        static_cast<const unsigned char *>(lp.constantData(v));
    if (!p)
      continue;
    uint64_t n = v.byteSize();
    for (uint64_t off = 0; off < n; off += 4096) {
      sink = sink + p[off];
      if (off % (uint64_t(64) << 20) == 0)
        meter.update(done + off);
    }
    done += n;
    meter.update(done);
  }
  meter.finish();
  (void)sink;
}

void writeOutputs(const Options &o,
                  const std::vector<std::pair<std::string, NpyArray>> &outs) {
  if (o.output.empty())
    return;
  bool npz = outs.size() > 1 ||
             (o.output.size() > 4 &&
              o.output.compare(o.output.size() - 4, 4, ".npz") == 0);
  std::string error;
  // After the run: not a check every rank fails alike.
  if (npz ? !writeNpz(o.output, outs, error)
          : !outs.empty() && !writeNpy(o.output, outs[0].second, error))
    throw RunError(error);
}

//===----------------------------------------------------------------------===//
// Reports
//===----------------------------------------------------------------------===//

std::string bytesStr(int64_t b) {
  std::ostringstream os;
  if (b >= (1 << 20))
    os << std::fixed << std::setprecision(1) << double(b) / (1 << 20) << " MiB";
  else if (b >= 1024)
    os << std::fixed << std::setprecision(1) << double(b) / 1024 << " KiB";
  else
    os << b << " B";
  return os.str();
}

void printReports(const Options &o, const Plan &plan,
                  const std::vector<RunReport> &reports) {
  if (o.json) {
    nlohmann::json rs = nlohmann::json::array();
    for (const RunReport &r : reports)
      rs.push_back(r.toJson());
    nlohmann::json j = {
        {"plan", o.plan}, {"ranks", reports.size()}, {"reports", rs}};
    std::printf("%s\n",
                j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace)
                    .c_str());
    return;
  }
  std::ostringstream os;
  for (const RunReport &r : reports) {
    os << "rank " << r.rank << " (" << r.backend
       << "): " << bytesStr(int64_t(r.mappedBytes))
       << " of weights mapped, arena " << bytesStr(int64_t(r.arenaBytes))
       << ", total " << std::fixed << std::setprecision(3) << r.seconds * 1e3
       << " ms\n";
    if (!r.collectives.empty()) {
      os << "  collectives:";
      for (size_t i = 0; i < r.collectives.size(); ++i) {
        const GroupTransport &g = r.collectives[i];
        os << (i ? "; " : " ") << g.axes << " over " << g.ranks
           << (g.ranks == 1 ? " rank, " : " ranks, ") << g.transport;
      }
      os << "\n";
    }
    for (const MoELayerStats &l : r.layers) {
      os << "  moe layer at step " << l.step << " (" << l.loc << ")\n";
      os << "    tokens per expert:";
      for (int64_t t : l.tokensPerExpert)
        os << " " << t;
      os << "\n    dropped: " << l.dropped
         << ", rows computed here: " << l.rowsReceived << "\n";
      for (const PeerTraffic &p : l.peers) {
        if (p.peer == r.rank)
          os << "    kept on rank " << p.peer << ": " << p.rowsSent << " rows, "
             << bytesStr(p.bytesSent) << " (not sent)\n";
        else
          os << "    peer " << p.peer << ": sent " << p.rowsSent << " rows / "
             << bytesStr(p.bytesSent) << ", received " << p.rowsRecv
             << " rows / " << bytesStr(p.bytesRecv) << "\n";
      }
    }
    os << "  steps:\n";
    for (size_t i = 0; i < r.steps.size(); ++i)
      os << "    " << std::setw(3) << i << " " << std::left << std::setw(11)
         << r.steps[i].op << std::right << std::setw(10) << std::fixed
         << std::setprecision(3) << r.steps[i].seconds * 1e3 << " ms  "
         << r.steps[i].loc << "\n";
  }
  (void)plan;
  std::fputs(os.str().c_str(), stdout);
}

/// The expert load file (moert/RoutingLoad.h), summed over ranks: what
/// `moec --placement=balanced` reads; with the rank-to-rank token flow
/// `moec --emit=html --routing` draws.
void writeRouting(const Options &o, const std::vector<RunReport> &reports) {
  if (o.routing.empty())
    return;
  RoutingLoad load;
  if (!reports.empty())
    for (size_t i = 0; i < reports[0].layers.size(); ++i) {
      const MoELayerStats &l0 = reports[0].layers[i];
      std::vector<int64_t> sum(l0.tokensPerExpert.size(), 0);
      for (const RunReport &r : reports)
        for (size_t e = 0; e < sum.size() && i < r.layers.size() &&
                           e < r.layers[i].tokensPerExpert.size();
             ++e)
          sum[e] += r.layers[i].tokensPerExpert[e];
      // The token flow: rows each rank dispatched to each peer.
      std::vector<std::vector<int64_t>> flow(
          reports.size(), std::vector<int64_t>(reports.size(), 0));
      for (const RunReport &r : reports)
        if (i < r.layers.size() && size_t(r.rank) < flow.size())
          for (const PeerTraffic &p : r.layers[i].peers)
            if (size_t(p.peer) < flow.size())
              flow[r.rank][p.peer] += p.rowsSent;
      load.layers.push_back({l0.step, l0.loc,
                             std::vector<double>(sum.begin(), sum.end()),
                             std::move(flow)});
    }
  std::string error;
  if (!writeRoutingLoad(o.routing, load, error))
    throw RunError(error);
}

/// The backend --device selects (checkDevice has accepted it).
std::unique_ptr<Backend> createBackend(const Options &o) {
#ifdef MOERT_HAVE_CUDA_EXEC
  if (o.device == "cuda")
    return createCudaBackend();
#endif
  (void)o;
  return createCpuBackend();
}

/// --device cuda needs a CUDA build and a usable GPU; false with `error`.
bool checkDevice(const Options &o, std::string &error) {
  if (o.device != "cuda")
    return true;
#ifdef MOERT_HAVE_CUDA_EXEC
  std::string why;
  if (cudaBackendAvailable(&why))
    return true;
  error = "--device cuda: no CUDA device: " + why;
#else
  error = "--device cuda: this moe-run was built without CUDA (configure "
          "with the CUDA toolkit and -DMOEC_ENABLE_CUDA=ON)";
#endif
  return false;
}

/// The summary of `moe-run generate`: tokens per second of the prefill
/// (the first run, which gives the first new token) and of the decode
/// steps: the decode plan's, one token against the KV cache each, or runs
/// of the whole sequence without a decode plan.
void printGenerate(const Options &o, const GenerateResult &g) {
  double prefillTok = double(g.batch * g.prompt);
  double decodeTok = double(g.batch * (g.newTokens - 1));
  if (o.json) {
    nlohmann::json j = {
        {"batch", g.batch},
        {"prompt_tokens", g.prompt},
        {"new_tokens", g.newTokens},
        {"prefill_seconds", g.prefillSeconds},
        {"decode_seconds", g.decodeSeconds},
        {"prefill_tokens_per_second",
         g.prefillSeconds > 0 ? prefillTok / g.prefillSeconds : 0.0},
        {"decode_tokens_per_second",
         g.decodeSeconds > 0 ? decodeTok / g.decodeSeconds : 0.0}};
    if (!o.decodePlan.empty()) {
      j["kv_cache"] =
          g.cacheThroughHost.empty() ? "on the ranks" : "through rank 0";
      if (g.cacheThroughHost.empty())
        j["kv_cache_copied_bytes"] = g.cacheCopyBytes;
    }
    std::printf("%s\n", j.dump(2).c_str());
    return;
  }
  std::printf("generate: %lld sequences, %lld prompt tokens, %lld new tokens "
              "each (%s)\n",
              (long long)g.batch, (long long)g.prompt, (long long)g.newTokens,
              o.gen.temperature > 0 ? "sampled" : "greedy");
  std::printf("  prefill: %.3f ms, %.1f tokens/s\n", g.prefillSeconds * 1e3,
              g.prefillSeconds > 0 ? prefillTok / g.prefillSeconds : 0.0);
  std::string how =
      o.decodePlan.empty()
          ? "each step recomputes the whole sequence: no KV cache"
      : g.cacheThroughHost.empty()
          ? "the decode plan, one token per step against the KV cache, "
            "which stays on the ranks between steps, " +
                (g.cacheCopyBytes
                     ? "copied there: " + std::to_string(g.cacheCopyBytes) +
                           " bytes on rank 0"
                     : std::string("bound in place"))
          : "the decode plan, one token per step against the KV cache, "
            "which goes through rank 0 between steps: " +
                g.cacheThroughHost;
  if (g.newTokens > 1)
    std::printf("  decode:  %.3f ms per step, %.1f tokens/s (%s)\n",
                g.decodeSeconds * 1e3 / double(g.newTokens - 1),
                g.decodeSeconds > 0 ? decodeTok / g.decodeSeconds : 0.0,
                how.c_str());
}

/// One rank's whole run over `world`. Throws on any error. With `agree`
/// (MPI), the ranks first agree whether the checks failed anywhere: then
/// every rank throws Fatal, with the message only on the lowest failing
/// rank, so that all leave together without a collective left waiting.
void runRank(const Options &o, Comm &world, bool agree, Watchdog &wd) {
  int rank = world.rank();
  std::map<std::string, NpyArray> inputs;
  std::unique_ptr<LoadedPlan> lp, decodePlan;
  wd.phase(rank, "loading the plan");
  if (!agree) {
    lp = openAndCheck(o, world.rank(), inputs, &decodePlan);
  } else {
    std::string message;
    try {
      lp = openAndCheck(o, world.rank(), inputs, &decodePlan);
    } catch (const Fatal &f) {
      message = f.message;
    }
    int32_t failed = !message.empty();
    std::vector<int32_t> all(world.size());
    wd.phase(rank, "checking the plan and inputs with the other ranks");
    world.allGather(&failed, sizeof(failed), all.data());
    for (int p = 0; p < world.size(); ++p)
      if (all[p])
        throw Fatal{p == world.rank() ? message : ""};
  }
  wd.phase(rank, "mapping the weights");
  prefault(*lp, world.rank(), o.quiet);
  wd.phase(rank, "creating the communicators of the mesh's groups");
  Executor ex(*lp, world, createBackend(o));
  const Plan &plan = lp->plan();
  ex.setStepObserver([&](size_t i) {
    wd.step(rank, plan, i);
    if (double s = testStallSeconds(rank, i))
      std::this_thread::sleep_for(std::chrono::duration<double>(s));
  });
  if (o.generate) {
    GenerateResult g;
    if (decodePlan) {
      prefault(*decodePlan, world.rank(), o.quiet);
      Executor dx(*decodePlan, world, createBackend(o));
      dx.setStepObserver(
          [&](size_t i) { wd.step(rank, decodePlan->plan(), i); });
      wd.phase(rank, "generating (prefill and decode plans)");
      g = generateWithCache(ex, dx, world, plan, decodePlan->plan(),
                            inputs.at(o.gen.idsInput), o.gen);
    } else {
      wd.phase(rank, "generating");
      g = generate(ex, world, plan, inputs.at(o.gen.idsInput), o.gen);
    }
    if (rank == 0) {
      wd.phase(rank, "writing the ids");
      std::string error;
      if (!o.output.empty() && !writeNpy(o.output, g.ids, error))
        throw RunError(error);
      printGenerate(o, g);
      std::fflush(stdout);
    }
    wd.idle(rank);
    return;
  }
  // Every run starts from the inputs (the memory plan may reuse their
  // bytes); the report is the last run's, with caches warm and the weights
  // faulted in.
  for (int it = 0; it < o.iters; ++it) {
    if (it) {
      wd.phase(rank, "the barrier before run " + std::to_string(it + 1));
      world.barrier();
    }
    wd.phase(rank, "binding the inputs");
    ex.setInputs(inputs);
    ex.run();
  }
  wd.phase(rank, "gathering the outputs");
  auto outs = ex.gatherOutputs();
  wd.phase(rank, "gathering the reports");
  auto reports = ex.gatherReports();
  if (world.rank() == 0) {
    wd.phase(rank, "writing the outputs");
    writeOutputs(o, outs);
    writeRouting(o, reports);
    printReports(o, lp->plan(), reports);
    std::fflush(stdout);
  }
  wd.idle(rank);
}

std::string what(const std::exception &e) { return e.what(); }

} // namespace

int main(int argc, char **argv) {
  Options o;
  if (int status = parseArgs(argc, argv, o); status >= 0)
    return status;
  std::string error;

  if (o.describe) {
    auto lp = LoadedPlan::open(o.plan, -1, error);
    if (!lp)
      return fail(error);
    std::fputs(describePlan(lp->plan()).c_str(), stdout);
    return 0;
  }

  if (!checkDevice(o, error))
    return fail(error);

  bool mpiRank = underMpiLauncher() && !o.threads;
  if (mpiRank) {
#ifdef MOERT_HAVE_MPI
    std::unique_ptr<Comm> world;
    int launched = launcherRank();
    if (double s = moerun::testStallInitSeconds(launched))
      std::this_thread::sleep_for(std::chrono::duration<double>(s));
    try {
      // MPI_Init waits for every rank of the job: one that is stopped or
      // never starts would hold the others there without the watchdog.
      Watchdog wd(o.timeout, launched, 1);
      wd.phase(launched, "MPI_Init (waiting for every rank of the job to "
                         "start)");
      world = initMpi(&argc, &argv);
    } catch (const std::exception &e) {
      return fail(e.what());
    }
    if (!o.nGiven)
      o.n = world->size();
    if (world->size() != o.n) {
      if (world->rank() == 0)
        fail("-n " + std::to_string(o.n) + " but " +
             std::to_string(world->size()) + " MPI ranks were started");
      world.reset();
      finalizeMpi();
      return 1;
    }
    try {
      Watchdog wd(o.timeout, world->rank(), 1);
      runRank(o, *world, /*agree=*/true, wd);
    } catch (const Fatal &f) {
      // Every rank is here (see runRank); one reports, all leave with 1.
      if (!f.message.empty())
        fail(f.message);
      world->barrier();
      world.reset();
      finalizeMpi();
      return 1;
    } catch (const std::exception &e) {
      abortMpi("moe-run: error: " + what(e), 1);
    }
    world.reset();
    finalizeMpi();
    return 0;
#else
    return fail("moe-run was built without MPI; run several ranks with "
                "--threads");
#endif
  }

  if (o.n > 1 && !o.threads) {
    // Started alone: check what can be checked here, then relaunch through
    // mpirun.
    try {
      std::map<std::string, NpyArray> inputs;
      openAndCheck(o, -1, inputs);
    } catch (const Fatal &f) {
      return fail(f.message);
    }
#ifndef MOERT_HAVE_MPI
    return fail("moe-run was built without MPI: -n " + std::to_string(o.n) +
                " needs --threads (ranks as threads of this process)");
#else
    std::string mpirun;
    const char *path = std::getenv("PATH");
    std::stringstream dirs(path ? path : "");
    std::string dir;
    while (mpirun.empty() && std::getline(dirs, dir, ':')) {
      std::string c = (dir.empty() ? "." : dir) + "/mpirun";
      if (access(c.c_str(), X_OK) == 0)
        mpirun = c;
    }
    if (mpirun.empty())
      return fail("mpirun not found on PATH (install openmpi-bin), or run "
                  "the ranks as threads with --threads");
    char self[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (len <= 0)
      return fail("cannot find this executable (/proc/self/exe)");
    self[len] = 0;
    std::vector<std::string> args = {mpirun,
                                     "-n",
                                     std::to_string(o.n),
                                     "--allow-run-as-root",
                                     "--oversubscribe",
                                     "-x",
                                     std::string(kChildEnv) + "=1",
                                     self};
    for (int i = 1; i < argc; ++i)
      args.push_back(argv[i]);
    std::vector<char *> cargs;
    for (std::string &a : args)
      cargs.push_back(a.data());
    cargs.push_back(nullptr);
    std::fflush(stdout);
    execv(mpirun.c_str(), cargs.data());
    return fail("cannot run " + mpirun + ": " + std::strerror(errno));
#endif
  }

  try {
    if (o.n == 1 && !o.threads) {
      auto world = createSelfComm();
      Watchdog wd(o.timeout, 0, 1);
      runRank(o, *world, /*agree=*/false, wd);
    } else {
      // Checks that fail alike on every rank are reported once.
      std::map<std::string, NpyArray> inputs;
      openAndCheck(o, -1, inputs);
      Watchdog wd(o.timeout, 0, o.n);
      runThreadRanks(
          o.n, [&](Comm &world) { runRank(o, world, /*agree=*/false, wd); });
    }
  } catch (const Fatal &f) {
    return fail(f.message);
  } catch (const std::exception &e) {
    return fail(e.what());
  }
  return 0;
}
