//===- Executor.cpp - runs a plan's steps on one rank ---------------------===//
//
// The device-independent part of the executor: communicator groups, input
// slicing, per-step timing, output gathering and the report.
//
//===----------------------------------------------------------------------===//

#include "moert/Executor.h"

#include <nlohmann/json.hpp>

#include <algorithm>
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
  case StepKind::topk:
    return topk(ctx, index, *u.Astopk());
  case StepKind::scatter_elements:
    return scatterElements(ctx, index, *u.Asscatter_elements());
  case StepKind::dequantize:
    return dequantize(ctx, index, *u.Asdequantize());
  case StepKind::NONE:
    break;
  }
  throw ctx.error(index, "unknown step kind");
}

void Backend::bindValue(int32_t root, void *p, size_t bytes) {
  if (root < 0)
    return;
  if (size_t(root) >= bound_.size()) {
    if (!p)
      return;
    bound_.resize(size_t(root) + 1);
  }
  bound_[size_t(root)] = {static_cast<char *>(p), p ? bytes : 0};
}

char *Backend::locate(const Value &v, char *arena, uint64_t arenaBytes,
                      uint64_t bytes) const {
  int32_t r = v.rootId();
  if (size_t(r) < bound_.size() && bound_[size_t(r)].p)
    return bytes <= bound_[size_t(r)].bytes ? bound_[size_t(r)].p : nullptr;
  return v.offset <= arenaBytes && bytes <= arenaBytes - v.offset
             ? arena + v.offset
             : nullptr;
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
    if (!m.symDims.empty() && a.shape.size() == m.shape.size()) {
      // Symbolic dims: the executor solves the count from them (and checks
      // it against the maximum); the others as the plan says.
      bool ok = true;
      for (size_t d = 0; d < m.shape.size(); ++d) {
        bool sym = false;
        for (const SymDim &s : m.symDims)
          sym |= s.dim == int32_t(d);
        ok &= sym || a.shape[d] == m.shape[d];
      }
      if (ok)
        continue;
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

const Plan &ExecContext::plan() const {
  return e_.resolved_ ? *e_.resolved_ : e_.plan_;
}
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

const SymValues &ExecContext::symbols() const { return e_.sym_; }

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
  if (!plan_.symbols.empty()) {
    resolved_ = std::make_unique<Plan>(plan_);
    tokenSplit_ = tokenSplitOf(plan_);
    // A boxed value keeps its box where resolveSymbols rewrites its shape.
    for (Value &v : resolved_->values)
      if (v.boxed)
        v.box = v.shape;
  }
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
  bindOutside();
  prepared_ = true;
  report_.collectives.clear();
  for (auto &[axes, comm] : groups_)
    report_.collectives.push_back(
        {axes, int32_t(comm->size()), backend_->transport(axes, *comm)});
}

void Executor::setInputs(const std::map<std::string, NpyArray> &given) {
  // Held inputs not given (holdOutputs) stand in the checks as arrays of
  // their dtype and shape without data; a given one replaces the held.
  std::map<std::string, NpyArray> merged;
  bool fromHeld = false;
  for (auto &[name, h] : held_) {
    if (!h.valid || given.count(name))
      continue;
    if (!fromHeld)
      merged = given; // the others are small: ids, positions
    fromHeld = true;
    NpyArray &a = merged[name];
    a.dtype = npyDType(findIO(plan_.inputs, name)->dtype);
    a.shape = h.shape;
  }
  for (auto &[name, h] : held_)
    h.valid &= !given.count(name);
  const std::map<std::string, NpyArray> &inputs = fromHeld ? merged : given;
  std::string error;
  if (!checkInputs(plan_, inputs, error))
    throw RunError(error);
  if (resolved_)
    resolveSymbols(inputs);
  ExecContext ctx(*this);
  prepare(ctx);
  for (const ModelIO &m : plan_.inputs) {
    if (auto it = held_.find(m.name); it != held_.end()) {
      loadHeld(m, ctx.plan().values[m.value], it->second);
      if (it->second.valid)
        continue;
    }
    const NpyArray &a = inputs.at(m.name);
    if (resolved_ && !m.symDims.empty()) {
      uploadSymbolic(m, a);
      continue;
    }
    const Value &v = ctx.plan().values[m.value];
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
    if (local) // an empty array's data() may be null
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

/// Whether output `name` is one of `only` (all are when it is null).
static bool selected(const std::vector<std::string> *only,
                     const std::string &name) {
  return !only || std::find(only->begin(), only->end(), name) != only->end();
}

std::vector<std::vector<char>>
Executor::localSelected(const std::vector<std::string> *only) {
  std::vector<std::vector<char>> out;
  const Plan &plan = resolved_ ? *resolved_ : plan_;
  for (const ModelIO &m : plan.outputs) {
    if (!selected(only, m.name))
      continue;
    const Value &v = plan.values[m.value];
    std::vector<char> bytes(v.byteSize());
    if (!bytes.empty()) // no pointer to pass for 0 rows
      backend_->download(v, bytes.data(), bytes.size());
    out.push_back(std::move(bytes));
  }
  return out;
}

std::vector<std::vector<char>> Executor::localOutputs() {
  return localSelected(nullptr);
}

std::vector<std::pair<std::string, NpyArray>> Executor::gatherOutputs() {
  return gatherSelected(nullptr);
}

std::vector<std::pair<std::string, NpyArray>>
Executor::gatherOutputs(const std::vector<std::string> &only) {
  for (const std::string &name : only)
    if (!findIO(plan_.outputs, name))
      throw RunError("the plan has no output '" + name + "'");
  return gatherSelected(&only);
}

std::vector<std::pair<std::string, NpyArray>>
Executor::gatherSelected(const std::vector<std::string> *only) {
  std::vector<char> mine;
  for (std::vector<char> &part : localSelected(only))
    mine.insert(mine.end(), part.begin(), part.end());
  std::vector<std::vector<char>> all;
  world_.gatherToRoot(mine.data(), int64_t(mine.size()), all);
  std::vector<std::pair<std::string, NpyArray>> result;
  if (rank_ != 0)
    return result;
  if (resolved_)
    return gatherSymbolic(all, only);
  uint64_t off = 0;
  for (const ModelIO &m : plan_.outputs) {
    if (!selected(only, m.name))
      continue;
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
