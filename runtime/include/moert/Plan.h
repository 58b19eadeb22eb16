//===- Plan.h - the .moeplan format: in-memory form, reader, writer -*- C++
//-*-===//
//
// A plan is what `moec ... -o model.moeplan` writes and `moe-run` executes:
// one SPMD program (values and steps, identical on every rank) plus each
// rank's weights. The manifest's schema is runtime/schema/plan.fbs
// (FlatBuffers; its generated header moert/plan_generated.h defines the
// step kinds, their typed attributes and the shared enums); the on-disk
// layout is in docs/plan-format.md. This header is the in-memory form and
// the one reader and writer, shared by the compiler and the runtime. It
// does not depend on LLVM or MLIR.
//
//===----------------------------------------------------------------------===//

#ifndef MOERT_PLAN_H
#define MOERT_PLAN_H

#include "moert/Limits.h"
#include "moert/Mesh.h"
#include "moert/plan_generated.h"

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace moert {

/// The format version this build reads and writes. A plan with another
/// version is refused with a message naming both versions.
/// Version 2: the FlatBuffers manifest (version 1 was JSON).
/// Version 3: the CPU code's entry `kernel_N(void **args)` takes one array
/// of pointers (version 2's took one pointer argument per operand, at most
/// 10 of them).
/// Version 4: segments may live in per-rank weight files (Segment::file).
/// Version 5: the clamped_swiglu activation (Experts alpha, beta, limit),
/// which a version 4 reader would not know.
/// Version 6: the topk and scatter_elements step kinds (routers left as
/// dense ops), which a version 5 reader would not know.
/// Version 7: a checksum trailer after the data region of the plan file and
/// of each weight file (one moert::weightChecksum per segment the file
/// holds), checked when a rank maps the segment.
/// Version 8: a dynamic token count (Plan::symbols, Value::symDims,
/// ModelIO::symDims). Only plans with a symbol are written as version 8: a
/// plan without one is written as version 7, byte for byte as before, and
/// this build reads both.
/// Version 9: batch_matmul's trans_b (plan.fbs BatchMatmul), which a
/// version 8 reader would ignore. Only plans with such a step are written
/// as version 9 (minPlanVersion).
constexpr uint32_t kPlanVersion = 7;
/// The version of plans with a symbol.
constexpr uint32_t kPlanVersionSymbols = 8;
/// The version of plans with a transposed batch_matmul (the newest this
/// build reads).
constexpr uint32_t kPlanVersionBatchTransB = 9;

/// Element types (plan.fbs): f32, f16, bf16, i64, i32, u8.
using DType = fb::DType;
/// "f32", "f16", "bf16", "i64", "i32", "u8".
const char *dtypeName(DType t);
/// Parses a dtype name; false when unknown.
bool parseDType(const std::string &name, DType &out);
/// Bytes per element.
size_t dtypeSize(DType t);

/// Where a constant's bytes are: a segment of the data region and an offset
/// inside it (64-byte aligned).
struct DataRef {
  int32_t segment = -1;
  uint64_t offset = 0;
  uint64_t bytes = 0;
};

/// A contiguous, page-aligned part of the data region. `ranks` lists the
/// ranks that map it (empty: every rank). A rank maps only its segments.
struct Segment {
  std::string name;
  uint64_t offset = 0; ///< from the start of the data region, 4096-aligned
  uint64_t size = 0;
  std::vector<int32_t> ranks;
  /// Empty: in the plan file's data region. Else the name of a weight file
  /// in the plan's directory whose data region holds it (per-rank weights).
  std::string file;
};

/// input (filled from a model input, this rank's slice), output (gathered
/// into a model output), temp (arena bytes at `offset`), constant (weights
/// in the mapped data region); plan.fbs.
using ValueKind = fb::ValueKind;

/// The token-count symbol of a plan whose token count is dynamic (one per
/// plan): the plan runs at any count 0..max (docs/plan-format.md, "Dynamic
/// token counts").
struct Symbol {
  std::string name; ///< e.g. "tokens"
  int64_t max = 0;
  /// The least count the plan takes (plan.fbs Symbol.min): an index the
  /// model computes as count - c is valid from c on.
  int64_t min = 0;
};

/// Which quantity a symbolic dim follows: this rank's rows t, the block
/// bound tb = ceil(T / W) (the same on every rank) or the global count T.
enum class SymKind : int8_t { t = 0, tb = 1, T = 2 };
/// "t", "tb", "T".
const char *symKindName(SymKind k);

/// A dim that follows the token count: size = min(a * X + b, shape[dim])
/// with X the quantity `sym`; `shape[dim]` is the size at the maximum.
struct SymDim {
  int32_t dim = 0;
  SymKind sym = SymKind::t;
  int64_t a = 1, b = 0;
  bool operator==(const SymDim &o) const {
    return dim == o.dim && sym == o.sym && a == o.a && b == o.b;
  }
  bool operator!=(const SymDim &o) const { return !(*this == o); }
};

/// The three quantities of one call: global count T, this rank's rows t,
/// the block bound tb.
struct SymValues {
  int64_t T = 0, t = 0, tb = 0;
  int64_t of(SymKind k) const {
    return k == SymKind::t ? t : k == SymKind::tb ? tb : T;
  }
};

/// `shape` with its symbolic dims evaluated at `x` (dims and a, b already
/// verified): min(a * X + b, shape[dim]).
std::vector<int64_t> resolveShape(const std::vector<int64_t> &shape,
                                  const std::vector<SymDim> &symDims,
                                  const SymValues &x);

/// A tensor of the per-rank program. Shapes are local (per rank) and static;
/// for data-dependent sizes (tokens received by dispatch) `shape` is the
/// upper bound the arena reserves and the step records the actual count.
struct Value {
  int32_t id = 0;
  std::string name; ///< for messages and --describe
  DType dtype = DType::f32;
  std::vector<int64_t> shape;
  ValueKind kind = ValueKind::temp;
  /// Arena offset in bytes (input/output/temp), 64-byte aligned. Values may
  /// share arena bytes when their lifetimes do not overlap (the compiler's
  /// memory plan); a reshape's result aliases its operand.
  uint64_t offset = 0;
  /// For constants: one entry (the same bytes on every rank) or one entry
  /// per rank (rank r reads data[r]).
  std::vector<DataRef> data;
  /// Dims that follow the token count (plans with a symbol; never on
  /// constants or kernel operands).
  std::vector<SymDim> symDims;
  /// Plans with a symbol: the value whose bytes this one views (a reshape
  /// of it: same offset and size), or -1 for a value with its own bytes
  /// (a root). Backend::bindValue binds a root and every view of it to
  /// memory outside the arena. Plans without a symbol record no roots.
  int32_t root = -1;
  /// Plans with a symbol: this root (and every view of it) has no arena
  /// bytes (offset 0); the executor allocates it at its maximum and binds
  /// it (Backend::bindValue). moec puts a decode plan's KV cache there (the
  /// roots of cachePairs), which the executor then swaps between steps.
  bool outside = false;
  /// Plans with a symbol: the elements lie at the row-major strides of
  /// `shape` (the box, the plan's maximum) whatever the call's sizes, not
  /// packed. moec boxes both outside roots of a cache pair whose present
  /// is its past with rows appended (and every view of them): the two share
  /// one buffer, so the cache grows in place. Only kernel steps, which
  /// moec compiles for the box's strides, read or write a boxed value.
  bool boxed = false;
  /// Not in the file: the executor's copy of the plan resolved at a call's
  /// count (Executor.h) sets it on a boxed value to the plan's `shape` (the
  /// box), where `shape` becomes the call's sizes. Empty elsewhere: then
  /// the box is `shape` (boxShape()).
  std::vector<int64_t> box;

  int64_t numElements() const;
  /// The value whose bytes this one uses (itself when it is a root).
  int32_t rootId() const { return root < 0 ? id : root; }
  uint64_t byteSize() const { return numElements() * dtypeSize(dtype); }
  /// The shape whose row-major strides its elements lie at: `box` when
  /// set, else `shape`.
  const std::vector<int64_t> &boxShape() const {
    return box.empty() ? shape : box;
  }
  /// The bytes its elements span: the box's bytes for a boxed value.
  uint64_t boxBytes() const;
  /// Whether its elements are not packed at `shape` (a boxed value at a
  /// count below the box's).
  bool stridedInBox() const { return boxed && !box.empty() && box != shape; }
  /// Whether its one dynamic dim is the rows of a 3-d batch of matrices
  /// ([h, P, D]): a batch_matmul step reads it boxed, at the box's batch
  /// stride (planBoxedError, CpuBackend::batchMatmul).
  bool boxRowsOfBatches() const {
    return shape.size() == 3 && symDims.size() == 1 && symDims[0].dim == 1;
  }
  /// Whether it lies in its box as it would lie packed at any count (one
  /// dynamic dim, every dim before it 1: [1, 1, P, D]; the box only adds
  /// rows past the call's). Then steps other than kernels may read it
  /// boxed (planBoxedError); moec keeps only such readers.
  bool boxLiesPacked() const {
    if (symDims.size() != 1)
      return false;
    for (int32_t d = 0; d < symDims[0].dim && size_t(d) < shape.size(); ++d)
      if (shape[size_t(d)] != 1)
        return false;
    return true;
  }
};

/// The runs of contiguous bytes of a tensor of `shape` whose elements lie
/// at the row-major strides of `box` (same rank, each dim at most the
/// box's): calls `run(packed, boxed, bytes)` for each, in order, with its
/// offset in the packed tensor and in the box. Dims after the last one
/// that differs from the box's join one run; one run when none differs,
/// none when the tensor is empty. Every copy between packed bytes and a
/// boxed value (Value::boxed) goes through it.
void forEachBoxRun(const std::vector<int64_t> &shape,
                   const std::vector<int64_t> &box, uint64_t elemBytes,
                   const std::function<void(uint64_t packed, uint64_t boxed,
                                            uint64_t bytes)> &run);

/// How a model input is split over ranks, or an output gathered. `axis` < 0:
/// replicated (every rank gets the whole tensor; outputs are taken from rank
/// 0). Otherwise the tensor is split into equal contiguous blocks along
/// `axis` over the mesh axes named in `over` (row-major over those axes);
/// ranks that differ only in other axes get the same block.
struct Split {
  int axis = -1;
  std::vector<std::string> over;
};

struct ModelIO {
  std::string name;
  DType dtype = DType::f32;
  std::vector<int64_t> shape; ///< global shape
  Split split;
  int32_t value = -1; ///< the Value holding this rank's part
  /// Global dims in T (SymKind::T) of a plan with a symbol.
  std::vector<SymDim> symDims;
};

/// The input or output named `name` of `ios`, or null.
const ModelIO *findIO(const std::vector<ModelIO> &ios, const std::string &name);

/// The KV cache's name at a decode plan's outputs for its input `past`:
/// past_key_values.N.key -> present.N.key (onnxruntime-genai), past_k_0 ->
/// present_k_0; "" for other names. moec keeps such pairs outside the arena
/// (Value::outside) and moe-run generate feeds each present to its past.
std::string presentNameOf(const std::string &past);

/// The kind of a step: plan.fbs's `StepAttrs` union (matmul, route,
/// dispatch, ...); its member tables are the kinds' typed attributes
/// (fb::MatmulT, fb::RouteT, ...).
using StepKind = fb::StepAttrs;
/// The step kind as messages and reports spell it ("matmul", ...).
const char *stepKindName(StepKind k);

/// One operation of the per-rank program. The step kinds, their operands,
/// results and attributes are listed in docs/plan-format.md ("Steps").
struct Step {
  std::vector<int32_t> inputs;  ///< value ids (-1: absent optional operand)
  std::vector<int32_t> outputs; ///< value ids
  /// The kind and its typed attributes, e.g. `attrs.Set(fb::MatmulT())`,
  /// `attrs.Asmatmul()->trans_b`.
  fb::StepAttrsUnion attrs;
  std::string loc; ///< source location (ONNX node name) for messages

  StepKind kind() const { return attrs.type; }
  const char *op() const { return stepKindName(attrs.type); }
  /// The mesh axes (comma-separated) of a collective step's group; empty
  /// for steps that communicate with no group.
  std::string axes() const;
  /// The dispatch step an experts/combine step belongs to, or whose slots a
  /// dequantize step expands; -1 otherwise.
  int64_t dispatchStep() const;
};

/// True when `dispatch` has routing weights (its optional third operand):
/// it sends `weights[t, j] * tokens[t]` for choice j of token t (moe.experts
/// with weight_input), and its combine sums the returned rows unweighted
/// (the combine's weights operand is -1).
inline bool dispatchScalesRows(const Step &dispatch) {
  return dispatch.inputs.size() > 2 && dispatch.inputs[2] >= 0;
}

/// A kernel the compiler generated (a fused elementwise/reduction region):
/// `kernel` steps call it by name with one pointer per operand, inputs
/// first, then outputs. The code is in the plan's data region: a shared
/// object for the host CPU (`cpu_code`) and/or PTX (`ptx_code`).
/// How a GPU launch passes one kernel parameter (the pairs in
/// GpuLaunchCode::args).
enum class LaunchArg : int64_t {
  pointer = 0, ///< the kernel step's operand number `value`
  i64 = 1,     ///< an i64 constant
  f32 = 2,     ///< an f32 constant, its bits in `value`
};

/// One launch of a generated GPU kernel (static geometry). The compiler's
/// PTX generator fills it in (moec/Conversion/KernelCodegen.h); the CUDA
/// backend launches it.
struct GpuLaunchCode {
  int module = 0;       ///< which PTX module (NUL-separated in ptx_code)
  std::string function; ///< its entry
  int64_t grid[3] = {1, 1, 1}, block[3] = {1, 1, 1};
  /// Parameters in order as flat (LaunchArg, value) pairs, as plan.fbs
  /// stores them.
  std::vector<int64_t> args;
  void addArg(LaunchArg kind, int64_t value) {
    args.push_back(int64_t(kind));
    args.push_back(value);
  }
  /// The bytes of parameters the launch passes (each at its alignment:
  /// 8 per pointer or i64, 4 per f32), at most kMaxLaunchParamBytes
  /// (moert/Limits.h).
  int64_t paramBytes() const;
};

struct KernelCode {
  std::string name;
  int numArgs = 0; ///< one pointer per input, then one per output
  /// Takes one more pointer, args[numArgs], to the call's token counts
  /// int64 {t, tb, T} (SymKind order), and runs at its operands' actual
  /// sizes (a plan with a symbol; CPU code only).
  bool symbolic = false;
  std::vector<GpuLaunchCode> launches; ///< with PTX: how to launch it
};

/// The whole plan: manifest plus (when loaded) the mapped data region.
struct Plan {
  uint32_t version = kPlanVersion;
  std::string producer; ///< e.g. "moec 0.1"
  std::string source;   ///< the ONNX file it was compiled from
  MeshAxes mesh;        ///< moert/Mesh.h: axes, rank numbering
  std::vector<Segment> segments;
  std::vector<Value> values;
  std::vector<ModelIO> inputs;
  std::vector<ModelIO> outputs;
  std::vector<Step> steps;
  uint64_t arenaBytes = 0; ///< per-rank arena size
  std::vector<KernelCode> kernels;
  DataRef cpuCode; ///< segment -1: none
  DataRef ptxCode; ///< segment -1: none
  /// The token-count symbol (0 or 1 entries; format version 8).
  std::vector<Symbol> symbols;

  int64_t worldSize() const;
  /// The coordinate of `rank` along mesh axis `axis` (by name); 0 when the
  /// mesh has no such axis.
  int64_t coord(int64_t rank, const std::string &axis) const;
  /// Size of the named mesh axis (1 when absent).
  int64_t axisSize(const std::string &axis) const;
  /// Ranks in `rank`'s group along the named axes (those that share every
  /// other coordinate), in order of the group-local index; the group-local
  /// index is row-major over `axes`.
  std::vector<int32_t> group(int64_t rank,
                             const std::vector<std::string> &axes) const;
};

/// The cache pairs of `plan`: {input index, output index} of every input
/// whose presentNameOf names an output of the same dtype.
std::vector<std::pair<size_t, size_t>> cachePairs(const Plan &plan);

/// Checks the manifest's internal consistency (value ids in range, shapes
/// non-negative, constants inside their segments, steps' operand counts,
/// known step kinds, arena offsets inside the arena). Returns false and sets
/// `error` to a message naming the step or value.
bool verifyPlan(const Plan &plan, std::string &error);

/// The oldest format version that holds everything `plan` uses: 9 with a
/// transposed batch_matmul, else 8 with a symbol, else 7. The writer
/// writes it; the reader refuses a file whose version is older.
uint32_t minPlanVersion(const Plan &plan);

/// verifyPlan's rules for a dynamic token count (at most one symbol;
/// symbolic dims in range, a, b >= 0, the maximum shape within a * max +
/// b except a boxed value's, whose box may reach past it; none on
/// constants or kernel operands; a split model input's or
/// output's dim among the dims its split cuts). Returns "" when they hold,
/// else the reason naming the value, input or step. Value ids of steps
/// must be in range.
std::string planSymbolsError(const Plan &plan);

/// verifyPlan's rules for values kept in place (Value::boxed): only in
/// plans with a symbol; a boxed root lies outside the arena and is one of
/// the two roots of a cache pair (cachePairs), whose other root is boxed
/// too, of the same shape (the box) and dtype; a view is boxed iff its
/// root is; only kernel steps read or write a boxed value. Returns "" when
/// they hold, else the reason naming the value or step. Value ids of
/// steps, model inputs and outputs and views must be in range.
std::string planBoxedError(const Plan &plan);

/// The split of a dynamic plan's token count over the ranks, which gives
/// each rank its rows t and the block bound tb (blocks of tb = ceil(T / W)
/// rows, the last short or empty): the split of the first model input
/// whose split cuts a symbolic dim; else, for a model no input splits
/// along the count (sequence-parallel or folded MoE layers), the mesh axes
/// of the first all_slice or reduce_scatter over more than one rank with a
/// symbolic dim along its axis. None (axis -1) when neither.
Split tokenSplitOf(const Plan &plan);

/// An all_slice, reduce_scatter or all_gather step of a dynamic plan that
/// cuts the count's rows into the token split's blocks or joins them
/// (sequence-parallel or folded MoE layers): returns true when an operand
/// has a symbolic dim along the step's axis, its group spans G > 1 ranks,
/// and the split is not even (an even split, e.g. whole sequences per
/// rank, has the whole's dim G times the block's, of the same kind, at
/// every count: G copies, as in a static plan). Such a step must be over
/// the axes of tokenSplitOf, along an axis with only dims of size 1 before
/// it, with the whole side's dim a*T and the block side's a*t; with
/// `rules`, which rule fails (empty when they hold; verifyPlan checks them,
/// so the backends, which run verified plans, pass none and skip the
/// scan). Rank `g` of the group holds
/// rows [g tb, g tb + t) of the whole: an all_gather of uneven blocks is
/// one of padded blocks of tb rows, of which the first T are the result;
/// a reduce_scatter sums the whole padded with zeros to G tb rows.
bool rowBlockStep(const Plan &plan, const Step &step,
                  std::string *rules = nullptr);

/// The rules of a `topk` or `scatter_elements` step's operands against its
/// values and attributes (docs/plan-format.md, "Steps"): shapes, dtypes,
/// `k` in [1, n], `axis` in range. verifyPlan applies them and the backends
/// again before they run such a step. Returns "" when they hold (and for
/// every other kind), else the reason. Operand ids must be in range.
std::string indexStepError(const Plan &plan, const Step &step);

/// The rules of a `dequantize` step (plan.fbs Dequantize): bits 2, 4 or 8,
/// block_size a power of two >= 16, codes u8 [N, blocks, block_size * bits
/// / 8], scales and zero points f32 [N, blocks], result f32 [k, N].
/// indexStepError applies them to dequantize steps.
std::string dequantizeStepError(const Plan &plan, const Step &step,
                                const fb::DequantizeT &a);

/// The bytes of the data region until `writePlan` writes them: per segment,
/// bytes held here, then pieces that are produced only while the plan is
/// written (moec streams weights from the model's files that way, so that
/// they are never all in memory).
struct PlanData {
  /// Writes bytes [offset, offset + size) of a deferred piece to `dst`;
  /// false with `error` set when they cannot be produced.
  using Fill = std::function<bool(uint64_t offset, uint64_t size, char *dst,
                                  std::string &error)>;
  struct Deferred {
    uint64_t offset = 0; ///< in the segment
    uint64_t size = 0;
    Fill fill;
  };
  /// One buffer per segment of `Plan::segments` (same order): the bytes
  /// before the segment's first deferred piece.
  std::vector<std::vector<char>> segments;
  /// Per segment (may be shorter than `segments`): pieces after those
  /// bytes, in increasing offsets.
  std::vector<std::vector<Deferred>> deferred;

  /// Bytes in segment `seg`.
  uint64_t segmentSize(size_t seg) const;
  /// Appends `n` bytes (copied) to segment `seg` at the next 64-byte
  /// aligned offset and returns that offset.
  uint64_t append(size_t seg, const char *p, size_t n);
  /// Appends a piece of `size` bytes made by `fill` when the plan is
  /// written; returns its 64-byte aligned offset.
  uint64_t appendDeferred(size_t seg, uint64_t size, Fill fill);
};

/// How `writePlan` lays out the data region.
struct WriteOptions {
  /// Each rank's own segments go to a file of their own next to the plan,
  /// `STEM.rank-N.weights` for plan `STEM.moeplan`, and a segment a group
  /// of ranks shares (data-parallel replicas) to `STEM.group-K.weights`
  /// (docs/plan-format.md): a rank maps only its files, and no file holds
  /// the whole model.
  bool weightsPerRank = false;
  /// With weightsPerRank: write only the weight files these ranks map
  /// (empty: all), e.g. to stage one node's shards; the plan file is
  /// always written.
  std::vector<int32_t> ranks;
  /// Called after each deferred piece and each segment with the data bytes
  /// written so far and the total (progress, releasing memory).
  std::function<void(uint64_t done, uint64_t total)> progress;
};

/// The weight file of `rank` for the plan at `planPath` (weightsPerRank).
std::string rankWeightsPath(const std::string &planPath, int32_t rank);

/// Writes `plan` and its data to `path` (segment offsets, sizes and files
/// are filled in). Returns false and sets `error` on failure.
bool writePlan(const std::string &path, Plan &plan, const PlanData &data,
               std::string &error, const WriteOptions &options = {});

/// A plan file opened for one rank: the manifest parsed and verified, and
/// the segments that rank needs mapped read-only (mmap), not copied.
class LoadedPlan {
public:
  ~LoadedPlan();
  const Plan &plan() const { return plan_; }
  /// Pointer to a constant's bytes for this rank, or null when its segment
  /// is not mapped for this rank.
  const void *constantData(const Value &v) const;
  /// The bytes of a code blob (cpuCode / ptxCode), or null when the plan
  /// has none or its segment is not mapped.
  const char *codeData(const DataRef &d) const;
  /// Bytes of the data region this rank mapped.
  uint64_t mappedBytes() const { return mappedBytes_; }

  /// Opens `path` for `rank` (rank < 0: manifest only, nothing mapped, for
  /// --describe). Errors name the file and the problem: not a plan,
  /// truncated, version mismatch, manifest checksum or syntax errors, and
  /// (with `verifyWeights`) a mapped segment whose bytes do not match their
  /// checksum in the file's trailer (every byte is read once: see
  /// docs/plan-format.md for the cost). `progress`, when given, is called
  /// as the checksums are computed with the bytes checked so far and the
  /// rank's total.
  static std::unique_ptr<LoadedPlan>
  open(const std::string &path, int rank, std::string &error,
       bool verifyWeights = true,
       const std::function<void(uint64_t done, uint64_t total)> &progress =
           nullptr);

private:
  Plan plan_;
  int fd_ = -1;
  std::vector<int> weightFds_; ///< per-rank weight files opened
  std::vector<std::pair<void *, size_t>> maps_; ///< per segment (or null)
  std::vector<const char *> segBase_;
  uint64_t mappedBytes_ = 0;
  int rank_ = -1;
};

/// "[2,8,64]": a shape for messages.
std::string shapeString(const std::vector<int64_t> &shape);
/// The mesh axis names of a step's comma-separated `axes` attribute.
std::vector<std::string> splitAxes(const std::string &axes);

/// A readable multi-line description of a plan (for `moe-run --describe`):
/// mesh, inputs/outputs with their splits, segments and bytes per rank,
/// values, and the steps with operands and attributes.
std::string describePlan(const Plan &plan);

} // namespace moert

#endif // MOERT_PLAN_H
