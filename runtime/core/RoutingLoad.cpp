//===- RoutingLoad.cpp - the expert load file (routing counts) ------------===//

#include "moert/RoutingLoad.h"

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

using namespace moert;
using nlohmann::json;

std::string RoutingLoad::toJson() const {
  json layersJson = json::array();
  for (const RoutingLayer &l : layers) {
    json counts = json::array();
    for (double c : l.tokensPerExpert) {
      // Token counts are integers; others (a hand-written weight) as given.
      if (std::nearbyint(c) == c && std::fabs(c) < 9.2e18)
        counts.push_back(int64_t(c));
      else
        counts.push_back(c);
    }
    json o = json::object();
    if (l.step)
      o["step"] = *l.step;
    if (l.loc)
      o["loc"] = *l.loc;
    o["tokens_per_expert"] = std::move(counts);
    if (!l.rowsSent.empty())
      o["rows_sent"] = l.rowsSent;
    layersJson.push_back(std::move(o));
  }
  json j = {{"layers", std::move(layersJson)}};
  return j.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

bool RoutingLoad::parse(const std::string &text, const std::string &name,
                        RoutingLoad &out, std::string &error) {
  std::string file = "expert load file '" + name + "'";
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error &e) {
    // "[json.exception.parse_error.101] parse error at line 1, ..."
    std::string what = e.what();
    size_t tag = what.find("] ");
    error = file + " is not valid JSON: " +
            (tag == std::string::npos ? what : what.substr(tag + 2));
    return false;
  }
  auto layers = j.is_object() ? j.find("layers") : j.end();
  if (!j.is_object() || layers == j.end() || !layers->is_array()) {
    error = file + ": expected an object with a \"layers\" array";
    return false;
  }
  RoutingLoad load;
  for (size_t i = 0; i < layers->size(); ++i) {
    const json &lj = (*layers)[i];
    std::string layer = file + ": layer " + std::to_string(i);
    auto counts = lj.is_object() ? lj.find("tokens_per_expert") : lj.end();
    if (!lj.is_object() || counts == lj.end() || !counts->is_array()) {
      error = layer + " has no \"tokens_per_expert\" array";
      return false;
    }
    RoutingLayer l;
    for (const json &c : *counts) {
      if (!c.is_number() || c.get<double>() < 0) {
        error = layer + " has a count that is not a number >= 0";
        return false;
      }
      l.tokensPerExpert.push_back(c.get<double>());
    }
    if (auto s = lj.find("step"); s != lj.end()) {
      if (!s->is_number_integer()) {
        error = layer + ": \"step\" is not an integer";
        return false;
      }
      l.step = s->get<int64_t>();
    }
    if (auto s = lj.find("loc"); s != lj.end()) {
      if (!s->is_string()) {
        error = layer + ": \"loc\" is not a string";
        return false;
      }
      l.loc = s->get<std::string>();
    }
    if (auto m = lj.find("rows_sent"); m != lj.end()) {
      bool ok = m->is_array() && !m->empty();
      for (size_t r = 0; ok && r < m->size(); ++r) {
        const json &row = (*m)[r];
        ok = row.is_array() && row.size() == m->size();
        std::vector<int64_t> counts;
        for (size_t c = 0; ok && c < row.size(); ++c) {
          ok = row[c].is_number_integer() && row[c].get<int64_t>() >= 0;
          if (ok)
            counts.push_back(row[c].get<int64_t>());
        }
        l.rowsSent.push_back(std::move(counts));
      }
      if (!ok) {
        error = layer + ": \"rows_sent\" is not a square matrix of "
                        "integers >= 0";
        return false;
      }
    }
    load.layers.push_back(std::move(l));
  }
  out = std::move(load);
  return true;
}

bool moert::readRoutingLoad(const std::string &path, RoutingLoad &out,
                            std::string &error) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  if (in)
    text << in.rdbuf();
  if (!in) {
    error =
        "cannot read expert load file '" + path + "': " + std::strerror(errno);
    return false;
  }
  return RoutingLoad::parse(text.str(), path, out, error);
}

bool moert::writeRoutingLoad(const std::string &path, const RoutingLoad &load,
                             std::string &error) {
  std::string text = load.toJson();
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (f)
    f.write(text.data(), std::streamsize(text.size()));
  if (f)
    f.close();
  if (!f) {
    error =
        "cannot write expert load file '" + path + "': " + std::strerror(errno);
    return false;
  }
  return true;
}
