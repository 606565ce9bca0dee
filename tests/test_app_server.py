"""``braintumor app`` as a server strangers reach: stopped by SIGTERM, warned off public addresses, limits in
force however it is started, several people at once."""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import signal
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from braintumor.app.views import MAX_UPLOAD_MB, MEMBERS_ENV, MODEL_ENV
from braintumor.bundle import ENSEMBLE_DIR
from braintumor.commands.app import command, run
from braintumor.commands.exposure import exposure_warning, is_loopback
from conftest import accepts_connections
from test_app import BROWSER_ARGS, CHROMIUM, INTRO, LABEL, METRICS, PAGE, free_port, require_chromium, start_server

needs_proc = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux only)")


def app_argv(port: int) -> list[str]:
    """``braintumor app`` as a user starts it (through the CLI, so the exec into Streamlit is part of the test)."""
    return [sys.executable, "-m", "braintumor.cli", "app", "--port", str(port)]


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost", "LocalHost", "::ffff:127.0.0.1"]
)
def test_loopback_hosts_need_no_warning(host):
    assert is_loopback(host) and exposure_warning(host) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "192.168.1.5", "10.0.0.1", "128.0.0.1", "example.org"])
def test_other_hosts_are_warned_about(host):
    warning = exposure_warning(host)
    assert not is_loopback(host)
    assert "not a loopback address" in warning and "no authentication and no TLS" in warning
    assert "reverse proxy with authentication and TLS" in warning


def test_run_warns_on_stderr_then_becomes_streamlit(monkeypatch, capsys):
    from streamlit.config import ShowErrorDetailsConfigOptions

    calls = []
    monkeypatch.setattr(os, "execve", lambda path, argv, env: calls.append((path, argv, env)))
    run(argparse.Namespace(host="0.0.0.0", port=8599, model=ENSEMBLE_DIR, members=1))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("braintumor app: warning: --host 0.0.0.0 is not a loopback")
    assert [c[:2] for c in calls] == [(sys.executable, command("0.0.0.0", 8599))]
    env = calls[0][2]
    assert env[MODEL_ENV] == str(ENSEMBLE_DIR) and env[MEMBERS_ENV] == "1"  # the page's model, through the env
    flags = dict(zip(calls[0][1][5::2], calls[0][1][6::2], strict=True))  # after: python -m streamlit run page.py
    assert flags["--client.toolbarMode"] == "viewer" and flags["--browser.gatherUsageStats"] == "false"
    assert ShowErrorDetailsConfigOptions(flags["--client.showErrorDetails"]) == ShowErrorDetailsConfigOptions.NONE


def _streamlit_pids(port: int) -> list[int]:
    """Processes whose command line is a Streamlit server on ``port``."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:  # the process ended while we looked
            continue
        if b"streamlit" in args and b"--server.port" in args and str(port).encode() in args:
            pids.append(int(cmdline.parent.name))
    return pids


@pytest.mark.slow
@needs_proc
def test_sigterm_to_the_started_pid_stops_the_server(tmp_path):
    port = free_port()
    proc, _ = start_server(app_argv(port), port, tmp_path / "server.log")
    assert _streamlit_pids(port) == [proc.pid]  # the CLI became the server: no parent left to orphan it
    os.kill(proc.pid, signal.SIGTERM)
    deadline = time.time() + 5
    while accepts_connections(port):
        assert time.time() < deadline, "the port still accepts connections 5 s after SIGTERM"
        time.sleep(0.1)
    proc.wait(timeout=5)
    assert _streamlit_pids(port) == []
    log = (tmp_path / "server.log").read_text()
    assert f"braintumor app on http://127.0.0.1:{port}" in log and "warning" not in log


def _put_status(port: int, path: str, headers: dict[str, str], body: bytes, length: int) -> int | None:
    """Status of an upload PUT that declares ``length`` bytes and sends ``body`` (None: no answer in 10 s)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest("PUT", path)
        for name, value in {**headers, "Content-Length": str(length)}.items():
            conn.putheader(name, value)
        conn.endheaders(body)
        return conn.getresponse().status
    except TimeoutError:
        return None
    finally:
        conn.close()


@pytest.mark.slow
@pytest.mark.browser
def test_plain_streamlit_run_gets_the_limits(tmp_path):
    """No flags at all: once the page has run, sessions get no telemetry and no developer menu, and the server
    refuses uploads over MAX_UPLOAD_MB (Streamlit's own default is 200 MB)."""
    require_chromium()
    from playwright.sync_api import expect, sync_playwright
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
    from streamlit.proto.NewSession_pb2 import Config

    def new_session_config(frame) -> None:
        msg = ForwardMsg()
        if isinstance(frame, bytes) and msg.ParseFromString(frame) and msg.HasField("new_session"):
            configs.append(msg.new_session.config)

    port, configs = free_port(), []
    argv = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(PAGE),
        "--server.headless",
        "true",
        "--server.address",
        "127.0.0.1",
        "--server.port",
        str(port),
    ]  # headless: no e-mail prompt; address, port: the test's own
    proc, url = start_server(argv, port, tmp_path / "server.log")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_ARGS)
            first = browser.new_page()
            first.goto(url)
            expect(first.get_by_text(INTRO)).to_be_visible(timeout=60_000)  # the process's first run
            page = browser.new_page()
            page.on("websocket", lambda ws: ws.on("framereceived", new_session_config))
            page.goto(url)
            expect(page.get_by_text(INTRO)).to_be_visible(timeout=60_000)
            deploy_buttons = page.locator("[data-testid=stAppDeployButton]").count()
            with page.expect_request("**/_stcore/upload_file/**") as upload:
                page.locator("input[type=file]").set_input_files(
                    files=[{"name": "tiny.png", "mimeType": "image/png", "buffer": b"tiny"}]
                )
            path = upload.value.url.removeprefix(url).rsplit("/", 1)[0]  # /_stcore/upload_file/<session id>
            headers = {
                "X-Xsrftoken": upload.value.headers["x-xsrftoken"],
                "Content-Type": "multipart/form-data; boundary=x",
                "Cookie": "; ".join(f"{c['name']}={c['value']}" for c in page.context.cookies()),
            }
            small = (
                b'--x\r\nContent-Disposition: form-data; name="file"; filename="s.png"\r\nContent-Type: '
                b"image/png\r\n\r\n" + b"\0" * 2**20 + b"\r\n--x--\r\n"
            )
            # while the session is open: refused from the header alone; then proof the token and session are good
            too_big = _put_status(port, f"{path}/big", headers, b"", MAX_UPLOAD_MB * 2**20 + 1)
            accepted = _put_status(port, f"{path}/small", headers, small, len(small))
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert configs and all(not c.gather_usage_stats and c.toolbar_mode == Config.VIEWER for c in configs)
    assert deploy_buttons == 0
    assert (too_big, accepted) == (413, 204)


def _poll_health(url: str, statuses: list, stop: threading.Event) -> None:
    """Every 0.5 s until stopped: the health endpoint must keep answering while sessions work."""
    while not stop.wait(0.5):
        try:
            statuses.append(urllib.request.urlopen(f"{url}/_stcore/health", timeout=5).status)
        except OSError as err:
            statuses.append(repr(err))


def _peak_rss_mb(pid: int) -> float:
    """The kernel's high-water mark of resident memory (VmHWM): no spike between samples is missed."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) / 1024


async def _sessions(url: str, slices: list[Path]) -> dict[str, str]:
    """One browser, one context (own cookies, own Streamlit session) per slice, all uploading at once; what each
    page shows as its file's tumor type (or the error that stopped it)."""
    from playwright.async_api import async_playwright, expect

    async def session(browser, path: Path) -> str:
        context = await browser.new_context()
        page = await context.new_page()
        await page.goto(url)
        await expect(page.get_by_text(INTRO)).to_be_visible(timeout=60_000)
        await page.locator("input[type=file]").set_input_files(str(path))
        await expect(page.get_by_role("heading", name=path.name)).to_be_visible(timeout=60_000)
        label = page.locator(METRICS).filter(has_text=LABEL)
        await expect(label).to_have_count(1, timeout=60_000)
        shown = await label.inner_text()
        await context.close()
        return shown

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_ARGS)
        shown = await asyncio.gather(*(session(browser, path) for path in slices), return_exceptions=True)
        await browser.close()
    return {
        path.name: value if isinstance(value, str) else repr(value) for path, value in zip(slices, shown, strict=True)
    }


@pytest.mark.slow
@pytest.mark.browser
@needs_proc
def test_eight_sessions_at_once(dev512, tmp_path):
    """Eight people upload different slices at once: each sees its own file's result, and the server stays
    responsive throughout."""
    require_chromium()
    from braintumor.inference import Analyzer

    slices = sorted((dev512 / "images").glob("*.png"))[::18][:8]
    analyzer = Analyzer.default()
    expected = {p.name: analyzer.analyze(p, spacing_mm=0.49).label for p in slices}
    port = free_port()
    proc, url = start_server(app_argv(port), port, tmp_path / "server.log")
    statuses, stop = [], threading.Event()
    poller = threading.Thread(target=_poll_health, args=(url, statuses, stop))
    poller.start()
    started = time.time()
    try:
        shown = asyncio.run(_sessions(url, slices))
    finally:
        stop.set()
        poller.join()
        peak = _peak_rss_mb(proc.pid)
        proc.terminate()
        proc.wait(timeout=20)
    summary = (
        f"8 sessions in {time.time() - started:.1f} s, {len(statuses)} health polls, peak server RSS {peak:.0f} MB"
    )
    print(f"\n{summary}")
    assert len(slices) == 8 and len(set(expected.values())) > 1, f"too little variety in the slices; {summary}"
    assert shown == expected, summary
    assert statuses and all(s == 200 for s in statuses), f"health polls: {statuses}; {summary}"
