//===- ShardReport.cpp - per-rank memory and communication ----------------===//

#include "moec/Analysis/ShardReport.h"
#include "moec/Analysis/Mesh.h"
#include "moec/Analysis/Report.h"
#include "moec/Dialect/MoE/MoEOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/JSON.h"

#include <cmath>
#include <map>

using namespace mlir;
using namespace moec;

int64_t ShardReport::maxRankBytes() const {
  int64_t m = 0;
  for (const RankMemory &r : ranks)
    m = std::max(m, r.weightBytes + r.activationBytes + r.dequantizedBytes);
  return m;
}

double ShardReport::commBytesPerRank() const {
  double total = 0;
  for (const LayerComm &l : layers)
    total += l.a2aBytesLeaving / double(worldSize) +
             l.allReduceRingBytesPerRank + double(l.tokenGatherBytesPerRank);
  return total + denseTp.allReduceRingBytesPerRank +
         denseTp.reduceScatterRingBytesPerRank +
         double(denseTp.allGatherBytesPerRank);
}

bool moec::parseByteSize(StringRef s, int64_t &bytes) {
  s = s.trim();
  size_t i = 0;
  while (i < s.size() && (isdigit(s[i]) || s[i] == '.'))
    ++i;
  double v;
  if (i == 0 || s.substr(0, i).getAsDouble(v))
    return false;
  StringRef unit = s.substr(i).trim();
  static const std::pair<const char *, double> units[] = {
      {"", 1},          {"B", 1},         {"KiB", 1024.0},
      {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1099511627776.0},
      {"KB", 1e3},      {"MB", 1e6},      {"GB", 1e9},
      {"TB", 1e12},     {"K", 1024.0},    {"M", 1 << 20},
      {"G", 1 << 30}};
  for (auto &[name, mult] : units)
    if (unit.equals_insensitive(name) && (unit == name || unit.size() == 1)) {
      bytes = int64_t(v * mult);
      return bytes > 0;
    }
  return false;
}

std::string moec::formatBytes(double b) {
  const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024.0 && u < 4) {
    b /= 1024.0;
    ++u;
  }
  std::string s;
  llvm::raw_string_ostream os(s);
  if (u == 0)
    os << int64_t(b) << " B";
  else
    os << llvm::format("%.2f", b) << " " << units[u];
  return s;
}

static int64_t bytesOf(Type t, int64_t dynamicRows = 0) {
  auto rt = dyn_cast<RankedTensorType>(t);
  if (!rt)
    return 0;
  int64_t n = 1;
  for (int64_t d : rt.getShape())
    n *= ShapedType::isDynamic(d) ? dynamicRows : d;
  return n * std::max<int64_t>(1, rt.getElementTypeBitWidth() / 8);
}

ShardReport moec::computeShardReport(ModuleOp module) {
  ShardReport r;
  shard::GridOp grid = getMeshGrid(module);
  if (!grid)
    return r;
  MeshSpec spec = meshSpecOf(grid);
  r.mesh = spec.str();
  r.worldSize = spec.worldSize();
  MeshRoles roles = meshRolesOf(grid);
  r.tokenSplit = axesSize(spec, roles.dp) * axesSize(spec, roles.ep);
  r.ep = axesSize(spec, roles.ep);
  r.tp = axesSize(spec, roles.tp);
  r.dp = axesSize(spec, roles.dp);
  if (roles.folded)
    r.folding = foldingString(grid);
  if (isTokenSliced(grid) || isTokenHybrid(grid)) {
    r.tokenSplitMode = isTokenSliced(grid) ? "moe" : "hybrid";
    if (auto why = grid->getAttrOfType<StringAttr>("moe.token_split_reason"))
      r.tokenSplitReason = why.str();
  }

  for (auto func : module.getOps<func::FuncOp>()) {
    // The per-rank program is @main; outlined kernels (moe.kernel) are
    // called from it and hold no parameters or live tensors of their own.
    if (func.isExternal() || func->hasAttr("moe.kernel"))
      continue;
    // Parameters: float constants and packed weights (parameterCount),
    // their bytes as stored. Those read only through moe.local_weights are
    // expert weights, split over the ranks.
    int64_t replicated = 0;
    func.walk([&](arith::ConstantOp c) {
      auto t = dyn_cast<RankedTensorType>(c.getType());
      if (!t)
        return;
      int64_t params = parameterCount(c);
      if (!params && !isa<FloatType>(t.getElementType()))
        return; // shapes, indices
      r.params += params;
      r.paramBytes += bytesOf(t);
      bool expertOnly =
          !c->use_empty() && llvm::all_of(c->getUsers(), [](Operation *u) {
            return isa<moe::LocalWeightsOp, moe::TpSliceOp>(u);
          });
      if (!expertOnly)
        replicated += bytesOf(t);
    });

    // Per-rank expert weights: the whole slice of each local_weights, as
    // the plan stores it (an empty slot, and a bias only the first tp rank
    // adds, are zeros the rank still holds).
    r.ranks.resize(r.worldSize);
    for (int64_t rank = 0; rank < r.worldSize; ++rank) {
      RankMemory &m = r.ranks[rank];
      m.rank = rank;
      SmallVector<int64_t> c = spec.coords(rank);
      m.coords.assign(c.begin(), c.end());
      m.epIndex = groupIndex(spec, c, roles.ep);
      m.weightBytes = replicated;
      m.replicatedWeightBytes = replicated;
    }
    func.walk([&](moe::LocalWeightsOp lw) {
      int64_t bytes = bytesOf(lw.getType());
      // The same bytes on every rank (one ep group, not split over tp: a
      // packed weight's codes that tp slices after dequantizing) are
      // stored once for all, like a replicated weight.
      bool everywhere = r.worldSize > 1 && lw.getSplitAxes().empty() &&
                        axesSize(spec, lw.getEpAxes()) == 1;
      for (RankMemory &m : r.ranks) {
        (everywhere ? m.replicatedWeightBytes : m.expertWeightBytes) += bytes;
        m.weightBytes += bytes;
      }
    });

    func.walk([&](moe::TpSliceOp ts) {
      for (RankMemory &m : r.ranks) {
        m.weightBytes += bytesOf(ts.getType());
        m.denseTpWeightBytes += bytesOf(ts.getType());
      }
      r.denseTp.splitWeightBytes += bytesOf(ts.getWeights().getType());
      r.denseTp.splitWeightBytesPerRank += bytesOf(ts.getType());
    });
    // The dense layers' tensor-parallel collectives.
    DenseTpComm &tpc = r.denseTp;
    tpc.segments.assign(1, DenseTpSegment());
    func.walk([&](Operation *op) {
      if (isa<moe::DispatchOp>(op))
        tpc.segments.emplace_back();
      if (op->hasAttr(kSequenceParallelAttr))
        tpc.sequenceParallel = true;
      else if (!op->hasAttr(kTensorParallelAttr))
        return;
      DenseTpSegment &seg = tpc.segments.back();
      if (auto rs = dyn_cast<shard::ReduceScatterOp>(op)) {
        ++seg.reduceScatters;
        seg.reduceScatterBytesPerRank += bytesOf(rs.getInput().getType());
      } else if (auto ar = dyn_cast<shard::AllReduceOp>(op)) {
        ++seg.allReduces;
        seg.allReduceBytesPerRank += bytesOf(ar.getType());
      } else if (auto ag = dyn_cast<shard::AllGatherOp>(op)) {
        ++seg.allGathers;
        seg.allGatherBytesPerRank +=
            bytesOf(ag.getType()) - bytesOf(ag.getInput().getType());
      } else if (isa<shard::AllSliceOp>(op)) {
        ++tpc.slices;
      }
    });
    // The per-forward totals are the segments' sums.
    for (const DenseTpSegment &seg : tpc.segments) {
      tpc.allReduces += seg.allReduces;
      tpc.allReduceBytesPerRank += seg.allReduceBytesPerRank;
      tpc.allGathers += seg.allGathers;
      tpc.allGatherBytesPerRank += seg.allGatherBytesPerRank;
      tpc.reduceScatters += seg.reduceScatters;
      tpc.reduceScatterBytesPerRank += seg.reduceScatterBytesPerRank;
    }
    tpc.ways = axesSize(spec, denseTpAxes(grid));
    tpc.allReduceRingBytesPerRank = 2.0 * double(tpc.ways - 1) /
                                    double(tpc.ways) *
                                    tpc.allReduceBytesPerRank;
    tpc.reduceScatterRingBytesPerRank =
        double(tpc.ways - 1) / double(tpc.ways) * tpc.reduceScatterBytesPerRank;
    // Activation memory: peak of live tensors in program order.
    DenseMap<Value, int64_t> rowsBound;
    func.walk([&](moe::DispatchOp d) {
      rowsBound[d.getRecv()] = d.getMaxRows();
      for (Operation *u : d.getRecv().getUsers())
        if (auto ec = dyn_cast<moe::ExpertComputeOp>(u))
          rowsBound[ec.getResult()] = d.getMaxRows();
    });
    SmallVector<Operation *> order;
    DenseMap<Operation *, int64_t> index;
    func.walk([&](Operation *op) {
      index[op] = order.size();
      order.push_back(op);
    });
    // The peak with and without the dequantized weights (moe.dequantize
    // results): their share is reported apart (RankMemory).
    std::vector<int64_t> delta(order.size() + 2, 0), deltaW = delta;
    auto addLive = [&](Value v, int64_t from, std::vector<int64_t> &d) {
      int64_t bytes = bytesOf(v.getType(), rowsBound.lookup(v));
      if (!bytes)
        return;
      int64_t last = from;
      for (Operation *u : v.getUsers())
        last = std::max(last, index.lookup(u));
      d[from] += bytes;
      d[last + 1] -= bytes;
    };
    for (BlockArgument a : func.getArguments()) {
      addLive(a, 0, delta);
      addLive(a, 0, deltaW);
    }
    for (Operation *op : order)
      if (!isa<arith::ConstantOp, moe::LocalWeightsOp, moe::TpSliceOp>(op))
        for (Value v : op->getResults()) {
          if (!isa<moe::DequantizeOp>(op))
            addLive(v, index[op], delta);
          addLive(v, index[op], deltaW);
        }
    auto peakOf = [](const std::vector<int64_t> &d) {
      int64_t live = 0, peak = 0;
      for (int64_t x : d)
        peak = std::max(peak, live += x);
      return peak;
    };
    int64_t peak = peakOf(delta), peakW = peakOf(deltaW);
    for (RankMemory &m : r.ranks) {
      m.activationBytes = peak;
      m.dequantizedBytes = std::max<int64_t>(peakW - peak, 0);
    }

    // Per MoE layer communication.
    func.walk([&](moe::DispatchOp d) {
      LayerComm l;
      l.loc = nodeName(d.getLoc());
      moe::PlacementAttr p = d.getPlacement();
      auto tokens = cast<RankedTensorType>(d.getTokens().getType());
      auto idx = cast<RankedTensorType>(d.getIndices().getType());
      l.experts = p.getNumExperts();
      l.topK = idx.getDimSize(1);
      l.hidden = tokens.getDimSize(1);
      l.elementBytes = tokens.getElementTypeBitWidth() / 8;
      l.tokensPerRank = tokens.getDimSize(0);
      l.tokensGlobal = l.tokensPerRank * r.tokenSplit;
      l.strategy = p.getStrategy().str();
      l.capacity = d.getCapacity();
      l.maxRecvRows = d.getMaxRows();
      for (Operation *u : d.getRecv().getUsers())
        if (auto ec = dyn_cast<moe::ExpertComputeOp>(u))
          l.ffn =
              cast<RankedTensorType>(ec.getWGate().getType()).getDimSize(2) *
              r.tp;
      std::vector<int64_t> reps(l.experts, 0);
      for (int64_t e : p.getSlots())
        if (e >= 0)
          ++reps[e];
      for (int64_t q = 0; q < p.getRanks(); ++q) {
        std::vector<int64_t> held;
        double local = 0;
        for (int64_t s = 0; s < p.getSlotsPerRank(); ++s) {
          int64_t e = p.expertAt(q, s);
          if (e < 0)
            continue;
          held.push_back(e);
          local += 1.0 / double(reps[e]);
        }
        l.held.push_back(held);
        l.leaveShare.push_back(1.0 - local / double(l.experts));
      }
      int64_t rows = l.tokensPerRank * l.topK;
      l.dispatchBytesPerRank = rows * l.hidden * l.elementBytes;
      l.a2aBytesTotal = 2 * l.dispatchBytesPerRank * r.worldSize;
      for (const RankMemory &m : r.ranks) {
        int64_t epc = groupIndex(spec, m.coords, roles.ep);
        l.a2aBytesLeaving += 2.0 * l.dispatchBytesPerRank * l.leaveShare[epc];
      }
      // The TP all-reduce that follows this layer's combine, if any, and
      // (sequence-parallel MoE) the all-gather of the rows.
      auto gathered = [&](Value v) {
        for (Operation *gu : v.getUsers())
          if (auto ag = dyn_cast<shard::AllGatherOp>(gu)) {
            int64_t g = 1;
            for (int16_t a : ag.getGridAxes())
              g *= grid.getShape()[a];
            l.gatherGroup = g;
            l.tokenGatherBytesPerRank =
                (g - 1) * bytesOf(ag.getInput().getType());
          }
      };
      for (Operation *u : d.getHandle().getUsers())
        if (auto c = dyn_cast<moe::CombineOp>(u)) {
          gathered(c.getResult());
          for (Operation *cu : c.getResult().getUsers())
            if (auto ar = dyn_cast<shard::AllReduceOp>(cu)) {
              l.allReduceBytesPerRank = bytesOf(ar.getType());
              l.allReduceRingBytesPerRank = 2.0 * double(r.tp - 1) /
                                            double(r.tp) *
                                            l.allReduceBytesPerRank;
              gathered(ar.getResult());
            }
        }
      r.layers.push_back(std::move(l));
    });
  }
  return r;
}

static std::string list(const std::vector<int64_t> &v) {
  std::string s;
  for (int64_t x : v)
    s += (s.empty() ? "" : ",") + std::to_string(x);
  return s.empty() ? "-" : s;
}

void moec::printShardReport(const ShardReport &r, llvm::raw_ostream &os,
                            bool json) {
  if (json) {
    llvm::json::Array layers, ranks, segments;
    for (const DenseTpSegment &seg : r.denseTp.segments)
      segments.push_back(llvm::json::Object{
          {"all_reduces", seg.allReduces},
          {"all_reduce_bytes_per_rank", seg.allReduceBytesPerRank},
          {"all_gathers", seg.allGathers},
          {"all_gather_bytes_per_rank", seg.allGatherBytesPerRank},
          {"reduce_scatters", seg.reduceScatters},
          {"reduce_scatter_bytes_per_rank", seg.reduceScatterBytesPerRank}});
    for (const LayerComm &l : r.layers) {
      llvm::json::Array held;
      for (auto &h : l.held)
        held.push_back(llvm::json::Array(h));
      layers.push_back(llvm::json::Object{
          {"loc", l.loc},
          {"experts", l.experts},
          {"top_k", l.topK},
          {"hidden", l.hidden},
          {"ffn", l.ffn},
          {"element_bytes", l.elementBytes},
          {"tokens", l.tokensGlobal},
          {"tokens_per_rank", l.tokensPerRank},
          {"rows_follow_count", r.maxTokens > 0 && l.rowsFollowCount},
          {"placement", l.strategy},
          {"experts_per_ep_rank", std::move(held)},
          {"capacity", l.capacity},
          {"max_recv_rows", l.maxRecvRows},
          {"dispatch_bytes_per_rank", l.dispatchBytesPerRank},
          {"leave_share_per_ep_rank", llvm::json::Array(l.leaveShare)},
          {"all_to_all_bytes_total", l.a2aBytesTotal},
          {"all_to_all_bytes_between_ranks", l.a2aBytesLeaving},
          {"seed_ep_bytes", 2 * l.tokensGlobal * l.hidden * l.elementBytes},
          {"tp_all_reduce_bytes_per_rank", l.allReduceBytesPerRank},
          {"tp_all_reduce_ring_bytes_per_rank", l.allReduceRingBytesPerRank},
          {"token_all_gather_bytes_per_rank", l.tokenGatherBytesPerRank},
      });
    }
    for (const RankMemory &m : r.ranks)
      ranks.push_back(llvm::json::Object{
          {"rank", m.rank},
          {"coords", llvm::json::Array(m.coords)},
          {"ep_index", m.epIndex},
          {"weight_bytes", m.weightBytes},
          {"expert_weight_bytes", m.expertWeightBytes},
          {"dense_tp_weight_bytes", m.denseTpWeightBytes},
          {"replicated_weight_bytes", m.replicatedWeightBytes},
          {"activation_bytes", m.activationBytes},
          {"dequantized_weight_bytes", m.dequantizedBytes}});
    int64_t L = r.layers.size();
    int64_t bsh = r.layers.empty()
                      ? 0
                      : r.layers[0].tokensGlobal * r.layers[0].hidden *
                            r.layers[0].elementBytes;
    llvm::json::Object o{
        {"mesh", r.mesh},
        {"world_size", r.worldSize},
        {"folding", r.folding},
        {"dp", r.dp},
        {"ep", r.ep},
        {"tp", r.tp},
        {"token_split", r.tokenSplitMode},
        {"token_split_reason", r.tokenSplitReason},
        {"params", r.params},
        {"param_bytes", r.paramBytes},
        {"layers", std::move(layers)},
        {"dense_tp",
         llvm::json::Object{
             {"ways", r.denseTp.ways},
             {"all_reduces", r.denseTp.allReduces},
             {"all_reduce_bytes_per_rank", r.denseTp.allReduceBytesPerRank},
             {"all_reduce_ring_bytes_per_rank",
              r.denseTp.allReduceRingBytesPerRank},
             {"all_gathers", r.denseTp.allGathers},
             {"all_gather_bytes_per_rank", r.denseTp.allGatherBytesPerRank},
             {"all_slices", r.denseTp.slices},
             {"sequence_parallel", r.denseTp.sequenceParallel},
             {"reduce_scatters", r.denseTp.reduceScatters},
             {"reduce_scatter_bytes_per_rank",
              r.denseTp.reduceScatterBytesPerRank},
             {"reduce_scatter_ring_bytes_per_rank",
              r.denseTp.reduceScatterRingBytesPerRank},
             {"split_weight_bytes", r.denseTp.splitWeightBytes},
             {"split_weight_bytes_per_rank", r.denseTp.splitWeightBytesPerRank},
             {"segments", std::move(segments)}}},
        {"ranks", std::move(ranks)},
        {"seed", llvm::json::Object{{"ep_bytes_per_moe_layer", 2 * bsh},
                                    {"tp_bytes", 2 * bsh * L},
                                    {"dp_bytes_per_step", 2 * r.paramBytes}}}};
    if (r.maxTokens > 0) {
      // Dropless dispatch and combine bytes are linear in the count.
      llvm::json::Array perToken;
      for (const LayerComm &l : r.layers)
        perToken.push_back(l.tokensGlobal && l.rowsFollowCount
                               ? double(l.a2aBytesTotal) /
                                     double(l.tokensGlobal)
                               : 0.0);
      o["symbol"] =
          llvm::json::Object{{"name", "tokens"}, {"max", r.maxTokens}};
      o["all_to_all_bytes_per_token"] = std::move(perToken);
    }
    os << llvm::formatv("{0:2}", llvm::json::Value(std::move(o))) << "\n";
    return;
  }
  if (r.folding.empty())
    os << "Sharding: mesh " << r.mesh << " (" << r.worldSize
       << " ranks): tokens split " << r.tokenSplit
       << " ways (dp x ep), experts " << r.ep
       << " ways (ep), expert FFN columns " << r.tp << " ways (tp)\n";
  else
    os << "Sharding: grid " << r.mesh << " (" << r.worldSize
       << " ranks): MoE rows split " << r.tokenSplit
       << " ways (dp x ep), experts " << r.ep
       << " ways (ep), expert FFN columns " << r.tp
       << " ways (tp); attention and the dense layers tensor-parallel "
       << r.denseTp.ways << " ways\n"
       << "Folding: " << r.folding
       << " (attention and the dense layers on one folding of the ranks, "
          "the MoE layers on the other)\n";
  if (r.maxTokens > 0) {
    bool rowsFollow =
        r.layers.empty() || llvm::any_of(r.layers, [](const LayerComm &l) {
          return l.rowsFollowCount;
        });
    os << "Token count: dynamic, the plan runs at 0.." << r.maxTokens
       << " tokens; the figures below are at the maximum ("
       << (rowsFollow ? "dispatch, combine and all-reduce bytes scale with "
                        "the count"
                      : "the MoE layers' rows do not follow the count, e.g. "
                        "a decode step's cache length")
       << ", memory is planned for the maximum)\n";
  }
  if (r.tokenSplitMode == "hybrid" && !r.folding.empty())
    os << "Token split: whole sequences over the attention's dp; the ranks "
          "of an attention tp group hold the same tokens, and each MoE "
          "layer's rows are sliced over them (sequence-parallel MoE), the "
          "combined rows all-gathered\n";
  else if (r.tokenSplitMode != "model")
    os << (r.tokenSplitMode == "moe"
               ? "Token split: sequence-parallel MoE (attention and dense "
                 "layers replicated over dp x ep; each rank dispatches its "
                 "slice of the tokens, the combined rows all-gathered)"
               : "Token split: hybrid (whole sequences over dp, attention "
                 "and dense layers replicated over ep; each MoE layer's rows "
                 "sliced over ep, the combined rows all-gathered)")
       << (r.tokenSplitReason.empty()
               ? std::string()
               : "; the whole model does not split: " + r.tokenSplitReason)
       << "\n";
  for (auto [i, l] : llvm::enumerate(r.layers)) {
    os << "\nMoE layer " << i << (l.loc.empty() ? "" : " (" + l.loc + ")")
       << ": " << l.experts << " experts, top-" << l.topK << ", H=" << l.hidden
       << ", F=" << l.ffn << ", " << l.elementBytes << "-byte elements, "
       << l.tokensGlobal << " tokens (" << l.tokensPerRank << " per rank)\n";
    os << "  placement " << l.strategy << ":";
    for (auto [q, h] : llvm::enumerate(l.held))
      os << (q ? " |" : "") << " ep" << q << ": " << list(h);
    os << "\n";
    os << "  dispatch " << (l.capacity < 0 ? "dropless" : "capacity ")
       << (l.capacity < 0 ? ""
                          : std::to_string(l.capacity) +
                                " rows per expert replica and source")
       << ", receive buffer bound " << l.maxRecvRows << " rows\n";
    os << "  all-to-all per rank: dispatch " << l.tokensPerRank << " x "
       << l.topK << " x " << l.hidden << " x " << l.elementBytes
       << " B = " << formatBytes(l.dispatchBytesPerRank)
       << ", combine the same\n";
    os << "  expected share leaving the rank (uniform routing):";
    for (double s : l.leaveShare)
      os << " " << llvm::format("%.3f", s);
    os << "\n";
    os << "  all ranks, dispatch + combine: "
       << formatBytes(double(l.a2aBytesTotal)) << " (" << l.a2aBytesTotal
       << " B), between ranks " << formatBytes(l.a2aBytesLeaving) << " ("
       << int64_t(std::llround(l.a2aBytesLeaving)) << " B)\n";
    if (r.maxTokens > 0 && !l.rowsFollowCount)
      os << "  the layer's rows do not follow the count (T <= " << r.maxTokens
         << "): the same bytes at every count\n";
    else if (r.maxTokens > 0 && l.tokensGlobal > 0 && l.capacity < 0)
      os << "  with T tokens (dynamic count, T <= " << r.maxTokens
         << "): dispatch + combine 2 x T x " << l.topK << " x " << l.hidden
         << " x " << l.elementBytes
         << " B = " << l.a2aBytesTotal / l.tokensGlobal << " B x T\n";
    int64_t seed = 2 * l.tokensGlobal * l.hidden * l.elementBytes;
    os << "  seed formula 2*B*S*H = 2 x " << l.tokensGlobal << " x " << l.hidden
       << " x " << l.elementBytes << " B = " << formatBytes(seed) << " ("
       << seed << " B; top-1, every token leaving its rank)\n";
    if (l.allReduceBytesPerRank)
      os << "  tp all-reduce per rank: " << formatBytes(l.allReduceBytesPerRank)
         << " payload, ring traffic 2(tp-1)/tp x payload = "
         << formatBytes(l.allReduceRingBytesPerRank) << "\n";
    if (l.tokenGatherBytesPerRank) {
      os << "  token all-gather per rank (sequence-parallel MoE): ("
         << l.gatherGroup << "-1) x " << l.tokensPerRank << " x " << l.hidden
         << " x " << l.elementBytes
         << " B = " << formatBytes(l.tokenGatherBytesPerRank) << "\n";
      // A row block of a dynamic count: a x ceil(T / G) rows per rank
      // (moert::rowBlockStep), a = the rows per token (the batch).
      if (r.maxTokens > 0 && l.rowsFollowCount && l.gatherGroup > 1 &&
          l.tokensGlobal % r.maxTokens == 0)
        os << "  with T tokens: (" << l.gatherGroup << "-1) x "
           << l.tokensGlobal / r.maxTokens << " x ceil(T/" << l.gatherGroup
           << ") x " << l.hidden << " x " << l.elementBytes
           << " B (uneven blocks: every rank sends the largest)\n";
    }
  }
  const DenseTpComm &tpc = r.denseTp;
  if (tpc.allReduces || tpc.allGathers || tpc.reduceScatters ||
      tpc.splitWeightBytes) {
    os << "\nDense layers tensor-parallel over tp=" << tpc.ways
       << " (attention heads, dense MLP and shared-expert columns, LM head "
          "vocab):\n"
       << "  weights split: " << formatBytes(tpc.splitWeightBytes)
       << ", per rank " << formatBytes(tpc.splitWeightBytesPerRank) << "\n";
    if (tpc.allReduces || !tpc.sequenceParallel)
      os << "  all-reduce of row-parallel partial sums: " << tpc.allReduces
         << " per forward, payload " << formatBytes(tpc.allReduceBytesPerRank)
         << " per rank, ring traffic 2(tp-1)/tp x payload = "
         << formatBytes(tpc.allReduceRingBytesPerRank) << "\n";
    if (tpc.sequenceParallel)
      os << "  sequence parallel (Megatron): residual adds, norms, routers "
            "and the MoE layers' rows run on this rank's block of the rows; "
         << tpc.reduceScatters
         << " reduce-scatter(s) of row-parallel partial sums, payload "
         << formatBytes(tpc.reduceScatterBytesPerRank)
         << " per rank, ring traffic (tp-1)/tp x payload = "
         << formatBytes(tpc.reduceScatterRingBytesPerRank) << "\n";
    if (tpc.allGathers)
      os << "  all-gather where a whole value is needed (logits, norms over "
            "split dims"
         << (tpc.sequenceParallel ? ", the rows before attention" : "")
         << "): " << tpc.allGathers << ", taking in "
         << formatBytes(tpc.allGatherBytesPerRank) << " per rank\n";
    if (tpc.slices)
      os << "  slices of whole values (no data moves): " << tpc.slices << "\n";
    // Where they run, by the MoE layers' dispatches in program order.
    for (auto [i, seg] : llvm::enumerate(tpc.segments)) {
      if (!seg.allReduces && !seg.allGathers && !seg.reduceScatters)
        continue;
      os << "  "
         << (i + 1 < tpc.segments.size()
                 ? "up to MoE layer " + std::to_string(i) + "'s dispatch"
             : i == 0
                 ? std::string("in the model")
                 : "after MoE layer " + std::to_string(i - 1) + "'s dispatch")
         << ":";
      if (seg.allReduces)
        os << " " << seg.allReduces << " all-reduce"
           << (seg.allReduces > 1 ? "s" : "") << " of "
           << formatBytes(seg.allReduceBytesPerRank);
      if (seg.reduceScatters)
        os << (seg.allReduces ? "," : "") << " " << seg.reduceScatters
           << " reduce-scatter" << (seg.reduceScatters > 1 ? "s" : "") << " of "
           << formatBytes(seg.reduceScatterBytesPerRank);
      if (seg.allGathers)
        os << (seg.allReduces || seg.reduceScatters ? "," : "") << " "
           << seg.allGathers << " all-gather" << (seg.allGathers > 1 ? "s" : "")
           << " taking in " << formatBytes(seg.allGatherBytesPerRank);
      os << " per rank\n";
    }
  }
  int64_t L = r.layers.size();
  if (L) {
    const LayerComm &l0 = r.layers[0];
    int64_t bsh = l0.tokensGlobal * l0.hidden * l0.elementBytes;
    os << "\nSeed formulas for this model (B*S=" << l0.tokensGlobal
       << ", H=" << l0.hidden << ", L=" << L << " MoE layers, P=" << r.params
       << " parameters):\n"
       << "  EP all-to-all 2*B*S*H per MoE layer: " << formatBytes(2 * bsh)
       << "\n"
       << "  TP all-reduce 2*B*S*H*L: " << formatBytes(2 * bsh * L)
       << (r.tp > 1 || tpc.ways > 1 ? "" : " (not used: tp=1)") << "\n"
       << "  DP gradient sync 2*P per training step: "
       << formatBytes(2 * r.paramBytes)
       << " (training only; inference plans move no gradients)\n";
  }
  os << "\nPer rank (coordinates over " << r.mesh << "):\n";
  for (const RankMemory &m : r.ranks) {
    os << "  rank " << m.rank << " [";
    for (auto [i, c] : llvm::enumerate(m.coords))
      os << (i ? "," : "") << c;
    os << "]: weights " << formatBytes(m.weightBytes) << " (experts "
       << formatBytes(m.expertWeightBytes);
    if (m.denseTpWeightBytes)
      os << ", tensor-parallel dense " << formatBytes(m.denseTpWeightBytes);
    os << ", replicated " << formatBytes(m.replicatedWeightBytes)
       << "), activations " << formatBytes(m.activationBytes);
    if (m.dequantizedBytes)
      os << ", dequantized weights " << formatBytes(m.dequantizedBytes)
         << " (arena room: CUDA GEMMs over 8 rows expand packed weights "
            "there; CPU GEMMs read the codes)";
    os << "\n";
  }
}
