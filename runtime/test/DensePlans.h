//===- DensePlans.h - hand-built dense and collective plans -----*- C++ -*-===//
//
// More plans of TestPlans.h (same TestCase, references in plain loops):
//
// * a tensor-parallel MLP (column split -> relu -> row split -> all_reduce,
//   plus an all_gather of the hidden activations) on a `tp` mesh;
// * the all_slice / all_gather and the reduce_scatter of sequence
//   parallelism over one or two axes of a dp x ep mesh; attention.
//
//===----------------------------------------------------------------------===//

#ifndef MOERT_TEST_DENSEPLANS_H
#define MOERT_TEST_DENSEPLANS_H

#include "TestPlans.h"

namespace moert {
namespace testplans {

/// A tensor-parallel MLP over `ranks` tp ranks: out = relu(x W1) W2 with W1
/// split by columns, W2 by rows and an all_reduce; `hidden` = the
/// all_gather of relu(x W1) along its last axis.
inline TestCase makeTP(int ranks, int64_t T = 6, int64_t H = 10, int64_t Fl = 4,
                       unsigned seed = 7) {
  TestCase tc;
  const int64_t F = Fl * ranks;
  std::mt19937 rng(seed);
  std::vector<float> x = randomFloats(rng, T * H, 1.0f);
  std::vector<float> w1 = randomFloats(rng, H * F, 0.5f);
  std::vector<float> w2 = randomFloats(rng, F * H, 0.5f);
  Plan &p = tc.plan;
  p.producer = "moert-test";
  p.source = "TestPlans.h";
  p.mesh = {{"tp", ranks}};
  Builder b(p, tc.data);
  b.segments(ranks);
  std::vector<std::vector<float>> l1(ranks), l2(ranks);
  for (int r = 0; r < ranks; ++r) {
    for (int64_t h = 0; h < H; ++h)
      for (int64_t f = 0; f < Fl; ++f)
        l1[r].push_back(w1[h * F + r * Fl + f]);
    for (int64_t f = 0; f < Fl; ++f)
      for (int64_t h = 0; h < H; ++h)
        l2[r].push_back(w2[(r * Fl + f) * H + h]);
  }
  int32_t vx = b.value("x", DType::f32, {T, H}, ValueKind::input);
  int32_t v1 = b.perRank("w1", {H, Fl}, l1);
  int32_t v2 = b.perRank("w2", {Fl, H}, l2);
  int32_t vh = b.value("h", DType::f32, {T, Fl}, ValueKind::temp);
  int32_t va = b.value("a", DType::f32, {T, Fl}, ValueKind::temp);
  int32_t vp = b.value("partial", DType::f32, {T, H}, ValueKind::temp);
  int32_t vo = b.value("out", DType::f32, {T, H}, ValueKind::output);
  int32_t vg = b.value("hidden", DType::f32, {T, F}, ValueKind::output);
  b.step(fb::MatmulT(), {vx, v1, -1}, {vh}, "/fc1");
  fb::UnaryT relu;
  relu.fn = fb::UnaryFn::relu;
  b.step(relu, {vh}, {va}, "/relu");
  b.step(fb::MatmulT(), {va, v2, -1}, {vp}, "/fc2");
  fb::AllReduceT ar;
  ar.axes = "tp";
  b.step(ar, {vp}, {vo}, "/fc2/all_reduce");
  fb::AllGatherT ag;
  ag.axes = "tp";
  ag.axis = 1;
  b.step(ag, {va}, {vg}, "/relu/all_gather");

  std::vector<double> hid(T * F), out(T * H, 0.0);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t f = 0; f < F; ++f) {
      double acc = 0;
      for (int64_t h = 0; h < H; ++h)
        acc += double(x[t * H + h]) * w1[h * F + f];
      hid[t * F + f] = std::max(acc, 0.0);
    }
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t f = 0; f < F; ++f)
        out[t * H + h] += hid[t * F + f] * w2[f * H + h];
  ModelIO in;
  in.name = "x";
  in.shape = {T, H};
  in.value = vx;
  p.inputs.push_back(in);
  ModelIO o = in;
  o.name = "out";
  o.value = vo;
  p.outputs.push_back(o);
  o.name = "hidden";
  o.shape = {T, F};
  o.value = vg;
  p.outputs.push_back(o);
  std::vector<double> xd(x.begin(), x.end());
  tc.inputs["x"] = f32Array({T, H}, xd);
  tc.expected["out"] = f32Array({T, H}, out);
  tc.expected["hidden"] = f32Array({T, F}, hid);
  return tc;
}

/// The token slicing of sequence-parallel MoE layers over a dp x ep mesh:
/// x (replicated) -> all_slice over "dp,ep" along `axis` -> neg ->
/// all_gather back. Outputs: `out` = -x on every rank, and `block` = the
/// slice rank 0 holds (block 0 of x along the axis).
inline TestCase makeSliceGather(int dp, int ep, int64_t axis,
                                unsigned seed = 11) {
  TestCase tc;
  const int64_t G = dp * ep;
  std::vector<int64_t> shape = {2, 3, 5};
  std::vector<int64_t> local = shape;
  shape[size_t(axis)] *= G;
  int64_t n = shape[0] * shape[1] * shape[2];
  std::mt19937 rng(seed);
  std::vector<float> x = randomFloats(rng, size_t(n), 1.0f);
  Plan &p = tc.plan;
  p.producer = "moert-test";
  p.source = "TestPlans.h";
  p.mesh = {{"dp", dp}, {"ep", ep}};
  Builder b(p, tc.data);
  b.segments(int(G));
  int32_t vx = b.value("x", DType::f32, shape, ValueKind::input);
  int32_t vs = b.value("block", DType::f32, local, ValueKind::output);
  int32_t vn = b.value("neg", DType::f32, local, ValueKind::temp);
  int32_t vo = b.value("out", DType::f32, shape, ValueKind::output);
  fb::AllSliceT sl;
  sl.axes = "dp,ep";
  sl.axis = axis;
  b.step(sl, {vx}, {vs}, "/moe/slice");
  fb::UnaryT neg;
  neg.fn = fb::UnaryFn::neg;
  b.step(neg, {vs}, {vn}, "/moe/experts");
  fb::AllGatherT ag;
  ag.axes = "dp,ep";
  ag.axis = axis;
  b.step(ag, {vn}, {vo}, "/moe/gather");

  // Plain loops: -x, and block 0 of x along the axis.
  std::vector<double> out(x.size()), block;
  for (size_t i = 0; i < x.size(); ++i)
    out[i] = -double(x[i]);
  for (int64_t i = 0; i < local[0]; ++i)
    for (int64_t j = 0; j < local[1]; ++j)
      for (int64_t k = 0; k < local[2]; ++k)
        block.push_back(x[size_t((i * shape[1] + j) * shape[2] + k)]);
  ModelIO in;
  in.name = "x";
  in.shape = shape;
  in.value = vx;
  p.inputs.push_back(in);
  ModelIO o = in;
  o.name = "out";
  o.value = vo;
  p.outputs.push_back(o);
  o.name = "block";
  o.shape = local;
  o.value = vs;
  p.outputs.push_back(o);
  std::vector<double> xd(x.begin(), x.end());
  tc.inputs["x"] = f32Array(shape, xd);
  tc.expected["out"] = f32Array(shape, out);
  tc.expected["block"] = f32Array(local, block);
  return tc;
}

/// The reduce-scatter of sequence parallelism (Megatron) over `axes` (one
/// or both axes of a dp x ep mesh) along `axis`.
struct ReduceScatterSpec {
  int dp = 1, ep = 1;
  std::string axes = "dp,ep";
  int64_t axis = 0;
  std::vector<int64_t> y = {3, 5, 7}; ///< y's (local) shape
  DType dtype = DType::f32;           ///< f32 or bf16
  unsigned seed = 13;
};

/// Every rank's own x (f32: a model input split over dp,ep; bf16: a
/// per-rank constant) -> reduce_scatter -> y -> all_gather -> gathered,
/// and all_reduce(x) -> reduced. Outputs, each rank's block along axis 0
/// over dp,ep (bf16 values widened to f32 by a matmul with the identity,
/// exact): `y` (on group rank g block g of the group's sum of x), and
/// `gathered` and `reduced` (both the group's sum: reduce_scatter then
/// all_gather is all_reduce). References: plain loops in double over the
/// group's ranks, from the values as stored (bf16-rounded for bf16).
inline TestCase makeReduceScatter(const ReduceScatterSpec &spec) {
  TestCase tc;
  Plan &p = tc.plan;
  p.producer = "moert-test";
  p.source = "TestPlans.h";
  p.mesh = {{"dp", spec.dp}, {"ep", spec.ep}};
  const int W = spec.dp * spec.ep;
  const std::vector<std::string> axes = splitAxes(spec.axes);
  const int64_t G = int64_t(meshGroup(p.mesh, 0, axes).size());
  const size_t ax = size_t(spec.axis);
  std::vector<int64_t> yShape = spec.y, xShape = spec.y;
  xShape[ax] *= G;
  int64_t outer = 1, inner = 1;
  for (size_t d = 0; d < yShape.size(); ++d)
    if (d < ax)
      outer *= yShape[d];
    else if (d > ax)
      inner *= yShape[d];
  const int64_t blockLen = yShape[ax] * inner; // of one outer row
  const int64_t nx = outer * G * blockLen;
  const bool low = spec.dtype != DType::f32;

  std::mt19937 rng(spec.seed);
  std::vector<std::vector<float>> xs(static_cast<size_t>(W));
  for (std::vector<float> &x : xs) {
    x = randomFloats(rng, size_t(nx), 1.0f);
    if (low) // the values as stored
      for (float &f : x)
        f = bf16ToF32(f32ToBf16(f));
  }
  Builder b(p, tc.data);
  b.segments(W);
  DType dt = spec.dtype;
  int32_t vx = low ? b.perRank("x", xShape, xs, dt)
                   : b.value("x", dt, xShape, ValueKind::input);
  ValueKind res = low ? ValueKind::temp : ValueKind::output;
  int32_t vy = b.value("y", dt, yShape, res);
  int32_t vg = b.value("gathered", dt, xShape, res);
  int32_t vr = b.value("reduced", dt, xShape, res);
  fb::ReduceScatterT rs;
  rs.axes = spec.axes;
  rs.axis = spec.axis;
  b.step(rs, {vx}, {vy}, "/sp/reduce_scatter");
  fb::AllGatherT ag;
  ag.axes = spec.axes;
  ag.axis = spec.axis;
  b.step(ag, {vy}, {vg}, "/sp/all_gather");
  fb::AllReduceT ar;
  ar.axes = spec.axes;
  b.step(ar, {vx}, {vr}, "/sp/all_reduce");

  // Rows split along axis 0 over both mesh axes, rank r's block r.
  auto io = [&](const std::string &name, std::vector<int64_t> local,
                int32_t value) {
    ModelIO m;
    m.name = name;
    m.shape = local;
    m.shape[0] *= W;
    m.split.axis = 0;
    m.split.over = {"dp", "ep"};
    m.value = value;
    return m;
  };
  auto output = [&](const std::string &name, std::vector<int64_t> shape,
                    int32_t v) {
    if (low) { // C f32 = v * I: every element times 1 plus zeros, exact
      int64_t K = shape.back();
      std::vector<float> eye(size_t(K * K), 0.0f);
      for (int64_t i = 0; i < K; ++i)
        eye[size_t(i * K + i)] = 1.0f;
      int32_t vi = b.shared(name + "_eye", {K, K}, eye, dt);
      int32_t vo = b.value(name + "_f32", DType::f32, shape, ValueKind::output);
      b.step(fb::MatmulT(), {v, vi, -1}, {vo}, "/sp/" + name + "_f32");
      v = vo;
    }
    p.outputs.push_back(io(name, shape, v));
  };
  output("y", yShape, vy);
  output("gathered", xShape, vg);
  output("reduced", xShape, vr);

  // Plain loops: per rank, the sum over its group of x (whole, and block
  // g of every outer row).
  std::vector<double> ys, sums, xg;
  for (int r = 0; r < W; ++r) {
    std::vector<int32_t> group = meshGroup(p.mesh, r, axes);
    int64_t g = std::find(group.begin(), group.end(), r) - group.begin();
    std::vector<double> sum(size_t(nx), 0.0);
    for (int32_t q : group)
      for (int64_t i = 0; i < nx; ++i)
        sum[size_t(i)] += xs[size_t(q)][size_t(i)];
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t i = 0; i < blockLen; ++i)
        ys.push_back(sum[size_t((o * G + g) * blockLen + i)]);
    sums.insert(sums.end(), sum.begin(), sum.end());
    xg.insert(xg.end(), xs[size_t(r)].begin(), xs[size_t(r)].end());
  }
  if (!low) {
    p.inputs.push_back(io("x", xShape, vx));
    tc.inputs["x"] = f32Array(p.inputs[0].shape, xg);
  }
  tc.expected["y"] = f32Array(p.outputs[0].shape, ys);
  tc.expected["gathered"] = f32Array(p.outputs[1].shape, sums);
  tc.expected["reduced"] = f32Array(p.outputs[2].shape, sums);
  if (low)
    tc.tolerance = 1.0 / 128; // 2 ulps of bf16 (one rounding of the sums)
  return tc;
}

/// Attention over `ranks` ranks, each holding `B` of the sequences (the
/// batch split along axis 0): out = softmax(q kt) v with q [B,S,D], kt
/// [B,D,S] (keys transposed), v [B,S,D]; two batch_matmul steps around a
/// softmax, the scores [B,S,S] as the `scores` output too. `transB`: the
/// input is the keys as they lie, `k` [B,S,D], and the first step reads
/// them transposed (trans_b).
inline TestCase makeAttention(int ranks, int64_t B = 3, int64_t S = 7,
                              int64_t D = 5, unsigned seed = 11,
                              bool transB = false) {
  TestCase tc;
  const int64_t Bg = B * ranks;
  std::mt19937 rng(seed);
  std::vector<float> q = randomFloats(rng, Bg * S * D, 1.0f);
  std::vector<float> kt = randomFloats(rng, Bg * D * S, 1.0f);
  std::vector<float> v = randomFloats(rng, Bg * S * D, 1.0f);
  Plan &p = tc.plan;
  p.producer = "moert-test";
  p.source = "TestPlans.h";
  p.mesh = {{"dp", ranks}};
  Builder b(p, tc.data);
  b.segments(ranks);
  int32_t vq = b.value("q", DType::f32, {B, S, D}, ValueKind::input);
  const char *kName = transB ? "k" : "kt";
  std::vector<int64_t> kInner =
      transB ? std::vector<int64_t>{S, D} : std::vector<int64_t>{D, S};
  int32_t vk =
      b.value(kName, DType::f32, {B, kInner[0], kInner[1]}, ValueKind::input);
  int32_t vv = b.value("v", DType::f32, {B, S, D}, ValueKind::input);
  int32_t vs = b.value("scores", DType::f32, {B, S, S}, ValueKind::output);
  int32_t vp = b.value("probs", DType::f32, {B, S, S}, ValueKind::temp);
  int32_t vo = b.value("out", DType::f32, {B, S, D}, ValueKind::output);
  fb::BatchMatmulT qk;
  qk.trans_b = transB;
  b.step(std::move(qk), {vq, vk}, {vs}, "/attn/qk");
  b.step(fb::SoftmaxT(), {vs}, {vp}, "/attn/softmax");
  b.step(fb::BatchMatmulT(), {vp, vv}, {vo}, "/attn/pv");

  // Plain loops in double.
  std::vector<double> sc(Bg * S * S), out(Bg * S * D, 0.0);
  for (int64_t n = 0; n < Bg; ++n)
    for (int64_t i = 0; i < S; ++i) {
      double *row = &sc[(n * S + i) * S];
      for (int64_t j = 0; j < S; ++j) {
        double acc = 0;
        for (int64_t d = 0; d < D; ++d)
          acc += double(q[(n * S + i) * D + d]) *
                 (transB ? kt[(n * S + j) * D + d] : kt[(n * D + d) * S + j]);
        row[j] = acc;
      }
      double mx = *std::max_element(row, row + S), sum = 0;
      std::vector<double> e(S);
      for (int64_t j = 0; j < S; ++j)
        sum += e[j] = std::exp(row[j] - mx);
      for (int64_t j = 0; j < S; ++j)
        for (int64_t d = 0; d < D; ++d)
          out[(n * S + i) * D + d] += e[j] / sum * v[(n * S + j) * D + d];
    }
  auto addIO = [&](const char *name, int32_t value, std::vector<int64_t> inner,
                   bool input) {
    std::vector<int64_t> shape = {Bg};
    shape.insert(shape.end(), inner.begin(), inner.end());
    (input ? p.inputs : p.outputs)
        .push_back(splitIO(name, DType::f32, shape, value, "dp"));
  };
  addIO("q", vq, {S, D}, true);
  addIO(kName, vk, kInner, true);
  addIO("v", vv, {S, D}, true);
  addIO("scores", vs, {S, S}, false);
  addIO("out", vo, {S, D}, false);
  tc.inputs["q"] =
      f32Array({Bg, S, D}, std::vector<double>(q.begin(), q.end()));
  tc.inputs[kName] = f32Array({Bg, kInner[0], kInner[1]},
                              std::vector<double>(kt.begin(), kt.end()));
  tc.inputs["v"] =
      f32Array({Bg, S, D}, std::vector<double>(v.begin(), v.end()));
  tc.expected["scores"] = f32Array({Bg, S, S}, sc);
  tc.expected["out"] = f32Array({Bg, S, D}, out);
  return tc;
}

} // namespace testplans
} // namespace moert

#endif // MOERT_TEST_DENSEPLANS_H
