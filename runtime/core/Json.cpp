//===- Json.cpp - a small JSON value, parser and writer -------------------===//

#include "moert/Json.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

using namespace moert;

static void escape(const std::string &s, std::string &out) {
  out += '"';
  for (char c : s) {
    switch (c) {
    case '"':
      out += "\\\"";
      break;
    case '\\':
      out += "\\\\";
      break;
    case '\n':
      out += "\\n";
      break;
    case '\t':
      out += "\\t";
      break;
    case '\r':
      out += "\\r";
      break;
    default:
      if ((unsigned char)c < 0x20) {
        char buf[8];
        snprintf(buf, sizeof(buf), "\\u%04x", c);
        out += buf;
      } else {
        out += c;
      }
    }
  }
  out += '"';
}

void Json::dumpTo(std::string &out, int indent, int depth) const {
  auto newline = [&](int d) {
    if (indent < 0)
      return;
    out += '\n';
    out.append(size_t(indent * d), ' ');
  };
  switch (kind_) {
  case Null:
    out += "null";
    break;
  case Bool:
    out += b_ ? "true" : "false";
    break;
  case Int:
    out += std::to_string(i_);
    break;
  case Double: {
    if (!std::isfinite(d_)) {
      out += "null";
      break;
    }
    char buf[32];
    snprintf(buf, sizeof(buf), "%.17g", d_);
    out += buf;
    break;
  }
  case String:
    escape(s_, out);
    break;
  case Array: {
    out += '[';
    bool first = true;
    for (const Json &v : a_) {
      if (!first)
        out += ',';
      first = false;
      newline(depth + 1);
      v.dumpTo(out, indent, depth + 1);
    }
    if (!a_.empty())
      newline(depth);
    out += ']';
    break;
  }
  case Object: {
    out += '{';
    bool first = true;
    for (auto &[k, v] : o_) {
      if (!first)
        out += ',';
      first = false;
      newline(depth + 1);
      escape(k, out);
      out += indent < 0 ? ":" : ": ";
      v.dumpTo(out, indent, depth + 1);
    }
    if (!o_.empty())
      newline(depth);
    out += '}';
    break;
  }
  }
}

std::string Json::dump(int indent) const {
  std::string s;
  dumpTo(s, indent, 0);
  return s;
}

namespace {
struct Parser {
  const std::string &t;
  size_t p = 0;
  std::string err;

  bool fail(const std::string &what) {
    if (err.empty())
      err = "byte " + std::to_string(p) + ": " + what;
    return false;
  }
  void ws() {
    while (p < t.size() && (t[p] == ' ' || t[p] == '\n' || t[p] == '\t' ||
                            t[p] == '\r'))
      ++p;
  }
  bool lit(const char *word) {
    size_t n = strlen(word);
    if (t.compare(p, n, word) != 0)
      return fail(std::string("expected '") + word + "'");
    p += n;
    return true;
  }
  bool str(std::string &out) {
    if (p >= t.size() || t[p] != '"')
      return fail("expected a string");
    ++p;
    while (p < t.size() && t[p] != '"') {
      char c = t[p++];
      if (c != '\\') {
        out += c;
        continue;
      }
      if (p >= t.size())
        break;
      char e = t[p++];
      switch (e) {
      case 'n':
        out += '\n';
        break;
      case 't':
        out += '\t';
        break;
      case 'r':
        out += '\r';
        break;
      case 'b':
        out += '\b';
        break;
      case 'f':
        out += '\f';
        break;
      case 'u': {
        if (p + 4 > t.size())
          return fail("truncated \\u escape");
        unsigned v = std::strtoul(t.substr(p, 4).c_str(), nullptr, 16);
        p += 4;
        if (v < 0x80) {
          out += char(v);
        } else if (v < 0x800) {
          out += char(0xC0 | (v >> 6));
          out += char(0x80 | (v & 0x3F));
        } else {
          out += char(0xE0 | (v >> 12));
          out += char(0x80 | ((v >> 6) & 0x3F));
          out += char(0x80 | (v & 0x3F));
        }
        break;
      }
      default:
        out += e;
      }
    }
    if (p >= t.size())
      return fail("unterminated string");
    ++p;
    return true;
  }
  bool value(Json &out, int depth) {
    if (depth > 64)
      return fail("nesting too deep");
    ws();
    if (p >= t.size())
      return fail("unexpected end of input");
    char c = t[p];
    if (c == '{') {
      ++p;
      out = Json::object();
      ws();
      if (p < t.size() && t[p] == '}') {
        ++p;
        return true;
      }
      while (true) {
        ws();
        std::string key;
        if (!str(key))
          return false;
        ws();
        if (p >= t.size() || t[p] != ':')
          return fail("expected ':'");
        ++p;
        if (!value(out[key], depth + 1))
          return false;
        ws();
        if (p < t.size() && t[p] == ',') {
          ++p;
          continue;
        }
        if (p < t.size() && t[p] == '}') {
          ++p;
          return true;
        }
        return fail("expected ',' or '}'");
      }
    }
    if (c == '[') {
      ++p;
      out = Json::array();
      ws();
      if (p < t.size() && t[p] == ']') {
        ++p;
        return true;
      }
      while (true) {
        Json v;
        if (!value(v, depth + 1))
          return false;
        out.push(std::move(v));
        ws();
        if (p < t.size() && t[p] == ',') {
          ++p;
          continue;
        }
        if (p < t.size() && t[p] == ']') {
          ++p;
          return true;
        }
        return fail("expected ',' or ']'");
      }
    }
    if (c == '"') {
      std::string s;
      if (!str(s))
        return false;
      out = Json(std::move(s));
      return true;
    }
    if (c == 't') {
      out = Json(true);
      return lit("true");
    }
    if (c == 'f') {
      out = Json(false);
      return lit("false");
    }
    if (c == 'n') {
      out = Json();
      return lit("null");
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
      size_t start = p;
      bool isDouble = false;
      if (t[p] == '-')
        ++p;
      while (p < t.size() && ((t[p] >= '0' && t[p] <= '9') || t[p] == '.' ||
                              t[p] == 'e' || t[p] == 'E' || t[p] == '+' ||
                              t[p] == '-')) {
        if (t[p] == '.' || t[p] == 'e' || t[p] == 'E')
          isDouble = true;
        ++p;
      }
      std::string num = t.substr(start, p - start);
      char *end = nullptr;
      if (isDouble) {
        double d = std::strtod(num.c_str(), &end);
        if (*end)
          return fail("bad number '" + num + "'");
        out = Json(d);
      } else {
        long long v = std::strtoll(num.c_str(), &end, 10);
        if (*end || num == "-")
          return fail("bad number '" + num + "'");
        out = Json(int64_t(v));
      }
      return true;
    }
    return fail(std::string("unexpected character '") + c + "'");
  }
};
} // namespace

bool Json::parse(const std::string &text, Json &out, std::string &error) {
  Parser ps{text, 0, {}};
  if (!ps.value(out, 0)) {
    error = ps.err;
    return false;
  }
  ps.ws();
  if (ps.p != text.size()) {
    ps.fail("trailing characters after the JSON value");
    error = ps.err;
    return false;
  }
  return true;
}
