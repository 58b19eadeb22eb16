#!/usr/bin/env python3
"""Checks a `moec --emit=html` page against `moec --report=json`.

    check_plan_html.py --html plan.html --report report.json
        [--routing routing.json] [--chromium CHROMIUM [--screenshot out.png]]

Without --chromium it reads the page as written (the figures are in the
HTML); with it, the DOM headless Chromium built after running the page's
script (--dump-dom), and optionally a screenshot. Every figure the page
marks (data-key/data-value) is compared with the report (an independent
run of moec), the rank boxes' experts with the report's placement, and with
--routing the tokens per expert and token flow with the routing file (what
moe-run measured). Prints one line per rank and per check ("ok ..." or
"FAIL ..."); exits 1 on any failure.
"""

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from html.parser import HTMLParser

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link",
        "meta", "source", "track", "wbr"}


class Element:
    def __init__(self, tag, attrs, parent):
        self.tag, self.attrs, self.parent = tag, dict(attrs), parent
        self.children, self.text = [], []

    def classes(self):
        return (self.attrs.get("class") or "").split()

    def all_text(self):
        return "".join(self.text) + "".join(c.all_text() for c in self.children)

    def walk(self):
        yield self
        for c in self.children:
            yield from c.walk()

    def find(self, cls=None, tag=None, **attrs):
        for e in self.walk():
            if cls and cls not in e.classes():
                continue
            if tag and e.tag != tag:
                continue
            if all(e.attrs.get(k.replace("_", "-")) == v
                   for k, v in attrs.items()):
                yield e


class TreeBuilder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Element("#root", [], None)
        self.cur = self.root

    def handle_starttag(self, tag, attrs):
        e = Element(tag, attrs, self.cur)
        self.cur.children.append(e)
        if tag not in VOID:
            self.cur = e

    def handle_startendtag(self, tag, attrs):
        self.cur.children.append(Element(tag, attrs, self.cur))

    def handle_endtag(self, tag):
        e = self.cur
        while e is not self.root and e.tag != tag:
            e = e.parent
        if e is not self.root:
            self.cur = e.parent

    def handle_data(self, data):
        self.cur.text.append(data)


def chromium_cmd(chromium, profile):
    # --no-sandbox: Chromium refuses to start as root otherwise (CI).
    return [chromium, "--headless", "--no-sandbox", "--disable-gpu",
            "--no-first-run", "--user-data-dir=" + profile]


def run_chromium(args, what):
    try:
        p = subprocess.run(args, capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        sys.exit("FAIL %s: chromium did not finish in 180 s" % what)
    if p.returncode != 0:
        sys.exit("FAIL %s: chromium exited %d: %s" %
                 (what, p.returncode, p.stderr[-2000:]))
    return p.stdout


class Checker:
    def __init__(self):
        self.failures = 0

    def check(self, ok, what):
        print(("ok " if ok else "FAIL ") + what)
        if not ok:
            self.failures += 1

    def equal(self, got, want, what):
        ok = got is not None and abs(float(got) - float(want)) <= 1e-6 * max(
            1.0, abs(float(want)))
        self.check(ok, "%s: page %s, expected %s" % (what, got, want))


def figure(elem, key):
    """The data-value of the first figure under `elem` with data-key `key`."""
    for e in elem.find(data_key=key):
        return e.attrs.get("data-value")
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--html", required=True)
    ap.add_argument("--report", required=True)
    ap.add_argument("--routing")
    ap.add_argument("--chromium")
    ap.add_argument("--screenshot")
    ap.add_argument("--window-size", default="1280,1500")
    a = ap.parse_args()

    url = "file://" + os.path.abspath(a.html)
    profile = tempfile.mkdtemp(prefix="moec-chromium-")
    try:
        return check(a, url, profile)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def check(a, url, profile):
    try:
        report = json.load(open(a.report))
    except (OSError, ValueError) as e:
        sys.exit("FAIL cannot read the report %s: %s" % (a.report, e))
    if a.chromium:
        text = run_chromium(chromium_cmd(a.chromium, profile) +
                            ["--dump-dom", url], "dump-dom")
    else:
        text = open(a.html, encoding="utf-8").read()
    tb = TreeBuilder()
    tb.feed(text)
    page = tb.root
    c = Checker()

    # Self-contained: nothing loaded from anywhere.
    external = [e for e in page.walk() for k in ("src", "href")
                if "//" in (e.attrs.get(k) or "")]
    c.check(not external and "<link" not in text and "url(" not in text,
            "self-contained: no external src/href, <link> or url()")
    html = next(page.find(tag="html"))
    if a.chromium:
        c.check(html.attrs.get("data-js") == "ready",
                "the page's script ran (html[data-js=ready])")
        c.check(html.attrs.get("data-report-layers") ==
                str(len(report["layers"])),
                "the script read the embedded report: %s MoE layers" %
                html.attrs.get("data-report-layers"))
        if len(report["layers"]) > 1:
            opts = list(page.find(tag="option"))
            c.check(len(opts) == len(report["layers"]) + 1,
                    "layer selector: %d options" % len(opts))
    embedded = next(page.find(tag="script", id="moec-report"), None)
    try:
        same = json.loads(embedded.all_text()) == report
    except (AttributeError, ValueError):
        same = False
    c.check(same, "embedded report equals --report=json")

    # The mesh: every rank, its experts per layer.
    ranks = list(page.find(cls="rank", tag="div"))
    c.check(len(ranks) == report["world_size"],
            "%d rank boxes, world size %d" % (len(ranks), report["world_size"]))
    nodes = list(page.find(cls="node"))
    for rank_elem in ranks:
        q = int(rank_elem.attrs["data-rank"])
        want = report["ranks"][q]
        ep = want["ep_index"]
        held_rows = list(rank_elem.find(cls="experts"))
        layers = []
        for row in held_rows:
            first = int(row.attrs["data-layer-first"])
            last = int(row.attrs["data-layer-last"])
            got = [int(e.attrs["data-expert"]) for e in row.find(cls="expert")]
            for li in range(first, last + 1):
                layers.append(li)
                placed = report["layers"][li]["experts_per_ep_rank"][ep]
                c.check(got == placed, "rank %d layer %d: experts %s, report %s"
                        % (q, li, got, placed))
        c.check(layers == list(range(len(report["layers"]))),
                "rank %d: every MoE layer drawn once" % q)
        for key in ("weight_bytes", "activation_bytes",
                    "replicated_weight_bytes"):
            c.equal(figure(rank_elem, key), want[key], "rank %d %s" % (q, key))
        held = held_rows[0].find(cls="expert") if held_rows else []
        print("rank %d (node %s, ep %d): experts %s" % (
            q, rank_elem.parent.parent.attrs.get("data-node"), ep,
            ",".join(e.attrs["data-expert"] for e in held)))
    print("nodes: %d" % len(nodes))

    # Bytes per layer and the seed's formulas.
    for i, layer in enumerate(report["layers"]):
        row = next(page.find(tag="tr", data_layer=str(i)), None)
        c.check(row is not None, "traffic row of layer %d" % i)
        if row is None:
            continue
        for key in ("dispatch_bytes_per_rank", "all_to_all_bytes_total",
                    "all_to_all_bytes_between_ranks", "seed_ep_bytes"):
            c.equal(figure(row, key), layer[key], "layer %d %s" % (i, key))
    for key, want in report["seed"].items():
        c.equal(figure(page, "seed." + key), want, "seed " + key)
    for row in page.find(cls="mem-row"):
        q = int(row.attrs["data-rank"])
        r = report["ranks"][q]
        c.equal(row.attrs.get("data-value"), r["weight_bytes"] +
                r["activation_bytes"] + r["dequantized_weight_bytes"],
                "memory bar of rank %d" % q)

    if a.routing:
        routing = json.load(open(a.routing))
        for i, (rl, layer) in enumerate(zip(routing["layers"],
                                            report["layers"])):
            box = next(page.find(cls="route-layer", data_layer=str(i)), None)
            c.check(box is not None, "routing of layer %d" % i)
            if box is None:
                continue
            bars = {int(e.attrs["data-expert"]): float(e.attrs["data-value"])
                    for e in box.find(cls="tok")}
            c.check(bars == dict(enumerate(rl["tokens_per_expert"])),
                    "layer %d tokens per expert %s" % (
                        i, [bars.get(e) for e in sorted(bars)]))
            hot = sorted(int(e.attrs["data-expert"])
                         for e in box.find(cls="hot", tag="rect"))
            print("layer %d hot experts: %s" % (i, hot))
            flow = rl.get("rows_sent")
            if not flow:
                continue
            cells = {(int(e.attrs["data-src"]), int(e.attrs["data-dst"])):
                     int(e.attrs["data-rows"]) for e in box.find(cls="cell")}
            n = len(flow)
            c.check(cells == {(s, d): flow[s][d] for s in range(n)
                              for d in range(n)},
                    "layer %d token flow matrix %dx%d" % (i, n, n))
            # What the runtime moved against what the compiler reported.
            rows = sum(map(sum, flow))
            moved = 2 * rows * layer["hidden"] * layer["element_bytes"]
            if layer["capacity"] < 0:
                c.equal(moved, layer["all_to_all_bytes_total"],
                        "layer %d measured dispatch+combine bytes vs report" % i)
            c.equal(figure(box, "measured_all_to_all_bytes"), moved,
                    "layer %d measured bytes on the page" % i)

    if a.chromium and a.screenshot:
        out = os.path.abspath(a.screenshot)
        run_chromium(chromium_cmd(a.chromium, profile) + [
            "--hide-scrollbars", "--window-size=" + a.window_size,
            "--screenshot=" + out, url], "screenshot")
        with open(out, "rb") as f:
            head = f.read(24)
        ok = head[:8] == b"\x89PNG\r\n\x1a\n"
        w, h = struct.unpack(">II", head[16:24]) if ok else (0, 0)
        c.check(ok and os.path.getsize(out) > 10000,
                "screenshot: PNG %dx%d, %d bytes" % (w, h,
                                                   os.path.getsize(out)))
    print("%s: %d failure(s)" % ("FAIL" if c.failures else "ok", c.failures))
    return 1 if c.failures else 0


if __name__ == "__main__":
    sys.exit(main())
