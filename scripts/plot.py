#!/usr/bin/env python3
"""Turn one run of the peer harness into a CSV and one SVG.

The peer harness (``shared/peers/run.sh``) appends its raw result lines to
the file named by ``PEERS_RAW``: ``<side> scenario=... n=... ns_per_task=...
total_ms=... min_ms=... max_ms=...``, one per side (rust, go, taskgroup),
scenario and N. This script

1. with ``--raw RAW --csv CSV``: writes the timing fields of those lines to
   CSV (one row per side, scenario and N; Go's scenario names mapped to the
   Rust peer's), and
2. with ``--csv CSV --svg SVG``: draws from that CSV one SVG, cost per task
   (ns, the median of the run's repetitions, whiskers from the fastest to
   the slowest repetition) against N on a log scale, for taskgroup, the
   hand-written tokio peer and Go: one panel for spawn + wait, one for the
   first error with N parked siblings.

    python3 scripts/plot.py --raw /tmp/raw.txt --csv benches/results/2026-11-25.csv \\
        --svg benches/results/cost-per-task.svg

Standard library only; the SVG is written by hand.
"""

import argparse
import csv
import math
import sys
from pathlib import Path

# The Go peer's names for the Rust peer's scenarios.
GO_NAMES = {"errgroup_wait": "spawn_join_joinset"}
FIELDS = ["side", "scenario", "n", "ns_per_task", "total_ms", "min_ms", "max_ms"]

# (title, [(side, scenario, label, colour, dashed)])
PANELS = [
    (
        "spawn N no-op tasks + wait",
        [
            ("taskgroup", "spawn_join_joinset", "taskgroup: spawn + wait", "#d62728", False),
            ("rust", "spawn_join_joinset", "tokio JoinSet", "#1f77b4", False),
            ("rust", "spawn_join_vec", "tokio Vec<JoinHandle>", "#1f77b4", True),
            ("go", "spawn_join_joinset", "Go errgroup Go + Wait", "#2ca02c", False),
        ],
    ),
    (
        "first error, N parked siblings",
        [
            ("taskgroup", "first_error", "taskgroup: wait → Err", "#d62728", False),
            ("rust", "first_error", "tokio JoinSet + CancellationToken", "#1f77b4", False),
            ("go", "first_error", "Go errgroup.WithContext", "#2ca02c", False),
        ],
    ),
]


def parse_raw(path: Path):
    rows = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) < 2 or not parts[1].startswith("scenario="):
            continue
        side = parts[0]
        kv = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
        if kv.get("ns_per_task", "NA") == "NA":
            continue
        scenario = GO_NAMES.get(kv["scenario"], kv["scenario"])
        rows.append(
            {
                "side": side,
                "scenario": scenario,
                "n": kv["n"],
                "ns_per_task": kv["ns_per_task"],
                "total_ms": kv["total_ms"],
                "min_ms": kv.get("min_ms", kv["total_ms"]),
                "max_ms": kv.get("max_ms", kv["total_ms"]),
            }
        )
    # A later line for the same side, scenario and N (a re-run) wins.
    latest = {(r["side"], r["scenario"], int(r["n"])): r for r in rows}
    return [latest[k] for k in sorted(latest)]


def write_csv(rows, path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path: Path):
    with path.open() as f:
        return list(csv.DictReader(f))


def nice_max(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 times a power of ten at or above value."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power


def fmt_n(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1_000 and n % 1_000 == 0:
        return f"{n // 1_000}k"
    return str(n)


def esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def svg(rows, title: str) -> str:
    series = {}
    for r in rows:
        n = int(r["n"])
        ns = float(r["ns_per_task"])
        low = float(r["min_ms"]) * 1e6 / n
        high = float(r["max_ms"]) * 1e6 / n
        series.setdefault((r["side"], r["scenario"]), []).append((n, ns, low, high))
    for points in series.values():
        points.sort()

    panel_w, panel_h = 430, 330
    left, right, top, bottom = 70, 20, 60, 50
    legend_h = 90
    width = 2 * (left + panel_w + right)
    height = top + panel_h + bottom + legend_h
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="15" '
        f'font-weight="bold">{esc(title)}</text>',
    ]
    for index, (panel_title, lines) in enumerate(PANELS):
        x0 = index * (left + panel_w + right) + left
        y0 = top
        present = [(spec, series.get((spec[0], spec[1]), [])) for spec in lines]
        ns_all = [p[0] for _, pts in present for p in pts]
        if not ns_all:
            continue
        y_all = [p[3] for _, pts in present for p in pts] + [p[1] for _, pts in present for p in pts]
        y_max = nice_max(max(y_all) * 1.05)
        lo, hi = math.log10(min(ns_all)), math.log10(max(ns_all))
        if hi == lo:
            lo, hi = lo - 0.5, hi + 0.5
        pad = 0.08 * (hi - lo)
        lo, hi = lo - pad, hi + pad

        def px(n, lo=lo, hi=hi, x0=x0):
            return x0 + (math.log10(n) - lo) / (hi - lo) * panel_w

        def py(ns, y_max=y_max, y0=y0):
            return y0 + panel_h - min(ns, y_max) / y_max * panel_h

        out.append(
            f'<text x="{x0 + panel_w / 2}" y="{y0 - 12}" text-anchor="middle" '
            f'font-size="13" font-weight="bold">{esc(panel_title)}</text>'
        )
        # Grid and y ticks.
        for i in range(6):
            value = y_max * i / 5
            y = py(value)
            out.append(
                f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + panel_w}" y2="{y:.1f}" '
                f'stroke="#ddd"/>'
            )
            out.append(
                f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end">{value:g}</text>'
            )
        # x ticks at each N measured.
        for n in sorted(set(ns_all)):
            x = px(n)
            out.append(
                f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y0 + panel_h}" stroke="#eee"/>'
            )
            out.append(
                f'<text x="{x:.1f}" y="{y0 + panel_h + 16}" text-anchor="middle">{fmt_n(n)}</text>'
            )
        out.append(
            f'<rect x="{x0}" y="{y0}" width="{panel_w}" height="{panel_h}" fill="none" '
            f'stroke="#333"/>'
        )
        out.append(
            f'<text x="{x0 + panel_w / 2}" y="{y0 + panel_h + 36}" text-anchor="middle">'
            f"N (tasks, log scale)</text>"
        )
        out.append(
            f'<text x="{x0 - 50}" y="{y0 + panel_h / 2}" text-anchor="middle" '
            f'transform="rotate(-90 {x0 - 50} {y0 + panel_h / 2})">ns per task</text>'
        )
        # Series.
        for k, ((_, _, label, colour, dashed), points) in enumerate(present):
            if not points:
                continue
            dash = ' stroke-dasharray="6 4"' if dashed else ""
            path = " ".join(
                f"{'M' if i == 0 else 'L'}{px(n):.1f},{py(ns):.1f}"
                for i, (n, ns, _, _) in enumerate(points)
            )
            out.append(
                f'<path d="{path}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>'
            )
            for n, ns, low, high in points:
                x = px(n) + (k - 1.5) * 3  # spread whiskers that share an N
                out.append(
                    f'<line x1="{x:.1f}" y1="{py(low):.1f}" x2="{x:.1f}" y2="{py(high):.1f}" '
                    f'stroke="{colour}" stroke-opacity="0.5"/>'
                )
                out.append(
                    f'<circle cx="{px(n):.1f}" cy="{py(ns):.1f}" r="3.5" fill="{colour}"/>'
                )
                if high > y_max:
                    out.append(
                        f'<text x="{x:.1f}" y="{y0 + 10}" text-anchor="middle" '
                        f'fill="{colour}" font-size="10">↑</text>'
                    )
            # Legend under the panel.
            ly = y0 + panel_h + 58 + k * 18
            out.append(
                f'<line x1="{x0}" y1="{ly - 4}" x2="{x0 + 28}" y2="{ly - 4}" stroke="{colour}" '
                f'stroke-width="2"{dash}/>'
            )
            out.append(f'<circle cx="{x0 + 14}" cy="{ly - 4}" r="3.5" fill="{colour}"/>')
            out.append(f'<text x="{x0 + 36}" y="{ly}">{esc(label)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--raw", type=Path, help="PEERS_RAW file to turn into --csv")
    parser.add_argument("--csv", type=Path, required=True, help="the run's numbers")
    parser.add_argument("--svg", type=Path, help="where to write the picture")
    parser.add_argument(
        "--title",
        default="Cost per task: median of 5 repetitions, whiskers min–max (2-core machine)",
    )
    args = parser.parse_args()
    if args.raw:
        rows = parse_raw(args.raw)
        if not rows:
            print(f"no result lines in {args.raw}", file=sys.stderr)
            return 1
        write_csv(rows, args.csv)
    if args.svg:
        args.svg.parent.mkdir(parents=True, exist_ok=True)
        args.svg.write_text(svg(read_csv(args.csv), args.title))
    return 0


if __name__ == "__main__":
    sys.exit(main())
