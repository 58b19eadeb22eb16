//===- PlanHtml.cpp - the plan as one self-contained HTML page ------------===//
//
// Every figure comes from the ShardReport (the one `--report=json` prints)
// and, with --routing, from the expert load file; the page carries the
// report's JSON too. Figures are printed readable and, for tests, exact in
// `data-value` attributes keyed like the JSON (`data-key`). Strings from the
// model (layer locations) are escaped; the script only reads the page.
//
//===----------------------------------------------------------------------===//

#include "moec/Analysis/PlanHtml.h"
#include "PlanHtmlAssets.h"

#include "moert/RoutingLoad.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/Format.h"

#include <algorithm>
#include <cmath>

using namespace moec;
using llvm::StringRef;

std::string moec::htmlEscape(StringRef s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
    case '&':
      out += "&amp;";
      break;
    case '<':
      out += "&lt;";
      break;
    case '>':
      out += "&gt;";
      break;
    case '"':
      out += "&quot;";
      break;
    case '\'':
      out += "&#39;";
      break;
    default:
      out += c;
    }
  }
  return out;
}

bool moec::checkRoutingFitsReport(const ShardReport &r,
                                  const moert::RoutingLoad &load,
                                  StringRef file, std::string &error) {
  std::string what = "--routing '" + file.str() + "'";
  if (load.layers.size() != r.layers.size()) {
    error = what + " has " + std::to_string(load.layers.size()) +
            " MoE layer(s), the model " + std::to_string(r.layers.size()) +
            " (a routing file of another model?)";
    return false;
  }
  for (auto [i, l] : llvm::enumerate(load.layers)) {
    std::string layer = what + ": layer " + std::to_string(i);
    if (int64_t(l.tokensPerExpert.size()) != r.layers[i].experts) {
      error = layer + " counts " + std::to_string(l.tokensPerExpert.size()) +
              " experts, the model's layer has " +
              std::to_string(r.layers[i].experts);
      return false;
    }
    if (!l.rowsSent.empty() && int64_t(l.rowsSent.size()) != r.worldSize) {
      error = layer + ": its token flow is over " +
              std::to_string(l.rowsSent.size()) + " ranks, the mesh has " +
              std::to_string(r.worldSize) +
              " (record the routing with a plan for the same mesh)";
      return false;
    }
  }
  return true;
}

namespace {

/// An exact figure: integers as integers, others with full precision.
std::string exact(double v) {
  if (std::nearbyint(v) == v && std::fabs(v) < 9e15)
    return std::to_string(int64_t(v));
  std::string s;
  llvm::raw_string_ostream(s) << llvm::format("%.17g", v);
  return s;
}

std::string fixed(double v, int digits) {
  std::string s;
  llvm::raw_string_ostream(s) << llvm::format("%.*f", digits, v);
  return s;
}

/// "2.00 KiB (2048 B)" with the exact bytes in data-value under `key`.
std::string bytes(StringRef key, double b) {
  std::string s = "<span class=\"fig\" data-key=\"" + key.str() +
                  "\" data-value=\"" + exact(b) + "\">" + formatBytes(b);
  if (b >= 1024)
    s += " <small>(" + exact(std::llround(b)) + " B)</small>";
  return s + "</span>";
}

/// A count with its key.
std::string count(StringRef key, double v) {
  return "<span class=\"fig\" data-key=\"" + key.str() + "\" data-value=\"" +
         exact(v) + "\">" + exact(v) + "</span>";
}

/// A stable colour per expert id, so that an expert and its replicas and
/// its bar in the routing chart match.
std::string expertHue(int64_t e) {
  return std::to_string(int64_t(std::fmod(double(e) * 137.508, 360.0)));
}

/// The mesh's axis names in coordinate order ("dp=2,ep=4" -> dp, ep).
std::vector<std::string> axisNames(StringRef mesh) {
  std::vector<std::string> names;
  llvm::SmallVector<StringRef> parts;
  mesh.split(parts, ',', -1, false);
  for (StringRef p : parts)
    names.push_back(p.split('=').first.trim().str());
  return names;
}

/// Runs of consecutive MoE layers whose placement is the same (a 48-layer
/// model with contiguous placement is one run): [first, last].
std::vector<std::pair<size_t, size_t>> placementRuns(const ShardReport &r) {
  std::vector<std::pair<size_t, size_t>> runs;
  for (size_t i = 0; i < r.layers.size(); ++i) {
    if (!runs.empty() && r.layers[i].held == r.layers[runs.back().second].held)
      runs.back().second = i;
    else
      runs.push_back({i, i});
  }
  return runs;
}

std::string layerRange(size_t first, size_t last) {
  return "data-layer-first=\"" + std::to_string(first) +
         "\" data-layer-last=\"" + std::to_string(last) + "\"";
}

std::string layerName(size_t first, size_t last) {
  if (first == last)
    return "layer " + std::to_string(first);
  return "layers " + std::to_string(first) + "&ndash;" + std::to_string(last);
}

/// How many EP ranks hold each expert of a layer.
std::vector<int64_t> replicaCounts(const LayerComm &l) {
  std::vector<int64_t> reps(l.experts, 0);
  for (const std::vector<int64_t> &h : l.held)
    for (int64_t e : h)
      if (e >= 0 && e < l.experts)
        ++reps[e];
  return reps;
}

class PageWriter {
public:
  PageWriter(const ShardReport &r, const PlanHtmlOptions &o,
             llvm::raw_ostream &os)
      : r(r), o(o), os(os) {}

  void write();

private:
  void writeSummary();
  void writeMesh();
  void writeRank(const RankMemory &m,
                 const std::vector<std::pair<size_t, size_t>> &runs);
  void writeTraffic();
  void writeSeedFormulas();
  void writeMemory();
  void writeRouting();
  void writeExpertLoad(size_t i, const LayerComm &l,
                       const moert::RoutingLayer &rl);
  void writeFlow(size_t i, const LayerComm &l, const moert::RoutingLayer &rl);

  const ShardReport &r;
  const PlanHtmlOptions &o;
  llvm::raw_ostream &os;
};

void PageWriter::write() {
  std::string title = "moec plan: " + htmlEscape(o.model);
  os << "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">"
     << "\n<meta name=\"viewport\" content=\"width=device-width\">\n<title>"
     << title << "</title>\n<style>\n"
     << kPlanHtmlStyle << "</style>\n</head>\n<body>\n<header>\n<h1>" << title
     << "</h1>\n<p class=\"flags\"><code>moec " << htmlEscape(o.flags)
     << "</code></p>\n</header>\n<main>\n";
  writeSummary();
  writeMesh();
  writeTraffic();
  writeSeedFormulas();
  writeMemory();
  if (o.routing)
    writeRouting();
  // The report as --report=json prints it: the page's data, for scripts and
  // for tests. "</" cannot end the element inside JSON strings as "<\/".
  std::string json;
  {
    llvm::raw_string_ostream js(json);
    printShardReport(r, js, /*json=*/true);
  }
  llvm::SmallString<0> safe;
  for (size_t i = 0; i < json.size(); ++i) {
    if (json[i] == '<' && i + 1 < json.size() && json[i + 1] == '/')
      safe += "<\\";
    else if (json[i] == '<' && i + 1 < json.size() && json[i + 1] == '!')
      safe += "\\u003c";
    else
      safe += json[i];
  }
  os << "</main>\n<footer>Drawn by moec from the report of "
        "<code>--report=json</code> (embedded below as "
        "<code>script#moec-report</code>); docs/sharding.md.</footer>\n"
     << "<script type=\"application/json\" id=\"moec-report\">\n"
     << safe << "</script>\n<script>\n"
     << kPlanHtmlScript << "</script>\n</body>\n</html>\n";
}

void PageWriter::writeSummary() {
  int64_t experts = r.layers.empty() ? 0 : r.layers[0].experts;
  bool same = llvm::all_of(
      r.layers, [&](const LayerComm &l) { return l.experts == experts; });
  size_t perRank = 0;
  if (!r.layers.empty())
    for (const std::vector<int64_t> &h : r.layers[0].held)
      perRank = std::max(perRank, h.size());
  os << "<section id=\"summary\" class=\"cards\">\n";
  auto card = [&](StringRef key, const std::string &value, StringRef what) {
    os << "<div class=\"card\" data-key=\"" << key << "\"><b>" << value
       << "</b><span>" << what << "</span></div>\n";
  };
  card("experts", same ? std::to_string(experts) : "varies",
       r.layers.size() > 1 ? "experts per MoE layer" : "experts");
  card("world_size", std::to_string(r.worldSize),
       r.worldSize == 1 ? "rank (GPU)" : "ranks (GPUs)");
  card("moe_layers", std::to_string(r.layers.size()), "MoE layers");
  card("experts_per_rank", std::to_string(perRank), "expert slots per rank");
  card("mesh", htmlEscape(r.mesh), "mesh (dp &times; ep &times; tp)");
  os << "</section>\n<p class=\"lead\">";
  if (r.layers.empty())
    os << "The model has no MoE layers: every rank runs the dense model.";
  else
    os << "Each MoE layer's experts are spread over the " << r.ep
       << " expert-parallel rank" << (r.ep == 1 ? "" : "s")
       << "; every rank keeps attention, embeddings, norms and routers"
       << (r.denseTp.ways > 1
               ? " (split " + std::to_string(r.denseTp.ways) + " ways over tp)"
               : " whole")
       << ". Each MoE layer is <i>route &rarr; dispatch all-to-all &rarr; "
          "local experts &rarr; combine all-to-all</i>.";
  if (!r.folding.empty())
    os << " Folding: " << htmlEscape(r.folding) << ".";
  if (r.tokenSplitMode != "model")
    os << " Token split: " << htmlEscape(r.tokenSplitMode)
       << " (sequence-parallel MoE layers)"
       << (r.tokenSplitReason.empty() ? std::string()
                                      : "; the whole model does not split: " +
                                            htmlEscape(r.tokenSplitReason))
       << ".";
  os << "</p>\n";
  if (r.layers.size() > 1)
    os << "<p class=\"controls\"><label>Show <select id=\"layer-select\">"
          "<option value=\"all\">all MoE layers</option></select></label>"
          "</p>\n";
}

void PageWriter::writeMesh() {
  std::vector<std::pair<size_t, size_t>> runs = placementRuns(r);
  int64_t perNode = o.gpusPerNode > 0 ? o.gpusPerNode : r.worldSize;
  os << "<section id=\"mesh\">\n<h2>The mesh: what each rank holds</h2>\n"
     << "<p>Ranks are numbered with tp innermost (a tp group is consecutive "
        "ranks of one node), dp outermost."
     << (o.gpusPerNode > 0 ? ""
                           : " All ranks are drawn as one node; "
                             "<code>--gpus-per-node</code> groups them.")
     << " Hover an expert to see its replicas.</p>\n<div class=\"nodes\">\n";
  for (int64_t first = 0; first < r.worldSize; first += perNode) {
    int64_t last = std::min(r.worldSize, first + perNode) - 1;
    os << "<div class=\"node\" data-node=\"" << first / perNode
       << "\">\n<div class=\"node-head\">node " << first / perNode
       << " <small>ranks " << first << "&ndash;" << last << "</small></div>\n"
       << "<div class=\"ranks\">\n";
    for (int64_t q = first; q <= last && q < int64_t(r.ranks.size()); ++q)
      writeRank(r.ranks[q], runs);
    os << "</div>\n</div>\n";
  }
  os << "</div>\n</section>\n";
}

void PageWriter::writeRank(const RankMemory &m,
                           const std::vector<std::pair<size_t, size_t>> &runs) {
  std::vector<std::string> axes = axisNames(r.mesh);
  os << "<div class=\"rank\" id=\"rank-" << m.rank << "\" data-rank=\""
     << m.rank << "\" data-ep-index=\"" << m.epIndex << "\">\n"
     << "<div class=\"rank-head\"><b>rank " << m.rank
     << "</b> <span class=\"coords\">";
  for (auto [i, c] : llvm::enumerate(m.coords))
    os << (i ? " " : "") << htmlEscape(i < axes.size() ? axes[i] : "axis")
       << "<sub>" << c << "</sub>";
  os << "</span></div>\n<div class=\"dense\">Attention, embeddings, norms, "
        "routers: "
     << (m.denseTpWeightBytes
             ? "1/" + std::to_string(r.denseTp.ways) + " tensor-parallel " +
                   bytes("dense_tp_weight_bytes", m.denseTpWeightBytes) +
                   " + whole "
             : "full copy, ")
     << bytes("replicated_weight_bytes", m.replicatedWeightBytes) << "</div>\n";
  for (auto [first, last] : runs) {
    const LayerComm &l = r.layers[first];
    std::vector<int64_t> reps = replicaCounts(l);
    std::string range = std::to_string(first) + "-" + std::to_string(last);
    os << "<div class=\"experts\" " << layerRange(first, last)
       << "><span class=\"lbl\">" << layerName(first, last)
       << (r.tp > 1 ? " &middot; 1/" + std::to_string(r.tp) +
                          " of each expert's FFN columns (tp)"
                    : std::string())
       << "</span>";
    const std::vector<int64_t> empty;
    const std::vector<int64_t> &held =
        m.epIndex < int64_t(l.held.size()) ? l.held[m.epIndex] : empty;
    for (int64_t e : held) {
      bool replica = e >= 0 && e < l.experts && reps[e] > 1;
      os << "<span class=\"expert" << (replica ? " replica" : "")
         << "\" data-expert=\"" << e << "\" data-layers=\"" << range
         << "\" style=\"--h:" << expertHue(e) << "\" title=\"expert " << e
         << (replica ? ", one of " + std::to_string(reps[e]) + " replicas"
                     : std::string())
         << "\">E" << e << (replica ? "<sup>&times;" : "")
         << (replica ? std::to_string(reps[e]) + "</sup>" : "") << "</span>";
    }
    if (held.empty())
      os << "<span class=\"none\">no experts</span>";
    os << "</div>\n";
  }
  os << "<div class=\"rank-mem\">weights "
     << bytes("weight_bytes", m.weightBytes) << ", activations "
     << bytes("activation_bytes", m.activationBytes) << "</div>\n</div>\n";
}

void PageWriter::writeTraffic() {
  if (r.layers.empty())
    return;
  os << "<section id=\"traffic\">\n<h2>Dispatch and combine per MoE "
        "layer</h2>\n<p>Each rank sends its T<sub>local</sub> tokens &times; "
        "top-k rows of H elements in the dispatch and takes the same back in "
        "the combine. The seed's <b>2&middot;B&middot;S&middot;H</b> counts "
        "top-1 with every token leaving its rank; the exact figures count "
        "top-k and the rows that stay on their rank (uniform routing).</p>\n"
     << "<table class=\"traffic\">\n<thead><tr><th>layer</th><th>experts, "
        "top-k, H</th><th>tokens (per rank)</th><th>dispatch per rank "
        "(combine the same)</th><th>all ranks, dispatch + combine</th>"
        "<th>between ranks</th><th>seed 2&middot;B&middot;S&middot;H</th>"
        "<th>other collectives per rank</th></tr></thead>\n<tbody>\n";
  for (auto [i, l] : llvm::enumerate(r.layers)) {
    int64_t seed = 2 * l.tokensGlobal * l.hidden * l.elementBytes;
    os << "<tr class=\"layer\" data-layer=\"" << i << "\" " << layerRange(i, i)
       << "><td>" << i << "<br><small class=\"loc\">" << htmlEscape(l.loc)
       << "</small></td><td>" << l.experts << ", top-" << l.topK
       << ", H=" << l.hidden << "</td><td>" << l.tokensGlobal << " ("
       << l.tokensPerRank << ")</td><td>"
       << bytes("dispatch_bytes_per_rank", l.dispatchBytesPerRank)
       << "<br><small>= " << l.tokensPerRank << " &times; " << l.topK
       << " &times; " << l.hidden << " &times; " << l.elementBytes
       << " B</small></td><td>"
       << bytes("all_to_all_bytes_total", l.a2aBytesTotal) << "</td><td>"
       << bytes("all_to_all_bytes_between_ranks", l.a2aBytesLeaving)
       << "<br><small>leave share";
    for (double s : l.leaveShare)
      os << " " << fixed(s, 3);
    os << "</small></td><td>" << bytes("seed_ep_bytes", seed)
       << "<br><small>= 2 &times; " << l.tokensGlobal << " &times; " << l.hidden
       << " &times; " << l.elementBytes << " B</small></td><td>";
    if (l.allReduceBytesPerRank)
      os << "tp all-reduce "
         << bytes("tp_all_reduce_bytes_per_rank", l.allReduceBytesPerRank)
         << "<br>";
    if (l.tokenGatherBytesPerRank)
      os << "row all-gather "
         << bytes("token_all_gather_bytes_per_rank", l.tokenGatherBytesPerRank);
    if (!l.allReduceBytesPerRank && !l.tokenGatherBytesPerRank)
      os << "&ndash;";
    os << "</td></tr>\n";
  }
  os << "</tbody>\n</table>\n";
  // Exact against the seed, as bars (the scale is the largest of the three).
  os << "<div class=\"a2a-bars\">\n";
  for (auto [i, l] : llvm::enumerate(r.layers)) {
    double seed = 2.0 * l.tokensGlobal * l.hidden * l.elementBytes;
    double bars[] = {seed, double(l.a2aBytesTotal), l.a2aBytesLeaving};
    const char *names[] = {"seed 2&middot;B&middot;S&middot;H",
                           "all ranks, dispatch + combine", "between ranks"};
    double top = std::max({bars[0], bars[1], bars[2], 1.0});
    os << "<svg class=\"bars\" " << layerRange(i, i)
       << " viewBox=\"0 0 560 86\" width=\"560\" height=\"86\" role=\"img\" "
          "aria-label=\"layer "
       << i << " bytes\"><text x=\"0\" y=\"12\" class=\"t\">layer " << i
       << "</text>";
    for (int b = 0; b < 3; ++b) {
      double w = 300.0 * bars[b] / top;
      int y = 20 + 22 * b;
      os << "<text x=\"0\" y=\"" << y + 13 << "\">" << names[b]
         << "</text><rect class=\"b" << b << "\" x=\"190\" y=\"" << y
         << "\" width=\"" << fixed(w, 1) << "\" height=\"16\"/><text x=\""
         << fixed(196 + w, 1) << "\" y=\"" << y + 13 << "\">"
         << formatBytes(bars[b]) << "</text>";
    }
    os << "</svg>\n";
  }
  os << "</div>\n</section>\n";
}

void PageWriter::writeSeedFormulas() {
  // Without MoE layers B*S*H is 0, as in the report's "seed" object.
  const LayerComm none;
  const LayerComm &l0 = r.layers.empty() ? none : r.layers[0];
  int64_t bsh =
      r.layers.empty() ? 0 : l0.tokensGlobal * l0.hidden * l0.elementBytes;
  int64_t L = r.layers.size();
  double a2a = 0, leaving = 0;
  for (const LayerComm &l : r.layers) {
    a2a += double(l.a2aBytesTotal);
    leaving += l.a2aBytesLeaving;
  }
  os << "<section id=\"formulas\">\n<h2>The seed's formulas for this model"
     << "</h2>\n<p>B&middot;S = " << l0.tokensGlobal
     << " tokens, H = " << l0.hidden << ", " << l0.elementBytes
     << "-byte elements, L = " << L << " MoE layer" << (L == 1 ? "" : "s")
     << ", P = " << r.params
     << " parameters.</p>\n<div class=\"cards formulas\">\n"
     << "<div class=\"card ep\"><span>Expert parallelism: all-to-all per MoE "
        "layer</span><b>2 &times; B &times; S &times; H</b>"
     << bytes("seed.ep_bytes_per_moe_layer", 2 * bsh)
     << "<small>exact, all layers: " << formatBytes(a2a)
     << " dispatched + combined, " << formatBytes(leaving)
     << " between ranks</small></div>\n"
     << "<div class=\"card tp\"><span>Tensor parallelism: all-reduce</span>"
        "<b>2 &times; B &times; S &times; H &times; L</b>"
     << bytes("seed.tp_bytes", 2 * bsh * L) << "<small>"
     << (r.tp > 1 || r.denseTp.ways > 1
             ? "exact: dense layers " +
                   formatBytes(r.denseTp.allReduceBytesPerRank) +
                   " all-reduce payload per rank per forward"
             : std::string("not used: tp=1"))
     << "</small></div>\n"
     << "<div class=\"card dp\"><span>Data parallelism: gradient sync per "
        "training step</span><b>2 &times; P</b>"
     << bytes("seed.dp_bytes_per_step", 2 * r.paramBytes)
     << "<small>training only: inference plans move no gradients</small>"
        "</div>\n</div>\n</section>\n";
}

void PageWriter::writeMemory() {
  double limit = double(o.deviceMemory);
  double top = std::max(limit, double(r.maxRankBytes()));
  top = std::max(top, 1.0);
  int rowH = 26, labelW = 90, barW = 520;
  int height = rowH * int(r.ranks.size()) + 30;
  os << "<section id=\"memory\">\n<h2>Memory per rank</h2>\n<p>Weights "
        "(experts, tensor-parallel dense blocks, what every rank holds "
        "whole) and peak activations";
  if (o.deviceMemory)
    os << " against <code>--device-memory " << htmlEscape(o.deviceMemoryText)
       << "</code> (" << bytes("device_memory", limit) << ")";
  os << ".</p>\n<svg class=\"mem\" viewBox=\"0 0 " << labelW + barW + 150 << " "
     << height << "\" width=\"" << labelW + barW + 150 << "\" height=\""
     << height << "\" role=\"img\" aria-label=\"memory per "
     << "rank\">\n";
  for (auto [i, m] : llvm::enumerate(r.ranks)) {
    int64_t total = m.weightBytes + m.activationBytes + m.dequantizedBytes;
    bool over = o.deviceMemory && total > o.deviceMemory;
    int y = 8 + rowH * int(i);
    os << "<g class=\"mem-row" << (over ? " over" : "") << "\" data-rank=\""
       << m.rank << "\" data-value=\"" << total << "\"><text x=\"0\" y=\""
       << y + 14 << "\">rank " << m.rank << "</text>";
    std::pair<const char *, int64_t> parts[] = {
        {"experts", m.expertWeightBytes},
        {"dense-tp", m.denseTpWeightBytes},
        {"replicated", m.replicatedWeightBytes},
        {"activations", m.activationBytes},
        {"dequantized", m.dequantizedBytes}};
    double x = labelW;
    for (auto [name, b] : parts) {
      if (!b)
        continue;
      double w = barW * double(b) / top;
      os << "<rect class=\"m-" << name << "\" x=\"" << fixed(x, 1) << "\" y=\""
         << y << "\" width=\"" << fixed(std::max(w, 0.5), 1)
         << "\" height=\"18\"><title>rank " << m.rank << " " << name << ": "
         << formatBytes(b) << "</title></rect>";
      x += w;
    }
    os << "<text x=\"" << fixed(x + 6, 1) << "\" y=\"" << y + 14 << "\">"
       << formatBytes(total) << (over ? " &#9888; does not fit" : "")
       << "</text></g>\n";
  }
  if (o.deviceMemory) {
    double lx = labelW + barW * limit / top;
    os << "<line class=\"limit\" x1=\"" << fixed(lx, 1) << "\" x2=\""
       << fixed(lx, 1) << "\" y1=\"2\" y2=\"" << height - 18
       << "\"/><text class=\"limit\" x=\"" << fixed(lx, 1) << "\" y=\""
       << height - 4 << "\" text-anchor=\"middle\">device memory "
       << formatBytes(limit) << "</text>\n";
  }
  os << "</svg>\n<p class=\"legend\"><i class=\"m-experts\"></i> experts "
        "<i class=\"m-dense-tp\"></i> tensor-parallel dense "
        "<i class=\"m-replicated\"></i> whole on every rank "
        "<i class=\"m-activations\"></i> activations "
        "<i class=\"m-dequantized\"></i> dequantized weights</p>\n"
     << "</section>\n";
}

void PageWriter::writeRouting() {
  os << "<section id=\"routing\">\n<h2>Measured routing</h2>\n<p>From <code>"
     << htmlEscape(o.routingFile)
     << "</code> (<code>moe-run --record-routing</code>): the assignments "
        "the router made to each expert, summed over ranks; experts with at "
        "least "
     << fixed(kHotExpertFactor, 1)
     << "&times; the mean are <span class=\"hot-key\">hot</span>. The token "
        "flow is the dispatch's rows from each rank to each rank (the "
        "diagonal stays on its rank).</p>\n";
  for (auto [i, l] : llvm::enumerate(r.layers)) {
    const moert::RoutingLayer &rl = o.routing->layers[i];
    os << "<div class=\"route-layer\" data-layer=\"" << i << "\" "
       << layerRange(i, i) << ">\n<h3>MoE layer " << i
       << " <small class=\"loc\">" << htmlEscape(l.loc) << "</small></h3>\n";
    os << "<div class=\"charts\">\n<div class=\"chart\"><div class=\"cap\">"
          "tokens per expert</div>\n";
    writeExpertLoad(i, l, rl);
    os << "</div>\n<div class=\"chart\"><div class=\"cap\">token flow: "
          "dispatch rows from rank to rank</div>\n";
    writeFlow(i, l, rl);
    os << "</div>\n</div>\n</div>\n";
  }
  os << "</section>\n";
}

void PageWriter::writeExpertLoad(size_t i, const LayerComm &l,
                                 const moert::RoutingLayer &rl) {
  const std::vector<double> &t = rl.tokensPerExpert;
  double sum = 0, top = 1;
  for (double c : t) {
    sum += c;
    top = std::max(top, c);
  }
  double mean = t.empty() ? 0 : sum / double(t.size());
  double bw =
      std::clamp(640.0 / double(std::max<size_t>(t.size(), 1)), 3.0, 40.0);
  int chartH = 120, width = int(bw * double(t.size())) + 60;
  os << "<svg class=\"load\" viewBox=\"0 0 " << width << " " << chartH + 30
     << "\" width=\"" << width << "\" height=\"" << chartH + 30
     << "\" role=\"img\" aria-label=\"tokens per expert, layer " << i
     << "\">\n";
  std::vector<int64_t> hot;
  for (auto [e, c] : llvm::enumerate(t)) {
    bool isHot = mean > 0 && c >= kHotExpertFactor * mean;
    if (isHot)
      hot.push_back(e);
    double h = chartH * c / top;
    os << "<rect class=\"tok" << (isHot ? " hot" : "") << "\" data-expert=\""
       << e << "\" data-value=\"" << exact(c) << "\" x=\""
       << fixed(bw * double(e), 1) << "\" y=\"" << fixed(chartH - h, 1)
       << "\" width=\"" << fixed(std::max(bw - 1, 1.0), 1) << "\" height=\""
       << fixed(h, 1) << "\" style=\"--h:" << expertHue(e)
       << "\"><title>expert " << e << ": " << exact(c) << " tokens"
       << (isHot ? " (hot)" : "") << "</title></rect>";
    if (t.size() <= 64)
      os << "<text x=\"" << fixed(bw * (double(e) + 0.5), 1) << "\" y=\""
         << chartH + 14 << "\" text-anchor=\"middle\">" << e << "</text>";
  }
  double my = chartH - chartH * mean / top;
  os << "\n<line class=\"mean\" x1=\"0\" x2=\"" << fixed(bw * t.size(), 1)
     << "\" y1=\"" << fixed(my, 1) << "\" y2=\"" << fixed(my, 1)
     << "\"/><text x=\"" << fixed(bw * t.size() + 4, 1) << "\" y=\""
     << fixed(my + 4, 1) << "\">mean " << fixed(mean, 1) << "</text>\n</svg>\n";
  // Who carries the hot experts, and each EP rank's share of the load
  // (an expert's tokens split evenly over its replicas, as dispatch does).
  std::vector<int64_t> reps = replicaCounts(l);
  os << "<p class=\"hot-list\">" << count("tokens", sum)
     << " assignments; hot: ";
  if (hot.empty())
    os << "none";
  for (auto [n, e] : llvm::enumerate(hot)) {
    os << (n ? ", " : "") << "<span class=\"hot-expert\" data-expert=\"" << e
       << "\">E" << e << "</span> (" << exact(t[e]) << ", ep rank";
    for (auto [q, h] : llvm::enumerate(l.held))
      if (llvm::is_contained(h, e))
        os << " " << q;
    os << ")";
  }
  os << "</p>\n<p class=\"ep-load\">load per ep rank:";
  double maxLoad = 0;
  for (auto [q, h] : llvm::enumerate(l.held)) {
    double load = 0;
    for (int64_t e : h)
      if (e >= 0 && e < int64_t(t.size()) && reps[e])
        load += t[e] / double(reps[e]);
    maxLoad = std::max(maxLoad, load);
    os << " <span data-ep=\"" << q << "\">ep" << q << " " << fixed(load, 1)
       << "</span>";
  }
  if (!l.held.empty() && sum > 0)
    os << "; max / mean " << fixed(maxLoad * double(l.held.size()) / sum, 2);
  os << "</p>\n";
}

void PageWriter::writeFlow(size_t i, const LayerComm &l,
                           const moert::RoutingLayer &rl) {
  const std::vector<std::vector<int64_t>> &f = rl.rowsSent;
  if (f.empty()) {
    os << "<p class=\"no-flow\">The file has no token flow "
          "(<code>rows_sent</code>); record it again with this moe-run.</p>\n";
    return;
  }
  int64_t n = f.size(), top = 1, all = 0, stay = 0;
  for (int64_t s = 0; s < n; ++s)
    for (int64_t d = 0; d < n; ++d) {
      top = std::max(top, f[s][d]);
      all += f[s][d];
      stay += s == d ? f[s][d] : 0;
    }
  int cell = n <= 8 ? 44 : n <= 16 ? 28 : std::max(6, int(512 / n));
  int pad = 56, size = pad + cell * int(n) + 8;
  os << "<svg class=\"flow-matrix\" viewBox=\"0 0 " << size << " " << size
     << "\" width=\"" << size << "\" height=\"" << size
     << "\" role=\"img\" aria-label=\"token flow, layer " << i
     << "\">\n<text x=\"" << pad << "\" y=\"12\">to rank &rarr;</text>"
     << "<text x=\"12\" y=\"" << pad << "\" transform=\"rotate(90 12 " << pad
     << ")\">from rank &rarr;</text>\n";
  for (int64_t s = 0; s < n; ++s) {
    for (int64_t d = 0; d < n; ++d) {
      int x = pad + cell * int(d), y = pad + cell * int(s);
      double a = 0.06 + 0.94 * double(f[s][d]) / double(top);
      os << "<rect class=\"cell" << (s == d ? " local" : "") << "\" data-src=\""
         << s << "\" data-dst=\"" << d << "\" data-rows=\"" << f[s][d]
         << "\" x=\"" << x << "\" y=\"" << y << "\" width=\"" << cell - 1
         << "\" height=\"" << cell - 1 << "\" fill-opacity=\""
         << fixed(f[s][d] ? a : 0.03, 3) << "\"><title>rank " << s
         << " &rarr; rank " << d << ": " << f[s][d] << " rows"
         << (s == d ? " (stay)" : "") << "</title></rect>";
      if (n <= 16)
        os << "<text x=\"" << x + cell / 2 << "\" y=\"" << y + cell / 2 + 4
           << "\" text-anchor=\"middle\">" << f[s][d] << "</text>";
    }
    if (n <= 32)
      os << "<text x=\"" << pad - 6 << "\" y=\""
         << pad + cell * s + cell / 2 + 4 << "\" text-anchor=\"end\">" << s
         << "</text><text x=\"" << pad + cell * s + cell / 2 << "\" y=\""
         << pad - 6 << "\" text-anchor=\"middle\">" << s << "</text>";
    os << "\n";
  }
  // Bytes: each dispatched row is H elements, and comes back in the combine.
  double rowBytes = 2.0 * double(l.hidden * l.elementBytes);
  os << "</svg>\n<p class=\"flow-sum\">" << count("rows", double(all))
     << " rows dispatched, " << count("rows_between_ranks", double(all - stay))
     << " to another rank; dispatch + combine "
     << bytes("measured_all_to_all_bytes", rowBytes * double(all))
     << " (report: " << formatBytes(double(l.a2aBytesTotal))
     << "), between ranks "
     << bytes("measured_bytes_between_ranks", rowBytes * double(all - stay))
     << " (report, uniform routing: " << formatBytes(l.a2aBytesLeaving)
     << ")</p>\n";
}

} // namespace

void moec::writePlanHtml(const ShardReport &report, const PlanHtmlOptions &opts,
                         llvm::raw_ostream &os) {
  PageWriter(report, opts, os).write();
}
