//===- TestPlans.h - hand-built plans and their references --------*- C++
//-*-===//
//
// Plans written with moert::writePlan for the executor tests and for
// moert-make-test-plan (the lit tests of moe-run), together with their inputs
// and a reference output computed here with plain loops in double:
//
// * a one-layer MoE (matmul router -> route -> dispatch -> experts ->
//   combine) on an `ep` mesh with any placement, replicas and capacity; or
//   with the routing ids and weights as model inputs (to feed bad ids);
// * the tensor-parallel, sequence-parallel and attention plans are in
//   DensePlans.h.
//
//===----------------------------------------------------------------------===//

#ifndef MOERT_TEST_TESTPLANS_H
#define MOERT_TEST_TESTPLANS_H

#include "moert/Half.h"
#include "moert/Npy.h"
#include "moert/Plan.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace moert {
namespace testplans {

/// A plan, its data, inputs and expected outputs (global arrays).
struct TestCase {
  Plan plan;
  PlanData data;
  std::map<std::string, NpyArray> inputs;
  std::map<std::string, NpyArray> expected;
  /// Outputs match `expected` to this much of its largest magnitude.
  double tolerance = 1e-4;
};

/// Appends `n` bytes of generated code (a CPU shared object, PTX) to
/// `tc`'s segment 0 at a 64-byte boundary and points `ref` (the plan's
/// cpuCode or ptxCode) at them.
template <class Ref>
void embedCode(TestCase &tc, Ref &ref, const char *bytes, size_t n) {
  std::vector<char> &seg = tc.data.segments[0];
  ref.segment = 0;
  ref.offset = (seg.size() + 63) / 64 * 64;
  ref.bytes = n;
  seg.resize(ref.offset + n);
  std::copy(bytes, bytes + n, seg.begin() + ref.offset);
}

struct MoESpec {
  int ranks = 1;
  int64_t tokensPerRank = 8, H = 16, F = 24, E = 4, k = 2;
  /// slots[r*S + s] = expert in slot s of rank r (-1: empty); empty list:
  /// contiguous placement.
  std::vector<int32_t> slots;
  int64_t S = 0;
  int64_t capacity = -1;
  bool renormalize = true;
  /// Routing ids/weights as model inputs instead of router + route.
  bool idsAsInputs = false;
  /// With idsAsInputs: rank whose first id is made invalid (-1: none).
  int badRank = -1;
  /// The routing weight scales the expert input (moe.experts weight_input):
  /// the dispatch sends scaled rows, the combine sums them unweighted.
  bool weightInput = false;
  unsigned seed = 1;
  /// w_gate kept packed: 4-bit codes and a scale per row (one block of H)
  /// per rank, expanded by a dequantize step after the dispatch (only the
  /// slots it gave rows, plan.fbs Dequantize.dispatch). The reference uses
  /// the same weights, exact in f32.
  bool packedGate = false;
  /// False: no plain-loop reference (tc.expected stays empty), for large
  /// plans that only time the runtime (bench/transport_bench.py).
  bool reference = true;
  /// The reference's source blocks, {first token, rows} per rank (a
  /// dynamic token count's uneven blocks, DynamicPlans.h); empty: rank r
  /// sends tokens r*tokensPerRank onwards, tokensPerRank of them.
  std::vector<std::pair<int64_t, int64_t>> refBlocks;
};

inline NpyArray f32Array(std::vector<int64_t> shape,
                         const std::vector<double> &v) {
  NpyArray a;
  a.dtype = "<f4";
  a.shape = std::move(shape);
  a.data.resize(v.size() * 4);
  for (size_t i = 0; i < v.size(); ++i) {
    float f = float(v[i]);
    std::memcpy(a.data.data() + 4 * i, &f, 4);
  }
  return a;
}

/// A model input or output of plan value `value`, split along axis 0 over
/// the mesh axis `over` (its blocks in rank order).
inline ModelIO splitIO(const std::string &name, DType dtype,
                       std::vector<int64_t> shape, int32_t value,
                       const std::string &over) {
  ModelIO m;
  m.name = name;
  m.dtype = dtype;
  m.shape = std::move(shape);
  m.split.axis = 0;
  m.split.over = {over};
  m.value = value;
  return m;
}

inline NpyArray i64Array(std::vector<int64_t> shape,
                         const std::vector<int64_t> &v) {
  NpyArray a;
  a.dtype = "<i8";
  a.shape = std::move(shape);
  a.data.resize(v.size() * 8);
  std::memcpy(a.data.data(), v.data(), a.data.size());
  return a;
}

/// Builds values and steps; values are placed one after another in the
/// arena (no sharing), 64-byte aligned.
class Builder {
public:
  Builder(Plan &plan, PlanData &data) : plan_(plan), data_(data) {}

  int32_t value(const std::string &name, DType dt, std::vector<int64_t> shape,
                ValueKind kind) {
    Value v;
    v.id = int32_t(plan_.values.size());
    v.name = name;
    v.dtype = dt;
    v.shape = std::move(shape);
    v.kind = kind;
    if (kind != ValueKind::constant) {
      v.offset = arena_;
      arena_ += (v.byteSize() + 63) / 64 * 64;
      plan_.arenaBytes = arena_;
    }
    plan_.values.push_back(v);
    return v.id;
  }

  /// A constant with the same floats on every rank (segment 0), stored as
  /// `dt` (f32, or rounded to bf16/f16).
  int32_t shared(const std::string &name, std::vector<int64_t> shape,
                 const std::vector<float> &f, DType dt = DType::f32) {
    int32_t id = value(name, dt, std::move(shape), ValueKind::constant);
    plan_.values[id].data.push_back(append(0, f, dt));
    return id;
  }

  /// A constant with one block of floats per rank (segment 1 + r), stored
  /// as `dt`.
  int32_t perRank(const std::string &name, std::vector<int64_t> shape,
                  const std::vector<std::vector<float>> &f,
                  DType dt = DType::f32) {
    int32_t id = value(name, dt, std::move(shape), ValueKind::constant);
    for (size_t r = 0; r < f.size(); ++r)
      plan_.values[id].data.push_back(append(1 + int32_t(r), f[r], dt));
    return id;
  }

  /// A constant with one block of raw bytes per rank (u8 weight codes).
  int32_t perRankBytes(const std::string &name, std::vector<int64_t> shape,
                       const std::vector<std::vector<uint8_t>> &bytes) {
    int32_t id = value(name, DType::u8, std::move(shape), ValueKind::constant);
    for (size_t r = 0; r < bytes.size(); ++r)
      plan_.values[id].data.push_back(
          appendRaw(1 + int32_t(r), bytes[r].data(), bytes[r].size()));
    return id;
  }

  /// A step of the kind of `attrs` (a plan.fbs step table, e.g. fb::MatmulT).
  template <typename T>
  Step &step(T attrs, std::vector<int32_t> in, std::vector<int32_t> out,
             const std::string &loc) {
    Step s;
    s.attrs.Set(std::move(attrs));
    s.inputs = std::move(in);
    s.outputs = std::move(out);
    s.loc = loc;
    plan_.steps.push_back(std::move(s));
    return plan_.steps.back();
  }

  /// Segments: "shared" and one per rank.
  void segments(int ranks) {
    plan_.segments.resize(1 + ranks);
    data_.segments.resize(1 + ranks);
    plan_.segments[0].name = "shared";
    for (int r = 0; r < ranks; ++r) {
      plan_.segments[1 + r].name = "rank" + std::to_string(r);
      plan_.segments[1 + r].ranks = {r};
    }
  }

private:
  DataRef append(int32_t seg, const std::vector<float> &f, DType dt) {
    std::vector<uint16_t> half(f.size());
    const void *src = f.data();
    if (dt != DType::f32) {
      fromF32(dt == DType::bf16 ? Half16::bf16 : Half16::f16, f.data(),
              half.data(), f.size());
      src = half.data();
    }
    return appendRaw(seg, src, f.size() * dtypeSize(dt));
  }

  DataRef appendRaw(int32_t seg, const void *src, size_t n) {
    std::vector<char> &bytes = data_.segments[seg];
    DataRef d;
    d.segment = seg;
    d.offset = (bytes.size() + 63) / 64 * 64;
    d.bytes = n;
    bytes.resize(d.offset + d.bytes);
    if (n)
      std::memcpy(bytes.data() + d.offset, src, d.bytes);
    return d;
  }

  Plan &plan_;
  PlanData &data_;
  uint64_t arena_ = 0;
};

inline std::vector<float> randomFloats(std::mt19937 &rng, size_t n,
                                       float scale) {
  std::uniform_real_distribution<float> d(-scale, scale);
  std::vector<float> v(n);
  for (float &x : v)
    x = d(rng);
  return v;
}

/// The one-layer MoE plan and its dense reference.
inline TestCase makeMoE(const MoESpec &spec) {
  TestCase tc;
  const int G = spec.ranks;
  const int64_t Tl = spec.tokensPerRank, T = Tl * G, H = spec.H, F = spec.F,
                E = spec.E, k = spec.k;
  std::vector<int32_t> slots = spec.slots;
  int64_t S = spec.S;
  if (slots.empty()) { // contiguous
    S = (E + G - 1) / G;
    slots.assign(G * S, -1);
    for (int64_t e = 0; e < E; ++e)
      slots[(e / S) * S + e % S] = int32_t(e);
  }
  std::mt19937 rng(spec.seed);
  std::vector<float> x = randomFloats(rng, T * H, 1.0f);
  std::vector<float> router = randomFloats(rng, H * E, 1.0f);
  std::vector<float> wg = randomFloats(rng, E * H * F, 0.3f);
  std::vector<float> wu = randomFloats(rng, E * H * F, 0.3f);
  std::vector<float> wd = randomFloats(rng, E * F * H, 0.3f);
  // Packed w_gate: code q[e][f][h] (4 bits, two per byte along h) and a
  // scale per (e, f); wg holds (q - 8) * scale as the kernels compute it.
  std::vector<uint8_t> gq;
  std::vector<float> gs;
  if (spec.packedGate) {
    std::uniform_int_distribution<int> dq(0, 15);
    std::uniform_real_distribution<float> ds(0.01f, 0.05f);
    gq.assign(size_t(E * F * H / 2), 0);
    gs.resize(size_t(E * F));
    for (int64_t e = 0; e < E; ++e)
      for (int64_t f = 0; f < F; ++f) {
        float sc = gs[e * F + f] = ds(rng);
        for (int64_t h = 0; h < H; ++h) {
          int q = dq(rng);
          gq[((e * F + f) * H + h) / 2] |= uint8_t(q << (4 * (h % 2)));
          wg[(e * H + h) * F + f] = (float(q) - 8.0f) * sc;
        }
      }
  }

  Plan &p = tc.plan;
  p.producer = "moert-test";
  p.source = "TestPlans.h";
  p.mesh = {{"ep", G}};
  Builder b(p, tc.data);
  b.segments(G);

  // Routing: from the router (softmax top-k) or from the inputs.
  std::vector<int64_t> ids(T * k);
  std::vector<double> wts(T * k);
  if (!spec.idsAsInputs) {
    for (int64_t t = 0; t < T; ++t) {
      std::vector<double> s(E);
      double mx = -1e300, sum = 0;
      for (int64_t e = 0; e < E; ++e) {
        double acc = 0;
        for (int64_t h = 0; h < H; ++h)
          acc += double(x[t * H + h]) * router[h * E + e];
        s[e] = acc;
        mx = std::max(mx, acc);
      }
      for (double &v : s)
        sum += (v = std::exp(v - mx));
      for (double &v : s)
        v /= sum;
      std::vector<int64_t> order(E);
      for (int64_t e = 0; e < E; ++e)
        order[e] = e;
      std::stable_sort(order.begin(), order.end(),
                       [&](int64_t a, int64_t c) { return s[a] > s[c]; });
      double wsum = 0;
      for (int64_t j = 0; j < k; ++j)
        wsum += s[order[j]];
      for (int64_t j = 0; j < k; ++j) {
        ids[t * k + j] = order[j];
        wts[t * k + j] = spec.renormalize ? s[order[j]] / wsum : s[order[j]];
      }
    }
  } else {
    std::uniform_int_distribution<int64_t> de(0, E - 1);
    std::uniform_real_distribution<double> dw(0.1, 1.0);
    for (int64_t a = 0; a < T * k; ++a) {
      ids[a] = de(rng);
      wts[a] = float(dw(rng));
    }
    if (spec.badRank >= 0)
      ids[spec.badRank * Tl * k] = E + 3;
  }

  // Replicas (rank, slot) per expert, in (rank, slot) order.
  std::vector<std::vector<std::pair<int, int>>> reps(E);
  for (int r = 0; r < G; ++r)
    for (int64_t s = 0; s < S; ++s)
      if (slots[r * S + s] >= 0)
        reps[slots[r * S + s]].push_back({r, int(s)});
  std::vector<int64_t> repAttr;
  for (int64_t e = 0; e < E; ++e) {
    repAttr.push_back(int64_t(reps[e].size()));
    for (auto [r, s] : reps[e]) {
      repAttr.push_back(r);
      repAttr.push_back(s);
    }
  }

  // Reference: per source rank, assignments in order; a replica accepts at
  // most `capacity` of them.
  std::vector<double> ref(T * H, 0.0);
  for (int src = 0; src < G && spec.reference; ++src) {
    std::map<std::pair<int64_t, int64_t>, int64_t> used;
    int64_t first = src * Tl, rows = Tl;
    if (!spec.refBlocks.empty())
      std::tie(first, rows) = spec.refBlocks[size_t(src)];
    for (int64_t a = 0; a < rows * k; ++a) {
      int64_t t = first + a / k, e = ids[first * k + a];
      if (e < 0 || e >= E)
        continue;
      int64_t rep = a % int64_t(reps[e].size());
      if (spec.capacity >= 0 && ++used[{e, rep}] > spec.capacity)
        continue;
      float wt = float(wts[first * k + a]);
      // weightInput: the dispatched row is the f32 product wt * x.
      auto in = [&](int64_t h) {
        return spec.weightInput ? double(wt * x[t * H + h])
                                : double(x[t * H + h]);
      };
      std::vector<double> hdn(F);
      for (int64_t f = 0; f < F; ++f) {
        double g = 0, u = 0;
        for (int64_t h = 0; h < H; ++h) {
          g += in(h)*wg[(e * H + h) * F + f];
          u += in(h)*wu[(e * H + h) * F + f];
        }
        hdn[f] = g / (1.0 + std::exp(-g)) * u;
      }
      for (int64_t h = 0; h < H; ++h) {
        double acc = 0;
        for (int64_t f = 0; f < F; ++f)
          acc += hdn[f] * wd[(e * F + f) * H + h];
        ref[t * H + h] += (spec.weightInput ? 1.0f : wt) * acc;
      }
    }
  }

  // Values and steps.
  int32_t vx = b.value("x", DType::f32, {Tl, H}, ValueKind::input);
  int32_t vw = -1, vi = -1;
  if (!spec.idsAsInputs) {
    int32_t vr = b.shared("router.weight", {H, E}, router);
    int32_t vl = b.value("logits", DType::f32, {Tl, E}, ValueKind::temp);
    vw = b.value("weights", DType::f32, {Tl, k}, ValueKind::temp);
    vi = b.value("ids", DType::i64, {Tl, k}, ValueKind::temp);
    b.step(fb::MatmulT(), {vx, vr, -1}, {vl}, "/gate/MatMul");
    fb::RouteT r;
    r.top_k = k;
    r.score_func = fb::ScoreFunc::softmax;
    r.renormalize = spec.renormalize;
    r.num_groups = 1;
    r.topk_groups = 1;
    b.step(r, {vl, -1}, {vw, vi}, "/route");
  } else {
    vi = b.value("ids", DType::i64, {Tl, k}, ValueKind::input);
    vw = b.value("weights", DType::f32, {Tl, k}, ValueKind::input);
  }
  int64_t rmax = spec.capacity >= 0 ? G * S * spec.capacity
                                    : G * Tl * std::min<int64_t>(k, S);
  int32_t vrecv = b.value("recv", DType::f32, {rmax, H}, ValueKind::temp);
  std::vector<std::vector<float>> lg(G), lu(G), ld(G);
  for (int r = 0; r < G; ++r) {
    lg[r].assign(S * H * F, 0.0f);
    lu[r].assign(S * H * F, 0.0f);
    ld[r].assign(S * F * H, 0.0f);
    for (int64_t s = 0; s < S; ++s) {
      int64_t e = slots[r * S + s];
      if (e < 0)
        continue;
      std::copy(wg.begin() + e * H * F, wg.begin() + (e + 1) * H * F,
                lg[r].begin() + s * H * F);
      std::copy(wu.begin() + e * H * F, wu.begin() + (e + 1) * H * F,
                lu[r].begin() + s * H * F);
      std::copy(wd.begin() + e * F * H, wd.begin() + (e + 1) * F * H,
                ld[r].begin() + s * F * H);
    }
  }
  int32_t vg = -1, vgq = -1, vgs = -1;
  if (spec.packedGate) {
    std::vector<std::vector<uint8_t>> rq(G);
    std::vector<std::vector<float>> rs(G);
    for (int r = 0; r < G; ++r) {
      rq[r].assign(size_t(S * F * H / 2), 0);
      rs[r].assign(size_t(S * F), 0.0f);
      for (int64_t sl = 0; sl < S; ++sl) {
        int64_t e = slots[r * S + sl];
        if (e < 0)
          continue;
        std::copy_n(gq.begin() + e * F * H / 2, F * H / 2,
                    rq[r].begin() + sl * F * H / 2);
        std::copy_n(gs.begin() + e * F, F, rs[r].begin() + sl * F);
      }
    }
    vgq = b.perRankBytes("experts.w_gate.codes", {S, F, 1, H / 2}, rq);
    vgs = b.perRank("experts.w_gate.scales", {S, F, 1}, rs);
    vg = b.value("experts.w_gate", DType::f32, {S, H, F}, ValueKind::temp);
  } else {
    vg = b.perRank("experts.w_gate", {S, H, F}, lg);
  }
  int32_t vu = b.perRank("experts.w_up", {S, H, F}, lu);
  int32_t vd = b.perRank("experts.w_down", {S, F, H}, ld);
  int32_t vy = b.value("y", DType::f32, {rmax, H}, ValueKind::temp);
  int32_t vo = b.value("out", DType::f32, {Tl, H}, ValueKind::output);
  int64_t dispatchStep = int64_t(p.steps.size());
  fb::DispatchT d;
  d.axes = "ep";
  d.num_experts = E;
  d.slots_per_rank = S;
  d.capacity = spec.capacity;
  d.replicas = repAttr;
  if (spec.weightInput)
    b.step(d, {vx, vi, vw}, {vrecv}, "/moe/dispatch");
  else
    b.step(d, {vx, vi}, {vrecv}, "/moe/dispatch");
  if (spec.packedGate) {
    fb::DequantizeT dq;
    dq.bits = 4;
    dq.block_size = H;
    dq.k = H;
    dq.dispatch = dispatchStep;
    b.step(dq, {vgq, vgs, -1}, {vg}, "/moe/dequantize");
  }
  fb::ExpertsT ex;
  ex.activation = fb::Activation::silu;
  ex.dispatch = dispatchStep;
  b.step(ex, {vrecv, vg, vu, vd, -1, -1, -1}, {vy}, "/moe/experts");
  fb::CombineT co;
  co.dispatch = dispatchStep;
  b.step(co, {vy, spec.weightInput ? -1 : vw}, {vo}, "/moe/combine");

  auto io = [&](const std::string &name, DType dt, std::vector<int64_t> shape,
                int32_t v) {
    return splitIO(name, dt, std::move(shape), v, "ep");
  };
  p.inputs.push_back(io("x", DType::f32, {T, H}, vx));
  std::vector<double> xd(x.begin(), x.end());
  tc.inputs["x"] = f32Array({T, H}, xd);
  if (spec.idsAsInputs) {
    p.inputs.push_back(io("ids", DType::i64, {T, k}, vi));
    p.inputs.push_back(io("weights", DType::f32, {T, k}, vw));
    tc.inputs["ids"] = i64Array({T, k}, ids);
    tc.inputs["weights"] = f32Array({T, k}, wts);
  }
  p.outputs.push_back(io("out", DType::f32, {T, H}, vo));
  if (spec.reference)
    tc.expected["out"] = f32Array({T, H}, ref);
  return tc;
}

} // namespace testplans
} // namespace moert

#endif // MOERT_TEST_TESTPLANS_H
