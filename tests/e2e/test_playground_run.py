"""`scripts/run` as a new user runs it: without a bot token it starts the playground, prints
its URL and serves the page; with a token it runs the bot and never starts the playground.
Each run is a subprocess, bounded in time and stopped with Ctrl+C (SIGINT)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from bot.security import new_data_key, new_pepper
from tests.conftest import ROOT, example_config_file
from tests.fakebot import FakeBotAPI

BOUND = 90.0


def write_config(tmp: Path, **replace: str) -> Path:
    return example_config_file(tmp, {
        "port = 8080": "port = 0",
        'data_dir = "data/playground"': f"data_dir = {json.dumps(str(tmp / 'playground'))}",
        'url = "sqlite:///data/tipline.sqlite3"': f"url = {json.dumps('sqlite:///' + str(tmp / 'bot.sqlite3'))}",
        "receipt_hash_memory_kib = 65536": "receipt_hash_memory_kib = 64", **replace})


def start(config: Path, **env: str) -> tuple[subprocess.Popen[str], list[str]]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TIPLINE_")}
    proc = subprocess.Popen([str(ROOT / "scripts" / "run")], cwd=ROOT, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env={**clean, "TIPLINE_CONFIG": str(config), **env})
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)

    threading.Thread(target=read, daemon=True).start()
    return proc, lines


def wait(predicate, what: str, lines: list[str], timeout: float = BOUND):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"waited {timeout:.0f} s for {what}; output:\n{''.join(lines)[-3000:]}")


def stop(proc: subprocess.Popen[str]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            return proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            raise AssertionError("did not stop on Ctrl+C within 30 s") from None
    return int(proc.returncode)


def test_without_a_token_scripts_run_prints_the_url_and_serves_the_playground(tmp_path: Path) -> None:
    proc, lines = start(write_config(tmp_path))
    try:
        def url() -> str | None:
            for line in lines:
                found = re.search(r"http://127\.0\.0\.1:\d+/", line)
                if found:
                    return found.group(0)
            return None

        address = wait(url, "the playground's URL", lines)
        with urllib.request.urlopen(address, timeout=10) as response:
            page = response.read().decode("utf-8")
        assert response.status == 200
        assert "未连接 Telegram" in page and 'src="/static/app.js"' in page
        with urllib.request.urlopen(address + "?lang=en", timeout=10) as response:
            assert "not connected to Telegram" in response.read().decode("utf-8")
        with urllib.request.urlopen(address + "api/state", timeout=10) as response:
            state = json.loads(response.read())
        assert [p["kind"] for p in state["panes"]] == ["citizen", "group", "lead", "office", "official"]
        # a post from another site (no custom header: no CORS preflight) is refused
        forged = urllib.request.Request(address + "api/add", data=b"what=citizen", method="POST",
                                        headers={"Content-Type": "application/x-www-form-urlencoded"})
        try:
            urllib.request.urlopen(forged, timeout=10)
            raise AssertionError("a post without the playground's header was accepted")
        except urllib.error.HTTPError as exc:
            assert exc.code == 403
        # more citizens and teams from the page; a new team's lead and group join with invite codes
        for what in ("citizen", "team"):
            request = urllib.request.Request(address + "api/add", data=json.dumps({"what": what}).encode(),
                                             headers={"Content-Type": "application/json", "X-Playground": "1"},
                                             method="POST")
            with urllib.request.urlopen(request, timeout=10) as response:
                assert json.loads(response.read())["ok"]

        def team_two_bound() -> bool:
            with urllib.request.urlopen(address + "api/state", timeout=10) as response:
                panes = {p["key"]: p for p in json.loads(response.read())["panes"]}
            assert "citizen-2" in panes and "lead-2" in panes
            group = panes.get("group-2") or {"messages": []}
            return any(m["from_bot"] and "第二督查组" in m["html"] for m in group["messages"])

        wait(team_two_bound, "team 2's group bound through /join", lines)
    finally:
        code = stop(proc)
    assert code == 0, "".join(lines)
    assert "Traceback" not in "".join(lines), "".join(lines)
    assert (tmp_path / "playground" / "playground.sqlite3").exists()  # its own database file
    assert not (tmp_path / "bot.sqlite3").exists()


def test_with_a_token_scripts_run_runs_the_bot_and_never_the_playground(tmp_path: Path) -> None:
    server = FakeBotAPI("123456:REAL-LOOKING-TOKEN")
    base = server.start_in_thread()
    try:
        config = write_config(tmp_path, **{
            'base_url = "https://api.telegram.org/bot"': f'base_url = "{base}"',
            'base_file_url = "https://api.telegram.org/file/bot"': f'base_file_url = "{server.base_file_url}"',
            'pepper = ""': f'pepper = "{new_pepper()}"',
            'data_key = ""': f'data_key = "{new_data_key()}"',
        })
        proc, lines = start(config, TIPLINE_BOT_TOKEN=server.token)
        try:
            wait(lambda: server.calls_for("getUpdates"), "the bot to poll the Bot API", lines)
        finally:
            stop(proc)
        output = "".join(lines)
        assert "playground" not in output.lower(), output
        assert not re.search(r"http://127\.0\.0\.1:\d+/", output), output
        assert not (tmp_path / "playground").exists()
        assert (tmp_path / "bot.sqlite3").exists()
    finally:
        server.stop_thread()
