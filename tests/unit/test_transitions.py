"""Every pair of each table of legal moves is made by a named store operation, and each table
holds only the moves the code makes: a pair without an operation here is a pair too many."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tlwatch.models import ChoreKind, ChoreState, FileState, IndexState, Media, Signature
from tlwatch.state import CHORE_LEGAL, INDEX_LEGAL, JOURNEY, NewPart, Store

from conftest import OpenStore

MEDIA = Media("video/mp4", "video", "ab" * 32, duration=1.0)
F, C, I = FileState, ChoreState, IndexState  # noqa: E741 - short names keep the tables readable


@pytest.fixture
def store(open_store: OpenStore) -> Iterator[Store]:
    with open_store() as opened:
        yield opened


def file_in(store: Store, state: FileState) -> int:
    """A file brought to `state` by the journey's own operations; its id."""
    file_id = store.enqueue(b"/w/a.mp4", b"/w", Signature(1, 2, 3), MEDIA).id
    if state == F.QUEUED:
        return file_id
    assert store.claim_next("token") is not None
    if state == F.FAILED:
        store.fail(file_id, "refused")
    elif state == F.SKIPPED:
        store.skip(file_id, "too big")
    elif state == F.HELD:
        store.hold_claimed(file_id, "total media budget: used up")
    elif state == F.FITTING:
        store.fit(file_id, '{"parts": 1}', "7300 s is longer than the index's 7200 s")
    elif state in (F.UPLOADED, F.READY):
        store.mark_uploaded(file_id, "asset-1", "processing")
        if state == F.READY:
            assert store.mark_ready(file_id, [("index-1", file_id)], after=ChoreKind.DELETE)
    assert store.get(file_id).state == state
    return file_id


def _proxy_ready(store: Store, file_id: int) -> None:
    """Its proxy made, uploaded and ready."""
    chore = store.claim_chore((), (ChoreKind.PROXY,))
    assert chore is not None and chore.file_id == file_id
    media = Media("video/mp4", "video", "cd" * 32, duration=1.0)
    part = NewPart(b"/spool/p.mp4", Signature(4, 5, 6), media, {}, 1, 1, 0.0)
    [row] = store.add_parts(chore, b"/spool", [part])
    assert store.claim_next("token-2") is not None
    store.mark_uploaded(row.id, "asset-2", "processing")
    assert store.mark_ready(row.id)


def _proxy_failed(store: Store, file_id: int) -> None:
    chore = store.claim_chore((), (ChoreKind.PROXY,))
    assert chore is not None
    store.fit_failed(chore, "Invalid data found when processing input")


FILE_MOVES: dict[tuple[FileState | None, FileState], Callable[[Store, int], object]] = {
    (F.QUEUED, F.UPLOADING): lambda s, i: s.claim_next("token"),
    (F.QUEUED, F.SKIPPED): lambda s, i: s.skip(i, "gone before it could be uploaded"),
    (F.QUEUED, F.QUEUED): lambda s, i: s.requeue(i, "its folder is offline", at=None),
    (F.UPLOADING, F.QUEUED): lambda s, i: s.requeue(i, "timed out", at=None),
    (F.UPLOADING, F.UPLOADED): lambda s, i: s.mark_uploaded(i, "asset-1", "processing"),
    (F.UPLOADING, F.FAILED): lambda s, i: s.fail(i, "refused"),
    (F.UPLOADING, F.SKIPPED): lambda s, i: s.skip(i, "too big"),
    (F.UPLOADING, F.HELD): lambda s, i: s.hold_claimed(i, "daily media budget: used up"),
    (F.UPLOADED, F.QUEUED): lambda s, i: s.withdraw(i, "changed while it was sent"),
    (F.UPLOADED, F.READY): lambda s, i: s.mark_ready(i),
    (F.UPLOADED, F.FAILED): lambda s, i: s.fail(i, "processing failed", expect=F.UPLOADED),
    (F.FAILED, F.QUEUED): lambda s, i: s.retry([i]),
    (F.SKIPPED, F.QUEUED): lambda s, i: s.retry([i]),
    (F.HELD, F.QUEUED): lambda s, i: s.release_held("total media budget"),
    (F.UPLOADING, F.FITTING): lambda s, i: s.fit(i, "{}", "3:1 is outside 1:2.4 to 2.4:1"),
    (F.FITTING, F.READY): _proxy_ready,
    (F.FITTING, F.FAILED): _proxy_failed,
    (F.FITTING, F.SKIPPED): lambda s, i: s.skip(i, "gone before its proxy was made"),
}


def test_the_journey_table_is_exactly_the_moves_made() -> None:
    assert set(FILE_MOVES) == set(JOURNEY)


@pytest.mark.parametrize("move", sorted(FILE_MOVES, key=str), ids=str)
def test_each_journey_move(store: Store, move: tuple[FileState, FileState]) -> None:
    old, new = move
    file_id = file_in(store, old)
    FILE_MOVES[move](store, file_id)
    assert store.get(file_id).state == new
    if old != new:  # a change of state is an event
        assert store.events(file_id)[-1][2:4] == (old, new)


def chore_in(store: Store, state: ChoreState) -> int:
    """A metadata chore brought to `state`; its id."""
    file_id = file_in(store, F.UPLOADED)
    store.want_metadata(file_id, {"scene": "1"})
    chore = store.chores_of(file_id)[-1]
    if state != C.QUEUED:
        claimed = store.claim_chore((), tuple(ChoreKind))
        assert claimed is not None
        if state == C.FAILED:
            store.fail_chore(claimed, "refused")
    assert store.chore(chore.id).state == state
    return chore.id


def _superseded(store: Store, chore_id: int) -> None:
    store.want_metadata(store.chore(chore_id).file_id, {"scene": "2"})


CHORE_MOVES: dict[tuple[ChoreState, ChoreState], Callable[[Store, int], object]] = {
    (C.QUEUED, C.DOING): lambda s, c: s.claim_chore((), tuple(ChoreKind)),
    (C.QUEUED, C.DROPPED): _superseded,
    (C.DOING, C.QUEUED): lambda s, c: s.requeue_chore(s.chore(c), "timed out", at=0.0),
    (C.DOING, C.DONE): lambda s, c: s.metadata_sent(s.chore(c)),
    (C.DOING, C.DROPPED): lambda s, c: s.drop_chore(s.chore(c), "the file changed"),
    (C.DOING, C.FAILED): lambda s, c: s.fail_chore(s.chore(c), "refused"),
    (C.FAILED, C.QUEUED): lambda s, c: s.retry([s.chore(c).file_id]),
    (C.FAILED, C.DROPPED): _superseded,
}


def test_the_chore_table_is_exactly_the_moves_made() -> None:
    assert set(CHORE_MOVES) == set(CHORE_LEGAL)


@pytest.mark.parametrize("move", sorted(CHORE_MOVES, key=str), ids=str)
def test_each_chore_move(store: Store, move: tuple[ChoreState, ChoreState]) -> None:
    old, new = move
    chore_id = chore_in(store, old)
    CHORE_MOVES[move](store, chore_id)
    assert store.chore(chore_id).state == new


def indexing_in(store: Store, state: IndexState) -> tuple[str, str]:
    """An indexing brought to `state`; its (asset, index)."""
    file_in(store, F.READY)  # wants ("asset-1", "index-1")
    key = ("asset-1", "index-1")
    if state != I.QUEUED:
        assert store.claim_indexing() is not None
        if state in (I.INDEXING, I.FAILED):
            store.indexing_sent(*key, "indexed-1")
        if state == I.FAILED:
            store.indexing_status(*key, "failed", "the index refused it")
    assert store.indexing(*key).state == state
    return key


INDEX_MOVES: dict[tuple[IndexState, IndexState], Callable[[Store, tuple[str, str]], object]] = {
    (I.QUEUED, I.SENDING): lambda s, k: s.claim_indexing(),
    (I.SENDING, I.QUEUED): lambda s, k: s.requeue_indexing(*k, "timed out", at=0.0),
    (I.SENDING, I.INDEXING): lambda s, k: s.indexing_sent(*k, "indexed-1"),
    (I.SENDING, I.FAILED): lambda s, k: s.fail_indexing(*k, "refused"),
    (I.SENDING, I.SKIPPED): lambda s, k: s.skip_indexing(*k, "not indexed: too short"),
    (I.INDEXING, I.INDEXING): lambda s, k: s.indexing_status(*k, "indexing", None),
    (I.INDEXING, I.READY): lambda s, k: s.indexing_status(*k, "ready", None),
    (I.INDEXING, I.FAILED): lambda s, k: s.indexing_status(*k, "failed", "no"),
    (I.FAILED, I.QUEUED): lambda s, k: s.retry([1]),
}


def test_the_indexing_table_is_exactly_the_moves_made() -> None:
    assert set(INDEX_MOVES) == set(INDEX_LEGAL)


@pytest.mark.parametrize("move", sorted(INDEX_MOVES, key=str), ids=str)
def test_each_indexing_move(store: Store, move: tuple[IndexState, IndexState]) -> None:
    old, new = move
    key = indexing_in(store, old)
    INDEX_MOVES[move](store, key)
    assert store.indexing(*key).state == new
