//===- Executor.h - runs a plan's steps on one rank ---------------*- C++
//-*-===//
//
// The executor of a loaded plan on one rank: it binds this rank's slice of
// the model inputs, runs the steps (docs/plan-format.md) through a Backend,
// calls the collectives over the communicator of each step's mesh-axis
// group, gathers the outputs on rank 0 and records a report (time per step;
// per MoE layer the tokens routed to each expert and the rows and bytes
// exchanged with each peer).
//
// The Backend interface is what differs between devices: the CPU backend
// (createCpuBackend) runs the moert/cpu/Kernels.h kernels on a host arena;
// a CUDA backend implements the same interface on a device arena.
//
//===----------------------------------------------------------------------===//

#ifndef MOERT_EXECUTOR_H
#define MOERT_EXECUTOR_H

#include "moert/Comm.h"
#include "moert/Npy.h"
#include "moert/Plan.h"
#include "moert/cpu/Kernels.h"

#include <nlohmann/json_fwd.hpp>

#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace moert {

/// A runtime error of a step or an input; what() names the rank and the
/// step (its `loc`) or input.
class RunError : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

/// Traffic between this rank and one peer of an EP group in one MoE layer.
/// Rows are counted at dispatch; bytes cover dispatch and combine (combine
/// sends the received rows back). The entry of the rank itself counts the
/// rows that stay local and never cross the network.
struct PeerTraffic {
  int32_t peer = 0; ///< world rank of the peer
  int64_t rowsSent = 0, rowsRecv = 0;
  int64_t bytesSent = 0, bytesRecv = 0;
};

/// What one MoE layer (a dispatch step) did on this rank.
struct MoELayerStats {
  int64_t step = 0; ///< index of the dispatch step
  std::string loc;
  /// Assignments this rank's tokens made to each expert (global expert ids;
  /// dropped ones included).
  std::vector<int64_t> tokensPerExpert;
  std::vector<PeerTraffic> peers; ///< one per EP group rank, in group order
  int64_t dropped = 0;            ///< assignments over capacity
  int64_t rowsReceived = 0;       ///< rows this rank's experts computed
};

/// How the collectives of one group of ranks (a mesh-axis list of the
/// plan's steps) move data on this rank (Backend::transport).
struct GroupTransport {
  std::string axes; ///< as in the steps' "axes" attribute
  int32_t ranks = 0;
  std::string transport;
};

struct StepTiming {
  std::string op, loc;
  double seconds = 0;
  /// Collectives: the payload this rank takes in from the other ranks of
  /// its group (all_gather: the G-1 other blocks; all_reduce and
  /// reduce_scatter: the partial sums x, once; all_slice and groups of one
  /// rank: 0). Other steps: 0.
  int64_t bytesIn = 0;
};

/// The report of one rank's run.
struct RunReport {
  int rank = 0;
  std::string backend;
  uint64_t mappedBytes = 0;
  uint64_t arenaBytes = 0;
  std::vector<GroupTransport> collectives; ///< by axes, after prepare
  std::vector<StepTiming> steps;
  std::vector<MoELayerStats> layers;
  double seconds = 0; ///< all steps

  /// The report as JSON (moe-run --json; docs/runtime.md) and back: the
  /// ranks' reports travel to rank 0 in this form.
  nlohmann::json toJson() const;
  static bool fromJson(const nlohmann::json &j, RunReport &out,
                       std::string &error);
};

class Executor;

/// What a backend sees of the run.
class ExecContext {
public:
  const Plan &plan() const;
  const LoadedPlan &loaded() const;
  int rank() const;
  /// The communicator of the ranks sharing every mesh coordinate except
  /// those of `axes` (a comma-separated list, as in step attributes).
  Comm &group(const std::string &axes);
  /// The communicator of all ranks.
  Comm &world();
  /// The token counts of this call (a plan with a dynamic token count;
  /// all 0 for a static plan).
  const SymValues &symbols() const;
  /// Stats of the MoE layer whose dispatch is step `dispatchStep`.
  MoELayerStats &layer(int64_t dispatchStep);
  /// A RunError naming this rank and step `index` with `what`.
  RunError error(size_t index, const std::string &what) const;

private:
  friend class Executor;
  explicit ExecContext(Executor &e) : e_(e) {}
  Executor &e_;
};

/// Checks the operands of `experts` step `index` against its dispatch (H
/// wide rows, S local slots, `recvRows` rows received): recv and y hold the
/// rows, w_gate is [S,H,F], w_up like it, w_down [S,F,H], biases [S,F] /
/// [S,H]. Returns F; throws ctx.error naming the operand. Shared by the
/// backends.
int64_t checkExpertsStep(ExecContext &ctx, size_t index, int64_t H, int64_t S,
                         int64_t recvRows);

// The other backend-independent step checks (attributes parsed, operand
// shapes and dtypes against each other); each throws ctx.error naming the
// operand. The backends add only what their kernels need beyond these.

/// `matmul`: C[M,N] = A[M,K] * B (B [K,N], or [N,K] with trans_b) + bias[N];
/// A and B share a dtype, C and the bias are f32 or A's dtype.
struct MatmulDims {
  int64_t M = 0, K = 0, N = 0;
  bool transB = false;
};
MatmulDims checkMatmulStep(ExecContext &ctx, size_t index);

/// `batch_matmul`: C[b] = A[b] * B[b] for b < batch, with A [batch,M,K],
/// B [batch,K,N] (trans_b: B [batch,N,K] and C[b] = A[b] * B[b]^T) and C
/// [batch,M,N], all f32 and 3-d.
struct BatchMatmulDims {
  int64_t batch = 0, M = 0, K = 0, N = 0;
  bool transB = false;
};
BatchMatmulDims checkBatchMatmulStep(ExecContext &ctx, size_t index);

/// `route`: its attributes as RouteParams, top_k in [1, E], results of
/// T x top_k, bias of E; sets T and E from the logits [T, E].
RouteParams checkRouteStep(ExecContext &ctx, size_t index, int64_t &T,
                           int64_t &E);

/// `unary`: the function and the element count of x (= y's).
int64_t checkUnaryStep(ExecContext &ctx, size_t index, cpu::Unary &fn);

/// `binary`: the function, and a's and b's shapes padded with leading 1s to
/// the result's rank, checked to broadcast to it.
void checkBinaryStep(ExecContext &ctx, size_t index, cpu::Binary &fn,
                     std::vector<int64_t> &aShape,
                     std::vector<int64_t> &bShape);

/// `dispatch`: tokens [T, H], ids [T, k], recv [rows, H] of the tokens'
/// dtype and the routing weights, when given, f32 [T, k] agree; sets H, k
/// and T.
void checkDispatchStep(ExecContext &ctx, size_t index, int64_t &H, int64_t &k,
                       int64_t &T);

/// The capacity a `dispatch` step applies in this call (-1: dropless): its
/// `capacity`, or with `capacity_factor` > 0 (a plan with a dynamic token
/// count) ceil(capacity_factor * tb * k / num_experts), at most `capacity`
/// when that is >= 0. Shared by the backends.
int64_t dispatchCapacity(ExecContext &ctx, const fb::DispatchT &at, int64_t k);
/// The placement a `dispatch` step's attributes describe (num_experts,
/// slots_per_rank, replicas) for its group of G ranks, checked.
Placement dispatchPlacement(ExecContext &ctx, size_t index, int64_t G);

/// `all_gather` over a group of G ranks: y is G copies of x (same dtype)
/// along `axis`; returns the product of x's dims before the axis.
int64_t checkAllGatherStep(ExecContext &ctx, size_t index, int64_t G);

/// `all_slice` over a group of G ranks: x is G copies of y (same dtype)
/// along `axis`; returns the product of y's dims before the axis.
int64_t checkAllSliceStep(ExecContext &ctx, size_t index, int64_t G);

/// The rows of an all_slice, reduce_scatter or all_gather that cuts or
/// joins the token count's rows (moert::rowBlockStep) at this call's
/// counts.
struct RowBlocks {
  uint64_t rowBytes = 0; ///< bytes per row along the axis
  int64_t T = 0;         ///< rows of the whole
  int64_t tb = 0;        ///< the block bound: block g starts at row g * tb
  int64_t t = 0;         ///< rows of rank g's block
};
/// True with `rows` set when step `index` is such a step for rank `g` of
/// its group of `G` ranks; its operands' actual shapes checked (else a
/// RunError naming the step). False for every other step.
bool checkRowBlocks(ExecContext &ctx, size_t index, int64_t G, int64_t g,
                    RowBlocks &rows);

/// `reduce_scatter` over a group of G ranks: the reduction is a sum, x is
/// G copies of y (same dtype) along `axis`; returns the product of y's dims
/// before the axis.
int64_t checkReduceScatterStep(ExecContext &ctx, size_t index, int64_t G);

/// `combine` against its dispatch (H wide rows, T tokens, top-k, `recvRows`
/// expert rows): y holds the rows, weights (absent when the dispatch scaled
/// the rows) are T x k, out T x H, y and out share a dtype.
void checkCombineStep(ExecContext &ctx, size_t index, int64_t H, int64_t T,
                      int64_t k, int64_t recvRows);

/// `topk`: the rules of indexStepError (moert/Plan.h); x viewed as
/// [rows, n] (n its last dim, rows the product of the others).
struct TopKDims {
  int64_t rows = 0, n = 0, k = 0;
  bool largest = true;
  bool i64 = false; // x and values are int64 (else f32)
};
TopKDims checkTopKStep(ExecContext &ctx, size_t index);

/// `dequantize`: the rules of dequantizeStepError (moert/Plan.h); n is the
/// codes' dim -3, batch the product of the dims before it (stacked
/// experts), zeroPoints whether they are given.
struct DequantizeDims {
  int64_t batch = 1, n = 0, k = 0, bits = 0, blockSize = 0;
  /// Elements of one weight's codes (bytes) and of its scales.
  int64_t codesPerWeight = 0, scalesPerWeight = 0;
  bool zeroPoints = false;
  /// Weight 0 of the step's stack as the GEMMs on codes take it, from the
  /// step's operands (host or device pointers).
  cpu::PackedWeight weight(const uint8_t *codes, const float *scales,
                           const float *zp) const {
    cpu::PackedWeight w;
    w.codes = codes;
    w.scales = scales;
    w.zeroPoints = zp;
    w.n = n;
    w.k = k;
    w.bits = bits;
    w.blockSize = blockSize;
    return w;
  }
};
DequantizeDims checkDequantizeStep(ExecContext &ctx, size_t index);

/// Who reads the result of `dequantize` step `index`, for a backend that
/// runs the GEMMs on the codes instead of the step (runtime/cpu
/// CpuBackendQuant.cpp, runtime/cuda CudaBackendIndex.cpp): `gemmsOnly`
/// when the result is not a plan output and has readers, all of them GEMMs
/// on it as a weight: `matmul` steps reading it as B without trans_b (a
/// step without a dispatch), or, for a step after a dispatch, weights (w_gate,
/// w_up, w_down) of that dispatch's `experts` step. For the matmul readers:
/// the most rows of A (`maxRows`) and whether every A and C is f32.
struct DequantizeReaders {
  bool gemmsOnly = false;
  int64_t maxRows = 0;
  bool f32Matmuls = true;
};
DequantizeReaders dequantizeReaders(const Plan &plan, size_t index);

/// `scatter_elements`: the rules of indexStepError; the geometry
/// (cpu::scatterShape of data, indices and the axis), the reduction, the
/// indices' width and data's dtype (updates' and the result's too).
struct ScatterElementsDims {
  cpu::ScatterShape shape;
  cpu::ScatterReduction reduction = cpu::ScatterReduction::none;
  bool indices64 = true;
  DType dtype = DType::f32;
};
ScatterElementsDims checkScatterElementsStep(ExecContext &ctx, size_t index);
/// The error that stops a `scatter_elements` step at an index out of range:
/// `value` at flat position `position` of indices (both backends).
RunError scatterIndexError(ExecContext &ctx, size_t index, int64_t position,
                           int64_t value);

/// Runs the steps of one rank. Methods throw RunError (or CommError /
/// CommAborted from the collectives).
///
/// One pure virtual method per step kind of the plan schema (plan.fbs's
/// StepAttrs), each given the step's index (its operands are
/// `ctx.plan().steps[index]`, messages name it through ctx.error) and its
/// typed attributes: a backend that lacks a kind does not compile, and
/// runStep's switch over the kinds fails to compile (-Werror=switch) until
/// a new kind is dispatched.
class Backend {
public:
  virtual ~Backend();
  virtual const char *name() const = 0;
  /// Called once before the run: allocate the arena, resolve constants.
  virtual void prepare(ExecContext &ctx) = 0;
  /// Copies this rank's bytes of an input/temp value from host memory.
  /// The host side is packed; a value kept in place
  /// (Value::stridedInBox) takes them at its box's strides
  /// (forEachBoxRun), as download, saveHeld and loadHeld do.
  virtual void upload(const Value &v, const void *src, size_t bytes) = 0;
  /// Copies a value's bytes to host memory.
  virtual void download(const Value &v, void *dst, size_t bytes) = 0;
  /// Runs step `index` of the plan: calls the method of its kind. A backend
  /// may override it to wrap every step (the CUDA backend selects its
  /// device and turns CUDA failures into RunErrors).
  virtual void runStep(ExecContext &ctx, size_t index);
  /// Waits for queued work (per step timing calls it); CPU: nothing.
  virtual void synchronize() {}
  /// Device memory outside the arena, of at least `bytes`, that lives as
  /// long as the backend: Executor::holdOutputs keeps a KV cache in it
  /// between runs.
  virtual void *allocateHeld(size_t bytes) = 0;
  /// Device-to-device copies between value v of this backend's arena and
  /// held memory `p` (allocateHeld of any backend on this rank's device),
  /// packed in `p`.
  virtual void saveHeld(const Value &v, void *p, size_t bytes) = 0;
  virtual void loadHeld(const Value &v, const void *p, size_t bytes) = 0;
  /// Binds arena value `root` (a root, Value::root < 0) and every view of
  /// it to `bytes` of held memory `p` (allocateHeld) instead of its arena
  /// bytes, until bound again; a null `p` binds it back to the arena. The
  /// executor binds the roots outside the arena (Value::outside) this way:
  /// a decode step reads and writes its KV cache where it is held.
  void bindValue(int32_t root, void *p, size_t bytes);
  /// After prepare: how the collectives over `group` (the communicator of
  /// mesh axes `axes`) move data. Default: "local" for one rank, else the
  /// communicator's kind ("threads", "mpi").
  virtual std::string transport(const std::string &axes,
                                const Comm &group) const;

  // The step kinds (docs/plan-format.md, "Steps").
  virtual void matmul(ExecContext &ctx, size_t index, const fb::MatmulT &a) = 0;
  virtual void batchMatmul(ExecContext &ctx, size_t index,
                           const fb::BatchMatmulT &a) = 0;
  virtual void route(ExecContext &ctx, size_t index, const fb::RouteT &a) = 0;
  virtual void dispatch(ExecContext &ctx, size_t index,
                        const fb::DispatchT &a) = 0;
  virtual void experts(ExecContext &ctx, size_t index,
                       const fb::ExpertsT &a) = 0;
  virtual void combine(ExecContext &ctx, size_t index,
                       const fb::CombineT &a) = 0;
  virtual void unary(ExecContext &ctx, size_t index, const fb::UnaryT &a) = 0;
  virtual void binary(ExecContext &ctx, size_t index, const fb::BinaryT &a) = 0;
  virtual void softmax(ExecContext &ctx, size_t index,
                       const fb::SoftmaxT &a) = 0;
  virtual void copy(ExecContext &ctx, size_t index, const fb::CopyT &a) = 0;
  virtual void allReduce(ExecContext &ctx, size_t index,
                         const fb::AllReduceT &a) = 0;
  virtual void allGather(ExecContext &ctx, size_t index,
                         const fb::AllGatherT &a) = 0;
  virtual void allSlice(ExecContext &ctx, size_t index,
                        const fb::AllSliceT &a) = 0;
  virtual void reduceScatter(ExecContext &ctx, size_t index,
                             const fb::ReduceScatterT &a) = 0;
  virtual void kernel(ExecContext &ctx, size_t index, const fb::KernelT &a) = 0;
  virtual void topk(ExecContext &ctx, size_t index, const fb::TopKT &a) = 0;
  virtual void scatterElements(ExecContext &ctx, size_t index,
                               const fb::ScatterElementsT &a) = 0;
  virtual void dequantize(ExecContext &ctx, size_t index,
                          const fb::DequantizeT &a) = 0;

protected:
  /// Where `bytes` bytes of arena value `v` start: in the memory bound to
  /// its root (bindValue), else at its offset in `arena` of `arenaBytes`;
  /// null when they lie outside that memory.
  char *locate(const Value &v, char *arena, uint64_t arenaBytes,
               uint64_t bytes) const;

private:
  struct Bound {
    char *p = nullptr;
    uint64_t bytes = 0;
  };
  std::vector<Bound> bound_; ///< by root id; empty while nothing is bound
};

/// The CPU backend: a 64-byte aligned host arena and the CPU kernels.
std::unique_ptr<Backend> createCpuBackend();

/// The npy dtype descriptor of a plan dtype ("<f4", ...); empty for bf16.
std::string npyDType(DType t);

/// Checks the named model inputs against the plan: every input present,
/// no unknown name, dtype and global shape as the plan says (a symbolic
/// dim of a plan with a dynamic token count: any size; Executor::setInputs
/// solves the count and checks it against the maximum). Returns false and
/// sets `error` naming the input with expected vs got.
bool checkInputs(const Plan &plan,
                 const std::map<std::string, NpyArray> &inputs,
                 std::string &error);

/// Why output `output` of plan `from` cannot become input `input` of plan
/// `to` on every rank without leaving the device ("" when it can;
/// Executor::holdOutputs): both exist with the same dtype and rank, the
/// plans have the same number of ranks, and every rank holds the same
/// block of both (equal splits of a dim that no symbolic dim follows).
std::string holdError(const Plan &from, const std::string &output,
                      const Plan &to, const std::string &input);

class Executor {
public:
  /// Creates the communicators of the mesh-axis groups the steps use
  /// (collective over `world`, whose size must be the plan's world size).
  Executor(const LoadedPlan &plan, Comm &world,
           std::unique_ptr<Backend> backend);
  ~Executor();

  /// Binds this rank's slice of every input (global arrays, the same on
  /// every rank; inputs held with holdOutputs may be left out) and
  /// prepares the backend. With a dynamic token count it
  /// first solves the count T from the inputs' symbolic dims (a RunError
  /// naming the input when they disagree or T exceeds the maximum) and
  /// resolves the plan's shapes for it: ctx.plan() is then the resolved
  /// copy.
  void setInputs(const std::map<std::string, NpyArray> &inputs);
  /// Runs every step.
  void run();
  /// Called on this rank before each step with its index (moe-run's
  /// watchdog, which ends a run whose ranks stop making progress).
  void setStepObserver(std::function<void(size_t)> observer) {
    observer_ = std::move(observer);
  }
  /// Collective: rank 0 gets the global outputs in plan order (other ranks
  /// an empty list).
  std::vector<std::pair<std::string, NpyArray>> gatherOutputs();
  /// The same for the outputs named in `only` (the others stay on the
  /// ranks: a KV cache held with holdOutputs).
  std::vector<std::pair<std::string, NpyArray>>
  gatherOutputs(const std::vector<std::string> &only);
  /// Keeps this rank's blocks of outputs of `from`'s last run (`from` may
  /// be this executor) in device memory of this executor's backend, as the
  /// inputs they pair with in `outputToInput` ({output of from's plan,
  /// input of this plan}): the next setInputs loads them device to device
  /// and need not be given them. No communication; the bytes never go
  /// through the host on a device backend. The held memory is allocated
  /// once per input, for the input's maximum. A cache pair kept in place
  /// (Value::boxed) is one buffer: from this executor nothing is copied;
  /// from another (a prefill's packed present) the block is copied into
  /// the box at its strides. Throws RunError with holdError's reason, or
  /// when a block exceeds that maximum.
  void holdOutputs(
      Executor &from,
      const std::vector<std::pair<std::string, std::string>> &outputToInput);
  /// Forgets the held inputs (their memory stays allocated for reuse).
  void dropHeld();
  /// Whether holdOutputs from this executor swaps a cache pair kept
  /// outside the arena (Value::outside; default): the step read its past
  /// from one buffer and wrote its present into the other, so nothing is
  /// copied. false: the present is copied onto the past (for comparison).
  /// A pair kept in place (Value::boxed) is one buffer: neither way
  /// copies or swaps anything.
  void setBindHeld(bool bind) { bindHeld_ = bind; }
  /// Bytes this rank copied on the device for held inputs so far (into
  /// held memory at holdOutputs, and out of it at setInputs).
  uint64_t heldCopyBytes() const { return heldCopyBytes_; }
  /// This rank's output parts (no communication), in plan order.
  std::vector<std::vector<char>> localOutputs();

  const RunReport &report() const { return report_; }
  /// Collective: rank 0 gets every rank's report, in rank order.
  std::vector<RunReport> gatherReports();

private:
  friend class ExecContext;
  /// Prepares the backend once, then records its transports.
  void prepare(ExecContext &ctx);
  /// Dynamic token count (ExecutorSymbols.cpp): solves T from the inputs
  /// and resolves the shapes of resolved_ when T changes.
  void resolveSymbols(const std::map<std::string, NpyArray> &inputs);
  /// The counts of `rank` at the current T (its block of the token split).
  SymValues symValuesOf(int64_t rank) const;
  /// The same at count `T`.
  SymValues symValuesAt(int64_t T, int64_t rank) const;
  /// Uploads this rank's block of a symbolic model input.
  void uploadSymbolic(const ModelIO &m, const NpyArray &a);
  /// gatherOutputs for a plan with a symbol.
  std::vector<std::pair<std::string, NpyArray>>
  gatherSymbolic(const std::vector<std::vector<char>> &all,
                 const std::vector<std::string> *only);
  /// holdOutputs: this rank's block of an input kept in device memory.
  struct Held {
    void *memory = nullptr; ///< Backend::allocateHeld (an arena input)
    size_t capacity = 0;
    size_t bytes = 0;           ///< this rank's block
    std::vector<int64_t> shape; ///< the global shape it stands for
    bool valid = false;
  };
  std::map<std::string, Held> held_; ///< by input name
  /// The memory of a root outside the arena (Value::outside), bound to it;
  /// both roots of a cache pair (moert::cachePairs) get the larger size,
  /// or, kept in place (Value::boxed), share one buffer of the box.
  struct Outside {
    void *p = nullptr;
    size_t capacity = 0;
  };
  std::map<int32_t, Outside> outside_; ///< by root id
  /// prepare: allocates outside_ and binds it.
  void bindOutside();
  /// setInputs: a held input in the arena gets its held block copied in.
  void loadHeld(const ModelIO &m, const Value &v, Held &h);
  /// The local value of model input `in` of this plan resolved at the
  /// count its global shape `global` gives (a boxed one with its box).
  Value inputValueAt(const ModelIO &in,
                     const std::vector<int64_t> &global) const;
  /// holdOutputs into boxed input `in` from output `o` (value `v` of
  /// `from`'s resolved plan): nothing when it is this plan's present of
  /// the same buffer, else a copy at the box's strides through `h`'s
  /// memory (counted once, as a hand-over).
  void holdBoxed(Executor &from, const Value &v, const ModelIO &o,
                 const ModelIO &in, Held &h);
  bool bindHeld_ = true;
  uint64_t heldCopyBytes_ = 0;
  /// gatherOutputs of the outputs in `only` (all when null).
  std::vector<std::pair<std::string, NpyArray>>
  gatherSelected(const std::vector<std::string> *only);
  /// This rank's parts of the outputs in `only` (all when null).
  std::vector<std::vector<char>>
  localSelected(const std::vector<std::string> *only);
  const LoadedPlan &loaded_;
  const Plan &plan_;
  /// The plan with its symbolic shapes at the current count (only for a
  /// plan with a symbol; null otherwise, and ctx.plan() is plan_).
  std::unique_ptr<Plan> resolved_;
  SymValues sym_;
  bool symResolved_ = false;
  /// The token split: the blocks of T over the ranks (the split of the
  /// first input whose symbolic dim it cuts; 1 block when none does).
  Split tokenSplit_;
  Comm &world_;
  int rank_;
  std::unique_ptr<Backend> backend_;
  std::map<std::string, std::unique_ptr<Comm>> groups_;
  std::map<int64_t, size_t> layerIndex_; ///< dispatch step -> layers index
  RunReport report_;
  bool prepared_ = false;
  std::function<void(size_t)> observer_;
};

/// Index of rank `rank`'s block of a split model input/output (row-major
/// over the axes of `split.over`), and the number of blocks.
int64_t splitBlock(const Plan &plan, const Split &split, int64_t rank,
                   int64_t &numBlocks);

} // namespace moert

#endif // MOERT_EXECUTOR_H
