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

    python3 scripts/ratios.py [CRITERION_DIR [MORE_DIRS...]]

CRITERION_DIR defaults to ``$CARGO_TARGET_DIR/criterion``, else
``target/criterion``. Given more directories (copies of ``criterion/`` from
other runs of the same code), the table still shows the first run's medians
and ratio, and adds the median ratio over all the runs with its range: on a
noisy machine one run's ratio can be off by half. Standard library only.
"""

import json
import os
import sys
from collections import defaultdict
from pathlib import Path

CRATE_PREFIXES = ("taskgroup", "context")


def criterion_dirs() -> list:
    if len(sys.argv) > 1:
        return [Path(arg) for arg in sys.argv[1:]]
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    return [Path(target) / "criterion"]


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


# The order; groups not listed come after, by name.
GROUP_ORDER = [
    "spawn_wait",
    "first_error",
    "cancel",
    "limit",
    "child_create_drop",
    "is_cancelled",
    "value",
    "deep_chain_cancel",
]


def sort_key(item):
    (group, param), _ = item
    rank = GROUP_ORDER.index(group) if group in GROUP_ORDER else len(GROUP_ORDER)
    try:
        return (rank, group, 0, float(param), "")
    except ValueError:
        return (rank, group, 1, float(param != "uncontended"), param)


def median(values):
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def main() -> int:
    roots = criterion_dirs()
    runs = [load(root) for root in roots]
    table = runs[0]
    if not table:
        print(f"no criterion estimates under {roots[0]}", file=sys.stderr)
        return 1
    several = len(runs) > 1
    header = "| bench | N / case | crate | median | baseline | median | ratio |"
    rule = "|---|---|---|---:|---|---:|---:|"
    if several:
        header += f" median ratio of {len(runs)} runs (min–max) |"
        rule += "---:|"
    print(header)
    print(rule)
    for (group, param), functions in sorted(table.items(), key=sort_key):
        ours = [f for f in functions if f.startswith(CRATE_PREFIXES)]
        theirs = [f for f in functions if not f.startswith(CRATE_PREFIXES)]
        unit = " /task" if any(v[1] for v in functions.values()) else ""
        for mine in sorted(ours):
            ns, _, _, _ = functions[mine]
            if not theirs:
                row = f"| {group} | {param} | {mine} | {fmt_ns(ns)}{unit} | — | — | — |"
                print(row + (" — |" if several else ""))
            for base in theirs:
                bns, _, _, _ = functions[base]
                row = (
                    f"| {group} | {param} | {mine} | {fmt_ns(ns)}{unit} "
                    f"| {base} | {fmt_ns(bns)}{unit} | **{ns / bns:.2f}** |"
                )
                if several:
                    ratios = [
                        run[(group, param)][mine][0] / run[(group, param)][base][0]
                        for run in runs
                        if mine in run.get((group, param), {})
                        and base in run.get((group, param), {})
                    ]
                    row += f" {median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f}) |"
                print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
