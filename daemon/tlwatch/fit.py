"""What the platform accepts, as data, and the verdict over a probe. Pure.

The limits are documented, not always in agreement between versions of the docs; they are kept
here as one table with where each comes from, every bound can be overridden in `[fit]` (plans
and models change), and the server's own refusal stays the final word.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tlwatch.models import Probe

GB = 1_000_000_000  # the docs' "2 GB": the smaller reading, so nothing near it is refused


@dataclass(frozen=True)
class Bounds:
    """What one target (an index's models, or the asset API) takes; None: no bound."""

    min_seconds: float | None = None
    max_seconds: float | None = None
    min_short_side: int | None = None  # pixels, as displayed
    max_long_side: int | None = None
    max_short_side: int | None = None
    max_aspect: float | None = None  # long side / short side: 2.4 means 1:2.4 to 2.4:1
    max_bytes: int | None = None

    def tighter(self, other: Bounds) -> Bounds:
        """The strictest of each bound of the two."""
        values = {}
        for field in dataclasses.fields(self):
            mine, theirs = getattr(self, field.name), getattr(other, field.name)
            if mine is None or theirs is None:
                values[field.name] = theirs if mine is None else mine
            else:
                keep_low = field.name.startswith("max_")
                values[field.name] = min(mine, theirs) if keep_low else max(mine, theirs)
        return Bounds(**values)

    def replaced(self, overrides: Mapping[str, Any]) -> Bounds:
        """These bounds with `[fit]`'s overrides in place."""
        return dataclasses.replace(self, **overrides)


MARENGO = Bounds(
    min_seconds=4.0,
    max_seconds=7200.0,
    min_short_side=360,
    max_long_side=3840,
    max_short_side=2160,
    max_aspect=2.4,
    max_bytes=2 * GB,
)
# Each model family's bounds (the model name starts with the prefix), with where documented.
MODELS: tuple[tuple[str, Bounds, str], ...] = (
    ("marengo", MARENGO, "upload-videos guide (v1.3); SDK"),
    ("pegasus1.5", dataclasses.replace(MARENGO, max_long_side=5184), "SDK analyze_async"),
    ("pegasus", dataclasses.replace(MARENGO, max_seconds=3600.0), "upload-videos guide, 1.2"),
)
ANY_MODEL = dataclasses.replace(MARENGO, max_seconds=3600.0)
"""A model not in the table: the strictest bound of each kind that any model has."""


def index_bounds(models: Iterable[str]) -> Bounds:
    """Given an index's model names, return the bounds of its strictest models together."""
    bounds = Bounds()
    for name in models:
        found = next((b for prefix, b, _ in MODELS if name.lower().startswith(prefix)), ANY_MODEL)
        bounds = bounds.tighter(found)
    return bounds


def misfits(probe: Probe | None, size: int, bounds: Bounds) -> list[str]:
    """Why the index would refuse this file, each naming its bound; [] when it fits (or when
    the probe cannot tell: the server judges then)."""
    found = []
    if bounds.max_bytes is not None and size > bounds.max_bytes:
        found.append(f"{size / GB:.1f} GB is over the index's {bounds.max_bytes / GB:g} GB")
    if probe is None:
        return found
    seconds = probe.duration
    if seconds is not None and bounds.min_seconds is not None and seconds < bounds.min_seconds:
        found.append(f"{seconds:.1f} s is shorter than the index's {bounds.min_seconds:g} s")
    if seconds is not None and bounds.max_seconds is not None and seconds > bounds.max_seconds:
        found.append(f"{seconds:.0f} s is longer than the index's {bounds.max_seconds:g} s")
    return found + _picture_misfits(probe, bounds)


def _picture_misfits(probe: Probe, bounds: Bounds) -> list[str]:
    shown = displayed(probe)
    if shown is None:
        return []
    width, height = shown
    short, long = min(width, height), max(width, height)
    found = []
    size = f"{width}x{height}"
    if bounds.min_short_side is not None and short < bounds.min_short_side:
        found.append(f"{size} is below the index's {bounds.min_short_side} lines")
    if bounds.max_long_side is not None and long > bounds.max_long_side:
        found.append(f"{size} is wider than the index's {bounds.max_long_side} pixels")
    if bounds.max_short_side is not None and short > bounds.max_short_side:
        found.append(f"{size} is over the index's {bounds.max_short_side} lines")
    if bounds.max_aspect is not None and long / short > bounds.max_aspect + 0.005:
        found.append(
            f"its aspect {long / short:.2f}:1 is outside 1:{bounds.max_aspect:g} to "
            f"{bounds.max_aspect:g}:1"
        )
    return found


def too_short(probe: Probe | None, bounds: Bounds) -> bool:
    """Shorter than the index takes: nothing made of it would be indexed."""
    seconds = probe.duration if probe else None
    return seconds is not None and bounds.min_seconds is not None and seconds < bounds.min_seconds


def displayed(probe: Probe) -> tuple[int, int] | None:
    """The picture's size as shown (anamorphic pixels stretched by the display aspect)."""
    if not probe.width or not probe.height:
        return None
    if probe.aspect and abs(probe.aspect - probe.width / probe.height) > 0.01:
        return round(probe.height * probe.aspect), probe.height
    return probe.width, probe.height


def segments(duration: float, max_seconds: float) -> list[tuple[float, float]]:
    """A recording cut into the fewest equal parts of at most `max_seconds`: (offset, length)
    of each. Equal parts, so none is a short remainder the index would refuse."""
    count = max(1, math.ceil(duration / max_seconds - 1e-9))
    length = duration / count
    return [(index * length, length) for index in range(count)]
