"""Sample C2D algorithm: per-station statistics of a numeric CSV column.

Portable between the sandbox, Ocean's v4 Kubernetes C2D and Ocean Node: it walks the inputs folder,
reads optional custom data, writes flat files into the outputs folder and logs to stdout.
Custom data (``algocustomdata``): ``{"column": "temperature_c", "group_by": "station"}``.
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import sys

INPUTS = os.environ.get("INPUTS", "/data/inputs")
OUTPUTS = os.environ.get("OUTPUTS", "/data/outputs")


def load_custom_data():
    path = os.path.join(INPUTS, "algoCustomData.json")
    if not os.path.exists(path):
        return {}
    with open(path) as handle:
        data = json.load(handle)
    return data if isinstance(data, dict) else {}


def input_files():
    for root, _dirs, files in os.walk(INPUTS):
        for name in sorted(files):
            if name != "algoCustomData.json":
                yield os.path.join(root, name)


def main():
    custom = load_custom_data()
    column = custom.get("column", "temperature_c")
    group_by = custom.get("group_by", "station")
    print("custom data:", json.dumps(custom, sort_keys=True))
    groups = {}
    files = list(input_files())
    for path in files:
        print("reading", os.path.relpath(path, INPUTS))
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                try:
                    value = float(row[column])
                except (KeyError, TypeError, ValueError):
                    continue
                groups.setdefault(row.get(group_by, "all"), []).append(value)
    if not groups:
        print(f"error: no numeric values in column {column!r}", file=sys.stderr)
        with open(os.path.join(OUTPUTS, "error.txt"), "w") as handle:
            handle.write(f"no numeric values in column {column!r}\n")
        return 1
    summary = {
        "column": column,
        "inputs": len(files),
        "groups": {
            key: {
                "count": len(values),
                "mean": round(statistics.fmean(values), 4),
                "min": min(values),
                "max": max(values),
            }
            for key, values in sorted(groups.items())
        },
    }
    with open(os.path.join(OUTPUTS, "summary.json"), "w") as handle:
        json.dump(summary, handle, indent=2, sort_keys=True)
    with open(os.path.join(OUTPUTS, "summary.csv"), "w") as handle:
        handle.write(f"{group_by},count,mean,min,max\n")
        for key, stats in summary["groups"].items():
            handle.write(f"{key},{stats['count']},{stats['mean']},{stats['min']},{stats['max']}\n")
    print("wrote summary for", len(groups), "groups")
    return 0


if __name__ == "__main__":
    sys.exit(main())
