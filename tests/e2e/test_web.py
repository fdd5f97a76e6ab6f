"""The status page's server without a browser: every endpoint of the JSON API, the token, the
Host check, cross-site POSTs refused, the one-time link, and the CLI through the API. Against a
real `tlwatch run` on the sandbox."""

from __future__ import annotations

import contextlib
import json
import shutil
import stat
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pgserver import free_port

from conftest import FIXTURES, Daemon, answers, wait_for


@pytest.fixture
def page(daemon: Daemon) -> Iterator[str]:
    """The daemon running, serving its page: the page's base URL."""
    port = free_port()
    daemon.configure(ui=f'listen = "127.0.0.1:{port}"')
    daemon.start()
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: answers(base), timeout=20)
    yield base
    assert daemon.stop() == 0


def token(daemon: Daemon) -> str:
    return (daemon.root / "state" / "ui.token").read_text().strip()


def bearer(daemon: Daemon) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(daemon)}"}


def test_the_page_and_its_api_read_what_status_says(daemon: Daemon, page: str) -> None:
    shutil.copy(FIXTURES / "clip.mp4", daemon.watch / "clip.mp4")
    daemon.wait_states({"clip.mp4": "ready"})
    weight = 0
    for path, kind in (("/", "text/html"), ("/ui.js", "javascript"), ("/ui.css", "text/css")):
        answer = httpx.get(page + path)
        assert answer.status_code == 200 and kind in answer.headers["content-type"]
        assert "access-control-allow-origin" not in answer.headers  # no CORS, ever
        assert "script-src 'self'" in answer.headers["content-security-policy"]
        weight += len(answer.content)
    assert weight < 100_000  # the page's own weight
    report = httpx.get(page + "/api/v1/status").json()
    said = json.loads(daemon.command("status", "--json", check=True).stdout)
    assert report["folders"] == said["folders"] == {str(daemon.watch): {"ready": 1}}
    assert [r["name"] for r in report["ready"]] == ["clip.mp4"]
    assert report["daemon"]["running"] and report["daemon"]["healthy"]
    assert report["daemon"]["version"] and report["daemon"]["started_at"] > 0
    assert "tlwatch_files" in httpx.get(page + "/metrics").text
    assert httpx.request("OPTIONS", page + "/api/v1/status").status_code == 405
    assert httpx.get(page + "/nothing").status_code == 404
    mode = stat.S_IMODE((daemon.root / "state" / "ui.token").stat().st_mode)
    assert mode == 0o600
    assert token(daemon) not in daemon.log()


def test_files_are_listed_a_page_at_a_time_by_state_and_folder(daemon: Daemon, page: str) -> None:
    names = ["a.mp4", "b.wav", "c.png", "d.pdf"]
    for name, source in zip(
        names, ["clip.mp4", "tone.wav", "photo.png", "document.pdf"], strict=True
    ):
        shutil.copy(FIXTURES / source, daemon.watch / name)
    daemon.wait_states({"a.mp4": "ready", "b.wav": "ready", "c.png": "ready", "d.pdf": "ignored"})
    first = httpx.get(page + "/api/v1/files", params={"limit": 2}).json()
    assert len(first["files"]) == 2 and first["next_after"] == first["files"][-1]["id"]
    rest = httpx.get(page + "/api/v1/files", params={"after": first["next_after"]}).json()
    seen = [f["name"] for f in first["files"] + rest["files"]]
    assert sorted(seen) == sorted(names) and rest["next_after"] is None
    ignored = httpx.get(page + "/api/v1/files", params={"state": "ignored"}).json()["files"]
    assert [f["name"] for f in ignored] == ["d.pdf"]
    folder = {"folder": str(daemon.watch), "state": "ready"}
    assert len(httpx.get(page + "/api/v1/files", params=folder).json()["files"]) == 3
    elsewhere = {"folder": str(daemon.root / "elsewhere")}
    assert httpx.get(page + "/api/v1/files", params=elsewhere).json()["files"] == []
    assert httpx.get(page + "/api/v1/files", params={"state": "nonsense"}).status_code == 400


@pytest.mark.parametrize("action", ["retry", "pause", "resume", "login"])
def test_every_action_needs_the_token(daemon: Daemon, page: str, action: str) -> None:
    url = f"{page}/api/v1/{action}"
    body = {"failed": True}
    assert httpx.post(url, json=body).status_code == 403
    wrong = {"Authorization": "Bearer not-the-token"}
    assert httpx.post(url, json=body, headers=wrong).status_code == 403
    assert httpx.post(url, json=body, headers=bearer(daemon)).status_code == 200


def test_a_foreign_host_and_a_cross_site_post_are_refused(daemon: Daemon, page: str) -> None:
    port = page.rsplit(":", 1)[1]
    rebound = {"Host": f"attacker.example:{port}"}  # DNS rebinding: another name for 127.0.0.1
    assert httpx.get(page + "/", headers=rebound).status_code == 403
    assert httpx.get(page + "/api/v1/status", headers=rebound).status_code == 403
    assert (
        httpx.post(page + "/api/v1/pause", headers={**rebound, **bearer(daemon)}).status_code == 403
    )
    for cross in ({"Origin": "http://attacker.example"}, {"Sec-Fetch-Site": "cross-site"}):
        answer = httpx.post(page + "/api/v1/pause", headers={**cross, **bearer(daemon)})
        assert answer.status_code == 403
        assert httpx.get(page + "/api/v1/events", headers=cross).status_code == 403  # reads too
    assert not json.loads(daemon.command("status", "--json").stdout)["daemon"].get("paused")
    same = {"Origin": page, "Sec-Fetch-Site": "same-origin"}
    assert httpx.post(page + "/api/v1/pause", headers={**same, **bearer(daemon)}).status_code == 200


def test_the_one_time_link_gives_the_browser_a_strict_cookie_once(
    daemon: Daemon, page: str
) -> None:
    said = daemon.command("ui", "--print", check=True).stdout.strip()
    assert said.startswith(page + "/login?once=") and token(daemon) not in said
    first = httpx.get(said)
    assert first.status_code == 303 and first.headers["location"] == "/"
    cookie = first.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert httpx.get(said).status_code == 403  # used: it works once
    name = f"tlwatch_ui_{page.rsplit(':', 1)[1]}"  # (a cookie of this port's daemon)
    value = first.cookies[name]
    assert token(daemon) not in value  # made from the token, not the token
    # Another program's malformed cookie on 127.0.0.1 hides nothing.
    jar = f'other={{"a": 1}}; {name}={value}'
    answer = httpx.post(page + "/api/v1/pause", headers={"Origin": page, "Cookie": jar})
    assert answer.status_code == 200
    assert httpx.get(page + "/api/v1/status").json()["daemon"]["paused"] == {
        "user": "paused from the status page"
    }


def test_retry_pause_and_resume_act_through_the_store(daemon: Daemon, page: str) -> None:
    daemon.sandbox.fault(endpoint="create", status=400, code="parameter_invalid")
    shutil.copy(FIXTURES / "clip.mp4", daemon.watch / "refused.mp4")
    daemon.wait_states({"refused.mp4": "failed"})
    report = httpx.get(page + "/api/v1/status").json()
    [failed] = report["needs_a_look"]
    assert failed["name"] == "refused.mp4" and "parameter_invalid" in failed["reason"]
    # Paused: the retried file waits in the queue; resumed: it goes up.
    assert (
        daemon.command("pause", "for the test", check=True).stdout.strip() == "paused: for the test"
    )
    status = httpx.get(page + "/api/v1/status").json()["daemon"]
    assert status["paused"] == {"user": "for the test"}
    answer = httpx.post(
        page + "/api/v1/retry", json={"ids": [failed["id"]]}, headers=bearer(daemon)
    )
    assert answer.json() == {"requeued": 1}
    daemon.wait_states({"refused.mp4": "queued"})
    for wrong in ({"ids": "all"}, {"ids": [True]}, {}):
        refused = httpx.post(page + "/api/v1/retry", json=wrong, headers=bearer(daemon))
        assert refused.status_code == 400
    daemon.command("resume", check=True)
    daemon.wait_states({"refused.mp4": "ready"})
    assert "paused by hand: for the test" in daemon.log() and "resumed by hand" in daemon.log()


def test_a_pause_asked_for_without_the_daemon_holds_from_its_start(daemon: Daemon) -> None:
    daemon.configure()  # no page: the pause is a row in the store
    daemon.start()
    wait_for(lambda: "watching" in daemon.log())
    assert daemon.command("pause", check=True).returncode == 0
    wait_for(lambda: "paused by hand" in daemon.log())  # (it looks at the store every 2 s)
    shutil.copy(FIXTURES / "clip.mp4", daemon.watch / "held.mp4")
    daemon.wait_states({"held.mp4": "queued"})
    assert daemon.stop() == 0
    daemon.start()  # paused still, from its first moment: nothing goes up
    wait_for(lambda: daemon.log().count("paused by hand") == 2)
    assert daemon.states() == {b"held.mp4": "queued"}
    daemon.command("resume", check=True)
    daemon.wait_states({"held.mp4": "ready"})


def test_the_stream_sends_the_report_as_it_changes(daemon: Daemon, page: str) -> None:
    seen: list[dict[str, Any]] = []
    with httpx.stream("GET", page + "/api/v1/events", timeout=30) as answer:
        assert answer.headers["content-type"] == "text/event-stream"
        shutil.copy(FIXTURES / "clip.mp4", daemon.watch / "live.mp4")
        for line in answer.iter_lines():
            if line.startswith("data: "):
                seen.append(json.loads(line[6:]))
                if [r["name"] for r in seen[-1]["ready"]] == ["live.mp4"]:
                    break
    assert seen[0]["folders"] == {} and len(seen) >= 2


def test_beyond_loopback_reads_need_the_token_too(daemon: Daemon) -> None:
    port = free_port()
    daemon.configure(ui=f'listen = "127.0.0.1:{port}"\nallow_remote = true')
    daemon.start()
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: httpx.get(base + "/", timeout=2).status_code == 401, timeout=20)
    assert httpx.get(base + "/metrics").status_code == 401
    assert httpx.get(base + "/api/v1/status", headers=bearer(daemon)).status_code == 200
    assert daemon.stop() == 0


def test_open_pages_never_take_every_thread(daemon: Daemon, page: str) -> None:
    """Eight pages open at once (a ninth is refused); the API still answers them all."""
    with contextlib.ExitStack() as streams:
        for _ in range(8):
            opened = streams.enter_context(httpx.stream("GET", page + "/api/v1/events"))
            assert opened.status_code == 200
        assert httpx.get(page + "/api/v1/events", timeout=5).status_code == 503
        assert httpx.get(page + "/api/v1/status", timeout=5).status_code == 200
        assert httpx.post(page + "/api/v1/pause", headers=bearer(daemon), timeout=5).is_success
    # Pages closed are noticed within seconds (a HEAD holds no stream).
    wait_for(lambda: httpx.head(page + "/api/v1/events", timeout=5).status_code == 200, 15)
