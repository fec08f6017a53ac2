"""Turn a pip resolution report into a constraints file: `name==version`, one a line, sorted.

    pip install --dry-run --ignore-installed --report r.json -e '.[all-cuda]'
    python scripts/report_constraints.py r.json > constraints-cuda.txt

The file is the resolver's answer, not a hand-written list, so an install from it finds
every version pinned and never backtracks. The project itself (`workbench`) is left out.
"""

from __future__ import annotations

import json
import sys


def constraints(report: dict) -> list[str]:
    """`name==version` for every package the report would install, sorted by name."""
    pins = {}
    for item in report["install"]:
        meta = item["metadata"]
        name = meta["name"].lower().replace("_", "-")
        if name != "workbench":
            pins[name] = meta["version"]
    return [f"{n}=={v}" for n, v in sorted(pins.items())]


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: report_constraints.py REPORT.json HEADER", file=sys.stderr)
        return 2
    with open(argv[0]) as f:
        report = json.load(f)
    for line in argv[1].splitlines():
        print(f"# {line}")
    print("\n".join(constraints(report)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
