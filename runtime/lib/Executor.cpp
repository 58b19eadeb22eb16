//===- Executor.cpp - runs a plan's steps on one rank ---------------------===//
//
// The device-independent part of the executor: communicator groups, input
// slicing, per-step timing, output gathering and the report.
//
//===----------------------------------------------------------------------===//

#include "moert/Executor.h"
#include "moert/Json.h"

#include <chrono>
#include <cstring>
#include <sstream>

using namespace moert;

Backend::~Backend() = default;

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

Json RunReport::toJson() const {
  Json j = Json::object();
  j["rank"] = rank;
  j["backend"] = backend;
  j["mapped_bytes"] = mappedBytes;
  j["arena_bytes"] = arenaBytes;
  j["seconds"] = seconds;
  Json steps = Json::array();
  for (const StepTiming &s : this->steps) {
    Json o = Json::object();
    o["op"] = s.op;
    o["loc"] = s.loc;
    o["seconds"] = s.seconds;
    steps.push(o);
  }
  j["steps"] = steps;
  Json layers = Json::array();
  for (const MoELayerStats &l : this->layers) {
    Json o = Json::object();
    o["step"] = l.step;
    o["loc"] = l.loc;
    o["dropped"] = l.dropped;
    o["rows_received"] = l.rowsReceived;
    Json tpe = Json::array();
    for (int64_t t : l.tokensPerExpert)
      tpe.push(t);
    o["tokens_per_expert"] = tpe;
    Json peers = Json::array();
    for (const PeerTraffic &p : l.peers) {
      Json q = Json::object();
      q["peer"] = int64_t(p.peer);
      q["rows_sent"] = p.rowsSent;
      q["rows_recv"] = p.rowsRecv;
      q["bytes_sent"] = p.bytesSent;
      q["bytes_recv"] = p.bytesRecv;
      peers.push(q);
    }
    o["peers"] = peers;
    layers.push(o);
  }
  j["layers"] = layers;
  return j;
}

bool RunReport::fromJson(const Json &j, RunReport &out, std::string &error) {
  auto num = [](const Json &o, const char *k) -> int64_t {
    const Json *v = o.get(k);
    return v && v->isNumber() ? v->asInt() : 0;
  };
  auto dbl = [](const Json &o, const char *k) -> double {
    const Json *v = o.get(k);
    return v && v->isNumber() ? v->asDouble() : 0.0;
  };
  auto str = [](const Json &o, const char *k) -> std::string {
    const Json *v = o.get(k);
    return v && v->kind() == Json::String ? v->asString() : "";
  };
  if (j.kind() != Json::Object) {
    error = "a run report must be a JSON object";
    return false;
  }
  out = RunReport();
  out.rank = int(num(j, "rank"));
  out.backend = str(j, "backend");
  out.mappedBytes = num(j, "mapped_bytes");
  out.arenaBytes = num(j, "arena_bytes");
  out.seconds = dbl(j, "seconds");
  if (const Json *s = j.get("steps"))
    for (const Json &o : s->items())
      out.steps.push_back({str(o, "op"), str(o, "loc"), dbl(o, "seconds")});
  if (const Json *ls = j.get("layers"))
    for (const Json &o : ls->items()) {
      MoELayerStats l;
      l.step = num(o, "step");
      l.loc = str(o, "loc");
      l.dropped = num(o, "dropped");
      l.rowsReceived = num(o, "rows_received");
      if (const Json *t = o.get("tokens_per_expert"))
        for (const Json &x : t->items())
          l.tokensPerExpert.push_back(x.asInt());
      if (const Json *ps = o.get("peers"))
        for (const Json &q : ps->items())
          l.peers.push_back({int32_t(num(q, "peer")), num(q, "rows_sent"),
                             num(q, "rows_recv"), num(q, "bytes_sent"),
                             num(q, "bytes_recv")});
      out.layers.push_back(l);
    }
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
                  std::to_string(index) + " (" + s.op +
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
    if (s.has("axes"))
      axesUsed[s.getString("axes", "")] = 1;
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

void Executor::setInputs(const std::map<std::string, NpyArray> &inputs) {
  std::string error;
  if (!checkInputs(plan_, inputs, error))
    throw RunError(error);
  ExecContext ctx(*this);
  if (!prepared_) {
    backend_->prepare(ctx);
    prepared_ = true;
  }
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

void Executor::run() {
  ExecContext ctx(*this);
  if (!prepared_) {
    backend_->prepare(ctx);
    prepared_ = true;
  }
  report_.steps.clear();
  report_.layers.clear();
  layerIndex_.clear();
  using Clock = std::chrono::steady_clock;
  auto start = Clock::now();
  for (size_t i = 0; i < plan_.steps.size(); ++i) {
    const Step &s = plan_.steps[i];
    auto t0 = Clock::now();
    try {
      backend_->runStep(ctx, i);
      backend_->synchronize();
    } catch (const CommError &e) {
      throw ctx.error(i, e.what());
    }
    double dt = std::chrono::duration<double>(Clock::now() - t0).count();
    report_.steps.push_back({s.op, s.loc, dt});
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
  std::string mine = report_.toJson().dump();
  std::vector<std::vector<char>> all;
  world_.gatherToRoot(mine.data(), int64_t(mine.size()), all);
  std::vector<RunReport> out;
  for (const std::vector<char> &bytes : all) {
    Json j;
    std::string error;
    RunReport r;
    if (!Json::parse(std::string(bytes.begin(), bytes.end()), j, error) ||
        !RunReport::fromJson(j, r, error))
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
           std::to_string(recvRows) + " received rows of " +
           std::to_string(H));
  need(y.numElements() >= recvRows * H,
       "y " + shapeString(y.shape) + " is too small");
  need(wg.shape.size() == 3 && wg.shape[0] == S && wg.shape[1] == H,
       "w_gate " + shapeString(wg.shape) + " is not [" + std::to_string(S) + "," +
           std::to_string(H) + ",F]");
  int64_t F = wg.shape[2];
  need(wd.shape == std::vector<int64_t>{S, F, H},
       "w_down " + shapeString(wd.shape) + " is not [" + std::to_string(S) + "," +
           std::to_string(F) + "," + std::to_string(H) + "]");
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
