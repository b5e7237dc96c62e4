"""Draws monitoring/grafana-dashboard.json as a PNG from a real Prometheus, without Grafana.

Each panel's queries run through Prometheus's HTTP API over one time range, with the dashboard's
template variables replaced as Grafana would ("All" is the variable's allValue) and the panels laid
out by their gridPos. Only what the dashboard uses is drawn: timeseries (lines, stacking, fixed
colours, a right axis), stat (value mappings, threshold colours, the series name) and bargauge.

    render-dashboard.py --prometheus http://127.0.0.1:9090 --start UNIX --end UNIX \
        --scrape-interval 2 --out docs/dashboard.png [--var instance=.*]
"""
import argparse
import json
import math
import re
import sys
import urllib.parse
import urllib.request
from datetime import datetime

import matplotlib

# The file backend, chosen before pyplot loads: there is no display where this runs.
matplotlib.use("Agg")
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch
from matplotlib.ticker import FuncFormatter, MaxNLocator

# Grafana's dark theme and its classic palette, so the picture reads like the real dashboard.
BG = "#111217"
PANEL = "#181b1f"
BORDER = "#2a2d33"
TEXT = "#ccccdc"
DIM = "#8e8e9a"
GRID = "#26292f"
PALETTE = ["#73BF69", "#F2CC0C", "#8AB8FF", "#FF780A", "#F2495C", "#5794F2", "#B877D9",
           "#705DA0", "#37872D", "#FADE2A", "#447EBC", "#C15C17", "#890F02", "#0A437C"]
NAMED = {"green": "#73BF69", "red": "#F2495C", "orange": "#FF9830", "yellow": "#FADE2A",
         "blue": "#5794F2", "purple": "#B877D9", "text": TEXT}

COLS = 24
WIDTH_PX = 1600
ROW_PX = 30  # a grid unit's height in Grafana
HEADER_PX = 64
DPI = 100


def color(name):
    return NAMED.get(name, name)


class Prometheus:
    def __init__(self, base):
        self.base = base.rstrip("/")

    def get(self, path, **params):
        url = f"{self.base}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=30) as r:
            body = json.load(r)
        if body.get("status") != "success":
            raise RuntimeError(f"{params.get('query')}: {body}")
        return body["data"]["result"]

    def range(self, query, start, end, step):
        return [(s["metric"], [(float(t), float(v)) for t, v in s["values"]])
                for s in self.get("/api/v1/query_range", query=query, start=start, end=end, step=step)]

    def instant(self, query, at):
        return [(s["metric"], [(float(s["value"][0]), float(s["value"][1]))])
                for s in self.get("/api/v1/query", query=query, time=at)]


def substitute(expr, variables):
    # Longest names first, so $__range does not eat the start of $__rate_interval.
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace("${" + name + "}", variables[name]).replace("$" + name, variables[name])
    return expr


def legend(fmt, labels):
    if not fmt:
        return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__") + "}"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt).strip()


def fmt_value(v, unit, decimals=None):
    if v is None or math.isnan(v):
        return "-"
    if unit == "s":
        if v == 0:
            return "0 s"
        if abs(v) < 1:
            return f"{v * 1000:.0f} ms"
        if abs(v) < 60:
            return f"{v:.1f} s".replace(".0 s", " s")
        return f"{v / 60:.1f} min"
    suffix = {"reqps": " req/s", "opm": " /min"}.get(unit, "")
    if decimals == 0 or (abs(v - round(v)) < 1e-9 and abs(v) >= 1):
        return f"{v:.0f}{suffix}"
    if abs(v) >= 100:
        return f"{v:.0f}{suffix}"
    if abs(v) >= 10:
        return f"{v:.1f}{suffix}"
    return f"{v:.2g}{suffix}"


def overrides_for(panel, name):
    """The override properties whose matcher names this series."""
    props = {}
    for o in panel.get("fieldConfig", {}).get("overrides", []):
        m = o["matcher"]
        hit = (m["id"] == "byName" and m["options"] == name) or \
              (m["id"] == "byRegexp" and re.search(m["options"], name))
        if hit:
            for p in o["properties"]:
                props[p["id"]] = p["value"]
    return props


class Renderer:
    def __init__(self, dash, prom, start, end, step, scrape, variables):
        self.dash, self.prom, self.start, self.end, self.step = dash, prom, start, end, step
        # Grafana's own definitions of its interval variables.
        interval = max(step, scrape)
        self.vars = dict(variables)
        self.vars.update({
            "__interval": f"{interval}s",
            "__rate_interval": f"{max(interval + scrape, 4 * scrape)}s",
            "__range": f"{int(end - start)}s",
        })
        rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in dash["panels"])
        self.height_px = HEADER_PX + rows * ROW_PX + 8
        self.fig = plt.figure(figsize=(WIDTH_PX / DPI, self.height_px / DPI), dpi=DPI, facecolor=BG)
        self.empty = []

    def series(self, panel):
        out = []
        for t in panel.get("targets", []):
            expr = substitute(t["expr"], self.vars)
            if t.get("instant") or panel["type"] == "bargauge":
                result = self.prom.instant(expr, self.end)
            else:
                result = self.prom.range(expr, self.start, self.end, self.step)
            for labels, points in result:
                out.append((legend(t.get("legendFormat", ""), labels), points))
        return out

    def box(self, grid):
        """The panel's rectangle in figure fractions: left, bottom, width, height."""
        gap = 4
        x = grid["x"] * WIDTH_PX / COLS + gap
        w = grid["w"] * WIDTH_PX / COLS - 2 * gap
        top = HEADER_PX + grid["y"] * ROW_PX + gap
        h = grid["h"] * ROW_PX - 2 * gap
        return x / WIDTH_PX, 1 - (top + h) / self.height_px, w / WIDTH_PX, h / self.height_px

    def frame(self, panel):
        left, bottom, w, h = self.box(panel["gridPos"])
        self.fig.patches.append(FancyBboxPatch(
            (left, bottom), w, h, boxstyle="round,pad=0,rounding_size=0.002",
            transform=self.fig.transFigure, facecolor=PANEL, edgecolor=BORDER, linewidth=1, zorder=-10))
        self.fig.text(left + 8 / WIDTH_PX, bottom + h - 8 / self.height_px, panel["title"],
                      color=TEXT, fontsize=10, fontweight="bold", va="top", ha="left")
        return left, bottom, w, h

    def header(self):
        title = self.dash["title"]
        start = datetime.fromtimestamp(self.start).strftime("%Y-%m-%d %H:%M:%S")
        end = datetime.fromtimestamp(self.end).strftime("%H:%M:%S")
        self.fig.text(12 / WIDTH_PX, 1 - 22 / self.height_px, f"Dashboards  /  {title}",
                      color=TEXT, fontsize=14, va="center")
        self.fig.text(1 - 12 / WIDTH_PX, 1 - 22 / self.height_px, f"{start} to {end}",
                      color=DIM, fontsize=10, va="center", ha="right")
        chips = []
        for v in self.dash.get("templating", {}).get("list", []):
            value = "Prometheus" if v["type"] == "datasource" else \
                ("All" if self.vars.get(v["name"]) == v.get("allValue") else self.vars.get(v["name"], ""))
            chips.append(f"{v.get('label') or v['name']}  {value}")
        self.fig.text(12 / WIDTH_PX, 1 - 48 / self.height_px, "      ".join(chips),
                      color=DIM, fontsize=9, va="center")

    def timeseries(self, panel):
        left, bottom, w, h = self.frame(panel)
        data = [(n, pts) for n, pts in self.series(panel) if pts]
        if not data:
            self.empty.append(panel["title"])
        legend_rows = self.legend_rows(data, w)
        legend_px = 14 * legend_rows + 6
        ax = self.fig.add_axes((left + 52 / WIDTH_PX, bottom + (legend_px + 22) / self.height_px,
                                w - 100 / WIDTH_PX, h - (legend_px + 22 + 30) / self.height_px))
        self.style_axes(ax)
        defaults = panel["fieldConfig"]["defaults"]
        unit, decimals = defaults.get("unit", "short"), defaults.get("decimals")
        custom = defaults.get("custom", {})
        stacked = custom.get("stacking", {}).get("mode") == "normal"
        fill = custom.get("fillOpacity", 0) / 100
        ax2 = None
        handles = []
        base = None
        peak = {}
        for i, (name, pts) in enumerate(data):
            props = overrides_for(panel, name)
            c = color(props.get("color", {}).get("fixedColor", PALETTE[i % len(PALETTE)]))
            t, v = self.on_grid(pts)
            target = ax
            if props.get("custom.axisPlacement") == "right":
                if ax2 is None:
                    ax2 = ax.twinx()
                    self.style_axes(ax2, grid=False)
                    ax2.yaxis.set_major_formatter(FuncFormatter(lambda y, _, u=unit: fmt_value(y, u)))
                target = ax2
            if stacked:
                lower = base or [0.0] * len(v)
                upper = [lo + (0.0 if math.isnan(x) else x) for lo, x in zip(lower, v)]
                shown = [u if not math.isnan(x) else math.nan for u, x in zip(upper, v)]
                target.fill_between(t, lower, upper, where=[not math.isnan(x) for x in v],
                                    color=c, alpha=fill, linewidth=0, step=None)
                line, = target.plot(t, shown, color=c, linewidth=1)
                base = upper
            else:
                line, = target.plot(t, v, color=c, linewidth=1.2)
                if fill:
                    target.fill_between(t, 0, [0 if math.isnan(x) else x for x in v],
                                        where=[not math.isnan(x) for x in v], color=c, alpha=fill, linewidth=0)
            handles.append((line, name))
            shown_max = max((x for x in (base if stacked else v) if not math.isnan(x)), default=0)
            peak[id(target)] = max(peak.get(id(target), 0), shown_max)
        for a in [ax] + ([ax2] if ax2 else []):
            a.set_xlim(datetime.fromtimestamp(self.start), datetime.fromtimestamp(self.end))
            # Headroom above the highest point, as Grafana leaves; a flat zero still gets an axis.
            top = peak.get(id(a), 0)
            a.set_ylim(0, top * 1.15 if top > 0 else (4 if decimals == 0 else 1))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: fmt_value(y, unit, decimals)))
        if decimals == 0:
            ax.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=5))
        if handles:
            self.fig.legend([hd for hd, _ in handles], [n for _, n in handles],
                            loc="lower left", bbox_to_anchor=(left + 6 / WIDTH_PX, bottom + 2 / self.height_px),
                            bbox_transform=self.fig.transFigure, ncol=self.legend_cols(data, w),
                            frameon=False, fontsize=8, labelcolor=TEXT, handlelength=1.2,
                            columnspacing=1.2, handletextpad=0.4, borderaxespad=0, borderpad=0.2)

    def legend_cols(self, data, w):
        widest = max((len(n) for n, _ in data), default=10)
        return max(1, min(len(data), int(w * WIDTH_PX // (widest * 5.6 + 34))))

    def legend_rows(self, data, w):
        return math.ceil(len(data) / self.legend_cols(data, w)) if data else 0

    def on_grid(self, pts):
        """The points on the query's step grid, NaN where Prometheus had none (Grafana's gaps)."""
        known = {round(t): v for t, v in pts}
        grid = range(round(self.start), round(self.end) + 1, self.step)
        return [datetime.fromtimestamp(t) for t in grid], [known.get(t, math.nan) for t in grid]

    def style_axes(self, ax, grid=True):
        ax.set_facecolor(PANEL)
        for s in ax.spines.values():
            s.set_visible(False)
        ax.tick_params(colors=DIM, labelsize=8, length=0)
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
        ax.xaxis.set_major_locator(mdates.MinuteLocator())
        ax.yaxis.set_major_locator(MaxNLocator(nbins=5))
        if grid:
            ax.grid(True, color=GRID, linewidth=0.8)
            ax.set_axisbelow(True)

    def stat(self, panel):
        left, bottom, w, h = self.frame(panel)
        data = [(n, pts) for n, pts in self.series(panel) if pts]
        opts = panel.get("options", {})
        defaults = panel["fieldConfig"]["defaults"]
        cx, cy = left + w / 2, bottom + (h - 20 / self.height_px) / 2
        if not data:
            self.empty.append(panel["title"])
            self.fig.text(cx, cy, "No data", color=DIM, fontsize=14, ha="center", va="center")
            return
        name, pts = data[0]
        value = next((v for _, v in reversed(pts) if not math.isnan(v)), math.nan)
        text, c = fmt_value(value, defaults.get("unit"), defaults.get("decimals")), None
        for m in defaults.get("mappings", []):
            hit = m.get("options", {}).get(fmt_value(value, "short", 0))
            if m["type"] == "value" and hit:
                text, c = hit.get("text", text), hit.get("color")
        if c is None:
            for s in defaults.get("thresholds", {}).get("steps", []):
                if s["value"] is None or value >= s["value"]:
                    c = s["color"]
        if opts.get("textMode") == "name":
            text = "\n".join(n for n, _ in data)
        if opts.get("colorMode") == "background" and c:
            pad = 4
            self.fig.patches.append(FancyBboxPatch(
                (left + pad / WIDTH_PX, bottom + pad / self.height_px), w - 2 * pad / WIDTH_PX,
                h - (pad + 26) / self.height_px, boxstyle="round,pad=0,rounding_size=0.002",
                transform=self.fig.transFigure, facecolor=color(c), edgecolor="none", alpha=0.9, zorder=-5))
            fg = "#ffffff"
        else:
            fg = color(c) if c and opts.get("colorMode") != "none" else TEXT
        size = 26 if opts.get("textMode") != "name" else 16
        self.fig.text(cx, cy, text, color=fg, fontsize=size, fontweight="bold", ha="center", va="center")
        if opts.get("graphMode") == "area" and len(pts) > 1:
            # The sparkline under the value, over the whole range.
            ax = self.fig.add_axes((left + 4 / WIDTH_PX, bottom + 4 / self.height_px,
                                    w - 8 / WIDTH_PX, (h - 30 / self.height_px) * 0.45), zorder=-1)
            ax.axis("off")
            t, v = self.on_grid(pts)
            line = "#ffffff" if opts.get("colorMode") == "background" else color(c or "text")
            ax.plot(t, v, color=line, alpha=0.6, linewidth=1)
            ax.fill_between(t, 0, [0 if math.isnan(x) else x for x in v], color=line, alpha=0.15, linewidth=0)
            ax.set_xlim(t[0], t[-1])
            ax.set_ylim(0, max((x for x in v if not math.isnan(x)), default=1) or 1)

    def bargauge(self, panel):
        left, bottom, w, h = self.frame(panel)
        data = [(n, pts[-1][1]) for n, pts in self.series(panel) if pts]
        defaults = panel["fieldConfig"]["defaults"]
        c = color(defaults.get("color", {}).get("fixedColor", PALETTE[0]))
        if not data:
            self.empty.append(panel["title"])
            self.fig.text(left + w / 2, bottom + h / 2, "No data", color=DIM, fontsize=14, ha="center")
            return
        ax = self.fig.add_axes((left + 150 / WIDTH_PX, bottom + 10 / self.height_px,
                                w - 210 / WIDTH_PX, h - 44 / self.height_px))
        ax.set_facecolor(PANEL)
        ax.axis("off")
        top = max(v for _, v in data) or 1
        n = len(data)
        for i, (name, v) in enumerate(data):
            y = n - 1 - i
            ax.barh(y, top, height=0.7, color="#ffffff", alpha=0.05)
            ax.barh(y, v, height=0.7, color=c, alpha=0.85)
            ax.text(-0.02 * top, y, name, color=TEXT, fontsize=9, ha="right", va="center")
            ax.text(top * 1.02, y, fmt_value(v, defaults.get("unit"), defaults.get("decimals")),
                    color=c, fontsize=11, fontweight="bold", ha="left", va="center")
        ax.set_xlim(0, top)
        ax.set_ylim(-0.5 - max(0, 4 - n) / 2, n - 0.5 + max(0, 4 - n) / 2)

    def render(self, out):
        self.header()
        for panel in self.dash["panels"]:
            getattr(self, panel["type"])(panel)
        self.fig.savefig(out, dpi=DPI, facecolor=BG)
        return self.empty


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dashboard", default="monitoring/grafana-dashboard.json")
    ap.add_argument("--prometheus", required=True)
    ap.add_argument("--start", type=float, required=True)
    ap.add_argument("--end", type=float, required=True)
    ap.add_argument("--scrape-interval", type=int, default=15, help="seconds, as set on the data source")
    ap.add_argument("--step", type=int, help="seconds between points (default: the scrape interval)")
    ap.add_argument("--var", action="append", default=[], help="NAME=VALUE for a template variable")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    with open(args.dashboard) as f:
        dash = json.load(f)
    variables = {v["name"]: v.get("allValue", ".*") for v in dash["templating"]["list"] if v["type"] == "query"}
    variables.update(dict(kv.split("=", 1) for kv in args.var))
    step = args.step or args.scrape_interval
    r = Renderer(dash, Prometheus(args.prometheus), args.start, args.end, step, args.scrape_interval, variables)
    empty = r.render(args.out)
    print(f"{args.out}: {len(dash['panels'])} panels", file=sys.stderr)
    if empty:
        print("panels without data: " + ", ".join(empty), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
