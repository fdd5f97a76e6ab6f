"""`after_upload` with the real `tlwatch` command: a move never overwrites, a delete never takes a
version that is not safe on the server, and what is owed survives kill -9."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal

from tlwatch.sandbox import indexes

from conftest import FIXTURES, Daemon, wait_for

INDEX = "idx-footage"


def take(daemon: Daemon, tail: bytes) -> bytes:
    data = (FIXTURES / "indexable.mp4").read_bytes() + tail
    (daemon.watch / "take.mp4").write_bytes(data)
    return data


def test_move_keeps_both_takes_of_one_name(daemon: Daemon) -> None:
    daemon.configure(watch='after_upload = "move"\nmove_to = "done"')
    daemon.start()
    first = take(daemon, b"v1")
    wait_for((daemon.root / "done" / "take.mp4").exists, timeout=30)
    second = take(daemon, b"v2")
    wait_for((daemon.root / "done" / "take (2).mp4").exists, timeout=30)
    assert (daemon.root / "done" / "take.mp4").read_bytes() == first
    assert (daemon.root / "done" / "take (2).mp4").read_bytes() == second
    listed = json.loads(daemon.command("list", "--json", check=True).stdout)
    paths = sorted(os.path.relpath(r["path"], daemon.root) for r in listed)
    assert paths == ["done/take (2).mp4", "done/take.mp4"]
    assert "moved to" in daemon.log() and "Traceback" not in daemon.log()
    assert daemon.stop() == 0


def test_delete_spares_a_new_version_written_while_the_old_one_indexes(daemon: Daemon) -> None:
    indexes.add_index(daemon.sandbox.server.service, INDEX, INDEX)
    daemon.configure(watch=f'after_upload = "delete"\nindex_id = "{INDEX}"')
    daemon.sandbox.settings(indexing_seconds=2.0)
    daemon.start()
    take(daemon, b"v1")
    wait_for(daemon.sandbox.indexed, timeout=30)  # v1 is being indexed
    # v2 arrives, and the API holds it back (429) until v1's indexing is over.
    daemon.sandbox.fault(endpoint="create", status=429, retry_after="3", times=1)
    second = take(daemon, b"v2 - re-exported")
    wait_for(lambda: len(daemon.sandbox.assets()) == 2, timeout=30)  # v2 was sent
    sent = {a["sha256"] for a in daemon.sandbox.assets()}
    assert hashlib.sha256(second).hexdigest() in sent
    wait_for(lambda: not (daemon.watch / "take.mp4").exists(), timeout=30)  # once v2 indexed
    wait_for(lambda: len(daemon.sandbox.indexed()) == 2, timeout=10)
    log = daemon.log()
    assert "gone before it could be uploaded" not in log
    assert log.count("deleted after upload, as configured") == 1
    assert daemon.stop() == 0


def test_a_move_owed_at_kill_9_happens_after_the_restart(daemon: Daemon) -> None:
    daemon.configure(watch='after_upload = "move"\nmove_to = "done"')
    (daemon.root / "done").write_text("a file where the folder should be")  # the move fails
    daemon.start()
    data = take(daemon, b"v1")
    wait_for(lambda: "cannot move it" in daemon.log(), timeout=30)
    assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL
    os.unlink(daemon.root / "done")  # the trouble is gone while the daemon is down
    daemon.start()
    wait_for((daemon.root / "done" / "take.mp4").exists, timeout=30)
    assert (daemon.root / "done" / "take.mp4").read_bytes() == data
    assert not (daemon.watch / "take.mp4").exists()
    assert len(daemon.sandbox.assets()) == 1
    assert daemon.stop() == 0


def test_long_and_hostile_names_are_uploaded_not_held(daemon: Daemon) -> None:
    watch = os.fsencode(daemon.watch)
    names = [
        b"l" * 251 + b".mp4",  # 255 bytes: `NAME.json` cannot exist, so it has no sidecar
        b"m" * 246 + b".wav",  # 250 bytes
        b"caf\xe9 \xff.mp4",
        b"line\nbreak.mp4",
        b" leading and trailing space .mp4",
        b"*?[glob].mp4",
        b"$(echo hi).mp4",
        b"-n.mp4",
        b"\xe2\x80\xae reversed.mp4",
        b"tab\there.mp4",
        b"carriage\rreturn.mp4",
        b"quote\"s and 'apostrophes'.mp4",
        b"back\\slash.mp4",
        b"percent %s %d %(name)s.mp4",
        b"\xf0\x9f\x8e\xac emoji.mp4",
        b"\x1b[31mansi.mp4",
        b"UPPER.MP4",
        b"no extension",
        b"dots...mp4",
    ]
    assert len(names) == 19
    for number, name in enumerate(names):
        source = "tone.wav" if name.endswith(b".wav") else "clip.mp4"
        data = (FIXTURES / source).read_bytes() + bytes([number])
        with open(os.path.join(watch, name), "wb") as file:
            file.write(data)
    daemon.start()
    wait_for(lambda: [r.state.value for r in daemon.rows()].count("ready") == len(names), 40)
    assert "held" not in {r.state.value for r in daemon.rows()}
    assert len(daemon.sandbox.assets()) == len(names)
    assert daemon.stop() == 0


def test_a_bad_sidecar_reason_shows_the_name_escaped(daemon: Daemon) -> None:
    name = b"caf\xe9.mp4"
    shutil.copy(FIXTURES / "clip.mp4", os.path.join(os.fsencode(daemon.watch), name))
    os.mkdir(os.path.join(os.fsencode(daemon.watch), name + b".json"))  # cannot be read
    daemon.start()
    wait_for(lambda: "held" in daemon.states().values(), timeout=30)
    row = next(r for r in daemon.rows() if r.path.endswith(b".mp4"))
    reason = row.reason or ""
    assert reason.startswith("sidecar 'caf\\udce9.mp4.json': Is a directory"), reason
    assert "b'" not in reason
    assert daemon.stop() == 0
