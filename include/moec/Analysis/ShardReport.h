//===- ShardReport.h - per-rank memory and communication --------*- C++ -*-===//
//
// `moec --mesh ... --report`: what each rank holds and what each collective
// moves, computed from the partitioned program, beside the seed's formulas
// (EP 2*B*S*H per MoE layer, TP 2*B*S*H*L, DP 2*P per training step).
//
//===----------------------------------------------------------------------===//

#ifndef MOEC_ANALYSIS_SHARDREPORT_H
#define MOEC_ANALYSIS_SHARDREPORT_H

#include "mlir/IR/BuiltinOps.h"
#include "llvm/Support/raw_ostream.h"

#include <string>
#include <vector>

namespace moec {

struct LayerComm {
  std::string loc; ///< the MoE layer's source location
  int64_t experts = 0, topK = 0, hidden = 0, ffn = 0, elementBytes = 4;
  int64_t tokensGlobal = 0;  ///< B*S
  int64_t tokensPerRank = 0; ///< tokens a rank routes
  /// With a dynamic token count: whether the layer's rows follow the count
  /// (false in a decode step whose count is the cache length: its bytes
  /// are the same at every count). Known once the plan is built.
  bool rowsFollowCount = true;
  std::string strategy;
  std::vector<std::vector<int64_t>> held; ///< per EP rank: experts held
  int64_t capacity = -1; ///< rows per (replica, source), -1 dropless
  int64_t maxRecvRows = 0;
  /// Bytes one rank sends in the dispatch (all its rows, including those
  /// that stay on the rank) and the expected share that leaves the rank for
  /// uniform routing, per EP rank.
  int64_t dispatchBytesPerRank = 0;
  std::vector<double> leaveShare;
  /// Totals over all ranks for dispatch + combine.
  int64_t a2aBytesTotal = 0;
  double a2aBytesLeaving = 0;
  /// TP all-reduce payload per rank (0 without tp) and its ring traffic.
  int64_t allReduceBytesPerRank = 0;
  /// Sequence-parallel MoE: the all-gather of the combined rows, bytes a
  /// rank receives ((dp*ep - 1) blocks of tokensPerRank x H).
  int64_t tokenGatherBytesPerRank = 0;
  int64_t gatherGroup = 1; ///< ranks of that all-gather
  double allReduceRingBytesPerRank = 0;
};

/// The dense layers' tensor-parallel collectives between two MoE layers'
/// dispatches in program order (segment i: up to MoE layer i's dispatch;
/// the last: after the last dispatch, e.g. a shared expert and the LM head).
struct DenseTpSegment {
  int64_t allReduces = 0, allReduceBytesPerRank = 0;
  int64_t allGathers = 0, allGatherBytesPerRank = 0;
  int64_t reduceScatters = 0, reduceScatterBytesPerRank = 0;
};

/// Tensor parallelism of the dense layers (attention, dense MLPs, shared
/// experts, the LM head): the collectives moe-partition inserted for them,
/// per forward pass.
struct DenseTpComm {
  int64_t ways = 1; ///< ranks the dense layers are split over
  int64_t allReduces = 0;
  int64_t allReduceBytesPerRank = 0; ///< payload (row-parallel partial sums)
  double allReduceRingBytesPerRank = 0;
  int64_t allGathers = 0;
  int64_t allGatherBytesPerRank = 0; ///< bytes a rank takes in
  int64_t slices = 0;                ///< all_slice: no data moves
  /// Sequence parallelism (Megatron): the reduce-scatters that replace
  /// all-reduces; payload (the whole partial sums) and ring traffic
  /// (tp-1)/tp x payload. Its all-gathers count with the others.
  bool sequenceParallel = false;
  int64_t reduceScatters = 0, reduceScatterBytesPerRank = 0;
  double reduceScatterRingBytesPerRank = 0;
  /// Weights cut over tp (moe.tp_slice): their whole size, one rank's part.
  int64_t splitWeightBytes = 0, splitWeightBytesPerRank = 0;
  /// The same collectives by position in the program (one more segment
  /// than MoE layers).
  std::vector<DenseTpSegment> segments;
};

struct RankMemory {
  int64_t rank = 0;
  std::vector<int64_t> coords;
  int64_t epIndex = 0;     ///< the rank's index in its ep group
  int64_t weightBytes = 0; ///< replicated + this rank's expert slices
  int64_t expertWeightBytes = 0;
  /// This rank's blocks of the tensor-parallel dense weights (attention,
  /// dense MLPs, shared experts, LM head: moe.tp_slice).
  int64_t denseTpWeightBytes = 0;
  /// Weights every rank holds whole (embeddings, norms, routers, layers
  /// that stay unsplit).
  int64_t replicatedWeightBytes = 0;
  int64_t activationBytes = 0; ///< peak of live tensors (recv at its bound)
  /// What packed weights' f32 expansions (moe.dequantize results) add to
  /// that peak: plans reserve it; the CUDA backend expands weights there for
  /// GEMMs over 8 rows, the CPU backend's GEMMs read the codes instead.
  int64_t dequantizedBytes = 0;
};

struct ShardReport {
  std::string mesh; ///< "dp=2,ep=4,tp=2"
  int64_t worldSize = 1, tokenSplit = 1, ep = 1, tp = 1, dp = 1;
  /// A folded grid (`--attention-mesh`): "attention tp=8 / MoE ep=8";
  /// empty otherwise.
  std::string folding;
  /// Where tokens are split (moe-shard's token-split): "model" (each rank
  /// runs the whole model on its own tokens) or "moe" (sequence-parallel
  /// MoE layers, the rest replicated), with why the whole model did not.
  std::string tokenSplitMode = "model", tokenSplitReason;
  int64_t params = 0; ///< parameters of the whole model
  int64_t paramBytes = 0;
  std::vector<LayerComm> layers;
  DenseTpComm denseTp;
  std::vector<RankMemory> ranks;
  /// A plan with a dynamic token count (moec --max-tokens): its maximum,
  /// at which every figure is given; 0 for static shapes.
  int64_t maxTokens = 0;

  int64_t maxRankBytes() const;
  /// Modelled bytes one rank moves per forward pass (EP leaving share +
  /// TP ring), used to rank meshes.
  double commBytesPerRank() const;
};

/// Computes the report of a module that went through moe-shard,
/// moe-place-experts, moe-insert-all-to-all and moe-partition.
ShardReport computeShardReport(mlir::ModuleOp partitioned);

void printShardReport(const ShardReport &r, llvm::raw_ostream &os, bool json);

/// Parses "80GiB", "512MiB", "1.5TB", "1000000" (bytes). False on a bad
/// spec.
bool parseByteSize(llvm::StringRef s, int64_t &bytes);
/// "1.50 GiB", "96.0 KiB", "512 B".
std::string formatBytes(double bytes);

} // namespace moec

#endif // MOEC_ANALYSIS_SHARDREPORT_H
