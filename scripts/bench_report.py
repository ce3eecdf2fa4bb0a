#!/usr/bin/env python3
"""Turns criterion's results into the README's benchmark table and an SVG chart.

Run after `cargo bench -p sesame-bench`:
    python3 scripts/bench_report.py [--svg docs/bench.svg] [--redis-svg docs/bench-redis.svg]
Reads target/criterion/<store>_<scenario>/<implementation>/new/estimates.json (the median), and
for the memory store the interleaved pass of the layer bench (target/criterion/interleaved.json:
medians of batches run on each implementation in turn, the figures of record on a shared machine,
with criterion's separate runs printed beside them); prints
a Markdown table of ns/request with each implementation's ratio to raw axum and its extra cost
over raw, and writes a grouped bar chart; for each store that has results (memory, from
`--bench layer`; redis, from `--bench redis`). From the Redis bench it also prints the round trips
per request (target/criterion/redis-round-trips.json), the write throughput of sesame and
tower-sessions (with sesame's client-side cache too: the interleaved pass,
target/criterion/redis-throughput.json, with criterion's throughput_write beside it) and the CachingStore and
client-side cache hit paths against Redis alone (caching_read). Standard library only.
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
            estimates = read_json(root, f"{store}_{scenario}", impl, "new", "estimates.json")
            if estimates is not None:
                results[(scenario, impl)] = estimates["median"]["point_estimate"]
    return results


def read_json(*path):
    """The JSON file at `os.path.join(*path)`, parsed, or None when it does not exist."""
    path = os.path.join(*path)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def load_interleaved(root):
    """The layer bench's interleaved pass (interleaved.json): {scenario: {impl: ns}}, as `load`
    returns it, or {} when the pass has not run."""
    report = read_json(root, "interleaved.json") or {}
    return {(scenario, impl): ns for scenario, impls in report.items() for impl, ns in impls.items()}


def table(store, results, trips=None):
    """The Markdown table; with `trips` (round trips per request, by implementation and
    scenario), a column of round trips for sesame, for tower-sessions and, when counted, for
    sesame with the client-side cache."""
    head = f"| {store} | raw axum (ns) | sesame (ns) | ×raw | tower-sessions (ns) | ×raw | sesame extra / tower-sessions extra |"
    rule = "|---|---:|---:|---:|---:|---:|---:|"
    cached = bool(trips) and "sesame-client-cache" in trips
    if trips:
        head += " round trips sesame / tower-sessions"
        head += " / sesame with the client-side cache |" if cached else " |"
        rule += "---:|"
    lines = [head, rule]
    for scenario in SCENARIOS:
        raw = results.get((scenario, "raw"))
        ses = results.get((scenario, "sesame"))
        tow = results.get((scenario, "tower-sessions"))
        if None in (raw, ses, tow):
            continue
        extra = (ses - raw) / (tow - raw) if tow > raw else float("nan")
        line = f"| {scenario} | {raw:.0f} | {ses:.0f} | {ses / raw:.2f} | {tow:.0f} | {tow / raw:.2f} | {extra:.2f} |"
        if trips:
            line += f" {count(trips, 'sesame', scenario)} / {count(trips, 'tower-sessions', scenario)}"
            line += f" / {count(trips, 'sesame-client-cache', scenario)} |" if cached else " |"
        lines.append(line)
    return "\n".join(lines)


def count(trips, impl, scenario):
    value = trips.get(impl, {}).get(scenario)
    return "?" if value is None else f"{value:g}"


def median(root, group, impl):
    """The median of a criterion benchmark in ns per iteration, or None."""
    estimates = read_json(root, group, impl, "new", "estimates.json")
    return None if estimates is None else estimates["median"]["point_estimate"]


def elements(root, group, impl):
    """The elements (requests) per iteration a criterion benchmark declared, or None."""
    benchmark = read_json(root, group, impl, "new", "benchmark.json")
    if benchmark is None:
        return None
    throughput = benchmark.get("throughput") or {}
    return throughput.get("Elements")


# What the rows of the interleaved throughput table measure, where the name does not say it.
THROUGHPUT_LABELS = {
    "ceiling-redis-rs": "ceiling: raw axum, one `SET` per request (redis-rs)",
    "ceiling-fred": "ceiling: raw axum, one `SET` per request (fred)",
    "ceiling-compare-and-set": "ceiling: raw axum, one compare-and-set script per request (redis-rs)",
}


def redis_extras(root):
    """The Markdown tables of the Redis bench beyond the per-scenario one: write throughput and
    the hit paths of the CachingStore and of the client-side cache."""
    out = []
    rates = {}
    for impl in ["sesame", "sesame-client-cache", "tower-sessions"]:
        ns, n = median(root, "throughput_write", impl), elements(root, "throughput_write", impl)
        if ns and n:
            rates[impl] = n / (ns / 1e9)
    # The Redis bench's interleaved throughput pass, if it has run.
    interleaved = read_json(root, "redis-throughput.json")
    if interleaved:
        # The figures of record, as for the memory store; criterion's separate blocks beside them.
        cpu = interleaved.get("client_cpu_us_per_request") or {}
        lines = [
            "| write throughput, Redis, 64 concurrent writers (interleaved) | requests/s | client CPU per request | criterion, separate runs |",
            "|---|---:|---:|---:|",
        ]
        tower = interleaved["requests_per_second"].get("tower-sessions")
        measured = interleaved["requests_per_second"]
        order = ["sesame", "sesame-client-cache", "tower-sessions", *THROUGHPUT_LABELS]
        for impl, rate in sorted(
            measured.items(), key=lambda item: order.index(item[0]) if item[0] in order else len(order)
        ):
            ratio = f" ({rate / tower:.2f}×)" if tower and impl != "tower-sessions" else ""
            micros = f"{cpu[impl]:.1f} µs" if impl in cpu else ""
            separate = f"{rates[impl]:,.0f}" if impl in rates else ""
            label = THROUGHPUT_LABELS.get(impl, impl)
            lines.append(f"| {label} | {rate:,.0f}{ratio} | {micros} | {separate} |")
        out.append("\n".join(lines))
    elif rates:
        lines = [
            "| write throughput, Redis, 64 concurrent writers | requests/s |",
            "|---|---:|",
        ]
        for impl, rate in rates.items():
            lines.append(f"| {impl} | {rate:,.0f} |")
        if "sesame" in rates and "tower-sessions" in rates:
            lines.append(
                f"| sesame / tower-sessions | {rates['sesame'] / rates['tower-sessions']:.2f}× (target ≥ 1.8×) |"
            )
        out.append("\n".join(lines))
    redis = median(root, "caching_read", "redis")
    cached = median(root, "caching_read", "cached-redis")
    client_cached = median(root, "caching_read", "client-cached-redis")
    if redis and cached:
        lines = [
            "| read, sesame on | ns/request |",
            "|---|---:|",
            f"| RedisStore | {redis:.0f} |",
            f"| CachingStore in front of RedisStore (hit) | {cached:.0f} ({redis / cached:.1f}× faster) |",
        ]
        if client_cached:
            lines.append(
                f"| RedisStore with its client-side cache (hit) | {client_cached:.0f} ({redis / client_cached:.1f}× faster) |"
            )
        out.append("\n".join(lines))
    return out


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
    parser.add_argument("--redis-svg", default="docs/bench-redis.svg")
    args = parser.parse_args()
    separate = load(args.criterion, "memory")
    interleaved = load_interleaved(args.criterion)
    # The interleaved medians are the figures of record: every implementation measured under the
    # same background load. criterion's separate runs are printed too, for comparison.
    results = interleaved or separate
    redis = load(args.criterion, "redis")
    extras = redis_extras(args.criterion)
    if not results and not redis and not extras:
        sys.exit(f"no results under {args.criterion}: run `cargo bench -p sesame-bench` first")
    if interleaved and separate:
        print(table("memory store, criterion (separate runs)", separate))
        print()
    if results:
        print(table("memory store" + (", interleaved" if interleaved else ""), results))
        with open(args.svg, "w") as f:
            f.write(svg(results, "Cost per request, memory store: raw axum vs sesame vs tower-sessions"))
        print(f"\nwrote {args.svg}")
    if redis:
        trips = read_json(args.criterion, "redis-round-trips.json")
        print()
        print(table("Redis", redis, trips))
        with open(args.redis_svg, "w") as f:
            f.write(svg(redis, "Cost per request, Redis: raw axum vs sesame vs tower-sessions"))
        print(f"\nwrote {args.redis_svg}")
    for extra in extras:
        print()
        print(extra)


if __name__ == "__main__":
    main()
