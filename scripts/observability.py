#!/usr/bin/env python3
"""Draws charts/recur/dashboards/recur.json from a real Prometheus (scripts/observability.sh).

Every panel's targets, with the dashboard's variables substituted as Grafana would for one
selected value, are evaluated with /api/v1/query_range over [start, end] and drawn with gnuplot
into one PNG laid out like the dashboard (its gridPos); queries.md beside it lists each panel's
queries and how many series and points they returned. Standard library only, plus gnuplot.

  observability.py --prometheus URL --dashboard JSON --start UNIX --end UNIX --out DIR \\
      [--step 5] [--var job=recur --var namespace=recur-system] [--rate-interval 1m] [--note TEXT]
"""
import argparse
import json
import math
import os
import re
import subprocess
import sys
import textwrap
import urllib.parse
import urllib.request
from datetime import datetime, timezone

# Grafana's classic palette, the order it gives series.
PALETTE = ["#7EB26D", "#EAB839", "#6ED0E0", "#EF843C", "#E24D42", "#1F78C1", "#BA43A9", "#705DA0",
           "#508642", "#CCA300", "#447EBC", "#C15C17", "#890F02", "#0A437C", "#6D1F62", "#584477"]
NAMED = {"green": "#73BF69", "red": "#F2495C", "orange": "#FF9830", "yellow": "#FADE2A",
         "blue": "#5794F2"}
UNIT_LABEL = {"ops": "per second", "reqps": "per second", "s": "seconds", "ms": "ms"}


def panels_of(dashboard):
    """The dashboard's panels in order, rows flattened (a collapsed row's panels included)."""
    out = []
    for p in dashboard.get("panels", []):
        if p.get("type") == "row":
            out.extend(p.get("panels", []))
        else:
            out.append(p)
    return out


def substitute(expr, variables, rate_interval, step):
    """$var, ${var} and ${var:fmt} as Grafana expands them for one selected value."""
    builtins = {"__rate_interval": rate_interval, "__interval": f"{step}s",
                "__interval_ms": str(step * 1000)}

    def value(m):
        name = m.group(1)
        if name in builtins:
            return builtins[name]
        if name in variables:
            return variables[name]
        if name.isdigit():  # a regex group in label_replace: not a variable, as in Grafana
            return m.group(0)
        raise SystemExit(f"the query uses ${name}, which has no value (--var {name}=...): {expr}")

    expr = re.sub(r"\$\{(\w+)(?::\w+)?\}", value, expr)
    return re.sub(r"\$(\w+)", value, expr)


def query_range(base, expr, start, end, step):
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    req = urllib.request.Request(f"{base}/api/v1/query_range", data=params.encode(),
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            body = json.load(r)
    except urllib.error.HTTPError as e:
        body = json.load(e)
    if body.get("status") != "success":
        return None, f"{body.get('errorType')}: {body.get('error')}"
    return body["data"]["result"], None


def legend(fmt, labels):
    if not fmt:
        return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt).strip()


def gp_str(s):
    """A gnuplot double-quoted string (the terminal is noenhanced: no markup in it)."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def fmt_num(v, unit=""):
    if v is None or math.isnan(v):
        return "-"
    if unit == "s":
        if v == 0:
            return "0 s"
        if abs(v) < 0.9995:
            ms = v * 1000
            return f"{ms:.0f} ms" if abs(ms) >= 10 else f"{ms:.2g} ms"
        return f"{v:.3g} s"
    if abs(v) >= 100 or v == int(v):
        return f"{v:.0f}"
    return f"{v:.3g}"


def threshold_color(steps, v):
    color = NAMED["green"]
    for s in steps or []:
        if s.get("value") is None or (v is not None and v >= s["value"]):
            color = NAMED.get(s.get("color"), s.get("color") or color)
    return color


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prometheus", required=True)
    ap.add_argument("--dashboard", required=True)
    ap.add_argument("--start", type=float, required=True)
    ap.add_argument("--end", type=float, required=True)
    ap.add_argument("--step", type=int, default=5)
    ap.add_argument("--out", required=True)
    ap.add_argument("--var", action="append", default=[])
    ap.add_argument("--rate-interval", default="1m")
    ap.add_argument("--note", default="")
    ap.add_argument("--data", help="where the data files and the gnuplot script go (default OUT/.data)")
    a = ap.parse_args()
    variables = dict(v.split("=", 1) for v in a.var)
    dashboard = json.load(open(a.dashboard))
    os.makedirs(a.out, exist_ok=True)
    data_dir = a.data or os.path.join(a.out, ".data")
    os.makedirs(data_dir, exist_ok=True)

    try:
        with urllib.request.urlopen(f"{a.prometheus}/api/v1/status/buildinfo", timeout=10) as r:
            version = json.load(r)["data"]["version"]
    except Exception:  # noqa: BLE001 -- only for the caption
        version = "?"

    panels = panels_of(dashboard)
    results = []  # per panel: list of (target, expr, series, error)
    for p in panels:
        rows = []
        for t in p.get("targets", []):
            if t.get("hide") or not t.get("expr"):
                continue
            expr = substitute(t["expr"], variables, a.rate_interval, a.step)
            series, err = query_range(a.prometheus, expr, a.start, a.end, a.step)
            rows.append((t, expr, series or [], err))
        results.append(rows)

    # --- gnuplot ---------------------------------------------------------------------------------
    max_y = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    unit_px = 40  # one grid row; the 24 columns span the width
    width = 2000
    notes = textwrap.wrap(a.note, 230) if a.note else []
    header = 50 + 18 * len(notes)
    height = max_y * unit_px + header
    xtic = max(60, round((a.end - a.start) / 8 / 60) * 60)  # whole minutes: %H:%M labels repeat otherwise
    fy = lambda gy: 1 - (header + gy * unit_px) / height  # noqa: E731 -- top of grid row gy
    plt = [
        f"set terminal pngcairo size {width},{height} noenhanced font 'DejaVu Sans,10' background '#111217'",
        f"set output '{os.path.join(a.out, 'dashboard.png')}'",
        "set encoding utf8",
        "set multiplot",
        "set border lc rgb '#555555'",
        "set tics textcolor rgb '#CCCCDC'",
        "set key textcolor rgb '#CCCCDC'",
        "set grid lc rgb '#2A2C33' lw 1",
        "set xdata time",
        "set timefmt '%s'",
        "set format x '%H:%M'",
        f"set xtics {xtic}",
        "unset title",
    ]
    tz_note = "UTC"
    span = f"{datetime.fromtimestamp(a.start, timezone.utc):%Y-%m-%d %H:%M:%S}–{datetime.fromtimestamp(a.end, timezone.utc):%H:%M:%S} {tz_note}"
    caption = (f"{dashboard.get('title', 'dashboard')} (charts/recur/dashboards/recur.json): every panel's query "
               f"run on Prometheus {version} over a real run, {span}, step {a.step}s, "
               f"$__rate_interval={a.rate_interval}, " + ", ".join(f"${k}={v}" for k, v in sorted(variables.items())))
    plt.append(f"set label 1000 {gp_str(caption)} at screen 0.005, screen {1 - 22 / height:.5f} "
               "left font ',13' textcolor rgb '#E0E0E0' front")
    for i, line in enumerate(notes):
        plt.append(f"set label {1001 + i} {gp_str(line)} at screen 0.005, screen {1 - (44 + 18 * i) / height:.5f} "
                   "left font ',10' textcolor rgb '#A0A0A0' front")
    # An empty plot carries the caption labels.
    plt += ["set origin 0,0", "set size 1,1", "unset border", "unset tics", "unset grid",
            "set xrange [0:1]", "set yrange [0:1]", "unset xdata",
            "plot NaN notitle", "unset label", "set border lc rgb '#555555'",
            "set tics textcolor rgb '#CCCCDC'", "set grid lc rgb '#2A2C33' lw 1",
            "set xdata time", "set timefmt '%s'", "set format x '%H:%M'", f"set xtics {xtic}"]

    md_rows = []
    for pi, (p, rows) in enumerate(zip(panels, results)):
        g = p["gridPos"]
        ox, ow = g["x"] / 24, g["w"] / 24
        oy, oh = fy(g["y"] + g["h"]), g["h"] * unit_px / height
        title = p.get("title", "")
        ptype = p.get("type", "timeseries")
        unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        steps = p.get("fieldConfig", {}).get("defaults", {}).get("thresholds", {}).get("steps")
        series_files = []  # (file, legend text, color index)
        n_series = n_points = 0
        for ti, (t, expr, series, err) in enumerate(rows):
            pts = 0
            for si, s in enumerate(series):
                vals = [(float(ts), float(v)) for ts, v in s["values"]]
                ok = [(ts, v) for ts, v in vals if not math.isnan(v) and not math.isinf(v)]
                pts += len(ok)
                f = os.path.join(data_dir, f"p{pi}-t{ti}-s{si}.dat")
                with open(f, "w") as fh:
                    last = None
                    for ts, v in vals:
                        if math.isnan(v) or math.isinf(v):
                            if last is not None:
                                fh.write("\n")  # a gap, as Grafana draws it
                            last = None
                            continue
                        if last is not None and ts - last > 2.5 * a.step:
                            fh.write("\n")
                        fh.write(f"{ts:.3f} {v:.9g}\n")
                        last = ts
                if not ok:  # counted in queries.md; nothing to draw (e.g. a quantile of no calls)
                    continue
                lastv = ok[-1][1]
                maxv = max((v for _, v in ok), default=float("nan"))
                series_files.append((f, legend(t.get("legendFormat", ""), s["metric"]), lastv, maxv, ok))
            n_series += len(series)
            n_points += pts
            md_rows.append((title, ptype, t.get("legendFormat", ""), expr, len(series), pts, err))

        plt.append(f"set origin {ox + 0.002:.5f},{oy + 0.002:.5f}")
        plt.append(f"set size {ow - 0.004:.5f},{oh - 0.004:.5f}")
        plt.append("set object 1 rect from graph 0,0 to graph 1,1 behind fc rgb '#181B1F' fs solid 1.0 noborder")
        plt.append(f"set title {gp_str(title)} textcolor rgb '#E0E0E0' font ',12'")
        plt.append("unset label")
        plt.append("set xrange [%f:%f]" % (a.start, a.end))
        plt.append("set autoscale y")
        plt.append("set ytics auto")
        plt.append("set format y '%g'")
        plt.append(f"set ylabel {gp_str(UNIT_LABEL.get(unit, ''))} textcolor rgb '#A0A0A0'")
        if not series_files:
            if ptype == "stat":  # Grafana shows a stat without data as its text alone
                plt += ["unset xtics", "unset ytics", "unset grid", "unset ylabel"]
            plt.append("set label 1 'No data' at graph 0.5,0.5 center font ',16' textcolor rgb '#888888'")
            plt.append("set yrange [0:1]")
            plt.append("unset key")
            plt.append("plot NaN notitle")
            plt.append(f"set xtics {xtic} textcolor rgb '#CCCCDC'")
            plt.append("set ytics textcolor rgb '#CCCCDC'")
            plt.append("set grid lc rgb '#2A2C33' lw 1")
            plt.append("set autoscale y")
            continue
        if ptype == "stat":
            f, _, lastv, _, _ = series_files[0]
            color = threshold_color(steps, None if math.isnan(lastv) else lastv)
            plt.append(f"set object 1 rect from graph 0,0 to graph 1,1 behind fc rgb '{color}' fs solid 0.85 noborder")
            plt.append(f"set label 1 {gp_str(fmt_num(lastv, unit))} at graph 0.5,0.55 center font ',30' textcolor rgb '#FFFFFF' front")
            plt.append("unset ylabel")
            plt.append("unset xtics")
            plt.append("unset ytics")
            plt.append("unset grid")
            plt.append("unset key")
            lo = min(v for s in series_files for _, v in s[4]) if any(s[4] for s in series_files) else 0
            hi = max(v for s in series_files for _, v in s[4]) if any(s[4] for s in series_files) else 1
            if hi <= lo:
                hi = lo + 1
            plt.append(f"set yrange [{lo - (hi - lo) * 0.1}:{hi + (hi - lo) * 2.5}]")
            plt.append(f"plot '{f}' using 1:2 with lines lw 1.5 lc rgb '#FFFFFF' notitle")
            plt.append(f"set xtics {xtic} textcolor rgb '#CCCCDC'")
            plt.append("set ytics textcolor rgb '#CCCCDC'")
            plt.append("set grid lc rgb '#2A2C33' lw 1")
            plt.append("set autoscale y")
            continue
        if ptype == "state-timeline":
            mappings = {}
            for m in p.get("fieldConfig", {}).get("defaults", {}).get("mappings", []):
                if m.get("type") == "value":
                    for k, o in m.get("options", {}).items():
                        mappings[float(k)] = (o.get("text", k), NAMED.get(o.get("color"), o.get("color", "#888888")))
            n = len(series_files)
            plt.append(f"set yrange [-0.6:{n - 0.4}]")
            ytics = ", ".join(f"{gp_str(s[1])} {n - 1 - i}" for i, s in enumerate(series_files))
            plt.append(f"set ytics ({ytics}) font ',9'")
            plt.append("unset ylabel")
            boxes = os.path.join(data_dir, f"p{pi}-boxes.dat")
            half = a.step / 2 * 1.05  # a little overlap: no hairline between equal neighbours
            with open(boxes, "w") as fh:
                for i, s in enumerate(series_files):
                    for ts, v in s[4]:
                        color = mappings.get(v, (None, threshold_color(steps, v)))[1]
                        fh.write(f"{ts:.3f} {n - 1 - i} {half:.3f} 0.4 {int(color.lstrip('#'), 16)}\n")
            keys = []
            for v, (text, color) in sorted(mappings.items()):
                keys.append(f"NaN with boxes fs solid 1.0 lc rgb '{color}' title {gp_str(f'{text} ({v:g})')}")
            plt.append("set key below right horizontal font ',9' nobox")
            plt.append(f"plot '{boxes}' using 1:2:3:4:5 with boxxyerror fs solid 1.0 noborder lc rgb variable notitle"
                       + "".join(", " + k for k in keys))
            plt.append("set ytics auto font ',10'")
            plt.append("set autoscale y")
            continue
        # timeseries
        # Below the plot, as the dashboard's legend tables (bottom, with last and max).
        plt.append("set key below left Left reverse font ',8' samplen 1.5 spacing 0.9 nobox")
        allv = [v for s in series_files for _, v in s[4]]
        if allv and min(allv) >= 0:  # non-negative: from 0, and a flat line not at the very edge
            top = max(allv)
            plt.append(f"set yrange [0:{top * 1.1 if top > 0 else 1}]")
        plots = []
        for i, (f, text, lastv, maxv, _) in enumerate(series_files):
            label = f"{text}   last {fmt_num(lastv, unit)}, max {fmt_num(maxv, unit)}"
            plots.append(f"'{f}' using 1:2 with lines lw 1.6 lc rgb '{PALETTE[i % len(PALETTE)]}' title {gp_str(label)}")
        plt.append("plot " + ", \\\n  ".join(plots))
        plt.append(f"# {title}: {n_series} series, {n_points} points")
        plt.append("set autoscale y")
    plt.append("unset multiplot")
    plt_path = os.path.join(data_dir, "dashboard.plt")
    with open(plt_path, "w") as fh:
        fh.write("\n".join(plt) + "\n")
    subprocess.run(["gnuplot", plt_path], check=True)

    # --- queries.md ------------------------------------------------------------------------------
    md = [
        "# The dashboard's queries on a real run",
        "",
        "`docs/observability/dashboard.png` is drawn from these queries: every target of every panel of",
        "`charts/recur/dashboards/recur.json`, evaluated with `/api/v1/query_range` on a real Prometheus",
        f"server ({version}, built from the pinned Go module `tests/cluster/prometheus/go.mod`) that scraped",
        "a real `recur run` every 5 s during `scripts/observability.sh`. There is no Grafana here: the",
        "picture is gnuplot's, laid out by the panels' `gridPos`, with the panels' titles, units,",
        "legends (`legendFormat`; each with its last and max value, as the dashboard's legend tables)",
        "and, for stats and the state timeline, their thresholds and value mappings. A stat shows its",
        "last value (`lastNotNull`, as the dashboard's) over a sparkline of the whole range, which the",
        "dashboard's stats (`graphMode: none`) do not draw. A series whose points are all NaN (a",
        "quantile of a histogram that saw nothing) counts below but is not drawn.",
        "",
        f"- Range: {span}, step {a.step} s.",
        "- Variables as Grafana expands them for one selected value: "
        + ", ".join(f"`${k}` = `{v}`" for k, v in sorted(variables.items()))
        + f", `$__rate_interval` = `{a.rate_interval}` (Grafana's value with the data source's default",
        "  15 s scrape interval), `$__interval` = the step.",
    ]
    if a.note:
        md.append(f"- The run: {a.note}")
    md += ["", "| Panel | Type | Legend | Series | Points | Query |", "|---|---|---|---:|---:|---|"]
    empty = []
    for title, ptype, lf, expr, ns, pts, err in md_rows:
        q = expr.replace("|", "\\|")
        lf = (lf or "").replace("|", "\\|")
        cell = f"`{q}`" + (f" **error: {err}**" if err else "")
        md.append(f"| {title} | {ptype} | `{lf}` | {ns} | {pts} | {cell} |")
        if ns == 0:
            empty.append(title)
    md.append("")
    with open(os.path.join(a.out, "queries.md"), "w") as fh:
        fh.write("\n".join(md))
    total_series = sum(r[4] for r in md_rows)
    total_points = sum(r[5] for r in md_rows)
    print(f"{len(panels)} panels, {len(md_rows)} queries, {total_series} series, {total_points} points"
          + (f"; no data: {', '.join(empty)}" if empty else "; every query returned data"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
