//===- Plan.cpp - the .moeplan format: reader, writer, verifier -----------===//

#include "moert/Plan.h"
#include "moert/Json.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <set>
#include <sstream>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

using namespace moert;

namespace {
constexpr char kMagic[8] = {'M', 'O', 'E', 'P', 'L', 'A', 'N', '\0'};
constexpr uint64_t kHeaderSize = 64;
constexpr uint64_t kPage = 4096;

uint64_t alignTo(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

uint64_t fnv1a(const char *p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) {
    h ^= (unsigned char)p[i];
    h *= 1099511628211ull;
  }
  return h;
}

struct Header {
  char magic[8];
  uint32_t version;
  uint32_t flags;
  uint64_t manifestOffset;
  uint64_t manifestSize;
  uint64_t dataOffset;
  uint64_t dataSize;
  uint64_t checksum;
  uint64_t reserved;
};
static_assert(sizeof(Header) == kHeaderSize, "header is 64 bytes");

const char *kindName(ValueKind k) {
  switch (k) {
  case ValueKind::input:
    return "input";
  case ValueKind::output:
    return "output";
  case ValueKind::temp:
    return "temp";
  case ValueKind::constant:
    return "constant";
  }
  return "?";
}

/// The number of inputs and outputs each step kind takes.
struct StepSig {
  const char *op;
  int minIn, maxIn, outs;
};
const StepSig kSteps[] = {
    {"matmul", 2, 3, 1},     {"route", 1, 2, 2},      {"dispatch", 2, 2, 1},
    {"experts", 4, 7, 1},    {"combine", 2, 2, 1},    {"unary", 1, 1, 1},
    {"binary", 2, 2, 1},     {"softmax", 1, 1, 1},    {"copy", 1, 1, 1},
    {"all_reduce", 1, 1, 1}, {"all_gather", 1, 1, 1}, {"batch_matmul", 2, 2, 1},
    {"kernel", 0, 64, -1},
};
} // namespace

const char *moert::dtypeName(DType t) {
  switch (t) {
  case DType::f32:
    return "f32";
  case DType::f16:
    return "f16";
  case DType::bf16:
    return "bf16";
  case DType::i64:
    return "i64";
  case DType::i32:
    return "i32";
  case DType::u8:
    return "u8";
  }
  return "?";
}

bool moert::parseDType(const std::string &name, DType &out) {
  for (DType t : {DType::f32, DType::f16, DType::bf16, DType::i64, DType::i32,
                  DType::u8})
    if (name == dtypeName(t)) {
      out = t;
      return true;
    }
  return false;
}

size_t moert::dtypeSize(DType t) {
  switch (t) {
  case DType::f32:
  case DType::i32:
    return 4;
  case DType::f16:
  case DType::bf16:
    return 2;
  case DType::i64:
    return 8;
  case DType::u8:
    return 1;
  }
  return 0;
}

std::string moert::shapeString(const std::vector<int64_t> &shape) {
  std::string r = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    r += (i ? "," : "") + std::to_string(shape[i]);
  return r + "]";
}

std::vector<std::string> moert::splitAxes(const std::string &axes) {
  std::vector<std::string> out;
  std::stringstream ss(axes);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty())
      out.push_back(item);
  return out;
}

int64_t Value::numElements() const {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  return n;
}

int64_t Step::getInt(const std::string &name, int64_t dflt) const {
  auto it = attrs.find(name);
  if (it == attrs.end())
    return dflt;
  return it->second.kind == Attr::Float ? int64_t(it->second.f) : it->second.i;
}

double Step::getFloat(const std::string &name, double dflt) const {
  auto it = attrs.find(name);
  if (it == attrs.end())
    return dflt;
  return it->second.kind == Attr::Int ? double(it->second.i) : it->second.f;
}

std::string Step::getString(const std::string &name,
                            const std::string &dflt) const {
  auto it = attrs.find(name);
  return it == attrs.end() ? dflt : it->second.s;
}

std::vector<int64_t> Step::getList(const std::string &name) const {
  auto it = attrs.find(name);
  return it == attrs.end() ? std::vector<int64_t>{} : it->second.list;
}

int64_t Plan::worldSize() const {
  int64_t n = 1;
  for (const MeshAxis &a : mesh)
    n *= a.size;
  return n;
}

int64_t Plan::axisSize(const std::string &axis) const {
  for (const MeshAxis &a : mesh)
    if (a.name == axis)
      return a.size;
  return 1;
}

int64_t Plan::coord(int64_t rank, const std::string &axis) const {
  for (int64_t i = int64_t(mesh.size()) - 1; i >= 0; --i) {
    int64_t c = rank % mesh[i].size;
    if (mesh[i].name == axis)
      return c;
    rank /= mesh[i].size;
  }
  return 0;
}

std::vector<int32_t> Plan::group(int64_t rank,
                                 const std::vector<std::string> &axes) const {
  // Coordinates of `rank`, then enumerate the named axes row-major.
  std::vector<int64_t> coords(mesh.size());
  int64_t r = rank;
  for (int64_t i = int64_t(mesh.size()) - 1; i >= 0; --i) {
    coords[i] = r % mesh[i].size;
    r /= mesh[i].size;
  }
  std::vector<size_t> idx;
  for (const std::string &a : axes)
    for (size_t i = 0; i < mesh.size(); ++i)
      if (mesh[i].name == a)
        idx.push_back(i);
  int64_t n = 1;
  for (size_t i : idx)
    n *= mesh[i].size;
  std::vector<int32_t> out;
  for (int64_t g = 0; g < n; ++g) {
    std::vector<int64_t> c = coords;
    int64_t rem = g;
    for (int64_t j = int64_t(idx.size()) - 1; j >= 0; --j) {
      c[idx[j]] = rem % mesh[idx[j]].size;
      rem /= mesh[idx[j]].size;
    }
    int64_t lin = 0;
    for (size_t i = 0; i < mesh.size(); ++i)
      lin = lin * mesh[i].size + c[i];
    out.push_back(int32_t(lin));
  }
  return out;
}

bool moert::verifyPlan(const Plan &plan, std::string &error) {
  auto fail = [&](const std::string &m) {
    error = m;
    return false;
  };
  if (plan.mesh.empty())
    return fail("the plan has no mesh axes");
  for (const MeshAxis &a : plan.mesh)
    if (a.size < 1)
      return fail("mesh axis '" + a.name + "' has size " +
                  std::to_string(a.size));
  int64_t world = plan.worldSize();
  for (const Segment &s : plan.segments)
    for (int32_t r : s.ranks)
      if (r < 0 || r >= world)
        return fail("segment '" + s.name + "' lists rank " +
                    std::to_string(r) + " of a " + std::to_string(world) +
                    "-rank mesh");
  for (size_t i = 0; i < plan.values.size(); ++i) {
    const Value &v = plan.values[i];
    std::string what = "value " + std::to_string(i) + " ('" + v.name + "')";
    if (v.id != int32_t(i))
      return fail(what + " has id " + std::to_string(v.id));
    for (int64_t d : v.shape)
      if (d < 0)
        return fail(what + " has a negative dim");
    if (v.kind == ValueKind::constant) {
      if (v.data.size() != 1 && int64_t(v.data.size()) != world)
        return fail(what + " has " + std::to_string(v.data.size()) +
                    " data entries; expected 1 or one per rank (" +
                    std::to_string(world) + ")");
      for (const DataRef &d : v.data) {
        if (d.segment < 0 || d.segment >= int32_t(plan.segments.size()))
          return fail(what + " points to segment " +
                      std::to_string(d.segment) + ", which does not exist");
        if (d.bytes != v.byteSize())
          return fail(what + " has " + std::to_string(d.bytes) +
                      " bytes of data for " + std::to_string(v.byteSize()) +
                      " bytes of tensor");
        const Segment &s = plan.segments[d.segment];
        if (s.size && d.offset + d.bytes > s.size)
          return fail(what + " lies outside segment '" + s.name + "'");
      }
      // Rank r reads data[r] (or the one shared entry): its segment must be
      // one that rank maps.
      for (int64_t r = 0; r < world; ++r) {
        const DataRef &d = v.data.size() == 1 ? v.data[0] : v.data[r];
        const Segment &s = plan.segments[d.segment];
        bool mapped = s.ranks.empty();
        for (int32_t x : s.ranks)
          mapped |= x == r;
        if (!mapped)
          return fail(what + ": rank " + std::to_string(r) +
                      " reads segment '" + s.name +
                      "', which that rank does not map");
      }
    } else if (v.offset + v.byteSize() > plan.arenaBytes) {
      return fail(what + " at arena offset " + std::to_string(v.offset) +
                  " + " + std::to_string(v.byteSize()) +
                  " bytes lies outside the arena of " +
                  std::to_string(plan.arenaBytes) + " bytes");
    }
  }
  auto checkIO = [&](const ModelIO &m, bool out) -> bool {
    std::string what = std::string(out ? "output '" : "input '") + m.name + "'";
    if (m.value < 0 || m.value >= int32_t(plan.values.size()))
      return fail(what + " refers to value " + std::to_string(m.value));
    if (m.split.axis >= int(m.shape.size()))
      return fail(what + " is split along axis " + std::to_string(m.split.axis) +
                  " of a rank-" + std::to_string(m.shape.size()) + " tensor");
    for (const std::string &a : m.split.over) {
      bool found = false;
      for (const MeshAxis &x : plan.mesh)
        found |= x.name == a;
      if (!found)
        return fail(what + " is split over unknown mesh axis '" + a + "'");
    }
    return true;
  };
  for (const ModelIO &m : plan.inputs)
    if (!checkIO(m, false))
      return false;
  for (const ModelIO &m : plan.outputs)
    if (!checkIO(m, true))
      return false;
  for (const DataRef *code : {&plan.cpuCode, &plan.ptxCode})
    if (code->segment >= 0 &&
        (code->segment >= int32_t(plan.segments.size()) ||
         !plan.segments[code->segment].ranks.empty() ||
         (plan.segments[code->segment].size &&
          code->offset + code->bytes > plan.segments[code->segment].size)))
      return fail("generated code lies outside a segment every rank maps");
  for (size_t i = 0; i < plan.steps.size(); ++i) {
    const Step &s = plan.steps[i];
    std::string what = "step " + std::to_string(i) + " (" + s.op +
                       (s.loc.empty() ? "" : " at '" + s.loc + "'") + ")";
    const StepSig *sig = nullptr;
    for (const StepSig &k : kSteps)
      if (s.op == k.op)
        sig = &k;
    if (!sig)
      return fail(what + ": unknown step kind");
    if (int(s.inputs.size()) < sig->minIn || int(s.inputs.size()) > sig->maxIn)
      return fail(what + ": " + std::to_string(s.inputs.size()) +
                  " operands, expected " + std::to_string(sig->minIn) +
                  (sig->minIn == sig->maxIn
                       ? ""
                       : ".." + std::to_string(sig->maxIn)));
    if (sig->outs >= 0 ? int(s.outputs.size()) != sig->outs
                       : s.outputs.empty())
      return fail(what + ": " + std::to_string(s.outputs.size()) +
                  " results, expected " + std::to_string(sig->outs));
    for (int32_t v : s.inputs)
      if (v < -1 || v >= int32_t(plan.values.size()))
        return fail(what + ": operand value " + std::to_string(v) +
                    " does not exist");
    for (int32_t v : s.outputs)
      if (v < 0 || v >= int32_t(plan.values.size()) ||
          plan.values[v].kind == ValueKind::constant)
        return fail(what + ": result value " + std::to_string(v) +
                    " does not exist or is a constant");
    if (s.op == "kernel") {
      std::string name = s.getString("name", "");
      const KernelCode *k = nullptr;
      for (const KernelCode &c : plan.kernels)
        if (c.name == name)
          k = &c;
      if (!k)
        return fail(what + ": calls kernel '" + name +
                    "', which the plan does not define");
      if (k->numArgs != int(s.inputs.size() + s.outputs.size()))
        return fail(what + ": kernel '" + name + "' takes " +
                    std::to_string(k->numArgs) + " pointers, the step passes " +
                    std::to_string(s.inputs.size() + s.outputs.size()));
    }
    if (s.op == "experts" || s.op == "combine") {
      int64_t d = s.getInt("dispatch", -1);
      if (d < 0 || d >= int64_t(i) || plan.steps[d].op != "dispatch")
        return fail(what + ": attribute 'dispatch' must name an earlier "
                           "dispatch step");
    }
  }
  return true;
}

//===----------------------------------------------------------------------===//
// Manifest <-> JSON
//===----------------------------------------------------------------------===//

static Json toJson(const Plan &p) {
  Json j = Json::object();
  j["format"] = "moeplan";
  j["version"] = int64_t(p.version);
  j["producer"] = p.producer;
  j["source"] = p.source;
  j["arena_bytes"] = p.arenaBytes;
  Json mesh = Json::array();
  for (const MeshAxis &a : p.mesh) {
    Json m = Json::object();
    m["name"] = a.name;
    m["size"] = a.size;
    mesh.push(m);
  }
  j["mesh"] = mesh;
  Json segs = Json::array();
  for (const Segment &s : p.segments) {
    Json o = Json::object();
    o["name"] = s.name;
    o["offset"] = s.offset;
    o["size"] = s.size;
    Json r = Json::array();
    for (int32_t x : s.ranks)
      r.push(int64_t(x));
    o["ranks"] = r;
    segs.push(o);
  }
  j["segments"] = segs;
  Json vals = Json::array();
  for (const Value &v : p.values) {
    Json o = Json::object();
    o["id"] = int64_t(v.id);
    o["name"] = v.name;
    o["dtype"] = dtypeName(v.dtype);
    Json sh = Json::array();
    for (int64_t d : v.shape)
      sh.push(d);
    o["shape"] = sh;
    o["kind"] = kindName(v.kind);
    if (v.kind == ValueKind::constant) {
      Json data = Json::array();
      for (const DataRef &d : v.data) {
        Json r = Json::object();
        r["segment"] = int64_t(d.segment);
        r["offset"] = d.offset;
        r["bytes"] = d.bytes;
        data.push(r);
      }
      o["data"] = data;
    } else {
      o["offset"] = v.offset;
    }
    vals.push(o);
  }
  j["values"] = vals;
  auto io = [](const std::vector<ModelIO> &list) {
    Json a = Json::array();
    for (const ModelIO &m : list) {
      Json o = Json::object();
      o["name"] = m.name;
      o["dtype"] = dtypeName(m.dtype);
      Json sh = Json::array();
      for (int64_t d : m.shape)
        sh.push(d);
      o["shape"] = sh;
      Json split = Json::object();
      split["axis"] = int64_t(m.split.axis);
      Json over = Json::array();
      for (const std::string &s : m.split.over)
        over.push(s);
      split["over"] = over;
      o["split"] = split;
      o["value"] = int64_t(m.value);
      a.push(o);
    }
    return a;
  };
  j["inputs"] = io(p.inputs);
  j["outputs"] = io(p.outputs);
  Json steps = Json::array();
  for (const Step &s : p.steps) {
    Json o = Json::object();
    o["op"] = s.op;
    Json in = Json::array(), out = Json::array();
    for (int32_t v : s.inputs)
      in.push(int64_t(v));
    for (int32_t v : s.outputs)
      out.push(int64_t(v));
    o["in"] = in;
    o["out"] = out;
    Json attrs = Json::object();
    for (auto &[k, a] : s.attrs) {
      switch (a.kind) {
      case Attr::Int:
        attrs[k] = a.i;
        break;
      case Attr::Float:
        attrs[k] = a.f;
        break;
      case Attr::String:
        attrs[k] = a.s;
        break;
      case Attr::IntList: {
        Json l = Json::array();
        for (int64_t x : a.list)
          l.push(x);
        attrs[k] = l;
        break;
      }
      }
    }
    o["attrs"] = attrs;
    if (!s.loc.empty())
      o["loc"] = s.loc;
    steps.push(o);
  }
  j["steps"] = steps;
  Json kernels = Json::array();
  for (const KernelCode &k : p.kernels) {
    Json o = Json::object();
    o["name"] = k.name;
    o["args"] = int64_t(k.numArgs);
    Json launches = Json::array();
    for (const GpuLaunchCode &l : k.launches) {
      Json lo = Json::object();
      lo["module"] = int64_t(l.module);
      lo["function"] = l.function;
      Json grid = Json::array(), block = Json::array(), args = Json::array();
      for (int i = 0; i < 3; ++i) {
        grid.push(l.grid[i]);
        block.push(l.block[i]);
      }
      for (int64_t a : l.args)
        args.push(a);
      lo["grid"] = grid;
      lo["block"] = block;
      lo["args"] = args;
      launches.push(lo);
    }
    o["launches"] = launches;
    kernels.push(o);
  }
  j["kernels"] = kernels;
  auto code = [](const DataRef &d) {
    Json r = Json::object();
    r["segment"] = int64_t(d.segment);
    r["offset"] = d.offset;
    r["bytes"] = d.bytes;
    return r;
  };
  j["cpu_code"] = code(p.cpuCode);
  j["ptx_code"] = code(p.ptxCode);
  return j;
}

namespace {
/// Reads fields with errors that name the JSON path.
struct Reader {
  std::string err;
  bool fail(const std::string &path, const std::string &what) {
    if (err.empty())
      err = "manifest field '" + path + "': " + what;
    return false;
  }
  const Json *field(const Json &o, const std::string &key,
                    const std::string &path, Json::Kind kind) {
    const Json *v = o.kind() == Json::Object ? o.get(key) : nullptr;
    std::string p = path.empty() ? key : path + "." + key;
    if (!v) {
      fail(p, "missing");
      return nullptr;
    }
    bool ok = kind == Json::Int ? v->isNumber() : v->kind() == kind;
    if (!ok) {
      fail(p, "has the wrong type");
      return nullptr;
    }
    return v;
  }
  bool integer(const Json &o, const std::string &key, const std::string &path,
               int64_t &out) {
    const Json *v = field(o, key, path, Json::Int);
    if (!v)
      return false;
    out = v->asInt();
    return true;
  }
  bool string(const Json &o, const std::string &key, const std::string &path,
              std::string &out) {
    const Json *v = field(o, key, path, Json::String);
    if (!v)
      return false;
    out = v->asString();
    return true;
  }
  bool intList(const Json &o, const std::string &key, const std::string &path,
               std::vector<int64_t> &out) {
    const Json *v = field(o, key, path, Json::Array);
    if (!v)
      return false;
    for (const Json &x : v->items()) {
      if (!x.isNumber())
        return fail(path + "." + key, "expected integers");
      out.push_back(x.asInt());
    }
    return true;
  }
};
} // namespace

static bool fromJson(const Json &j, Plan &p, std::string &error) {
  Reader r;
  std::string format;
  int64_t version = 0;
  bool ok = r.string(j, "format", "", format) &&
            r.integer(j, "version", "", version);
  if (ok && format != "moeplan")
    ok = r.fail("format", "expected \"moeplan\", got \"" + format + "\"");
  p.version = uint32_t(version);
  int64_t arena = 0;
  ok = ok && r.string(j, "producer", "", p.producer) &&
       r.string(j, "source", "", p.source) &&
       r.integer(j, "arena_bytes", "", arena);
  p.arenaBytes = uint64_t(arena);
  const Json *mesh = ok ? r.field(j, "mesh", "", Json::Array) : nullptr;
  ok = ok && mesh;
  for (size_t i = 0; ok && i < mesh->items().size(); ++i) {
    MeshAxis a;
    std::string path = "mesh[" + std::to_string(i) + "]";
    ok = r.string(mesh->items()[i], "name", path, a.name) &&
         r.integer(mesh->items()[i], "size", path, a.size);
    p.mesh.push_back(a);
  }
  const Json *segs = ok ? r.field(j, "segments", "", Json::Array) : nullptr;
  ok = ok && segs;
  for (size_t i = 0; ok && i < segs->items().size(); ++i) {
    const Json &o = segs->items()[i];
    std::string path = "segments[" + std::to_string(i) + "]";
    Segment s;
    int64_t off = 0, size = 0;
    std::vector<int64_t> ranks;
    ok = r.string(o, "name", path, s.name) &&
         r.integer(o, "offset", path, off) &&
         r.integer(o, "size", path, size) &&
         r.intList(o, "ranks", path, ranks);
    s.offset = off;
    s.size = size;
    for (int64_t x : ranks)
      s.ranks.push_back(int32_t(x));
    p.segments.push_back(s);
  }
  const Json *vals = ok ? r.field(j, "values", "", Json::Array) : nullptr;
  ok = ok && vals;
  for (size_t i = 0; ok && i < vals->items().size(); ++i) {
    const Json &o = vals->items()[i];
    std::string path = "values[" + std::to_string(i) + "]";
    Value v;
    int64_t id = 0;
    std::string dtype, kind;
    ok = r.integer(o, "id", path, id) && r.string(o, "name", path, v.name) &&
         r.string(o, "dtype", path, dtype) &&
         r.intList(o, "shape", path, v.shape) &&
         r.string(o, "kind", path, kind);
    v.id = int32_t(id);
    if (ok && !parseDType(dtype, v.dtype))
      ok = r.fail(path + ".dtype", "unknown dtype '" + dtype + "'");
    if (ok) {
      if (kind == "input")
        v.kind = ValueKind::input;
      else if (kind == "output")
        v.kind = ValueKind::output;
      else if (kind == "temp")
        v.kind = ValueKind::temp;
      else if (kind == "constant")
        v.kind = ValueKind::constant;
      else
        ok = r.fail(path + ".kind", "unknown kind '" + kind + "'");
    }
    if (ok && v.kind == ValueKind::constant) {
      const Json *data = r.field(o, "data", path, Json::Array);
      ok = data;
      for (size_t k = 0; ok && k < data->items().size(); ++k) {
        DataRef d;
        int64_t seg = 0, off = 0, bytes = 0;
        std::string dp = path + ".data[" + std::to_string(k) + "]";
        ok = r.integer(data->items()[k], "segment", dp, seg) &&
             r.integer(data->items()[k], "offset", dp, off) &&
             r.integer(data->items()[k], "bytes", dp, bytes);
        d.segment = int32_t(seg);
        d.offset = off;
        d.bytes = bytes;
        v.data.push_back(d);
      }
    } else if (ok) {
      int64_t off = 0;
      ok = r.integer(o, "offset", path, off);
      v.offset = off;
    }
    p.values.push_back(v);
  }
  auto io = [&](const char *key, std::vector<ModelIO> &list) {
    const Json *a = ok ? r.field(j, key, "", Json::Array) : nullptr;
    ok = ok && a;
    for (size_t i = 0; ok && i < a->items().size(); ++i) {
      const Json &o = a->items()[i];
      std::string path = std::string(key) + "[" + std::to_string(i) + "]";
      ModelIO m;
      std::string dtype;
      int64_t value = -1, axis = -1;
      ok = r.string(o, "name", path, m.name) &&
           r.string(o, "dtype", path, dtype) &&
           r.intList(o, "shape", path, m.shape) &&
           r.integer(o, "value", path, value);
      const Json *split = ok ? r.field(o, "split", path, Json::Object) : nullptr;
      ok = ok && split && r.integer(*split, "axis", path + ".split", axis);
      const Json *over =
          ok ? r.field(*split, "over", path + ".split", Json::Array) : nullptr;
      ok = ok && over;
      for (size_t k = 0; ok && k < over->items().size(); ++k)
        m.split.over.push_back(over->items()[k].asString());
      m.split.axis = int(axis);
      m.value = int32_t(value);
      if (ok && !parseDType(dtype, m.dtype))
        ok = r.fail(path + ".dtype", "unknown dtype '" + dtype + "'");
      list.push_back(m);
    }
  };
  io("inputs", p.inputs);
  io("outputs", p.outputs);
  const Json *steps = ok ? r.field(j, "steps", "", Json::Array) : nullptr;
  ok = ok && steps;
  for (size_t i = 0; ok && i < steps->items().size(); ++i) {
    const Json &o = steps->items()[i];
    std::string path = "steps[" + std::to_string(i) + "]";
    Step s;
    std::vector<int64_t> in, out;
    ok = r.string(o, "op", path, s.op) && r.intList(o, "in", path, in) &&
         r.intList(o, "out", path, out);
    for (int64_t x : in)
      s.inputs.push_back(int32_t(x));
    for (int64_t x : out)
      s.outputs.push_back(int32_t(x));
    if (const Json *loc = o.get("loc"))
      s.loc = loc->asString();
    const Json *attrs = ok ? r.field(o, "attrs", path, Json::Object) : nullptr;
    ok = ok && attrs;
    for (auto it = ok ? attrs->members().begin() : attrs->members().end();
         ok && it != attrs->members().end(); ++it) {
      Attr a;
      const Json &v = it->second;
      if (v.kind() == Json::Int) {
        a.kind = Attr::Int;
        a.i = v.asInt();
      } else if (v.kind() == Json::Double) {
        a.kind = Attr::Float;
        a.f = v.asDouble();
      } else if (v.kind() == Json::String) {
        a.kind = Attr::String;
        a.s = v.asString();
      } else if (v.kind() == Json::Array) {
        a.kind = Attr::IntList;
        for (const Json &x : v.items())
          a.list.push_back(x.asInt());
      } else {
        ok = r.fail(path + ".attrs." + it->first, "unsupported value");
      }
      s.attrs[it->first] = a;
    }
    p.steps.push_back(s);
  }
  // Kernels (optional: plans without generated code omit them).
  if (ok && j.get("kernels")) {
    const Json *ks = r.field(j, "kernels", "", Json::Array);
    ok = ks;
    for (size_t i = 0; ok && i < ks->items().size(); ++i) {
      KernelCode k;
      int64_t n = 0;
      std::string path = "kernels[" + std::to_string(i) + "]";
      ok = r.string(ks->items()[i], "name", path, k.name) &&
           r.integer(ks->items()[i], "args", path, n);
      k.numArgs = int(n);
      const Json *ls = ok ? ks->items()[i].get("launches") : nullptr;
      for (size_t x = 0; ok && ls && x < ls->items().size(); ++x) {
        const Json &lo = ls->items()[x];
        std::string lp = path + ".launches[" + std::to_string(x) + "]";
        GpuLaunchCode l;
        int64_t mod = 0;
        std::vector<int64_t> grid, block;
        ok = r.integer(lo, "module", lp, mod) &&
             r.string(lo, "function", lp, l.function) &&
             r.intList(lo, "grid", lp, grid) &&
             r.intList(lo, "block", lp, block) &&
             r.intList(lo, "args", lp, l.args);
        if (ok && (grid.size() != 3 || block.size() != 3))
          ok = r.fail(lp, "grid and block need 3 sizes");
        for (int d = 0; ok && d < 3; ++d) {
          l.grid[d] = grid[d];
          l.block[d] = block[d];
        }
        l.module = int(mod);
        k.launches.push_back(l);
      }
      p.kernels.push_back(k);
    }
  }
  for (auto [key, ref] : {std::pair<const char *, DataRef *>{"cpu_code",
                                                               &p.cpuCode},
                          {"ptx_code", &p.ptxCode}}) {
    if (!ok || !j.get(key))
      continue;
    const Json &o = *j.get(key);
    int64_t seg = -1, off = 0, bytes = 0;
    ok = r.integer(o, "segment", key, seg) &&
         r.integer(o, "offset", key, off) && r.integer(o, "bytes", key, bytes);
    ref->segment = int32_t(seg);
    ref->offset = off;
    ref->bytes = bytes;
  }
  if (!ok)
    error = r.err;
  return ok;
}

//===----------------------------------------------------------------------===//
// Writing and loading
//===----------------------------------------------------------------------===//

bool moert::writePlan(const std::string &path, Plan &plan,
                      const PlanData &data, std::string &error) {
  if (data.segments.size() != plan.segments.size()) {
    error = "plan has " + std::to_string(plan.segments.size()) +
            " segments but " + std::to_string(data.segments.size()) +
            " data buffers";
    return false;
  }
  uint64_t off = 0;
  for (size_t i = 0; i < plan.segments.size(); ++i) {
    plan.segments[i].offset = off;
    plan.segments[i].size = data.segments[i].size();
    off = alignTo(off + data.segments[i].size(), kPage);
  }
  uint64_t dataSize = off;
  if (!verifyPlan(plan, error))
    return false;
  std::string manifest = toJson(plan).dump(1);
  Header h{};
  std::memcpy(h.magic, kMagic, 8);
  h.version = plan.version;
  h.manifestOffset = kHeaderSize;
  h.manifestSize = manifest.size();
  h.dataOffset = alignTo(kHeaderSize + manifest.size(), kPage);
  h.dataSize = dataSize;
  h.checksum = fnv1a(manifest.data(), manifest.size());
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) {
    error = "cannot write plan '" + path + "': " + std::strerror(errno);
    return false;
  }
  f.write(reinterpret_cast<const char *>(&h), sizeof(h));
  f.write(manifest.data(), manifest.size());
  std::vector<char> pad(kPage, 0);
  f.write(pad.data(), h.dataOffset - kHeaderSize - manifest.size());
  for (size_t i = 0; i < plan.segments.size(); ++i) {
    const std::vector<char> &seg = data.segments[i];
    f.write(seg.data(), seg.size());
    uint64_t end = plan.segments[i].offset + seg.size();
    uint64_t next = i + 1 < plan.segments.size()
                        ? plan.segments[i + 1].offset
                        : dataSize;
    f.write(pad.data(), next - end);
  }
  if (!f) {
    error = "cannot write plan '" + path + "': " + std::strerror(errno);
    return false;
  }
  return true;
}

LoadedPlan::~LoadedPlan() {
  for (auto &[p, n] : maps_)
    if (p)
      munmap(p, n);
  if (fd_ >= 0)
    close(fd_);
}

std::unique_ptr<LoadedPlan> LoadedPlan::open(const std::string &path, int rank,
                                             std::string &error) {
  auto fail = [&](const std::string &m) -> std::unique_ptr<LoadedPlan> {
    error = path + ": " + m;
    return nullptr;
  };
  std::unique_ptr<LoadedPlan> lp(new LoadedPlan());
  lp->fd_ = ::open(path.c_str(), O_RDONLY);
  if (lp->fd_ < 0)
    return fail(std::string("cannot open plan: ") + std::strerror(errno));
  struct stat st;
  if (fstat(lp->fd_, &st) != 0)
    return fail(std::string("cannot stat plan: ") + std::strerror(errno));
  uint64_t fileSize = st.st_size;
  Header h;
  std::memset(&h, 0, sizeof(h));
  ssize_t got = pread(lp->fd_, &h, sizeof(h), 0);
  if (got < ssize_t(sizeof(kMagic)) || std::memcmp(h.magic, kMagic, 8) != 0)
    return fail("not a moe plan (bad magic; expected \"MOEPLAN\")");
  if (fileSize < kHeaderSize || got != ssize_t(sizeof(h)))
    return fail("truncated plan (the file has " + std::to_string(fileSize) +
                " bytes, less than the 64-byte header)");
  if (h.version != kPlanVersion)
    return fail("plan format version " + std::to_string(h.version) +
                ", this moe-run reads version " +
                std::to_string(kPlanVersion) + " (recompile with this moec)");
  if (h.manifestOffset != kHeaderSize ||
      h.manifestOffset + h.manifestSize > fileSize)
    return fail("truncated plan (the manifest runs past the end of the file)");
  if (h.dataOffset < h.manifestOffset + h.manifestSize ||
      h.dataOffset % kPage != 0 || h.dataOffset + h.dataSize > fileSize)
    return fail("truncated plan (the weights need " +
                std::to_string(h.dataOffset + h.dataSize) +
                " bytes, the file has " + std::to_string(fileSize) + ")");
  std::string manifest(h.manifestSize, '\0');
  if (pread(lp->fd_, manifest.data(), manifest.size(), h.manifestOffset) !=
      ssize_t(manifest.size()))
    return fail("cannot read the manifest");
  if (fnv1a(manifest.data(), manifest.size()) != h.checksum)
    return fail("corrupt plan (manifest checksum mismatch)");
  Json j;
  std::string jerr;
  if (!Json::parse(manifest, j, jerr))
    return fail("corrupt manifest: " + jerr);
  if (!fromJson(j, lp->plan_, jerr))
    return fail(jerr);
  if (lp->plan_.version != h.version)
    return fail("manifest version " + std::to_string(lp->plan_.version) +
                " differs from the header's " + std::to_string(h.version));
  if (!verifyPlan(lp->plan_, jerr))
    return fail("invalid plan: " + jerr);
  for (const Segment &s : lp->plan_.segments)
    if (s.offset + s.size > h.dataSize)
      return fail("segment '" + s.name + "' lies outside the data region");
  lp->maps_.assign(lp->plan_.segments.size(), {nullptr, 0});
  lp->segBase_.assign(lp->plan_.segments.size(), nullptr);
  if (rank < 0)
    return lp;
  lp->rank_ = rank;
  if (rank >= lp->plan_.worldSize())
    return fail("rank " + std::to_string(rank) + " is outside the plan's " +
                std::to_string(lp->plan_.worldSize()) + " ranks");
  for (size_t i = 0; i < lp->plan_.segments.size(); ++i) {
    const Segment &s = lp->plan_.segments[i];
    bool mine = s.ranks.empty();
    for (int32_t r : s.ranks)
      mine |= r == rank;
    if (!mine || s.size == 0)
      continue;
    uint64_t off = h.dataOffset + s.offset; // page aligned
    void *p = mmap(nullptr, s.size, PROT_READ, MAP_PRIVATE, lp->fd_, off);
    if (p == MAP_FAILED)
      return fail("cannot map segment '" + s.name +
                  "': " + std::strerror(errno));
    lp->maps_[i] = {p, s.size};
    lp->segBase_[i] = static_cast<const char *>(p);
    lp->mappedBytes_ += s.size;
  }
  return lp;
}

const char *LoadedPlan::codeData(const DataRef &d) const {
  if (d.segment < 0 || d.segment >= int32_t(segBase_.size()) ||
      !segBase_[d.segment])
    return nullptr;
  return segBase_[d.segment] + d.offset;
}

const void *LoadedPlan::constantData(const Value &v) const {
  if (v.kind != ValueKind::constant || v.data.empty())
    return nullptr;
  // One entry is shared by every rank; otherwise entry r is rank r's.
  if (v.data.size() > 1 && (rank_ < 0 || size_t(rank_) >= v.data.size()))
    return nullptr;
  const DataRef &d = v.data.size() == 1 ? v.data[0] : v.data[rank_];
  if (d.segment < 0 || d.segment >= int32_t(segBase_.size()) ||
      !segBase_[d.segment])
    return nullptr;
  return segBase_[d.segment] + d.offset;
}

std::string moert::describePlan(const Plan &p) {
  std::ostringstream os;
  os << "moe plan v" << p.version << " by " << p.producer << " from "
     << p.source << "\n";
  os << "mesh:";
  for (const MeshAxis &a : p.mesh)
    os << " " << a.name << "=" << a.size;
  os << " (" << p.worldSize() << " ranks), arena " << p.arenaBytes
     << " bytes per rank\n";
  auto shape = [](const std::vector<int64_t> &s) {
    std::string r = "[";
    for (size_t i = 0; i < s.size(); ++i)
      r += (i ? "x" : "") + std::to_string(s[i]);
    return r + "]";
  };
  // Split inputs/outputs: rows of the dims 0..axis (flattened) in equal
  // contiguous blocks over the named axes.
  auto split = [](const ModelIO &m, const char *whole) {
    if (m.split.axis < 0)
      return std::string(whole);
    std::string axes;
    for (const std::string &a : m.split.over)
      axes += (axes.empty() ? "" : ",") + a;
    return " split over " + axes + " (rows of dims 0.." +
           std::to_string(m.split.axis) + ")";
  };
  for (const ModelIO &m : p.inputs)
    os << "input  " << m.name << ": " << dtypeName(m.dtype) << shape(m.shape)
       << split(m, " replicated") << " -> v" << m.value << "\n";
  for (const ModelIO &m : p.outputs)
    os << "output " << m.name << ": " << dtypeName(m.dtype) << shape(m.shape)
       << split(m, " from rank 0") << " <- v" << m.value << "\n";
  os << "segments:\n";
  for (const Segment &s : p.segments) {
    os << "  " << s.name << ": " << s.size << " bytes, ";
    if (s.ranks.empty())
      os << "every rank\n";
    else {
      os << "rank";
      for (int32_t r : s.ranks)
        os << " " << r;
      os << "\n";
    }
  }
  os << "weights mapped per rank:";
  for (int64_t r = 0; r < p.worldSize(); ++r) {
    uint64_t bytes = 0;
    for (const Segment &s : p.segments) {
      bool mine = s.ranks.empty();
      for (int32_t x : s.ranks)
        mine |= x == r;
      bytes += mine ? s.size : 0;
    }
    os << (r ? ", " : " ") << "rank" << r << " " << bytes;
    if (r == 15 && p.worldSize() > 17) {
      os << ", ...";
      break;
    }
  }
  os << " bytes\n";
  os << "values:\n";
  for (const Value &v : p.values) {
    os << "  v" << v.id << " " << kindName(v.kind) << " " << dtypeName(v.dtype)
       << shape(v.shape);
    if (v.kind == ValueKind::constant)
      os << (v.data.size() == 1 ? " shared" : " per rank");
    else
      os << " @" << v.offset;
    if (!v.name.empty())
      os << "  (" << v.name << ")";
    os << "\n";
  }
  if (!p.kernels.empty()) {
    os << "kernels (generated):";
    for (const KernelCode &k : p.kernels)
      os << " " << k.name << "/" << k.numArgs;
    os << "\n  code: cpu " << (p.cpuCode.segment < 0 ? 0 : p.cpuCode.bytes)
       << " bytes, ptx " << (p.ptxCode.segment < 0 ? 0 : p.ptxCode.bytes)
       << " bytes\n";
  }
  os << "steps:\n";
  for (size_t i = 0; i < p.steps.size(); ++i) {
    const Step &s = p.steps[i];
    os << "  " << i << ": " << s.op << "(";
    for (size_t k = 0; k < s.inputs.size(); ++k)
      os << (k ? ", " : "") << (s.inputs[k] < 0 ? "-" : "v" + std::to_string(s.inputs[k]));
    os << ") -> ";
    for (size_t k = 0; k < s.outputs.size(); ++k)
      os << (k ? ", " : "") << "v" << s.outputs[k];
    for (auto &[k, a] : s.attrs) {
      os << " " << k << "=";
      switch (a.kind) {
      case Attr::Int:
        os << a.i;
        break;
      case Attr::Float:
        os << a.f;
        break;
      case Attr::String:
        os << a.s;
        break;
      case Attr::IntList: {
        os << "[";
        for (size_t x = 0; x < a.list.size() && x < 16; ++x)
          os << (x ? "," : "") << a.list[x];
        if (a.list.size() > 16)
          os << ",...(" << a.list.size() << ")";
        os << "]";
        break;
      }
      }
    }
    if (!s.loc.empty())
      os << "  @ " << s.loc;
    os << "\n";
  }
  return os.str();
}
