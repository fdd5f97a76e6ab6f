"""The platform's limits as data, and the verdict over a probe (pure)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tlwatch.config import parse
from tlwatch.errors import ConfigError
from tlwatch.fit import ANY_MODEL, GB, Bounds, index_bounds, misfits, segments, too_short
from tlwatch.models import Probe
from tlwatch.probe import probe

from conftest import FIXTURES

HD = Probe(duration=10.0, width=1280, height=720, aspect=16 / 9)


def test_an_index_takes_the_strictest_bound_of_its_models() -> None:
    assert index_bounds(["marengo3.0"]).max_seconds == 7200
    assert index_bounds(["marengo3.0", "pegasus1.2"]).max_seconds == 3600
    assert index_bounds(["pegasus1.5"]).max_long_side == 5184
    assert index_bounds(["pegasus1.5", "marengo2.7"]).max_long_side == 3840
    assert index_bounds(["a-model-not-yet-documented"]) == ANY_MODEL
    assert index_bounds([]) == Bounds()  # no model known: nothing judged here


def test_a_clip_inside_every_bound_fits() -> None:
    assert misfits(HD, 50_000_000, index_bounds(["marengo3.0", "pegasus1.2"])) == []


@pytest.mark.parametrize(
    ("probe", "size", "says"),
    [
        (Probe(duration=3.0, width=1280, height=720), 1, "3.0 s is shorter than the index's 4 s"),
        (Probe(duration=7500.0, width=1280, height=720), 1, "7500 s is longer than the index's"),
        (Probe(duration=9.0, width=6144, height=3160), 1, "6144x3160 is wider than the index's"),
        (Probe(duration=9.0, width=6144, height=3160), 1, "is over the index's 2160 lines"),
        (Probe(duration=9.0, width=1920, height=640), 1, "its aspect 3.00:1 is outside 1:2.4"),
        (Probe(duration=9.0, width=640, height=1920), 1, "its aspect 3.00:1 is outside"),
        (Probe(duration=9.0, width=320, height=240), 1, "320x240 is below the index's 360 lines"),
        (HD, 3 * GB, "3.0 GB is over the index's 2 GB"),
    ],
)
def test_each_misfit_names_its_bound(probe: Probe, size: int, says: str) -> None:
    found = misfits(probe, size, index_bounds(["pegasus1.2"]))
    assert any(says in reason for reason in found), found


def test_an_anamorphic_picture_is_judged_as_displayed() -> None:
    scope = Probe(duration=9.0, width=1920, height=1080, aspect=2.76)  # squeezed 2.76:1
    assert any("aspect 2.76:1" in r for r in misfits(scope, 1, index_bounds(["marengo3.0"])))


def test_an_unreadable_header_leaves_the_judgement_to_the_server() -> None:
    bounds = index_bounds(["marengo3.0"])
    assert misfits(None, 1, bounds) == []
    assert misfits(Probe(), 1, bounds) == []
    assert not too_short(None, bounds)


def test_a_long_recording_is_cut_into_the_fewest_equal_segments() -> None:
    parts = segments(7500.0, 3600.0)  # 2 h 05 min, pegasus1.2
    assert len(parts) == 3
    assert all(length <= 3600.0 for _, length in parts)
    assert parts[0][0] == 0.0 and sum(length for _, length in parts) == pytest.approx(7500.0)
    assert [offset for offset, _ in parts] == pytest.approx([0.0, 2500.0, 5000.0])
    assert segments(3600.0, 3600.0) == [(0.0, 3600.0)]


def test_the_fit_section_overrides_any_bound_and_names_a_bad_key(tmp_path: Path) -> None:
    source = tmp_path / "config.toml"
    config = parse({"fit": {"max_seconds": 60, "min_short_side": 240}}, source=source)
    bounds = index_bounds(["marengo3.0"]).replaced(config.fit.overrides)
    assert (bounds.max_seconds, bounds.min_short_side, bounds.max_long_side) == (60, 240, 3840)
    with pytest.raises(ConfigError) as error:
        parse({"fit": {"max_second": 60, "max_aspect": 0.5}}, source=source)
    assert f"{source}: fit.max_second: unknown key (did you mean 'max_seconds'?)" in str(
        error.value
    )
    assert "fit.max_aspect: must be a ratio >= 1" in str(error.value)


def test_the_probe_reads_the_picture_and_the_display_aspect() -> None:
    found = probe(os.fsencode(FIXTURES / "indexable.mp4"))
    assert found is not None
    assert (found.duration, found.width, found.height, found.fps) == (5.0, 640, 360, 1.0)
    assert found.aspect == pytest.approx(16 / 9, abs=0.01)
    assert probe(os.fsencode(FIXTURES / "document.pdf")) == Probe(container="PDF")


PEGASUS = index_bounds(["pegasus1.2"])


@pytest.mark.parametrize(
    ("source", "picture", "canvas"),
    [
        (Probe(duration=9.0, width=6144, height=3160), (1400, 720), (1400, 720)),  # 6K: 720 lines
        (Probe(duration=9.0, width=1920, height=640), (1728, 576), (1728, 720)),  # 3:1: letterbox
        (Probe(duration=9.0, width=640, height=1920), (288, 864), (360, 864)),  # 1:3: pillarbox
        (Probe(duration=9.0, width=64, height=36), (640, 360), (640, 360)),  # tiny: up to 360
        (Probe(duration=9.0, width=1920, height=1080, aspect=2.76), (1728, 626), (1728, 720)),
    ],
)
def test_a_proxy_picture_fits_every_bound_and_is_never_cropped(
    source: Probe, picture: tuple[int, int], canvas: tuple[int, int]
) -> None:
    from tlwatch.fit import proxy_picture

    made = proxy_picture(source, PEGASUS, 720)
    assert made is not None
    assert (made.width, made.height) == picture and (
        made.canvas_width,
        made.canvas_height,
    ) == canvas
    proxy = Probe(duration=9.0, width=made.canvas_width, height=made.canvas_height)
    assert misfits(proxy, 1, PEGASUS) == []  # the proxy itself fits the index
    assert made.width % 2 == made.height % 2 == 0


def test_the_verdict_sends_a_proxy_segments_or_the_file_itself() -> None:
    from tlwatch.fit import Action, verdict

    most = 10 * GB
    assert verdict(HD, 1, PEGASUS, "auto", most).action == Action.AS_IS
    assert verdict(HD, 1, PEGASUS, "always", most).action == Action.PROXY
    wide = Probe(duration=9.0, width=1920, height=640)
    assert verdict(wide, 1, PEGASUS, "auto", most).action == Action.PROXY
    assert verdict(wide, 1, PEGASUS, "never", most).action == Action.AS_IS
    long = verdict(Probe(duration=7500.0, width=1280, height=720), 1, PEGASUS, "auto", most)
    assert long.action == Action.SEGMENTS and len(long.parts) == 3
    short = Probe(duration=3.0, width=6144, height=3160)  # nothing made of it would be indexed
    assert verdict(short, 1, PEGASUS, "auto", most).action == Action.AS_IS
    huge = verdict(HD, 11 * GB, None, "auto", most)  # not indexed, but over the upload's most
    assert huge.action == Action.PROXY and "over the 10 GB" in (huge.reason or "")
    assert verdict(None, 11 * GB, None, "auto", most).action == Action.AS_IS  # cannot judge


def test_parts_made_stay_a_second_under_the_longest_the_index_takes() -> None:
    """ffmpeg does not cut to the frame: a proxy of 3,599.5 s could come out over 3,600."""
    from tlwatch.fit import Action, verdict

    wide = Probe(duration=3599.5, width=1920, height=640)  # needs a proxy anyway
    found = verdict(wide, 1, PEGASUS, "auto", 10 * GB)
    assert found.action == Action.SEGMENTS and len(found.parts) == 2
    assert all(length <= 3599.0 for _, length in found.parts)


def test_a_proxy_for_a_folder_without_an_index_stays_under_the_upload_limit(tmp_path: Path) -> None:
    from tlwatch.fit import UPLOAD_MOST
    from tlwatch.fitter import judge
    from tlwatch.models import FileState, Media, Signature
    from tlwatch.state import Store

    four_hours = Media("video/mp4", "video", "ab" * 32, 14_400.0, 7680, 4320, 16 / 9, 25.0)
    with Store(tmp_path / "s.db") as store:
        row = store.enqueue(b"/w/a.mov", b"/w", Signature(11 * GB, 1, 1), four_hours)
        assert row.state == FileState.QUEUED
        found, plan = judge(row, None, "auto", parse({}, source=None).fit)
    assert found.reason is not None and "over the 10 GB" in found.reason
    rate = json.loads(plan)["max_rate"]
    assert rate * 14_400 / 8 < UPLOAD_MOST


def test_a_spool_inside_a_watched_folder_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "config.toml"
    with pytest.raises(ConfigError) as error:
        parse({"fit": {"spool_dir": "w/spool"}, "watch": [{"path": "w"}]}, source=source)
    assert f"fit.spool_dir: {tmp_path / 'w' / 'spool'} is inside the watched folder" in str(
        error.value
    )
    state = {"path": "w/state.db"}  # the default spool sits beside the store
    with pytest.raises(ConfigError, match="is inside the watched folder"):
        parse({"state": state, "watch": [{"path": "w"}]}, source=source)
    assert parse({"watch": [{"path": "w"}]}, source=source).fit.spool_dir is None
