"""Summarise a py-spy collapsed-stack profile (`py-spy record --format raw`).

Each line of the input is `frame;frame;...;frame COUNT`, outermost frame first. This prints,
for the samples whose stack contains `--under` (default: all), the share of samples spent
inside each of the frames directly below that frame (inclusive), and the functions with the
most self samples, so a profile can be quoted in bench/README.md as a table.

    python bench/profile_summary.py /tmp/prof.txt --under prebooking_execute
    python bench/profile_summary.py /tmp/prof.txt --under handle_delivery --depth 2
    python bench/profile_summary.py bench/results/profile-n1000-after-5c3ea17.txt.gz
"""

from __future__ import annotations

import argparse
import gzip
import re
from collections import Counter
from pathlib import Path

# py-spy frames look like `function (path/to/file.py:123)`; drop the line number so the same
# function at different lines counts once.
_LINE = re.compile(r":\d+\)$")


def frame_name(frame: str) -> str:
    return _LINE.sub(")", frame.strip())


def read(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    text = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()
    for line in text.splitlines():
        head, _, count = line.rpartition(" ")
        if not head or not count.isdigit():
            continue
        stacks.append(([frame_name(f) for f in head.split(";")], int(count)))
    return stacks


def below(
    stacks: list[tuple[list[str], int]], under: str | None, depth: int
) -> tuple[int, Counter[str]]:
    """Samples containing `under`, and the frames `depth` levels below it (inclusive)."""
    total = 0
    children: Counter[str] = Counter()
    for frames, count in stacks:
        if under is None:
            index = -1
        else:
            hits = [i for i, f in enumerate(frames) if under in f]
            if not hits:
                continue
            index = hits[0]
        total += count
        path = frames[index + 1 : index + 1 + depth]
        children[" > ".join(path) if path else "(self)"] += count
    return total, children


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("profile", type=Path)
    parser.add_argument("--under", help="a substring of the frame to break down")
    parser.add_argument("--depth", type=int, default=1, help="how many frames below it to show")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    stacks = read(args.profile)
    everything = sum(count for _, count in stacks)
    total, children = below(stacks, args.under, args.depth)
    print(f"samples: {everything} in all, {total} under {args.under or '(root)'}")
    print("\n| below | samples | share |\n| --- | --- | --- |")
    for name, count in children.most_common(args.top):
        print(f"| `{name}` | {count} | {100 * count / max(1, total):.1f} % |")
    own: Counter[str] = Counter()
    for frames, count in stacks:
        if args.under is None or any(args.under in f for f in frames):
            own[frames[-1]] += count
    print("\n| self (leaf) | samples | share |\n| --- | --- | --- |")
    for name, count in own.most_common(args.top):
        print(f"| `{name}` | {count} | {100 * count / max(1, total):.1f} % |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
