//===- Json.h - a small JSON value, parser and writer ------------*- C++ -*-===//
//
// The plan manifest and moe-run's reports are JSON. The runtime has no
// third-party dependency (the GPU machines have only the CUDA toolkit), so it
// carries this small implementation: values, a parser that reports the byte
// offset of a syntax error, and a writer.
//
//===----------------------------------------------------------------------===//

#ifndef MOERT_JSON_H
#define MOERT_JSON_H

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace moert {

class Json {
public:
  enum Kind { Null, Bool, Int, Double, String, Array, Object };

  Json() = default;
  Json(bool b) : kind_(Bool), b_(b) {}
  Json(int v) : kind_(Int), i_(v) {}
  Json(int64_t v) : kind_(Int), i_(v) {}
  Json(uint64_t v) : kind_(Int), i_(int64_t(v)) {}
  Json(double v) : kind_(Double), d_(v) {}
  Json(const char *s) : kind_(String), s_(s) {}
  Json(std::string s) : kind_(String), s_(std::move(s)) {}
  static Json array() {
    Json j;
    j.kind_ = Array;
    return j;
  }
  static Json object() {
    Json j;
    j.kind_ = Object;
    return j;
  }

  Kind kind() const { return kind_; }
  bool isNumber() const { return kind_ == Int || kind_ == Double; }
  bool asBool() const { return b_; }
  int64_t asInt() const { return kind_ == Int ? i_ : int64_t(d_); }
  double asDouble() const { return kind_ == Int ? double(i_) : d_; }
  const std::string &asString() const { return s_; }
  const std::vector<Json> &items() const { return a_; }
  const std::map<std::string, Json> &members() const { return o_; }

  /// Array append / object member access (creating it).
  Json &push(Json v) {
    a_.push_back(std::move(v));
    return a_.back();
  }
  Json &operator[](const std::string &key) { return o_[key]; }
  /// The member `key` of an object, or null when absent.
  const Json *get(const std::string &key) const {
    auto it = o_.find(key);
    return it == o_.end() ? nullptr : &it->second;
  }

  /// Compact (indent < 0) or pretty text.
  std::string dump(int indent = -1) const;

  /// Parses `text`. On failure returns false and sets `error` to
  /// "byte N: what".
  static bool parse(const std::string &text, Json &out, std::string &error);

private:
  void dumpTo(std::string &out, int indent, int depth) const;
  Kind kind_ = Null;
  bool b_ = false;
  int64_t i_ = 0;
  double d_ = 0;
  std::string s_;
  std::vector<Json> a_;
  std::map<std::string, Json> o_;
};

} // namespace moert

#endif // MOERT_JSON_H
