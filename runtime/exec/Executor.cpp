//===- Executor.cpp - runs a plan's steps on one rank ---------------------===//
//
// The device-independent part of the executor: communicator groups, input
// slicing, per-step timing, output gathering and the report.
//
//===----------------------------------------------------------------------===//

#include "moert/Executor.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstring>
#include <sstream>

using namespace moert;
using nlohmann::json;

Backend::~Backend() = default;

void Backend::runStep(ExecContext &ctx, size_t index) {
  const Step &s = ctx.plan().steps[index];
  const fb::StepAttrsUnion &u = s.attrs;
  switch (s.kind()) {
  case StepKind::matmul:
    return matmul(ctx, index, *u.Asmatmul());
  case StepKind::batch_matmul:
    return batchMatmul(ctx, index, *u.Asbatch_matmul());
  case StepKind::route:
    return route(ctx, index, *u.Asroute());
  case StepKind::dispatch:
    return dispatch(ctx, index, *u.Asdispatch());
  case StepKind::experts:
    return experts(ctx, index, *u.Asexperts());
  case StepKind::combine:
    return combine(ctx, index, *u.Ascombine());
  case StepKind::unary:
    return unary(ctx, index, *u.Asunary());
  case StepKind::binary:
    return binary(ctx, index, *u.Asbinary());
  case StepKind::softmax:
    return softmax(ctx, index, *u.Assoftmax());
  case StepKind::copy:
    return copy(ctx, index, *u.Ascopy());
  case StepKind::all_reduce:
    return allReduce(ctx, index, *u.Asall_reduce());
  case StepKind::all_gather:
    return allGather(ctx, index, *u.Asall_gather());
  case StepKind::all_slice:
    return allSlice(ctx, index, *u.Asall_slice());
  case StepKind::reduce_scatter:
    return reduceScatter(ctx, index, *u.Asreduce_scatter());
  case StepKind::kernel:
    return kernel(ctx, index, *u.Askernel());
  case StepKind::NONE:
    break;
  }
  throw ctx.error(index, "unknown step kind");
}

std::string Backend::transport(const std::string &, const Comm &group) const {
  return group.size() == 1 ? "local" : group.kind();
}

//===----------------------------------------------------------------------===//
// Helpers
//===----------------------------------------------------------------------===//

std::string moert::npyDType(DType t) {
  switch (t) {
  case DType::f32:
    return "<f4";
  case DType::f16:
    return "<f2";
  case DType::i64:
    return "<i8";
  case DType::i32:
    return "<i4";
  case DType::u8:
    return "|u1";
  case DType::bf16:
    return "";
  }
  return "";
}

int64_t moert::splitBlock(const Plan &plan, const Split &split, int64_t rank,
                          int64_t &numBlocks) {
  int64_t b = 0;
  numBlocks = 1;
  for (const std::string &a : split.over) {
    b = b * plan.axisSize(a) + plan.coord(rank, a);
    numBlocks *= plan.axisSize(a);
  }
  return b;
}

bool moert::checkInputs(const Plan &plan,
                        const std::map<std::string, NpyArray> &inputs,
                        std::string &error) {
  for (auto &[name, arr] : inputs) {
    bool known = false;
    for (const ModelIO &m : plan.inputs)
      known |= m.name == name;
    if (!known) {
      std::string names;
      for (const ModelIO &m : plan.inputs)
        names += (names.empty() ? "" : ", ") + m.name;
      error = "unknown input '" + name + "' (the plan's inputs: " + names + ")";
      return false;
    }
  }
  for (const ModelIO &m : plan.inputs) {
    auto it = inputs.find(m.name);
    std::string expect = std::string(dtypeName(m.dtype)) + shapeString(m.shape);
    if (it == inputs.end()) {
      error = "missing input '" + m.name + "' (expected " + expect +
              "; pass --input " + m.name + "=FILE.npy)";
      return false;
    }
    const NpyArray &a = it->second;
    if (a.dtype != npyDType(m.dtype)) {
      error = "input '" + m.name + "': expected dtype " + dtypeName(m.dtype) +
              " (" + npyDType(m.dtype) + "), got " + a.dtype;
      return false;
    }
    if (a.shape != m.shape) {
      error = "input '" + m.name + "': expected shape " + shapeString(m.shape) +
              ", got " + shapeString(a.shape);
      return false;
    }
  }
  return true;
}

//===----------------------------------------------------------------------===//
// Reports
//===----------------------------------------------------------------------===//

json RunReport::toJson() const {
  json j = json::object();
  j["rank"] = rank;
  j["backend"] = backend;
  j["mapped_bytes"] = mappedBytes;
  j["arena_bytes"] = arenaBytes;
  json groups = json::array();
  for (const GroupTransport &g : collectives)
    groups.push_back(
        {{"axes", g.axes}, {"ranks", g.ranks}, {"transport", g.transport}});
  j["collectives"] = std::move(groups);
  j["seconds"] = seconds;
  json steps = json::array();
  for (const StepTiming &s : this->steps)
    steps.push_back({{"op", s.op},
                     {"loc", s.loc},
                     {"seconds", s.seconds},
                     {"bytes_in", s.bytesIn}});
  j["steps"] = std::move(steps);
  json layers = json::array();
  for (const MoELayerStats &l : this->layers) {
    json peers = json::array();
    for (const PeerTraffic &p : l.peers)
      peers.push_back({{"peer", p.peer},
                       {"rows_sent", p.rowsSent},
                       {"rows_recv", p.rowsRecv},
                       {"bytes_sent", p.bytesSent},
                       {"bytes_recv", p.bytesRecv}});
    layers.push_back({{"step", l.step},
                      {"loc", l.loc},
                      {"dropped", l.dropped},
                      {"rows_received", l.rowsReceived},
                      {"tokens_per_expert", l.tokensPerExpert},
                      {"peers", std::move(peers)}});
  }
  j["layers"] = std::move(layers);
  return j;
}

bool RunReport::fromJson(const json &j, RunReport &out, std::string &error) {
  // Absent or mistyped members read as 0 or "".
  auto num = [](const json &o, const char *k) -> int64_t {
    auto v = o.find(k);
    return v != o.end() && v->is_number() ? v->get<int64_t>() : 0;
  };
  auto dbl = [](const json &o, const char *k) -> double {
    auto v = o.find(k);
    return v != o.end() && v->is_number() ? v->get<double>() : 0.0;
  };
  auto str = [](const json &o, const char *k) -> std::string {
    auto v = o.find(k);
    return v != o.end() && v->is_string() ? v->get<std::string>() : "";
  };
  // The array member `k` of `o` (empty when absent or not an array) whose
  // object items are passed to `f`.
  auto each = [](const json &o, const char *k, auto f) {
    auto v = o.find(k);
    if (v != o.end() && v->is_array())
      for (const json &x : *v)
        if (x.is_object())
          f(x);
  };
  if (!j.is_object()) {
    error = "a run report must be a JSON object";
    return false;
  }
  out = RunReport();
  out.rank = int(num(j, "rank"));
  out.backend = str(j, "backend");
  out.mappedBytes = num(j, "mapped_bytes");
  out.arenaBytes = num(j, "arena_bytes");
  out.seconds = dbl(j, "seconds");
  each(j, "collectives", [&](const json &o) {
    out.collectives.push_back(
        {str(o, "axes"), int32_t(num(o, "ranks")), str(o, "transport")});
  });
  each(j, "steps", [&](const json &o) {
    out.steps.push_back(
        {str(o, "op"), str(o, "loc"), dbl(o, "seconds"), num(o, "bytes_in")});
  });
  each(j, "layers", [&](const json &o) {
    MoELayerStats l;
    l.step = num(o, "step");
    l.loc = str(o, "loc");
    l.dropped = num(o, "dropped");
    l.rowsReceived = num(o, "rows_received");
    auto t = o.find("tokens_per_expert");
    if (t != o.end() && t->is_array())
      for (const json &x : *t)
        l.tokensPerExpert.push_back(x.is_number() ? x.get<int64_t>() : 0);
    each(o, "peers", [&](const json &q) {
      l.peers.push_back({int32_t(num(q, "peer")), num(q, "rows_sent"),
                         num(q, "rows_recv"), num(q, "bytes_sent"),
                         num(q, "bytes_recv")});
    });
    out.layers.push_back(std::move(l));
  });
  return true;
}

//===----------------------------------------------------------------------===//
// ExecContext
//===----------------------------------------------------------------------===//

const Plan &ExecContext::plan() const { return e_.plan_; }
const LoadedPlan &ExecContext::loaded() const { return e_.loaded_; }
int ExecContext::rank() const { return e_.rank_; }

Comm &ExecContext::group(const std::string &axes) {
  auto it = e_.groups_.find(axes);
  if (it == e_.groups_.end())
    throw RunError("rank " + std::to_string(e_.rank_) +
                   ": no communicator for mesh axes '" + axes + "'");
  return *it->second;
}

Comm &ExecContext::world() { return e_.world_; }

MoELayerStats &ExecContext::layer(int64_t dispatchStep) {
  auto it = e_.layerIndex_.find(dispatchStep);
  if (it != e_.layerIndex_.end())
    return e_.report_.layers[it->second];
  e_.layerIndex_[dispatchStep] = e_.report_.layers.size();
  MoELayerStats l;
  l.step = dispatchStep;
  l.loc = e_.plan_.steps[dispatchStep].loc;
  e_.report_.layers.push_back(l);
  return e_.report_.layers.back();
}

RunError ExecContext::error(size_t index, const std::string &what) const {
  const Step &s = e_.plan_.steps[index];
  return RunError("rank " + std::to_string(e_.rank_) + ": step " +
                  std::to_string(index) + " (" + s.op() +
                  (s.loc.empty() ? "" : " at '" + s.loc + "'") + "): " + what);
}

//===----------------------------------------------------------------------===//
// Executor
//===----------------------------------------------------------------------===//

Executor::Executor(const LoadedPlan &plan, Comm &world,
                   std::unique_ptr<Backend> backend)
    : loaded_(plan), plan_(plan.plan()), world_(world), rank_(world.rank()),
      backend_(std::move(backend)) {
  if (world.size() != plan_.worldSize())
    throw RunError("the plan is for " + std::to_string(plan_.worldSize()) +
                   " ranks, the communicator has " +
                   std::to_string(world.size()));
  report_.rank = rank_;
  report_.backend = backend_->name();
  report_.mappedBytes = loaded_.mappedBytes();
  report_.arenaBytes = plan_.arenaBytes;
  // One communicator per distinct axis list, created in the same (sorted)
  // order on every rank: split is collective.
  std::map<std::string, int> axesUsed;
  for (const Step &s : plan_.steps)
    if (!s.axes().empty())
      axesUsed[s.axes()] = 1;
  for (auto &[axes, _] : axesUsed) {
    std::vector<int32_t> g = plan_.group(rank_, splitAxes(axes));
    int key = 0;
    for (size_t i = 0; i < g.size(); ++i)
      if (g[i] == rank_)
        key = int(i);
    groups_[axes] = world_.split(g.empty() ? rank_ : g[0], key);
  }
}

Executor::~Executor() = default;

void Executor::prepare(ExecContext &ctx) {
  if (prepared_)
    return;
  backend_->prepare(ctx);
  prepared_ = true;
  report_.collectives.clear();
  for (auto &[axes, comm] : groups_)
    report_.collectives.push_back(
        {axes, int32_t(comm->size()), backend_->transport(axes, *comm)});
}

void Executor::setInputs(const std::map<std::string, NpyArray> &inputs) {
  std::string error;
  if (!checkInputs(plan_, inputs, error))
    throw RunError(error);
  ExecContext ctx(*this);
  prepare(ctx);
  for (const ModelIO &m : plan_.inputs) {
    const NpyArray &a = inputs.at(m.name);
    const Value &v = plan_.values[m.value];
    uint64_t local = v.byteSize();
    int64_t blocks = 1;
    int64_t b =
        m.split.axis < 0 ? 0 : splitBlock(plan_, m.split, rank_, blocks);
    if (uint64_t(a.data.size()) != local * uint64_t(blocks))
      throw RunError("input '" + m.name +
                     "': " + std::to_string(a.data.size()) +
                     " bytes do not split " + "into " + std::to_string(blocks) +
                     " blocks of the " + std::to_string(local) +
                     " bytes of the local value " + shapeString(v.shape));
    backend_->upload(v, a.data.data() + b * local, local);
  }
}

/// StepTiming::bytesIn of step `s` (its checks passed: it ran).
static int64_t collectiveBytesIn(ExecContext &ctx, const Step &s) {
  const Plan &p = ctx.plan();
  auto bytes = [&](int32_t v) {
    return int64_t(p.values[size_t(v)].byteSize());
  };
  if (s.attrs.Asall_gather())
    return bytes(s.outputs[0]) - bytes(s.inputs[0]);
  if (auto *r = s.attrs.Asall_reduce())
    return ctx.group(r->axes).size() > 1 ? bytes(s.inputs[0]) : 0;
  if (auto *r = s.attrs.Asreduce_scatter())
    return ctx.group(r->axes).size() > 1 ? bytes(s.inputs[0]) : 0;
  return 0;
}

void Executor::run() {
  ExecContext ctx(*this);
  prepare(ctx);
  report_.steps.clear();
  report_.layers.clear();
  layerIndex_.clear();
  using Clock = std::chrono::steady_clock;
  auto start = Clock::now();
  for (size_t i = 0; i < plan_.steps.size(); ++i) {
    const Step &s = plan_.steps[i];
    if (observer_)
      observer_(i);
    auto t0 = Clock::now();
    try {
      backend_->runStep(ctx, i);
      backend_->synchronize();
    } catch (const CommError &e) {
      throw ctx.error(i, e.what());
    }
    double dt = std::chrono::duration<double>(Clock::now() - t0).count();
    report_.steps.push_back({s.op(), s.loc, dt, collectiveBytesIn(ctx, s)});
  }
  report_.seconds = std::chrono::duration<double>(Clock::now() - start).count();
}

std::vector<std::vector<char>> Executor::localOutputs() {
  std::vector<std::vector<char>> out;
  for (const ModelIO &m : plan_.outputs) {
    const Value &v = plan_.values[m.value];
    std::vector<char> bytes(v.byteSize());
    backend_->download(v, bytes.data(), bytes.size());
    out.push_back(std::move(bytes));
  }
  return out;
}

std::vector<std::pair<std::string, NpyArray>> Executor::gatherOutputs() {
  std::vector<char> mine;
  for (std::vector<char> &part : localOutputs())
    mine.insert(mine.end(), part.begin(), part.end());
  std::vector<std::vector<char>> all;
  world_.gatherToRoot(mine.data(), int64_t(mine.size()), all);
  std::vector<std::pair<std::string, NpyArray>> result;
  if (rank_ != 0)
    return result;
  uint64_t off = 0;
  for (const ModelIO &m : plan_.outputs) {
    const Value &v = plan_.values[m.value];
    uint64_t local = v.byteSize();
    NpyArray a;
    a.dtype = npyDType(m.dtype);
    if (a.dtype.empty())
      throw RunError("output '" + m.name + "' has dtype " + dtypeName(m.dtype) +
                     ", which .npy cannot hold");
    a.shape = m.shape;
    if (m.split.axis < 0) {
      a.data.assign(all[0].begin() + off, all[0].begin() + off + local);
    } else {
      int64_t blocks = 1;
      splitBlock(plan_, m.split, 0, blocks);
      a.data.resize(local * blocks);
      std::vector<bool> done(blocks, false);
      for (int64_t r = 0; r < int64_t(all.size()); ++r) {
        int64_t b = splitBlock(plan_, m.split, r, blocks);
        if (done[b])
          continue; // ranks that differ only in other axes hold copies
        done[b] = true;
        std::memcpy(a.data.data() + b * local, all[r].data() + off, local);
      }
    }
    off += local;
    result.push_back({m.name, std::move(a)});
  }
  return result;
}

std::vector<RunReport> Executor::gatherReports() {
  std::string mine =
      report_.toJson().dump(-1, ' ', false, json::error_handler_t::replace);
  std::vector<std::vector<char>> all;
  world_.gatherToRoot(mine.data(), int64_t(mine.size()), all);
  std::vector<RunReport> out;
  for (const std::vector<char> &bytes : all) {
    json j = json::parse(bytes.begin(), bytes.end(), nullptr,
                         /*allow_exceptions=*/false);
    std::string error = "not valid JSON";
    RunReport r;
    if (j.is_discarded() || !RunReport::fromJson(j, r, error))
      throw RunError("cannot read a rank's report: " + error);
    out.push_back(std::move(r));
  }
  return out;
}

int64_t moert::checkExpertsStep(ExecContext &ctx, size_t index, int64_t H,
                                int64_t S, int64_t recvRows) {
  const Plan &p = ctx.plan();
  const Step &s = p.steps[index];
  auto need = [&](bool ok, const std::string &what) {
    if (!ok)
      throw ctx.error(index, what);
  };
  auto opt = [&](size_t i) -> const Value * {
    return i < s.inputs.size() && s.inputs[i] >= 0
               ? &p.values[size_t(s.inputs[i])]
               : nullptr;
  };
  const Value &x = p.values[size_t(s.inputs[0])];
  const Value &wg = p.values[size_t(s.inputs[1])];
  const Value &wd = p.values[size_t(s.inputs[3])];
  const Value &y = p.values[size_t(s.outputs[0])];
  need(x.shape.size() == 2 && x.shape[1] == H && x.shape[0] >= recvRows,
       "recv " + shapeString(x.shape) + " does not hold the " +
           std::to_string(recvRows) + " received rows of " + std::to_string(H));
  need(y.numElements() >= recvRows * H,
       "y " + shapeString(y.shape) + " is too small");
  need(wg.shape.size() == 3 && wg.shape[0] == S && wg.shape[1] == H,
       "w_gate " + shapeString(wg.shape) + " is not [" + std::to_string(S) +
           "," + std::to_string(H) + ",F]");
  int64_t F = wg.shape[2];
  need(wd.shape == std::vector<int64_t>{S, F, H},
       "w_down " + shapeString(wd.shape) + " is not [" + std::to_string(S) +
           "," + std::to_string(F) + "," + std::to_string(H) + "]");
  if (const Value *wu = opt(2))
    need(wu->shape == wg.shape, "w_up " + shapeString(wu->shape) +
                                    " differs from w_gate " +
                                    shapeString(wg.shape));
  if (const Value *b = opt(4))
    need(b->numElements() == S * F, "b_gate has the wrong size");
  if (const Value *b = opt(5))
    need(b->numElements() == S * F, "b_up has the wrong size");
  if (const Value *b = opt(6))
    need(b->numElements() == S * H, "b_down has the wrong size");
  return F;
}

namespace {
/// The operand `id` of step `index`, or an error naming `role`.
const Value &operand(ExecContext &ctx, size_t index, int32_t id,
                     const char *role) {
  const Plan &p = ctx.plan();
  if (id < 0 || id >= int32_t(p.values.size()))
    throw ctx.error(index, std::string("missing operand (") + role + ")");
  return p.values[size_t(id)];
}
int64_t lastDim(const Value &v) { return v.shape.empty() ? 1 : v.shape.back(); }
} // namespace

moert::MatmulDims moert::checkMatmulStep(ExecContext &ctx, size_t index) {
  const Step &s = ctx.plan().steps[index];
  auto need = [&](bool ok, const std::string &what) {
    if (!ok)
      throw ctx.error(index, what);
  };
  const Value &a = operand(ctx, index, s.inputs[0], "A");
  const Value &b = operand(ctx, index, s.inputs[1], "B");
  const Value &c = operand(ctx, index, s.outputs[0], "C");
  MatmulDims d;
  d.transB = s.attrs.Asmatmul()->trans_b;
  need(b.shape.size() == 2, "B must be 2-d, got " + shapeString(b.shape));
  d.K = d.transB ? b.shape[1] : b.shape[0];
  d.N = d.transB ? b.shape[0] : b.shape[1];
  need(lastDim(a) == d.K, "A " + shapeString(a.shape) + " does not match B " +
                              shapeString(b.shape) +
                              (d.transB ? " (transposed)" : ""));
  d.M = d.K ? a.numElements() / d.K : 0;
  need(c.numElements() == d.M * d.N, "C " + shapeString(c.shape) + " is not " +
                                         std::to_string(d.M) + "x" +
                                         std::to_string(d.N));
  need(a.dtype == b.dtype, std::string("B has dtype ") + dtypeName(b.dtype) +
                               ", A " + dtypeName(a.dtype));
  need(c.dtype == DType::f32 || c.dtype == a.dtype,
       std::string("C has dtype ") + dtypeName(c.dtype) + " for inputs of " +
           dtypeName(a.dtype));
  if (s.inputs.size() > 2 && s.inputs[2] >= 0) {
    const Value &bias = operand(ctx, index, s.inputs[2], "bias");
    need(bias.numElements() == d.N, "bias has the wrong size");
    need(bias.dtype == c.dtype, "bias and C differ in dtype");
  }
  return d;
}

moert::BatchMatmulDims moert::checkBatchMatmulStep(ExecContext &ctx,
                                                   size_t index) {
  const Step &s = ctx.plan().steps[index];
  auto need = [&](bool ok, const std::string &what) {
    if (!ok)
      throw ctx.error(index, what);
  };
  const Value &a = operand(ctx, index, s.inputs[0], "A");
  const Value &b = operand(ctx, index, s.inputs[1], "B");
  const Value &c = operand(ctx, index, s.outputs[0], "C");
  for (auto [v, role] : {std::pair<const Value *, const char *>{&a, "A"},
                         {&b, "B"},
                         {&c, "C"}}) {
    need(v->shape.size() == 3,
         std::string(role) + " must be 3-d, got " + shapeString(v->shape));
    need(v->dtype == DType::f32, std::string(role) + " has dtype " +
                                     dtypeName(v->dtype) +
                                     "; batch_matmul takes f32");
  }
  BatchMatmulDims d;
  d.batch = a.shape[0];
  d.M = a.shape[1];
  d.K = a.shape[2];
  d.N = b.shape[2];
  need(b.shape[0] == d.batch && b.shape[1] == d.K, "A " + shapeString(a.shape) +
                                                       " does not match B " +
                                                       shapeString(b.shape));
  need(c.shape == std::vector<int64_t>{d.batch, d.M, d.N},
       "C " + shapeString(c.shape) + " is not " + std::to_string(d.batch) +
           "x" + std::to_string(d.M) + "x" + std::to_string(d.N));
  return d;
}

moert::RouteParams moert::checkRouteStep(ExecContext &ctx, size_t index,
                                         int64_t &T, int64_t &E) {
  const Step &s = ctx.plan().steps[index];
  auto need = [&](bool ok, const std::string &what) {
    if (!ok)
      throw ctx.error(index, what);
  };
  const Value &lg = operand(ctx, index, s.inputs[0], "logits");
  E = lastDim(lg);
  T = E ? lg.numElements() / E : 0;
  const fb::RouteT &a = *s.attrs.Asroute();
  RouteParams rp;
  rp.topK = a.top_k;
  rp.score = a.score_func;
  rp.renormalize = a.renormalize;
  rp.renormEps = a.renorm_eps;
  rp.scalingFactor = a.scaling_factor;
  rp.numGroups = a.num_groups;
  rp.topkGroups = a.topk_groups;
  rp.groupScore = a.group_score;
  need(rp.topK >= 1 && rp.topK <= E, "top_k " + std::to_string(rp.topK) +
                                         " outside [1, " + std::to_string(E) +
                                         "]");
  // The grouping rules (num_groups divides E, ...), as moe-eval checks them.
  if (std::string why = routeParamsError(E, rp); !why.empty())
    throw ctx.error(index, why);
  need(operand(ctx, index, s.outputs[0], "weights").numElements() ==
               T * rp.topK &&
           operand(ctx, index, s.outputs[1], "ids").numElements() ==
               T * rp.topK,
       "results must hold " + std::to_string(T) + "x" +
           std::to_string(rp.topK) + " elements");
  if (s.inputs.size() > 1 && s.inputs[1] >= 0)
    need(operand(ctx, index, s.inputs[1], "bias").numElements() == E,
         "bias has the wrong size");
  return rp;
}

int64_t moert::checkUnaryStep(ExecContext &ctx, size_t index, cpu::Unary &fn) {
  const Step &s = ctx.plan().steps[index];
  fn = s.attrs.Asunary()->fn;
  int64_t n = operand(ctx, index, s.inputs[0], "x").numElements();
  if (operand(ctx, index, s.outputs[0], "y").numElements() != n)
    throw ctx.error(index, "x and y differ in size");
  return n;
}

void moert::checkBinaryStep(ExecContext &ctx, size_t index, cpu::Binary &fn,
                            std::vector<int64_t> &aShape,
                            std::vector<int64_t> &bShape) {
  const Step &s = ctx.plan().steps[index];
  auto need = [&](bool ok, const std::string &what) {
    if (!ok)
      throw ctx.error(index, what);
  };
  fn = s.attrs.Asbinary()->fn;
  const Value &a = operand(ctx, index, s.inputs[0], "a");
  const Value &b = operand(ctx, index, s.inputs[1], "b");
  const Value &c = operand(ctx, index, s.outputs[0], "c");
  size_t rank = c.shape.size();
  need(a.shape.size() <= rank && b.shape.size() <= rank,
       "operands have a higher rank than the result");
  auto pad = [&](const std::vector<int64_t> &sh) {
    std::vector<int64_t> r(rank - sh.size(), 1);
    r.insert(r.end(), sh.begin(), sh.end());
    return r;
  };
  aShape = pad(a.shape);
  bShape = pad(b.shape);
  for (size_t d = 0; d < rank; ++d)
    need((aShape[d] == 1 || aShape[d] == c.shape[d]) &&
             (bShape[d] == 1 || bShape[d] == c.shape[d]),
         "shapes " + shapeString(a.shape) + " and " + shapeString(b.shape) +
             " do not broadcast to " + shapeString(c.shape));
}

void moert::checkDispatchStep(ExecContext &ctx, size_t index, int64_t &H,
                              int64_t &k, int64_t &T) {
  const Step &s = ctx.plan().steps[index];
  auto need = [&](bool ok, const std::string &what) {
    if (!ok)
      throw ctx.error(index, what);
  };
  const Value &tok = operand(ctx, index, s.inputs[0], "tokens");
  const Value &ids = operand(ctx, index, s.inputs[1], "ids");
  const Value &recv = operand(ctx, index, s.outputs[0], "recv");
  H = lastDim(tok);
  k = lastDim(ids);
  T = k ? ids.numElements() / k : 0;
  need(tok.numElements() == T * H, "tokens " + shapeString(tok.shape) +
                                       " and ids " + shapeString(ids.shape) +
                                       " differ in token count");
  need(recv.shape.size() == 2 && recv.shape[1] == H,
       "recv " + shapeString(recv.shape) + " is not [rows, " +
           std::to_string(H) + "]");
  need(recv.dtype == tok.dtype, "recv and tokens differ in dtype");
  if (dispatchScalesRows(s)) {
    const Value &w = operand(ctx, index, s.inputs[2], "weights");
    need(w.dtype == DType::f32 && w.numElements() == T * k,
         "weights " + shapeString(w.shape) + " is not " + std::to_string(T) +
             "x" + std::to_string(k) + " f32");
  }
}

moert::Placement moert::dispatchPlacement(ExecContext &ctx, size_t index,
                                          int64_t G) {
  const Step &s = ctx.plan().steps[index];
  auto need = [&](bool ok, const std::string &what) {
    if (!ok)
      throw ctx.error(index, what);
  };
  Placement pl;
  const fb::DispatchT &a = *s.attrs.Asdispatch();
  pl.numExperts = a.num_experts;
  pl.groupSize = G;
  pl.slotsPerRank = a.slots_per_rank;
  need(pl.numExperts > 0 && pl.slotsPerRank > 0,
       "num_experts and slots_per_rank must be positive");
  const std::vector<int64_t> &reps = a.replicas;
  size_t pos = 0;
  pl.replicas.resize(size_t(pl.numExperts));
  for (int64_t e = 0; e < pl.numExperts; ++e) {
    need(pos < reps.size(), "attribute 'replicas' is too short");
    int64_t n = reps[pos++];
    need(n >= 1 && pos + 2 * size_t(n) <= reps.size(),
         "attribute 'replicas': expert " + std::to_string(e) +
             " has a bad replica list");
    for (int64_t r = 0; r < n; ++r, pos += 2) {
      int64_t rk = reps[pos], sl = reps[pos + 1];
      need(rk >= 0 && rk < G && sl >= 0 && sl < pl.slotsPerRank,
           "attribute 'replicas': expert " + std::to_string(e) + " on (rank " +
               std::to_string(rk) + ", slot " + std::to_string(sl) +
               ") outside the " + std::to_string(G) + "-rank group with " +
               std::to_string(pl.slotsPerRank) + " slots");
      pl.replicas[size_t(e)].push_back({int32_t(rk), int32_t(sl)});
    }
  }
  need(pos == reps.size(), "attribute 'replicas' is too long");
  return pl;
}

void moert::checkCombineStep(ExecContext &ctx, size_t index, int64_t H,
                             int64_t T, int64_t k, int64_t recvRows) {
  const Step &s = ctx.plan().steps[index];
  auto need = [&](bool ok, const std::string &what) {
    if (!ok)
      throw ctx.error(index, what);
  };
  const Value &y = operand(ctx, index, s.inputs[0], "y");
  const Value &out = operand(ctx, index, s.outputs[0], "out");
  need(y.numElements() >= recvRows * H && lastDim(y) == H,
       "y " + shapeString(y.shape) + " does not hold the " +
           std::to_string(recvRows) + " expert rows");
  // No weights: the dispatch scaled the rows (verifyPlan checks which).
  if (s.inputs[1] >= 0) {
    const Value &wt = operand(ctx, index, s.inputs[1], "weights");
    need(wt.numElements() == T * k, "weights " + shapeString(wt.shape) +
                                        " is not " + std::to_string(T) + "x" +
                                        std::to_string(k));
  }
  need(out.numElements() == T * H, "out " + shapeString(out.shape) +
                                       " is not " + std::to_string(T) + "x" +
                                       std::to_string(H));
  need(out.dtype == y.dtype, "y and out differ in dtype");
}

/// The shared check of all_gather (y = G copies of x), all_slice and
/// reduce_scatter (x = G copies of y): `big` is G copies of `small` along
/// `axis`.
static int64_t checkCopies(ExecContext &ctx, size_t index, int64_t G,
                           const Value &small, const char *smallName,
                           const Value &big, const char *bigName,
                           int64_t axis) {
  auto need = [&](bool ok, const std::string &what) {
    if (!ok)
      throw ctx.error(index, what);
  };
  std::string sn = std::string(smallName) + " " + shapeString(small.shape);
  std::string bn = std::string(bigName) + " " + shapeString(big.shape);
  need(small.dtype == big.dtype && small.shape.size() == big.shape.size() &&
           axis >= 0 && axis < int64_t(small.shape.size()),
       sn + " and " + bn + " do not fit axis " + std::to_string(axis));
  for (size_t d = 0; d < small.shape.size(); ++d)
    need(big.shape[d] == (int64_t(d) == axis ? G : 1) * small.shape[d],
         bn + " is not " + std::to_string(G) + " copies of " + sn +
             " along axis " + std::to_string(axis));
  int64_t outer = 1;
  for (int64_t d = 0; d < axis; ++d)
    outer *= small.shape[size_t(d)];
  return outer;
}

int64_t moert::checkAllSliceStep(ExecContext &ctx, size_t index, int64_t G) {
  const Step &s = ctx.plan().steps[index];
  const Value &x = operand(ctx, index, s.inputs[0], "x");
  const Value &y = operand(ctx, index, s.outputs[0], "y");
  return checkCopies(ctx, index, G, y, "y", x, "x",
                     s.attrs.Asall_slice()->axis);
}

int64_t moert::checkReduceScatterStep(ExecContext &ctx, size_t index,
                                      int64_t G) {
  const Step &s = ctx.plan().steps[index];
  const fb::ReduceScatterT &a = *s.attrs.Asreduce_scatter();
  if (a.reduction != fb::Reduction::sum)
    throw ctx.error(index, std::string("unsupported reduction '") +
                               fb::EnumNameReduction(a.reduction) + "'");
  const Value &x = operand(ctx, index, s.inputs[0], "x");
  const Value &y = operand(ctx, index, s.outputs[0], "y");
  return checkCopies(ctx, index, G, y, "y", x, "x", a.axis);
}

int64_t moert::checkAllGatherStep(ExecContext &ctx, size_t index, int64_t G) {
  const Step &s = ctx.plan().steps[index];
  const Value &x = operand(ctx, index, s.inputs[0], "x");
  const Value &y = operand(ctx, index, s.outputs[0], "y");
  return checkCopies(ctx, index, G, x, "x", y, "y",
                     s.attrs.Asall_gather()->axis);
}
