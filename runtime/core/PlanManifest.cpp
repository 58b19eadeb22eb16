//===- PlanManifest.cpp - plan <-> FlatBuffers manifest -------------------===//
//
// The in-memory Plan to and from the FlatBuffer of runtime/schema/plan.fbs:
// the manifest of a .moeplan file (PlanFile.cpp writes and loads the file
// around it; docs/plan-format.md).
//
//===----------------------------------------------------------------------===//

#include "PlanManifest.h"

#include <cstdint>
#include <string>
#include <vector>

namespace moert::manifest {

using flatbuffers::FlatBufferBuilder;
using flatbuffers::Offset;

fb::DataRef toFb(const DataRef &d) {
  return fb::DataRef(d.segment, d.offset, d.bytes);
}
DataRef fromFb(const fb::DataRef *d) {
  DataRef r;
  if (d) {
    r.segment = d->segment();
    r.offset = d->offset();
    r.bytes = d->bytes();
  }
  return r;
}

Offset<flatbuffers::Vector<Offset<flatbuffers::String>>>
strings(FlatBufferBuilder &b, const std::vector<std::string> &v) {
  return b.CreateVectorOfStrings(v);
}

/// The symbolic dims, or no vector at all when there are none (a plan
/// without a symbol is written byte for byte as version 7 was).
Offset<flatbuffers::Vector<const fb::SymDim *>>
symDims(FlatBufferBuilder &b, const std::vector<SymDim> &dims) {
  if (dims.empty())
    return 0;
  std::vector<fb::SymDim> v;
  for (const SymDim &d : dims)
    v.push_back(fb::SymDim(d.dim, int8_t(d.sym), d.a, d.b));
  return b.CreateVectorOfStructs(v);
}
std::vector<SymDim> symDims(const flatbuffers::Vector<const fb::SymDim *> *v) {
  std::vector<SymDim> r;
  if (v)
    for (const fb::SymDim *d : *v)
      r.push_back({d->dim(), SymKind(d->sym()), d->a(), d->b()});
  return r;
}

Offset<fb::ModelIO> toFb(const ModelIO &m, FlatBufferBuilder &b) {
  auto name = b.CreateString(m.name);
  auto shape = b.CreateVector(m.shape);
  auto split = fb::CreateSplit(b, m.split.axis, strings(b, m.split.over));
  auto sym = symDims(b, m.symDims);
  return fb::CreateModelIO(b, name, m.dtype, shape, split, m.value, sym);
}

Offset<fb::Plan> toFb(const Plan &p, FlatBufferBuilder &b) {
  std::vector<Offset<fb::MeshAxis>> mesh;
  for (const MeshAxis &a : p.mesh)
    mesh.push_back(fb::CreateMeshAxis(b, b.CreateString(a.name), a.size));
  std::vector<Offset<fb::Segment>> segs;
  for (const Segment &s : p.segments)
    segs.push_back(fb::CreateSegment(
        b, b.CreateString(s.name), s.offset, s.size, b.CreateVector(s.ranks),
        s.file.empty() ? 0 : b.CreateString(s.file)));
  std::vector<Offset<fb::Value>> vals;
  for (const Value &v : p.values) {
    std::vector<fb::DataRef> data;
    for (const DataRef &d : v.data)
      data.push_back(toFb(d));
    vals.push_back(fb::CreateValue(
        b, v.id, b.CreateString(v.name), v.dtype, b.CreateVector(v.shape),
        v.kind, v.offset, b.CreateVectorOfStructs(data), symDims(b, v.symDims),
        v.root, v.outside, v.boxed));
  }
  std::vector<Offset<fb::ModelIO>> ins, outs;
  for (const ModelIO &m : p.inputs)
    ins.push_back(toFb(m, b));
  for (const ModelIO &m : p.outputs)
    outs.push_back(toFb(m, b));
  std::vector<Offset<fb::Step>> steps;
  for (const Step &s : p.steps)
    steps.push_back(fb::CreateStep(
        b, b.CreateVector(s.inputs), b.CreateVector(s.outputs), s.attrs.type,
        s.attrs.Pack(b), s.loc.empty() ? 0 : b.CreateString(s.loc)));
  std::vector<Offset<fb::KernelCode>> kernels;
  for (const KernelCode &k : p.kernels) {
    std::vector<Offset<fb::GpuLaunch>> launches;
    for (const GpuLaunchCode &l : k.launches)
      launches.push_back(fb::CreateGpuLaunch(
          b, l.module, b.CreateString(l.function), b.CreateVector(l.grid, 3),
          b.CreateVector(l.block, 3), b.CreateVector(l.args)));
    kernels.push_back(fb::CreateKernelCode(b, b.CreateString(k.name), k.numArgs,
                                           b.CreateVector(launches),
                                           k.symbolic));
  }
  fb::DataRef cpu = toFb(p.cpuCode), ptx = toFb(p.ptxCode);
  Offset<flatbuffers::Vector<Offset<fb::Symbol>>> syms = 0;
  if (!p.symbols.empty()) {
    std::vector<Offset<fb::Symbol>> v;
    for (const Symbol &s : p.symbols)
      v.push_back(fb::CreateSymbol(b, b.CreateString(s.name), s.max, s.min));
    syms = b.CreateVector(v);
  }
  return fb::CreatePlan(
      b, p.version, b.CreateString(p.producer), b.CreateString(p.source),
      b.CreateVector(mesh), b.CreateVector(segs), b.CreateVector(vals),
      b.CreateVector(ins), b.CreateVector(outs), b.CreateVector(steps),
      p.arenaBytes, b.CreateVector(kernels), &cpu, &ptx, syms);
}

template <typename T> std::vector<T> vec(const flatbuffers::Vector<T> *v) {
  return v ? std::vector<T>(v->begin(), v->end()) : std::vector<T>();
}
std::string str(const flatbuffers::String *s) { return s ? s->str() : ""; }
template <typename T, typename F>
void each(const flatbuffers::Vector<flatbuffers::Offset<T>> *v, F f) {
  if (v)
    for (const T *x : *v)
      f(*x);
}

ModelIO fromFb(const fb::ModelIO &m) {
  ModelIO r;
  r.name = str(m.name());
  r.dtype = m.dtype();
  r.shape = vec(m.shape());
  if (const fb::Split *s = m.split()) {
    r.split.axis = s->axis();
    each(s->over(), [&](const flatbuffers::String &a) {
      r.split.over.push_back(a.str());
    });
  }
  r.value = m.value();
  r.symDims = symDims(m.sym_dims());
  return r;
}

/// FlatBuffers 2.0.8's verifier checks that a vector's length is 4-byte
/// aligned but not that 8-byte elements (long, DataRef) are 8-byte aligned:
/// reading a misaligned one is undefined behaviour (found by fuzzing,
/// issue 17). The vectors of such elements that are misaligned, by name;
/// "" when none is.
std::string misalignedVector(const fb::Plan &f) {
  // An empty vector is never read (the writer leaves those unaligned).
  auto bad = [](const auto *v) {
    return v && v->size() > 0 &&
           reinterpret_cast<uintptr_t>(v->Data()) % 8 != 0;
  };
  if (f.values())
    for (const fb::Value *v : *f.values())
      if (bad(v->shape()) || bad(v->data()) || bad(v->sym_dims()))
        return "value " + std::to_string(v->id()) +
               "'s shape, data or symbolic dims";
  for (const auto *ios : {f.inputs(), f.outputs()})
    if (ios)
      for (const fb::ModelIO *m : *ios)
        if (bad(m->shape()) || bad(m->sym_dims()))
          return "the shape of model input or output '" + str(m->name()) + "'";
  if (f.kernels())
    for (const fb::KernelCode *k : *f.kernels())
      if (k->launches())
        for (const fb::GpuLaunch *l : *k->launches())
          if (bad(l->grid()) || bad(l->block()) || bad(l->args()))
            return "a launch of kernel '" + str(k->name()) + "'";
  if (f.steps())
    for (const fb::Step *st : *f.steps())
      if (const fb::Dispatch *d = st->attrs_as_dispatch();
          d && bad(d->replicas()))
        return "a dispatch step's replicas";
  return "";
}

/// The manifest, verified by the caller, as the in-memory plan; false (and
/// `error`) for what the schema cannot express.
bool fromFb(const fb::Plan &f, Plan &p, std::string &error) {
  p.version = f.version();
  p.producer = str(f.producer());
  p.source = str(f.source());
  p.arenaBytes = f.arena_bytes();
  each(f.symbols(), [&](const fb::Symbol &s) {
    p.symbols.push_back({s.name()->str(), s.max(), s.min()});
  });
  each(f.mesh(), [&](const fb::MeshAxis &a) {
    p.mesh.push_back({a.name()->str(), a.size()});
  });
  each(f.segments(), [&](const fb::Segment &s) {
    Segment g;
    g.name = s.name()->str();
    g.offset = s.offset();
    g.size = s.size();
    g.ranks = vec(s.ranks());
    g.file = str(s.file());
    p.segments.push_back(g);
  });
  each(f.values(), [&](const fb::Value &v) {
    Value x;
    x.id = v.id();
    x.name = str(v.name());
    x.dtype = v.dtype();
    x.shape = vec(v.shape());
    x.kind = v.kind();
    x.offset = v.offset();
    if (v.data())
      for (const fb::DataRef *d : *v.data())
        x.data.push_back(fromFb(d));
    x.symDims = symDims(v.sym_dims());
    x.root = v.root();
    x.outside = v.outside();
    x.boxed = v.boxed();
    p.values.push_back(x);
  });
  each(f.inputs(),
       [&](const fb::ModelIO &m) { p.inputs.push_back(fromFb(m)); });
  each(f.outputs(),
       [&](const fb::ModelIO &m) { p.outputs.push_back(fromFb(m)); });
  each(f.steps(), [&](const fb::Step &s) {
    Step x;
    x.inputs = vec(s.inputs());
    x.outputs = vec(s.outputs());
    x.attrs.type = s.attrs_type();
    x.attrs.value =
        fb::StepAttrsUnion::UnPack(s.attrs(), s.attrs_type(), nullptr);
    x.loc = str(s.loc());
    p.steps.push_back(std::move(x));
  });
  each(f.kernels(), [&](const fb::KernelCode &k) {
    KernelCode c;
    c.name = k.name()->str();
    c.numArgs = k.num_args();
    c.symbolic = k.symbolic();
    each(k.launches(), [&](const fb::GpuLaunch &l) {
      GpuLaunchCode g;
      g.module = l.module_();
      g.function = l.function()->str();
      std::vector<int64_t> grid = vec(l.grid()), block = vec(l.block());
      if (grid.size() != 3 || block.size() != 3)
        error = "kernel '" + c.name + "': grid and block need 3 sizes";
      for (size_t d = 0; d < 3 && d < grid.size() && d < block.size(); ++d) {
        g.grid[d] = grid[d];
        g.block[d] = block[d];
      }
      g.args = vec(l.args());
      c.launches.push_back(g);
    });
    p.kernels.push_back(c);
  });
  p.cpuCode = fromFb(f.cpu_code());
  p.ptxCode = fromFb(f.ptx_code());
  return error.empty();
}

} // namespace moert::manifest
