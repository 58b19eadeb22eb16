//===- PlanDescribe.cpp - moe-run --describe: a plan as text -------------===//
//
// The text of `moe-run --describe`. Step attributes are printed from the
// schema's reflection tables (minireflect), so a new step kind needs no code
// here.
//
//===----------------------------------------------------------------------===//

#include "moert/Plan.h"

#include "flatbuffers/minireflect.h"

#include <algorithm>
#include <map>
#include <sstream>

using namespace moert;

namespace {
/// Collects a table's fields as name -> text: scalars, enum names, strings,
/// and integer lists (the first 16 elements, then the count).
class AttrPrinter : public flatbuffers::IterationVisitor {
public:
  std::map<std::string, std::string> fields;

  void Field(size_t, size_t, flatbuffers::ElementaryType, bool,
             const flatbuffers::TypeTable *, const char *name,
             const uint8_t *val) override {
    cur_ = val && name ? &fields[name] : nullptr;
    list_ = 0;
  }
  void StartVector() override { put("["); }
  void EndVector() override {
    if (list_ > 16)
      put(",...(" + std::to_string(list_) + ")");
    put("]");
  }
  void Element(size_t i, flatbuffers::ElementaryType,
               const flatbuffers::TypeTable *, const uint8_t *) override {
    list_ = i + 1;
  }
  void Bool(bool x) override { scalar(x ? "1" : "0"); }
  void Char(int8_t x, const char *n) override { num(x, n); }
  void UChar(uint8_t x, const char *n) override { num(x, n); }
  void Short(int16_t x, const char *n) override { num(x, n); }
  void UShort(uint16_t x, const char *n) override { num(x, n); }
  void Int(int32_t x, const char *n) override { num(x, n); }
  void UInt(uint32_t x, const char *n) override { num(x, n); }
  void Long(int64_t x) override { num(x, nullptr); }
  void ULong(uint64_t x) override { num(x, nullptr); }
  void Float(float x) override { real(x); }
  void Double(double x) override { real(x); }
  void String(const flatbuffers::String *s) override { scalar(s->str()); }

private:
  void put(const std::string &s) {
    if (cur_)
      *cur_ += s;
  }
  /// Inside a list, elements after the 16th are counted, not printed.
  void scalar(const std::string &s) {
    if (list_ > 16)
      return;
    put((list_ > 1 ? "," : "") + s);
  }
  template <typename T> void num(T x, const char *enumName) {
    scalar(enumName ? std::string(enumName) : std::to_string(x));
  }
  void real(double x) {
    std::ostringstream os;
    os << x;
    scalar(os.str());
  }
  std::string *cur_ = nullptr;
  size_t list_ = 0;
};

/// A step's attributes by name, in name order.
std::map<std::string, std::string> attributes(const Step &s) {
  if (s.kind() == StepKind::NONE || s.kind() > StepKind::MAX)
    return {};
  flatbuffers::FlatBufferBuilder b;
  b.ForceDefaults(true); // print every field, defaults included
  b.Finish(s.attrs.Pack(b));
  const flatbuffers::TypeTable *union_ = fb::StepAttrsTypeTable();
  int16_t ref = union_->type_codes[size_t(s.kind())].sequence_ref;
  AttrPrinter p;
  flatbuffers::IterateFlatBuffer(b.GetBufferPointer(), union_->type_refs[ref](),
                                 &p);
  // Version 8's per-call capacity, at its default (off): left out, so a
  // static plan reads as before.
  if (auto it = p.fields.find("capacity_factor");
      it != p.fields.end() && it->second == "0")
    p.fields.erase(it);
  return p.fields;
}
} // namespace

std::string moert::describePlan(const Plan &p) {
  std::ostringstream os;
  os << "moe plan v" << p.version << " by " << p.producer << " from "
     << p.source << "\n";
  os << "mesh:";
  for (const MeshAxis &a : p.mesh)
    os << " " << a.name << "=" << a.size;
  os << " (" << p.worldSize() << " ranks), arena " << p.arenaBytes
     << " bytes per rank\n";
  for (const Symbol &s : p.symbols)
    os << "symbol " << (s.min > 0 ? std::to_string(s.min) + " <= " : "")
       << s.name << " <= " << s.max
       << " (dims: t this rank's rows, tb the block bound, T the total)\n";
  // A symbolic dim prints as its expression and its size at the maximum,
  // e.g. (t<=8) or (2*tb+1<=17); a boxed value's box may reach past that
  // size (`boxed`: the size printed is the expression's, the box apart).
  const int64_t max = p.symbols.empty() ? 0 : p.symbols[0].max;
  auto shape = [max](const std::vector<int64_t> &s,
                     const std::vector<SymDim> &sym = {}, bool boxed = false) {
    std::string r = "[";
    for (size_t i = 0; i < s.size(); ++i) {
      std::string d = std::to_string(s[i]);
      for (const SymDim &x : sym)
        if (x.dim == int32_t(i))
          d = "(" + (x.a == 1 ? "" : std::to_string(x.a) + "*") +
              symKindName(x.sym) + (x.b ? "+" + std::to_string(x.b) : "") +
              "<=" +
              (boxed ? std::to_string(std::min(x.a * max + x.b, s[i])) : d) +
              ")";
      r += (i ? "x" : "") + d;
    }
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
    os << "input  " << m.name << ": " << dtypeName(m.dtype)
       << shape(m.shape, m.symDims) << split(m, " replicated") << " -> v"
       << m.value << "\n";
  for (const ModelIO &m : p.outputs)
    os << "output " << m.name << ": " << dtypeName(m.dtype)
       << shape(m.shape, m.symDims) << split(m, " from rank 0") << " <- v"
       << m.value << "\n";
  os << "segments:\n";
  for (const Segment &s : p.segments) {
    os << "  " << s.name << ": " << s.size << " bytes, ";
    if (s.ranks.empty())
      os << "every rank";
    else {
      os << "rank";
      for (int32_t r : s.ranks)
        os << " " << r;
      if (!s.file.empty())
        os << ", file " << s.file;
    }
    // Where its bytes are in its file's data region (docs/plan-format.md).
    os << ", offset " << s.offset << "\n";
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
    os << "  v" << v.id << " " << fb::EnumNameValueKind(v.kind) << " "
       << dtypeName(v.dtype) << shape(v.shape, v.symDims, v.boxed);
    // Kept in place (Value::boxed): at the strides of its box, the
    // plan's shape, whatever the call's sizes.
    std::string box = shape(v.shape);
    box = " in place (box " + box.substr(1, box.size() - 2) + ")";
    if (v.kind == ValueKind::constant)
      os << (v.data.size() == 1 ? " shared" : " per rank");
    else if (v.outside)
      os << " outside the arena" << (v.boxed ? "," + box : "");
    else
      os << " @" << v.offset;
    if (v.root >= 0)
      os << " view of v" << v.root << (v.boxed ? "," + box : "");
    if (!v.name.empty())
      os << "  (" << v.name << ")";
    os << "\n";
  }
  if (!p.kernels.empty()) {
    os << "kernels (generated):";
    for (const KernelCode &k : p.kernels)
      os << " " << k.name << "/" << k.numArgs << (k.symbolic ? "(t)" : "");
    os << "\n  code: cpu " << (p.cpuCode.segment < 0 ? 0 : p.cpuCode.bytes)
       << " bytes, ptx " << (p.ptxCode.segment < 0 ? 0 : p.ptxCode.bytes)
       << " bytes\n";
    for (const KernelCode &k : p.kernels)
      for (const GpuLaunchCode &l : k.launches)
        os << "  launch " << l.function << " grid [" << l.grid[0] << ", "
           << l.grid[1] << ", " << l.grid[2] << "] block [" << l.block[0]
           << ", " << l.block[1] << ", " << l.block[2] << "]\n";
  }
  os << "steps:\n";
  for (size_t i = 0; i < p.steps.size(); ++i) {
    const Step &s = p.steps[i];
    os << "  " << i << ": " << s.op() << "(";
    for (size_t k = 0; k < s.inputs.size(); ++k)
      os << (k ? ", " : "")
         << (s.inputs[k] < 0 ? "-" : "v" + std::to_string(s.inputs[k]));
    os << ") -> ";
    for (size_t k = 0; k < s.outputs.size(); ++k)
      os << (k ? ", " : "") << "v" << s.outputs[k];
    for (const auto &[name, text] : attributes(s))
      os << " " << name << "=" << text;
    if (!s.loc.empty())
      os << "  @ " << s.loc;
    os << "\n";
  }
  return os.str();
}
