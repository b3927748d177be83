"""A py-spy profile summed up: its raw (collapsed-stack) output parsed, and the functions that
took the most samples, by self and by inclusive time (pure)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# One stack per line: its frames root first, ';'-separated, then its sample count. The stack
# may be empty: a sample py-spy could not read (--nonblocking reads a moving process).
_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
# A frame: `function (file:line)`; py-spy writes a bare name when it knows no file.
_FRAME = re.compile(r"^(?P<function>.+?) \((?P<file>.+):(?P<line>\d+)\)$")
# Where a package's path begins in an absolute file name (py-spy shortens most, not all).
_PACKAGE_ROOTS = re.compile(r".*/(?:site-packages|dist-packages|src|lib/python3\.\d+)/")

TOP_SELF = 15
TOP_TOTAL = 10


@dataclass(frozen=True, order=True)
class Frame:
    function: str
    location: str  # file:line, the file relative to its package root; "" when unknown

    def __str__(self) -> str:
        return f"{self.function} ({self.location})" if self.location else self.function


Stack = tuple[Frame, ...]  # root first; () for a sample whose stack could not be read


def parse_frame(text: str) -> Frame:
    match = _FRAME.match(text)
    if match is None:
        return Frame(text, "")
    file = _PACKAGE_ROOTS.sub("", match["file"])
    return Frame(match["function"], f"{file}:{match['line']}")


def parse_collapsed(text: str) -> Counter[Stack]:
    """The samples of each stack in py-spy's raw output (`py-spy record -f raw`), the same
    stack's lines added up; those it could not read under (). Raises ValueError on a line
    that is not `frames count`."""
    stacks: Counter[Stack] = Counter()
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = _LINE.match(line)
        if match is None:
            raise ValueError(f"line {number} of py-spy's output is not a stack: {line!r}")
        frames = match["stack"]
        stack = tuple(parse_frame(f) for f in frames.split(";")) if frames else ()
        stacks[stack] += int(match["count"])
    return stacks


def self_samples(stacks: Mapping[Stack, int]) -> Counter[Frame]:
    """Samples in which each frame was running: the leaf of the stack."""
    found: Counter[Frame] = Counter()
    for stack, count in stacks.items():
        if stack:
            found[stack[-1]] += count
    return found


def total_samples(stacks: Mapping[Stack, int]) -> Counter[Frame]:
    """Samples in which each frame was on the stack (once per sample, however deep it
    recursed)."""
    found: Counter[Frame] = Counter()
    for stack, count in stacks.items():
        for frame in set(stack):
            found[frame] += count
    return found


def wrappers(stacks: Mapping[Stack, int]) -> set[Frame]:
    """Frames all of whose samples are also in one frame they always call (click's commands,
    the main loop's layers): in a ranking by total time they would fill the top with the same
    figure, so the deepest of such a chain stands for it."""
    below: dict[Frame, set[Frame]] = {}  # the frames under each in every stack it is in
    for stack in stacks:
        seen: set[Frame] = set()
        for depth, frame in enumerate(stack):
            if frame in seen:  # recursion: its outermost call stands for it
                continue
            seen.add(frame)
            under = set(stack[depth + 1 :]) - {frame}
            below[frame] = below[frame] & under if frame in below else under
    total = total_samples(stacks)
    return {frame for frame, under in below.items() if any(total[f] == total[frame] for f in under)}


def _top(counts: Counter[Frame], samples: int, n: int) -> list[dict[str, Any]]:
    # Ties in a stable order (by name), so that the same profile reads the same.
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:n]
    return [
        {
            "function": frame.function,
            "location": frame.location,
            "samples": count,
            "share": round(count / samples, 4),
        }
        for frame, count in ranked
    ]


@dataclass(frozen=True)
class Profile:
    """The samples py-spy took of a process, and how it took them."""

    stacks: Counter[Stack]
    settings: Mapping[str, Any] = field(default_factory=dict)  # tool, rate, flags, window

    @classmethod
    def of(cls, outputs: Iterable[str], settings: Mapping[str, Any]) -> Profile:
        """One profile from several of py-spy's raw outputs (one per recording)."""
        stacks: Counter[Stack] = Counter()
        for text in outputs:
            stacks.update(parse_collapsed(text))
        return cls(stacks, settings)

    @property
    def samples(self) -> int:
        """Every sample, unreadable ones included: the shares are of all of them."""
        return sum(self.stacks.values())

    @property
    def unreadable(self) -> int:
        return self.stacks.get((), 0)

    def top_self(self, n: int = TOP_SELF) -> list[dict[str, Any]]:
        return _top(self_samples(self.stacks), self.samples, n) if self.samples else []

    def top_total(self, n: int = TOP_TOTAL) -> list[dict[str, Any]]:
        """By inclusive time, wrappers left out."""
        left_out = wrappers(self.stacks)
        counts = Counter({f: c for f, c in total_samples(self.stacks).items() if f not in left_out})
        return _top(counts, self.samples, n) if self.samples else []

    def to_json(self) -> dict[str, Any]:
        return {
            **self.settings,
            "samples": self.samples,
            "unreadable_samples": self.unreadable,
            "top_self": self.top_self(),
            "top_total": self.top_total(),
        }


def summary_lines(profile: Mapping[str, Any], n: int = 5) -> list[str]:
    """The top `n` entries by self time of a profile's JSON, one line each, for people."""
    return [
        f"{entry['share']:6.1%}  {entry['function']} ({entry['location']})"
        for entry in profile["top_self"][:n]
    ]
