//===- SequenceParallelRegions.cpp - Megatron sequence parallelism -------===//
//
// analyzeSequenceParallel: the token-dims analysis in rows mode, grown from
// the rows the MoE layers slice over the dense layers' tp ranks
// (docs/sharding.md, "Sequence parallelism").
//
//===----------------------------------------------------------------------===//

#include "TokenDimsAnalysis.h"
#include "moec/Analysis/Mesh.h"
#include "moec/Dialect/MoE/MoEDialect.h"
#include "moec/Dialect/MoE/MoEOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Shard/IR/ShardDialect.h"
#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Diagnostics.h"
#include "llvm/Support/Debug.h"
#include "llvm/Support/MathExtras.h"

using namespace mlir;
using namespace moec;
using namespace moec::detail;

#define DEBUG_TYPE "moe-sequence-parallel"

bool TokenDimsAnalysis::visitRowsEdge(Operation *op, LogicalResult &result) {
  auto known = [&](ValueRange vs) {
    return llvm::any_of(vs, [&](Value v) { return v && facts.count(v); });
  };
  auto stop = [&](const Twine &why) {
    result = known(op->getOperands()) || known(op->getResults())
                 ? op->emitError(why)
                 : success();
    return true;
  };
  // `whole`'s local block (its rows split n ways) has the type of `part`.
  auto blockIs = [&](Value whole, Value part) {
    auto it = facts.find(whole);
    if (it == facts.end() || it->second.outer != 1)
      return false;
    std::string why;
    auto local = localShape(cast<ShapedType>(whole.getType()).getShape(),
                            it->second, n, why);
    return succeeded(local) && ArrayRef<int64_t>(*local) ==
                                   cast<ShapedType>(part.getType()).getShape();
  };
  auto overRows = [&](ArrayRef<int16_t> axes) {
    return axes == ArrayRef<int16_t>(rowAxes);
  };
  if (auto s = dyn_cast<shard::AllSliceOp>(op)) {
    if (!s->hasAttr(kTensorParallelAttr) && s.getSliceAxis().isZero() &&
        overRows(s.getGridAxes()) && !facts.count(s.getResult()) &&
        blockIs(s.getInput(), s.getResult())) {
      rowSlices.insert(op);
      result = success();
      return true;
    }
    return stop("a slice the rows region does not replace");
  }
  if (auto g = dyn_cast<shard::AllGatherOp>(op)) {
    if (!g->hasAttr(kTensorParallelAttr) && g.getGatherAxis().isZero() &&
        overRows(g.getGridAxes()) && !facts.count(g.getInput()) &&
        blockIs(g.getResult(), g.getInput())) {
      rowGathers.insert(op);
      result = success();
      return true;
    }
    return stop("an all-gather the rows region does not replace");
  }
  if (auto ar = dyn_cast<shard::AllReduceOp>(op)) {
    if (ar.getReduction() == shard::ReductionKind::Sum &&
        overRows(ar.getGridAxes()) && !facts.count(ar.getInput()) &&
        facts.count(ar.getResult())) {
      std::string why;
      TokenDims d = facts.lookup(ar.getResult());
      if (d.outer == 1 &&
          succeeded(localShape(cast<ShapedType>(ar.getType()).getShape(), d, n,
                               why))) {
        reduceScatters.insert(op);
        result = success();
        return true;
      }
    }
    return stop("an all-reduce the rows region does not reduce-scatter");
  }
  if (isa<shard::ShardDialect>(op->getDialect()))
    return stop("a collective of another split");
  if (isa<func::ReturnOp>(op))
    return stop("the function's results are whole");
  if (tpOps->contains(op))
    return stop("an op of a tensor-parallel region");
  if (isa<moe::MoEDialect>(op->getDialect()) && !isa<moe::RouteOp>(op))
    return stop("an MoE op outside the routing");
  return false;
}

void TokenDimsAnalysis::growRows(func::FuncOp func, ArrayRef<Value> seeds,
                                 ArrayRef<int16_t> axes,
                                 const DenseSet<Operation *> &tp,
                                 const DenseSet<Value> &shared) {
  rows = true;
  rowAxes.assign(axes.begin(), axes.end());
  tpOps = &tp;
  // Failed visits are the region's boundaries, not errors.
  ScopedDiagnosticHandler quiet(func.getContext(), [](Diagnostic &d) {
    LLVM_DEBUG(llvm::dbgs()
               << "  stop: " << d.getLocation() << ": " << d.str() << "\n");
    return success();
  });
  for (Value seed : seeds)
    (void)set(seed, TokenDims{0, 1}, func.getOperation());
  expand(func, shared);
}

static int64_t bytesOf(Value v) {
  auto t = cast<RankedTensorType>(v.getType());
  return t.getNumElements() *
         int64_t(llvm::divideCeil(t.getElementTypeBitWidth(), 8));
}

namespace {
/// A flow network for the minimum cut (Edmonds-Karp; the regions have a
/// few hundred ops).
class FlowGraph {
public:
  static constexpr int64_t kInf = int64_t(1) << 60;
  int node() {
    adj.emplace_back();
    return int(adj.size()) - 1;
  }
  void edge(int a, int b, int64_t cap) {
    adj[a].push_back({b, cap, int(adj[b].size())});
    adj[b].push_back({a, 0, int(adj[a].size()) - 1});
  }
  /// Pushes the maximum flow from s to t; returns its value.
  int64_t maxFlow(int s, int t) {
    int64_t total = 0;
    for (;;) {
      std::vector<std::pair<int, int>> from(adj.size(), {-1, -1});
      std::vector<int> queue{s};
      from[s] = {s, -1};
      for (size_t q = 0; q < queue.size() && from[t].first < 0; ++q)
        for (auto [k, e] : llvm::enumerate(adj[queue[q]]))
          if (e.cap > 0 && from[e.to].first < 0) {
            from[e.to] = {queue[q], int(k)};
            queue.push_back(e.to);
          }
      if (from[t].first < 0)
        return total;
      int64_t push = kInf;
      for (int v = t; v != s; v = from[v].first)
        push = std::min(push, adj[from[v].first][from[v].second].cap);
      for (int v = t; v != s; v = from[v].first) {
        Edge &e = adj[from[v].first][from[v].second];
        e.cap -= push;
        adj[v][e.rev].cap += push;
      }
      total += push;
    }
  }
  /// The nodes that still reach `t` in the residual graph: the sink's side
  /// of the minimum cut with the largest source side.
  std::vector<bool> reaching(int t) const {
    std::vector<bool> seen(adj.size(), false);
    std::vector<int> queue{t};
    seen[t] = true;
    for (size_t q = 0; q < queue.size(); ++q)
      for (const Edge &e : adj[queue[q]])
        if (!seen[e.to] && adj[e.to][e.rev].cap > 0) {
          seen[e.to] = true;
          queue.push_back(e.to);
        }
    return seen;
  }

private:
  struct Edge {
    int to;
    int64_t cap;
    int rev;
  };
  std::vector<std::vector<Edge>> adj;
};
} // namespace

void TokenDimsAnalysis::cutRows(func::FuncOp func) {
  Block &top = func.getBody().front();
  // Each op runs on the rows (the source's side) or whole (the sink's).
  // The edges of the region (row slices and gathers, reduce-scatters) run
  // on the rows, its boundaries whole; a value computed on the rows and
  // read whole is gathered once (its bytes, on the edge to a node of its
  // own), a whole value read on the rows is sliced (free).
  FlowGraph g;
  int s = g.node(), t = g.node();
  DenseMap<Operation *, int> nodes;
  for (Operation *op : llvm::concat<Operation *const>(members, boundaries))
    nodes[op] = g.node();
  for (Operation *op :
       llvm::concat<Operation *const>(rowSlices, rowGathers, reduceScatters))
    g.edge(s, nodes[op], FlowGraph::kInf);
  for (Operation *op : boundaries)
    g.edge(nodes[op], t, FlowGraph::kInf);
  for (auto &[v, d] : facts) {
    Operation *def = v.getDefiningOp();
    if (!def || isa<arith::ConstantOp>(def) || !members.contains(def))
      continue;
    int vn = g.node();
    g.edge(nodes[def], vn, bytesOf(v));
    for (Operation *user : v.getUsers())
      if (auto it = nodes.find(top.findAncestorOpInBlock(*user));
          it != nodes.end())
        g.edge(vn, it->second, FlowGraph::kInf);
  }
  int64_t cut = g.maxFlow(s, t);
  std::vector<bool> whole = g.reaching(t);
  SmallVector<Operation *> moved;
  for (Operation *op : members)
    if (whole[nodes[op]] && !isa<arith::ConstantOp>(op))
      moved.push_back(op);
  LLVM_DEBUG(llvm::dbgs() << "  cut: " << cut << " bytes gathered, "
                          << moved.size() << " ops run whole\n");
  (void)cut;
  for (Operation *op : moved) {
    members.remove(op);
    boundaries.insert(op);
  }
  // A whole op's values stay in the region only where rows ops read them
  // (sliced there).
  for (Operation *op : moved)
    for (Value r : op->getResults())
      if (llvm::none_of(r.getUsers(), [&](Operation *u) {
            return members.contains(top.findAncestorOpInBlock(*u));
          }))
        facts.erase(r);
  // Ops none of whose values are left in the region are no boundary.
  boundaries.remove_if([&](Operation *op) {
    auto known = [&](Value v) { return facts.count(v) > 0; };
    return llvm::none_of(op->getOperands(), known) &&
           llvm::none_of(op->getResults(), known);
  });
}

/// The rows a MoE layer's slice reads, unless padded (a concatenation of
/// constant rows: the token count does not split evenly).
static bool isPadded(shard::AllSliceOp s) {
  auto c = s.getInput().getDefiningOp<tensor::ConcatOp>();
  return c && c.getDim() == 0 &&
         c.getInputs().back().getDefiningOp<arith::ConstantOp>();
}

SplitRegion moec::analyzeSequenceParallel(func::FuncOp func, int64_t n,
                                          ArrayRef<int16_t> axes,
                                          const DenseSet<Operation *> &tpOps) {
  SplitRegion region;
  region.rows = true;
  if (n <= 1 || axes.empty())
    return region;
  unshareInits(func);
  SmallVector<Value> seeds;
  func.walk([&](shard::AllSliceOp s) {
    bool moeRows = llvm::any_of(s->getUsers(), [](Operation *u) {
      return isa<moe::DispatchOp, moe::CombineOp>(u);
    });
    if (moeRows && !s->hasAttr(kTensorParallelAttr) &&
        s.getSliceAxis().isZero() && s.getGridAxes() == axes && !isPadded(s))
      seeds.push_back(s.getInput());
  });
  // And the rows they gather back (a block without a residual add joins
  // the MoE output with a shared expert's partial sums there).
  func.walk([&](shard::AllGatherOp g) {
    Operation *def = g.getInput().getDefiningOp();
    if (auto ar = dyn_cast_or_null<shard::AllReduceOp>(def))
      def = ar.getInput().getDefiningOp();
    bool padded = llvm::any_of(g->getUsers(), [](Operation *u) {
      return isa<tensor::ExtractSliceOp>(u);
    });
    if (isa_and_nonnull<moe::CombineOp>(def) &&
        !g->hasAttr(kTensorParallelAttr) && g.getGatherAxis().isZero() &&
        g.getGridAxes() == axes && !padded)
      seeds.push_back(g.getResult());
  });
  if (seeds.empty())
    return region;
  DenseSet<Value> constantLike, shared;
  constantLikeValues(func, constantLike, shared);
  TokenDimsAnalysis a(n);
  a.growRows(func, seeds, axes, tpOps, shared);
  a.cutRows(func);
  LLVM_DEBUG(llvm::dbgs() << "rows region: " << a.members.size() << " ops, "
                          << a.boundaries.size() << " boundaries, "
                          << a.reduceScatters.size() << " all-reduces, "
                          << a.rowSlices.size() << " slices, "
                          << a.rowGathers.size() << " gathers\n");
  region.facts = std::move(a.facts);
  region.boundaries = std::move(a.boundaries);
  region.ops = std::move(a.members);
  region.rowSlices = std::move(a.rowSlices);
  region.rowGathers = std::move(a.rowGathers);
  region.reduceScatters = std::move(a.reduceScatters);
  return region;
}
