//===- PlanHtmlAssets.h - the plan page's stylesheet and script -*- C++ -*-===//
//
// Inlined into every page PlanHtml.cpp writes: the page loads nothing. The
// script only reads the page (the embedded report, the layer ranges of its
// elements); without it every layer shows.
//
//===----------------------------------------------------------------------===//

#ifndef MOEC_LIB_ANALYSIS_PLANHTMLASSETS_H
#define MOEC_LIB_ANALYSIS_PLANHTMLASSETS_H

namespace moec {

inline constexpr const char kPlanHtmlStyle[] = R"css(
:root { --fg: #1f2933; --muted: #61707f; --line: #d5dbe3; --bg: #f6f8fa;
  --card: #fff; --ep: #2563eb; --tp: #0f9d58; --dp: #d97706; --hot: #dc2626; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
  color: var(--fg); background: var(--bg); margin: 0; }
header, main, footer { max-width: 1180px; margin: 0 auto; padding: 0 20px; }
header h1 { font-size: 22px; margin: 18px 0 2px; word-break: break-all; }
.flags { margin: 0; color: var(--muted); }
h2 { font-size: 17px; margin: 26px 0 6px; }
h3 { font-size: 15px; margin: 14px 0 4px; }
small, .loc { color: var(--muted); }
code { font-size: 12px; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 14px 0; }
.card { background: var(--card); border: 1px solid var(--line);
  border-radius: 8px; padding: 8px 14px; min-width: 120px;
  display: flex; flex-direction: column; }
.card b { font-size: 22px; }
.card span { color: var(--muted); font-size: 12px; }
.formulas .card { flex: 1; min-width: 240px; }
.formulas .card b { font-size: 17px; margin: 4px 0; }
.formulas .ep { border-top: 4px solid var(--ep); }
.formulas .tp { border-top: 4px solid var(--tp); }
.formulas .dp { border-top: 4px solid var(--dp); }
.formulas .fig { font-size: 15px; font-weight: 600; }
.nodes { display: flex; flex-direction: column; gap: 12px; }
.node { border: 2px dashed var(--line); border-radius: 10px; padding: 8px; }
.node-head { font-weight: 600; margin-bottom: 6px; }
.ranks { display: grid; gap: 8px;
  grid-template-columns: repeat(auto-fill, minmax(250px, 1fr)); }
.rank { background: var(--card); border: 1px solid var(--line);
  border-radius: 8px; padding: 8px; }
.rank-head { display: flex; justify-content: space-between; }
.coords { color: var(--muted); }
.dense { background: #e8eef9; border-radius: 5px; padding: 4px 6px;
  margin: 6px 0; font-size: 12px; }
.experts { margin: 4px 0; display: flex; flex-wrap: wrap; gap: 3px;
  align-items: center; }
.experts .lbl { color: var(--muted); font-size: 11px; width: 100%; }
.expert { background: hsl(var(--h) 70% 88%); border: 1px solid
  hsl(var(--h) 55% 55%); border-radius: 4px; padding: 1px 6px;
  font: 600 12px ui-monospace, monospace; cursor: default; }
.expert.replica { border: 2px dashed hsl(var(--h) 60% 35%); }
.expert.lit { outline: 3px solid var(--fg); }
.none { color: var(--muted); font-size: 12px; }
.rank-mem { font-size: 12px; color: var(--muted); margin-top: 4px; }
table.traffic { border-collapse: collapse; background: var(--card);
  width: 100%; font-size: 13px; }
.traffic th, .traffic td { border: 1px solid var(--line); padding: 4px 6px;
  vertical-align: top; text-align: left; }
.traffic th { background: #eef1f5; font-weight: 600; }
.a2a-bars { display: flex; flex-wrap: wrap; gap: 8px; margin-top: 8px; }
svg text { font-size: 11px; fill: var(--fg); }
svg text.t { font-weight: 600; }
.bars .b0 { fill: #9ca3af; }
.bars .b1 { fill: var(--ep); }
.bars .b2 { fill: #60a5fa; }
svg.mem, svg.load, svg.bars, svg.flow-matrix { background: var(--card);
  border: 1px solid var(--line); border-radius: 6px; max-width: 100%;
  height: auto; }
.m-experts { fill: var(--ep); background: var(--ep); }
.m-dense-tp { fill: var(--tp); background: var(--tp); }
.m-replicated { fill: #94a3b8; background: #94a3b8; }
.m-activations { fill: #f59e0b; background: #f59e0b; }
.m-dequantized { fill: #a855f7; background: #a855f7; }
.mem-row.over text { fill: var(--hot); font-weight: 600; }
line.limit { stroke: var(--hot); stroke-width: 2; stroke-dasharray: 5 3; }
text.limit { fill: var(--hot); }
.legend i { display: inline-block; width: 12px; height: 12px;
  border-radius: 2px; vertical-align: -2px; margin-left: 10px; }
rect.tok { fill: hsl(var(--h) 60% 62%); }
rect.tok.hot { stroke: var(--hot); stroke-width: 2; }
line.mean { stroke: var(--fg); stroke-dasharray: 4 3; }
.hot-key, .hot-expert { color: var(--hot); font-weight: 600; }
rect.cell { fill: var(--ep); }
rect.cell.local { stroke: var(--fg); stroke-dasharray: 2 2; }
.route-layer { background: var(--card); border: 1px solid var(--line);
  border-radius: 8px; padding: 4px 12px 10px; margin: 10px 0; }
.charts { display: flex; flex-wrap: wrap; gap: 24px; }
.chart { flex: 1; min-width: 300px; }
.chart .cap { font-weight: 600; font-size: 12px; color: var(--muted);
  margin: 6px 0 4px; }
.hidden { display: none !important; }
footer { color: var(--muted); font-size: 12px; margin: 30px auto 20px; }
)css";

inline constexpr const char kPlanHtmlScript[] = R"js(
(function () {
  "use strict";
  var report = JSON.parse(document.getElementById("moec-report").textContent);
  // One MoE layer at a time, or all: elements name the layers they show.
  var select = document.getElementById("layer-select");
  function show() {
    var v = select ? select.value : "all";
    document.querySelectorAll("[data-layer-first]").forEach(function (el) {
      var first = +el.getAttribute("data-layer-first");
      var last = +el.getAttribute("data-layer-last");
      var on = v === "all" || (first <= +v && +v <= last);
      el.classList.toggle("hidden", !on);
    });
  }
  if (select) {
    report.layers.forEach(function (layer, i) {
      var opt = document.createElement("option");
      opt.value = String(i);
      opt.textContent = "MoE layer " + i + (layer.loc ? " (" + layer.loc + ")" : "");
      select.appendChild(opt);
    });
    select.addEventListener("change", show);
  }
  show();
  // An expert and its replicas light up together.
  function mark(chip, on) {
    var sel = '.expert[data-expert="' + chip.getAttribute("data-expert") +
      '"][data-layers="' + chip.getAttribute("data-layers") + '"]';
    document.querySelectorAll(sel).forEach(function (c) {
      c.classList.toggle("lit", on);
    });
  }
  document.querySelectorAll(".expert").forEach(function (chip) {
    chip.addEventListener("mouseenter", function () { mark(chip, true); });
    chip.addEventListener("mouseleave", function () { mark(chip, false); });
  });
  document.documentElement.setAttribute("data-js", "ready");
  document.documentElement.setAttribute("data-report-layers",
                                        String(report.layers.length));
})();
)js";

} // namespace moec

#endif // MOEC_LIB_ANALYSIS_PLANHTMLASSETS_H
