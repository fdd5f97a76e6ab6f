"""What an open status page costs an idle daemon (issue 19: at most 0.5 % of a core), and what
the page weighs (at most 100 KB).

One daemon on the sandbox, a few files ready, nothing to do: its CPU over `--seconds` with no
page open, then with the page open in Debian's headless Chromium (signed in through `tlwatch ui`,
live through its event stream); or, where Chromium is missing, with the page's stream read by a
plain HTTP client. The same daemon, the same span, one after the other.
Usage: python bench/page_idle.py [--seconds S]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from _common import DEMO_KEY, sandbox

FIXTURES = Path(__file__).parent.parent / "tests" / "fixtures"
CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def until(condition: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def chromium(link: str) -> Iterator[str]:
    os.environ["SE_AVOID_STATS"] = "true"
    from selenium import webdriver  # noqa: PLC0415  (a test tool, not the daemon's)
    from selenium.webdriver.chrome.service import Service  # noqa: PLC0415

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        driver.get(link)
        until(lambda: driver.find_element("id", "link").text == "live")
        yield "headless Chromium"
    finally:
        driver.quit()


@contextmanager
def stream_reader(base: str) -> Iterator[str]:
    stop = threading.Event()

    def read() -> None:
        with httpx.stream("GET", base + "/api/v1/events", timeout=60) as answer:
            for _ in answer.iter_lines():
                if stop.is_set():
                    return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield "an HTTP client reading the event stream"
    finally:
        stop.set()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tlwatch-bench-") as scratch:
        root = Path(scratch)
        (root / "w").mkdir()
        port = free_port()
        with sandbox(root / "sandbox") as (api, _pid):
            (root / "config.toml").write_text(
                f'[api]\nbase_url = "{api}"\n[state]\npath = "state/state.db"\n'
                f'[ui]\nlisten = "127.0.0.1:{port}"\n[[watch]]\npath = "w"\nsettle_seconds = 0\n'
            )
            env = {**os.environ, "TWELVELABS_API_KEY": DEMO_KEY}
            command = [sys.executable, "-m", "tlwatch"]
            daemon = subprocess.Popen(
                [*command, "run", "-c", str(root / "config.toml")],
                env=env,
                stderr=subprocess.DEVNULL,
            )
            base = f"http://127.0.0.1:{port}"
            try:
                until(lambda: answers(base + "/api/v1/status"))
                for name in ("clip.mp4", "tone.wav", "photo.png"):
                    shutil.copy(FIXTURES / name, root / "w" / name)
                until(lambda: len(httpx.get(base + "/api/v1/status").json()["ready"]) == 3)
                weight = sum(len(httpx.get(base + p).content) for p in ("/", "/ui.js", "/ui.css"))
                time.sleep(5)  # the last changes settle (the measure's pace, not a wait)
                before = cpu_seconds(daemon.pid)
                time.sleep(args.seconds)
                alone = cpu_seconds(daemon.pid) - before
                link = subprocess.run(
                    [*command, "ui", "--print", "-c", str(root / "config.toml")],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout.strip()
                found = os.path.exists(CHROMIUM) and os.path.exists(DRIVER)
                with chromium(link) if found else stream_reader(base) as viewer:
                    time.sleep(5)  # the page's first load is not idle
                    before = cpu_seconds(daemon.pid)
                    time.sleep(args.seconds)
                    watched = cpu_seconds(daemon.pid) - before
            finally:
                daemon.terminate()
                daemon.wait(timeout=60)
    cost = (watched - alone) / args.seconds * 100
    print(f"the page weighs {weight / 1000:.1f} KB (target < 100 KB)")
    print(
        f"idle daemon over {args.seconds:.0f} s: {alone:.2f} s CPU alone, {watched:.2f} s with "
        f"the page open in {viewer}: the page costs {cost:.2f} % of a core (target <= 0.5 %)"
    )
    return 0 if weight < 100_000 and cost <= 0.5 else 1


if __name__ == "__main__":
    sys.exit(main())
