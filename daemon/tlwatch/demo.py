"""`make demo`: the sandbox, the daemon on a demo folder, real sample media dropped in, every
transition shown until each file is `ready` and each video and audio file is indexed (or, at 1 s,
not sent to the index, which would refuse it), with metadata from a folder template; then
everything stopped cleanly.

Runs from a checkout (the samples are the test fixtures). Nothing leaves this machine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SAMPLES = Path(__file__).resolve().parents[2] / "tests" / "fixtures"
MEDIA = [
    "indexable.mp4",
    "scope.mp4",
    "clip.mov",
    "clip.webm",
    "tone-5s.m4a",
    "tone.mp3",
    "photo.jpg",
    "photo.png",
]
INDEXED = {"indexable.mp4", "tone-5s.m4a"}  # the others are 1 s long: too short for the index
PROXIED = {"scope.mp4"}  # 3:1, outside the index's aspect range: its proxy is indexed instead
DECOY = "not-really.mp4"
DEMO_KEY = "tlk_sandbox_demo_key_not_secret"
INDEX = "demo-index"
SHOOT = "Alps-2026"  # the folder the samples land in: the template reads it as the project


def say(text: str) -> None:
    print(f"\033[1m==> {text}\033[0m" if sys.stdout.isatty() else f"==> {text}", flush=True)


def tlwatch(*args: str) -> list[str]:
    return [sys.executable, "-m", "tlwatch", *args]


def main() -> int:
    if not SAMPLES.is_dir():
        print(
            f"demo: sample media not found in {SAMPLES} (run it from a checkout)", file=sys.stderr
        )
        return 1
    with tempfile.TemporaryDirectory(prefix="tlwatch-demo-") as scratch:
        return run(Path(scratch))


def run(root: Path) -> int:
    say("starting the local sandbox (a stand-in for the Twelve Labs API)")
    sandbox = subprocess.Popen(
        tlwatch(
            "sandbox",
            "--port",
            "0",
            "--processing-seconds",
            "3",
            "--indexing-seconds",
            "3",
            "--index",
            INDEX,
            "--data-dir",
            str(root / "sandbox"),
        ),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert sandbox.stdout is not None
    base_url = sandbox.stdout.readline().strip()
    watch = root / "camera-dump"
    (watch / SHOOT).mkdir(parents=True)
    config = root / "config.toml"
    config.write_text(
        f'[api]\nbase_url = "{base_url}"\n[state]\npath = "state.db"\n'
        f'[[watch]]\npath = "{watch}"\nsettle_seconds = 1\nindex_id = "{INDEX}"\n'
        'user_metadata = { source = "tlwatch demo", project = "{dir[0]}", '
        'day = "{mtime:%Y-%m-%d}" }\n'
    )
    env = {**os.environ, "TWELVELABS_API_KEY": DEMO_KEY}
    say(f"running the daemon on {watch}; its status page: http://127.0.0.1:9811 (`tlwatch ui`)")
    daemon = subprocess.Popen(tlwatch("run", "-c", str(config)), env=env)
    try:
        time.sleep(1.0)  # let it start watching; the demo's pace, not a correctness wait
        say(f"copying {len(MEDIA)} media files and a decoy (a text file named {DECOY}) in")
        for name in [*MEDIA, DECOY]:
            shutil.copy(SAMPLES / name, watch / SHOOT / name)
        ok = wait_until_ready(config, env, deadline=time.monotonic() + 120)
    finally:
        say("stopping the daemon and the sandbox")
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
        sandbox.send_signal(signal.SIGTERM)
        sandbox.wait(timeout=30)
    status = subprocess.run(
        tlwatch("status", "-c", str(config)), env=env, text=True, capture_output=True, check=False
    )
    say("final state (tlwatch status):")
    print(status.stdout, end="")
    listing = subprocess.run(
        tlwatch("list", "--json", "-c", str(config)),
        env=env,
        text=True,
        capture_output=True,
        check=False,
    )
    if listing.returncode == 0:
        rows = json.loads(listing.stdout)
        originals = {r["id"]: r for r in rows}
        for row in rows:
            for indexing in row["indexing"]:
                name = Path(row["path"]).name
                if row["parent_id"] in originals:  # a proxy: named by what it stands for
                    original = originals[row["parent_id"]]
                    name = f"{Path(original['path']).name} (as a proxy: {original['reason']})"
                print(f"  {name}: {indexing['state']} in {indexing['index_id']}", end="")
                if indexing["state"] == "skipped":
                    print(f" ({indexing['reason']})")
                else:
                    print(f"  metadata {json.dumps(row['user_metadata'])}")
    if ok:
        say(
            "every media file is ready; the videos and audio long enough indexed (the 3:1 one "
            "through a proxy made here), the 1 s clips not sent to the index (it would refuse "
            "them); the decoy was ignored"
        )
    else:
        say("not everything got ready and indexed")
    return 0 if ok else 1


def wait_until_ready(config: Path, env: dict[str, str], deadline: float) -> bool:
    while time.monotonic() < deadline:
        result = subprocess.run(
            tlwatch("list", "--json", "-c", str(config)),
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode == 0:
            found = json.loads(result.stdout)
            rows = {Path(r["path"]).name: r["state"] for r in found}
            indexings = {Path(r["path"]).name: [i["state"] for i in r["indexing"]] for r in found}
            for original in [r for r in found if Path(r["path"]).name in PROXIED]:
                parts = [r for r in found if r["parent_id"] == original["id"]]
                states = [i["state"] for part in parts for i in part["indexing"]]
                indexings[Path(original["path"]).name] = states
            short = {n for n in MEDIA if not n.startswith("photo")} - INDEXED - PROXIED
            ready = all(rows.get(n) == "ready" for n in MEDIA) and rows.get(DECOY) == "ignored"
            indexed = all(indexings.get(n) == ["ready"] for n in INDEXED | PROXIED)
            if ready and indexed and all(indexings.get(n) == ["skipped"] for n in short):
                return True
        time.sleep(0.5)
    return False


if __name__ == "__main__":
    sys.exit(main())
