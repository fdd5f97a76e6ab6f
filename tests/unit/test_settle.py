"""Settling: a file is complete only once its signature stops changing."""

from __future__ import annotations

from tlwatch.models import Signature
from tlwatch.settle import Settler


def test_a_file_is_complete_only_after_it_stops_changing() -> None:
    now = [0.0]
    sizes = {b"f": 1}
    settler = Settler(lambda p: Signature(sizes[p], 0, 1) if p in sizes else None, lambda: now[0])
    settler.add(b"f", 2.0)
    assert settler.next_due() == 2.0
    now[0] = 1.9
    assert settler.ripe() == []
    sizes[b"f"] = 2  # still growing when its time comes: the clock starts again
    now[0] = 2.0
    assert settler.ripe() == []
    assert settler.next_due() == 4.0
    settler.add(b"f", 2.0)  # an event with the same signature does not restart the clock
    now[0] = 4.0
    assert settler.ripe() == [(b"f", Signature(2, 0, 1))]
    assert len(settler) == 0


def test_a_vanished_file_is_forgotten() -> None:
    settler = Settler(lambda p: None, lambda: 0.0)
    settler.add(b"gone", 1.0)
    assert len(settler) == 0
