#!/usr/bin/env python3
"""Turns criterion's results into the README's benchmark table and an SVG chart.

Run after `cargo bench -p sesame-bench`:
    python3 scripts/bench_report.py [--svg docs/bench.svg]
Reads target/criterion/<store>_<scenario>/<implementation>/new/estimates.json (the median), prints
a Markdown table of ns/request with each implementation's ratio to raw axum and its extra cost
over raw, and writes a grouped bar chart. Standard library only.
"""
import argparse
import json
import os
import sys

IMPLS = ["raw", "sesame", "tower-sessions"]
COLORS = {"raw": "#9aa5b1", "sesame": "#2f855a", "tower-sessions": "#c05621"}
SCENARIOS = ["none", "read", "write", "new", "bad-cookie"]


def load(root, store):
    results = {}
    for scenario in SCENARIOS:
        for impl in IMPLS:
            path = os.path.join(root, f"{store}_{scenario}", impl, "new", "estimates.json")
            if os.path.exists(path):
                with open(path) as f:
                    results[(scenario, impl)] = json.load(f)["median"]["point_estimate"]
    return results


def table(store, results):
    lines = [
        f"| {store} | raw axum (ns) | sesame (ns) | ×raw | tower-sessions (ns) | ×raw | sesame extra / tower-sessions extra |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for scenario in SCENARIOS:
        raw = results.get((scenario, "raw"))
        ses = results.get((scenario, "sesame"))
        tow = results.get((scenario, "tower-sessions"))
        if None in (raw, ses, tow):
            continue
        extra = (ses - raw) / (tow - raw) if tow > raw else float("nan")
        lines.append(
            f"| {scenario} | {raw:.0f} | {ses:.0f} | {ses / raw:.2f} | {tow:.0f} | {tow / raw:.2f} | {extra:.2f} |"
        )
    return "\n".join(lines)


def svg(results, title):
    width, height, left, bottom, top = 760, 340, 60, 40, 40
    plot_w, plot_h = width - left - 20, height - bottom - top
    peak = max(results.values()) * 1.1
    group_w = plot_w / len(SCENARIOS)
    bar_w = group_w / (len(IMPLS) + 1)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>',
    ]
    for tick in range(0, int(peak) + 1, max(1, int(peak / 5 / 500) * 500 or 500)):
        y = top + plot_h - tick / peak * plot_h
        out.append(f'<line x1="{left}" x2="{width - 20}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e2e8f0"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick}</text>')
    out.append(f'<text x="14" y="{top + plot_h / 2}" transform="rotate(-90 14 {top + plot_h / 2})" text-anchor="middle">ns / request (median)</text>')
    for i, scenario in enumerate(SCENARIOS):
        for j, impl in enumerate(IMPLS):
            value = results.get((scenario, impl))
            if value is None:
                continue
            x = left + i * group_w + (j + 0.5) * bar_w
            h = value / peak * plot_h
            y = top + plot_h - h
            out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w * 0.9:.1f}" height="{h:.1f}" fill="{COLORS[impl]}"><title>{impl} {scenario}: {value:.0f} ns</title></rect>')
        out.append(f'<text x="{left + (i + 0.5) * group_w:.1f}" y="{height - bottom + 18}" text-anchor="middle">{scenario}</text>')
    for j, impl in enumerate(IMPLS):
        out.append(f'<rect x="{left + 10 + j * 130}" y="{top - 8}" width="10" height="10" fill="{COLORS[impl]}"/>')
        out.append(f'<text x="{left + 24 + j * 130}" y="{top + 1}">{impl}</text>')
    out.append("</svg>")
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--criterion", default="target/criterion")
    parser.add_argument("--svg", default="docs/bench.svg")
    args = parser.parse_args()
    results = load(args.criterion, "memory")
    if not results:
        sys.exit(f"no results under {args.criterion}/memory: run `cargo bench -p sesame-bench` first")
    print(table("memory store", results))
    with open(args.svg, "w") as f:
        f.write(svg(results, "Cost per request, memory store: raw axum vs sesame vs tower-sessions"))
    print(f"\nwrote {args.svg}")


if __name__ == "__main__":
    main()
