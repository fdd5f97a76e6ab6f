"""What the platform accepts, as data, and the verdict over a probe. Pure.

The limits are documented, not always in agreement between versions of the docs; they are kept
here as one table with where each comes from, every bound can be overridden in `[fit]` (plans
and models change), and the server's own refusal stays the final word.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tlwatch.models import Probe

GB = 1_000_000_000  # the docs' "2 GB": the smaller reading, so nothing near it is refused
MARGIN = 1.0  # seconds: a part made is never cut to the frame, so it stays this far under
UPLOAD_MOST = 10 * GB  # the largest upload the API takes, video and audio (multipart; SDK)
IMAGE_MOST = 32_000_000  # the largest image it takes (OpenAPI; one page says 5 MB)


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


@dataclass(frozen=True)
class Picture:
    """A proxy's picture: the source scaled to `width` x `height`, centred on a `canvas_width` x
    `canvas_height` canvas (letterboxed or pillarboxed, never cropped)."""

    width: int
    height: int
    canvas_width: int
    canvas_height: int


def proxy_picture(probe: Probe, bounds: Bounds, lines: int) -> Picture | None:
    """The picture of a proxy of this source: at most `lines` lines (more only where the short
    side would fall under the minimum), inside the allowed aspect range, even sizes for
    yuv420p. None when the source has no picture."""
    shown = displayed(probe)
    if shown is None:
        return None
    width, height = shown
    widest = bounds.max_aspect or math.inf
    canvas_w, canvas_h = float(width), float(height)
    if width / height > widest:  # too wide: bars above and below
        canvas_h = width / widest
    elif height / width > widest:  # too tall: bars left and right
        canvas_w = height / widest
    scale = min(lines, canvas_h) / canvas_h
    short = min(canvas_w, canvas_h) * scale
    if bounds.min_short_side and short < bounds.min_short_side:
        scale *= bounds.min_short_side / short  # a small source is scaled up to the minimum
    long = max(canvas_w, canvas_h) * scale
    if bounds.max_long_side and long > bounds.max_long_side:
        scale *= bounds.max_long_side / long
    canvas = _even(canvas_w * scale), _even(canvas_h * scale)
    picture = min(_even(width * scale), canvas[0]), min(_even(height * scale), canvas[1])
    return Picture(*picture, *canvas)


def _even(value: float) -> int:
    return max(2, 2 * round(value / 2))


class Action(enum.StrEnum):
    AS_IS = "as it is"
    PROXY = "a proxy"
    SEGMENTS = "segments"


@dataclass(frozen=True)
class Verdict:
    """What goes up for a file: itself, a proxy, or segments (`parts`: offset and length of
    each); `reason` says why not the file itself."""

    action: Action
    reason: str | None = None
    parts: tuple[tuple[float, float], ...] = ()


def verdict(probe: Probe | None, size: int, bounds: Bounds | None, mode: str, most: int) -> Verdict:
    """Given a video or audio file's probe and size, the bounds of the index it goes to (None:
    not indexed), the folder's `proxy` mode and the largest upload the API takes (`most`),
    return what is sent. A file too short for the index goes as it is (nothing made of it
    would be indexed); one that cannot be judged too (the server has the last word)."""
    if probe is None or probe.duration is None or mode == "never":
        return Verdict(Action.AS_IS)
    if bounds is not None and too_short(probe, bounds):
        return Verdict(Action.AS_IS)
    reasons = misfits(probe, size, bounds) if bounds is not None else []
    if size > most:
        reasons.append(f"{size / GB:.1f} GB is over the {most / GB:g} GB an upload may be")
    if not reasons and mode != "always":
        return Verdict(Action.AS_IS)
    reason = "; ".join(reasons) or "this folder sends proxies only"
    longest = bounds.max_seconds - MARGIN if bounds and bounds.max_seconds else None
    if longest is not None and probe.duration > longest:
        return Verdict(Action.SEGMENTS, reason, tuple(segments(probe.duration, longest)))
    return Verdict(Action.PROXY, reason, ((0.0, probe.duration),))
