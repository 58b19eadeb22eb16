//===- PlaceExperts.cpp - moe-place-experts: experts onto EP ranks --------===//
//
// Chooses, for every moe.experts, which expert each slot of each EP rank
// holds and records it as a `moe.placement` attribute (#moe.placement<...>).
// See the pass description in Passes.td for the strategies.
//
//===----------------------------------------------------------------------===//

#include "moec/Analysis/Mesh.h"
#include "moec/Dialect/MoE/MoEOps.h"
#include "moec/Transforms/Passes.h"

#include "moert/RoutingLoad.h"

#include <algorithm>
#include <numeric>

namespace moec {
#define GEN_PASS_DEF_MOEPLACEEXPERTS
#include "moec/Transforms/Passes.h.inc"
} // namespace moec

using namespace mlir;
using namespace moec;

namespace {

/// Reads per-layer, per-expert token counts from the expert load file
/// (moert/RoutingLoad.h: what `moe-run --record-routing` writes).
bool readLoads(StringRef path, std::vector<std::vector<double>> &loads,
               std::string &err) {
  moert::RoutingLoad file;
  if (!moert::readRoutingLoad(path.str(), file, err))
    return false;
  for (moert::RoutingLayer &l : file.layers)
    loads.push_back(std::move(l.tokensPerExpert));
  return true;
}

/// Packs items (expert, load) onto `ranks` ranks of `slots` slots each,
/// heaviest first onto the least loaded rank with a free slot that does not
/// hold the same expert yet. Returns slots per rank (expert ids, -1 empty).
std::vector<int64_t> pack(std::vector<std::pair<int64_t, double>> items,
                          int64_t ranks, int64_t slots) {
  std::stable_sort(items.begin(), items.end(), [](auto &a, auto &b) {
    return a.second > b.second || (a.second == b.second && a.first < b.first);
  });
  std::vector<std::vector<int64_t>> held(ranks);
  std::vector<double> load(ranks, 0.0);
  for (auto &[e, l] : items) {
    int64_t best = -1;
    for (int pass = 0; pass < 2 && best < 0; ++pass)
      for (int64_t r = 0; r < ranks; ++r) {
        if (int64_t(held[r].size()) >= slots)
          continue;
        if (pass == 0 && llvm::is_contained(held[r], e))
          continue;
        if (best < 0 || load[r] < load[best])
          best = r;
      }
    held[best].push_back(e);
    load[best] += l;
  }
  std::vector<int64_t> out(ranks * slots, -1);
  for (int64_t r = 0; r < ranks; ++r) {
    llvm::sort(held[r]);
    for (auto [s, e] : llvm::enumerate(held[r]))
      out[r * slots + s] = e;
  }
  return out;
}

struct MoEPlaceExpertsPass
    : moec::impl::MoEPlaceExpertsBase<MoEPlaceExpertsPass> {
  using MoEPlaceExpertsBase::MoEPlaceExpertsBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    shard::GridOp grid = getMeshGrid(module);
    if (!grid) {
      module.emitError("moe-place-experts needs the device grid: run "
                       "moe-shard first (moec --mesh ...)");
      return signalPassFailure();
    }
    MeshSpec spec = meshSpecOf(grid);
    int64_t ep = axesSize(spec, meshRolesOf(grid).ep);
    if (strategy != "contiguous" && strategy != "round-robin" &&
        strategy != "balanced") {
      module.emitError("unknown placement strategy '")
          << strategy << "' (expected contiguous, round-robin or balanced)";
      return signalPassFailure();
    }
    if (strategy == "balanced" && loadFile.empty()) {
      module.emitError("placement strategy 'balanced' needs a load file "
                       "(--placement-load FILE, as written by moe-run "
                       "--record-routing)");
      return signalPassFailure();
    }
    if (redundantExperts < 0) {
      module.emitError("redundant-experts must be >= 0");
      return signalPassFailure();
    }
    std::vector<std::vector<double>> loads;
    std::string err;
    if (!loadFile.empty() && !readLoads(loadFile, loads, err)) {
      module.emitError(err);
      return signalPassFailure();
    }
    SmallVector<moe::ExpertsOp> layers;
    module.walk([&](moe::ExpertsOp op) { layers.push_back(op); });
    if (!loads.empty() && loads.size() != layers.size()) {
      module.emitError("expert load file '")
          << loadFile << "' has " << loads.size() << " layers, the model has "
          << layers.size() << " MoE layers";
      return signalPassFailure();
    }
    for (auto [li, op] : llvm::enumerate(layers)) {
      int64_t e = op.getNumExperts();
      if (ShapedType::isDynamic(e)) {
        op.emitError("cannot place a dynamic number of experts");
        return signalPassFailure();
      }
      std::vector<double> load(e, 1.0);
      if (!loads.empty()) {
        if (int64_t(loads[li].size()) != e) {
          op.emitError("expert load file '")
              << loadFile << "' gives " << loads[li].size()
              << " expert counts for layer " << li << ", which has " << e
              << " experts";
          return signalPassFailure();
        }
        load = loads[li];
      }
      int64_t total = e + redundantExperts;
      if (ep > total) {
        op.emitError("ep=")
            << ep << " exceeds the " << e << " experts"
            << (redundantExperts
                    ? " plus " + std::to_string(redundantExperts) + " replicas"
                    : std::string())
            << " of MoE layer " << li << ": some EP ranks would hold no expert";
        return signalPassFailure();
      }
      int64_t slots = (total + ep - 1) / ep;
      std::vector<int64_t> placement(ep * slots, -1);
      std::string how = strategy;
      if (redundantExperts > 0) {
        // Replica counts: repeatedly give one more replica to the expert
        // with the highest load per replica (at most one per rank).
        std::vector<int64_t> reps(e, 1);
        for (int64_t i = 0; i < redundantExperts; ++i) {
          int64_t best = -1;
          for (int64_t x = 0; x < e; ++x)
            if (reps[x] < ep &&
                (best < 0 || load[x] / reps[x] > load[best] / reps[best]))
              best = x;
          if (best < 0)
            break;
          ++reps[best];
        }
        std::vector<std::pair<int64_t, double>> items;
        for (int64_t x = 0; x < e; ++x)
          for (int64_t r = 0; r < reps[x]; ++r)
            items.push_back({x, load[x] / reps[x]});
        placement = pack(items, ep, slots);
        how = "redundant";
      } else if (strategy == "contiguous") {
        // Spread evenly: the first (e % ep) ranks hold one more expert.
        int64_t next = 0;
        for (int64_t r = 0; r < ep; ++r) {
          int64_t held = e / ep + (r < e % ep ? 1 : 0);
          for (int64_t s = 0; s < held; ++s)
            placement[r * slots + s] = next++;
        }
      } else if (strategy == "round-robin") {
        for (int64_t x = 0; x < e; ++x)
          placement[(x % ep) * slots + x / ep] = x;
      } else {
        std::vector<std::pair<int64_t, double>> items;
        for (int64_t x = 0; x < e; ++x)
          items.push_back({x, load[x]});
        placement = pack(items, ep, slots);
      }
      auto attr =
          moe::PlacementAttr::get(&getContext(), e, ep, slots, placement, how);
      op->setAttr("moe.placement", attr);
      // Say so when ranks hold different numbers of experts.
      SmallVector<int64_t> held;
      for (int64_t r = 0; r < ep; ++r)
        held.push_back(attr.numHeld(r));
      if (llvm::any_of(held, [&](int64_t h) { return h != held.front(); })) {
        std::string list;
        for (int64_t h : held)
          list += (list.empty() ? "" : ", ") + std::to_string(h);
        op.emitWarning("uneven placement: ")
            << total << " expert slots on " << ep << " EP ranks, which hold "
            << list << " experts";
      }
    }
  }
};
} // namespace
