"""Data errors and the counted-warning log used by the bad-input policies.

Two policies decide what happens to bad input (keys of the ``data`` config section):

* ``on_bad_image: error | skip`` -- missing, unreadable or corrupt image files and images whose decoded size
  differs from the ``width``/``height`` in the annotation file. ``skip`` leaves the image out (at load time:
  the next image is used instead) and counts it.
* ``on_bad_annotation: error | drop`` -- annotations pointing at an unknown image or category id, boxes that are
  not 4 finite numbers, boxes narrower or lower than 1 px (the mmdetection rule) and boxes entirely outside
  their image. ``drop`` removes the annotation and counts it. Boxes partly outside the image are clipped and
  counted as a note, not as a problem.

Nothing is lost silently: every skipped image and dropped box is counted per kind, the first examples are kept
with file and ids, and the summary is logged when a dataset is built and printed by ``gfldet data check``.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict

from gfldet.errors import GfldetError

__all__ = ["DataError", "ProblemLog", "IMAGE_POLICIES", "ANNOTATION_POLICIES", "check_policy"]

logger = logging.getLogger("gfldet.data")

IMAGE_POLICIES = ("error", "skip")
ANNOTATION_POLICIES = ("error", "drop")
EXAMPLES_PER_KIND = 5


class DataError(GfldetError, ValueError):
    """Bad dataset input; the message names the file, the image/annotation id and what was expected."""


class ProblemLog:
    """Counts problems per kind and keeps the first few messages of each kind as examples."""

    def __init__(self, source: str):
        self.source = source
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = defaultdict(list)

    def add(self, kind: str, message: str) -> None:
        self.counts[kind] += 1
        if len(self.examples[kind]) < EXAMPLES_PER_KIND:
            self.examples[kind].append(message)

    def __bool__(self) -> bool:
        return bool(self.counts)

    def total(self) -> int:
        return sum(self.counts.values())

    def lines(self) -> list[str]:
        """Human-readable summary: one line per kind with its count, then its first examples indented."""
        out = []
        for kind, count in sorted(self.counts.items()):
            out.append(f"{kind}: {count}")
            out.extend(f"    {example}" for example in self.examples[kind])
            if count > len(self.examples[kind]):
                out.append(f"    ... and {count - len(self.examples[kind])} more")
        return out

    def log(self) -> None:
        if self:
            logger.warning("%s: %d data problem(s) handled by policy:\n  %s",
                           self.source, self.total(), "\n  ".join(self.lines()))


def check_policy(name: str, value: str, allowed: tuple[str, ...], *, where: str = "") -> str:
    """``value`` if it is one of ``allowed``, else a DataError naming ``data.<name>`` (and ``where`` it was set)."""
    if value not in allowed:
        raise DataError(f"{where + ': ' if where else ''}data.{name} must be one of {', '.join(allowed)}; "
                        f"got {value!r}")
    return value
