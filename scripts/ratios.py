#!/usr/bin/env python3
"""Print criterion's last run as a markdown table of taskgroup/baseline ratios.

Reads every ``<criterion dir>/**/new/benchmark.json`` and the
``estimates.json`` beside it (criterion writes them on each ``cargo bench``).
In each group and parameter (``spawn_wait`` at N = 1000, say), the functions
whose id starts with ``taskgroup`` or ``context`` are the crate; every other
function is a baseline. One row per (crate function, baseline): both medians,
per task where the bench sets a throughput of N elements, and their ratio
(below 1.0: the crate is faster). A crate function with no baseline gets a
row of its own.

    python3 scripts/ratios.py [CRITERION_DIR]

CRITERION_DIR defaults to ``$CARGO_TARGET_DIR/criterion``, else
``target/criterion``. Standard library only.
"""

import json
import os
import sys
from collections import defaultdict
from pathlib import Path

CRATE_PREFIXES = ("taskgroup", "context")


def criterion_dir() -> Path:
    if len(sys.argv) > 1:
        return Path(sys.argv[1])
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    return Path(target) / "criterion"


def load(root: Path):
    """{(group, param): {function: (median ns, per_task, ci_low, ci_high)}}."""
    table = defaultdict(dict)
    for bench in sorted(root.glob("**/new/benchmark.json")):
        meta = json.loads(bench.read_text())
        estimates = json.loads((bench.parent / "estimates.json").read_text())
        median = estimates["median"]
        ns = median["point_estimate"]
        low = median["confidence_interval"]["lower_bound"]
        high = median["confidence_interval"]["upper_bound"]
        elements = (meta.get("throughput") or {}).get("Elements")
        per_task = bool(elements)
        if per_task:
            ns, low, high = ns / elements, low / elements, high / elements
        key = (meta["group_id"], meta.get("value_str") or "")
        table[key][meta["function_id"]] = (ns, per_task, low, high)
    return table


def fmt_ns(ns: float) -> str:
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e4:
        return f"{ns / 1e3:.1f} µs"
    if ns >= 100:
        return f"{ns:.0f} ns"
    return f"{ns:.2f} ns"


def sort_key(item):
    (group, param), _ = item
    try:
        return (group, 0, float(param), "")
    except ValueError:
        return (group, 1, 0.0, param)


def main() -> int:
    root = criterion_dir()
    table = load(root)
    if not table:
        print(f"no criterion estimates under {root}", file=sys.stderr)
        return 1
    print("| bench | N / case | crate | median | baseline | median | ratio |")
    print("|---|---|---|---:|---|---:|---:|")
    for (group, param), functions in sorted(table.items(), key=sort_key):
        ours = [f for f in functions if f.startswith(CRATE_PREFIXES)]
        theirs = [f for f in functions if not f.startswith(CRATE_PREFIXES)]
        unit = " /task" if any(v[1] for v in functions.values()) else ""
        for mine in sorted(ours):
            ns, _, _, _ = functions[mine]
            if not theirs:
                print(f"| {group} | {param} | {mine} | {fmt_ns(ns)}{unit} | — | — | — |")
            for base in theirs:
                bns, _, _, _ = functions[base]
                print(
                    f"| {group} | {param} | {mine} | {fmt_ns(ns)}{unit} "
                    f"| {base} | {fmt_ns(bns)}{unit} | **{ns / bns:.2f}** |"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
