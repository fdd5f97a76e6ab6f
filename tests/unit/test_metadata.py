"""User metadata: templates filled from a file, sidecars over them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tlwatch.metadata import Facts, SidecarError, media_of, merged, read_sidecar, render

MTIME_NS = 1_760_000_000 * 10**9


def facts(path: bytes = b"/w/Alps/camA/C0001.MP4") -> Facts:
    return Facts.of(path, b"/w", "video", "video/mp4", 1234, MTIME_NS)


def test_facts_of_a_file() -> None:
    found = facts()
    assert (found.dir, found.name, found.stem, found.ext) == (
        ["Alps", "camA"],
        "C0001.MP4",
        "C0001",
        "MP4",
    )
    assert found.mtime.timestamp() == MTIME_NS / 1e9
    assert facts(b"/w/.profile").stem == ".profile"


def test_templates_fill_what_they_can_and_leave_out_the_rest() -> None:
    templates = {
        "project": "{dir[0]}",
        "camera": "{dir[1]}",
        "deep": "{dir[2]}",
        "what": "{kind}/{ext}, {size} bytes",
        "take": 3,
        "good": True,
        "tags": ["a", "b"],
    }
    assert render(templates, facts()) == {
        "project": "Alps",
        "camera": "camA",
        "what": "video/MP4, 1234 bytes",
        "take": 3,
        "good": True,
        "tags": ["a", "b"],
    }


def test_a_sidecar_is_merged_over_the_templates_keeping_its_types(tmp_path: Path) -> None:
    clip = os.fsencode(tmp_path / "clip.mp4")
    (tmp_path / "clip.mp4.json").write_text('{"camera": "B", "take": 7, "good": false}')
    assert media_of(clip + b".json") == clip and media_of(clip) is None
    result = merged({"camera": "A", "crew": "x"}, facts(), clip)
    assert result == {"camera": "B", "crew": "x", "take": 7, "good": False}


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("[1, 2]", "must be a JSON object"),
        ('{"a": {"b": 1}}', "key 'a': must be a string, number or boolean"),
        ('{"tlwatch_token": "x"}', "key 'tlwatch_token'"),
        ("{not json", "not valid JSON"),
    ],
)
def test_a_malformed_sidecar_is_named_with_its_bad_key(
    tmp_path: Path, text: str, said: str
) -> None:
    (tmp_path / "clip.mp4.json").write_text(text)
    with pytest.raises(SidecarError, match=r"sidecar 'clip\.mp4\.json'") as error:
        read_sidecar(os.fsencode(tmp_path / "clip.mp4"))
    assert said in str(error.value)
    assert read_sidecar(os.fsencode(tmp_path / "other.mp4")) is None
