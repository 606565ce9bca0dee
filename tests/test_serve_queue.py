"""``braintumor serve`` under load, in-process: requests wait in a bounded queue for an analysis slot, for a bounded
time, with their bodies inside a memory budget; beyond any of these, 503 + Retry-After.  The real server under load
is in test_serve.py."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import ClassVar

import numpy as np
import pytest
from fastapi.testclient import TestClient

from braintumor.bundle import SINGLE_MODEL_DIR, ModelCard, read_card
from braintumor.cli import main
from braintumor.inference import Result
from braintumor.serve import api, create_app
from braintumor.serve.api import (
    DEFAULT_QUEUE,
    DEFAULT_QUEUE_TIMEOUT_S,
    DEFAULT_UPLOAD_MEMORY,
    RETRY_AFTER_S,
    Gate,
)
from conftest import glioma_analysis, png_bytes
from test_serve import blob, serve_args


class Held:
    """An analyzer whose analyses wait until released, recording the order in which they start."""

    card: ClassVar[ModelCard] = replace(read_card(SINGLE_MODEL_DIR), name="held", files={})

    def __init__(self):
        self.started: list[str] = []
        self.release = threading.Event()

    def analyze(self, scan, spacing_mm=None, name=None) -> Result:
        self.started.append(name)
        assert self.release.wait(30)
        return glioma_analysis(scan, name)


def upload(name: str = "a.png", side: int = 32) -> dict:
    return {"file": (name, png_bytes(blob(side)), "image/png")}


def noise_upload(name: str, side: int) -> dict:
    """A PNG that does not compress: about side² bytes."""
    pixels = np.random.default_rng(side).integers(0, 256, (side, side), dtype=np.uint8)
    return {"file": (name, png_bytes(pixels), "image/png")}


def wait_until(condition, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "condition not met in time"
        time.sleep(0.01)


def load(client: TestClient) -> dict:
    return client.get("/health").json()["load"]


def test_requests_wait_in_arrival_order_and_a_full_queue_is_503():
    fake = Held()
    with TestClient(create_app(fake, max_concurrent=1, queue=2)) as c, ThreadPoolExecutor(3) as pool:
        first = pool.submit(c.post, "/analyze", files=upload("first.png"))
        wait_until(lambda: fake.started == ["first.png"])
        second = pool.submit(c.post, "/analyze", files=upload("second.png"))
        wait_until(lambda: load(c)["waiting"] == 1)
        third = pool.submit(c.post, "/analyze", files=upload("third.png"))
        wait_until(lambda: load(c)["waiting"] == 2)
        assert load(c) == {
            "running": 1,
            "waiting": 2,
            "slots": 1,
            "queue": 2,
            "upload_mb_held": pytest.approx(0, abs=0.1),
        }
        began = time.perf_counter()
        full = c.post("/analyze", files=upload("fourth.png"))  # beyond the queue: refused at once
        refused_in = time.perf_counter() - began
        fake.release.set()
        answers = [f.result(timeout=30) for f in (first, second, third)]
        after = load(c)
    assert [a.status_code for a in answers] == [200, 200, 200] and fake.started == [
        "first.png",
        "second.png",
        "third.png",
    ]
    assert full.status_code == 503 and full.headers["retry-after"] == str(RETRY_AFTER_S) and refused_in < 5
    assert full.json() == {"detail": "busy: all 1 analysis slots are taken and 2 requests are waiting; retry shortly"}
    assert after == {"running": 0, "waiting": 0, "slots": 1, "queue": 2, "upload_mb_held": 0}


def test_a_wait_past_the_queue_timeout_is_503_and_loses_no_slot():
    fake = Held()
    with TestClient(create_app(fake, max_concurrent=1, queue=4, queue_timeout=0.3)) as c, ThreadPoolExecutor(1) as pool:
        first = pool.submit(c.post, "/analyze", files=upload("first.png"))
        wait_until(lambda: fake.started == ["first.png"])
        began = time.perf_counter()
        late = c.post("/analyze", files=upload("late.png"))
        waited = time.perf_counter() - began
        during = load(c)
        fake.release.set()
        assert first.result(timeout=30).status_code == 200
        again = c.post("/analyze", files=upload("again.png"))
    assert late.status_code == 503 and late.headers["retry-after"] == str(RETRY_AFTER_S) and 0.3 <= waited < 10
    assert late.json() == {"detail": "busy: no analysis slot came free within 0.3 s; retry shortly"}
    assert during["waiting"] == 0 and during["running"] == 1 and "late.png" not in fake.started
    assert again.status_code == 200, again.text


def test_waiting_bodies_count_against_the_upload_memory_budget():
    fake = Held()
    big, other = noise_upload("big.png", 200), noise_upload("other.png", 200)  # ~40 kB each
    size = len(big["file"][1])
    budget = int(size * 1.5)
    with TestClient(create_app(fake, max_concurrent=1, queue=8, upload_memory=budget)) as c:
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(c.post, "/analyze", files=big)
            wait_until(lambda: fake.started == ["big.png"])
            held = load(c)["upload_mb_held"]
            declared = c.post("/analyze", files=other)  # its Content-Length does not fit next to the first
            body, headers = multipart_body(other["file"][1])
            streamed = c.post("/analyze", content=iter([body]), headers=headers)  # no Content-Length: counted
            small = pool.submit(c.post, "/analyze", files=upload("small.png"))  # fits: waits for the slot
            wait_until(lambda: load(c)["waiting"] == 1)
            fake.release.set()
            assert first.result(timeout=30).status_code == 200 and small.result(timeout=30).status_code == 200
        after = load(c)
        fits_now = c.post("/analyze", files=other)
    assert held == pytest.approx(size / 2**20, abs=0.01)
    for refused in (declared, streamed):
        assert refused.status_code == 503 and refused.headers["retry-after"] == str(RETRY_AFTER_S)
        assert refused.json() == {
            "detail": f"busy: the uploads in progress fill the {budget / 2**20:g} MB memory budget; retry shortly"
        }
    assert fake.started == ["big.png", "small.png", "other.png"]  # the refused two never reached the analysis
    assert after["upload_mb_held"] == 0 and fits_now.status_code == 200


def multipart_body(payload: bytes, name: str = "other.png") -> tuple[bytes, dict[str, str]]:
    from test_serve import multipart

    return multipart(payload, name)


def test_an_upload_larger_than_the_budget_is_413_not_a_retry():
    """A body that could never fit the budget is refused for its size: retrying would not help."""
    with TestClient(create_app(Held(), upload_memory=4096)) as c:
        response = c.post("/analyze", files=noise_upload("big.png", 100))
    assert response.status_code == 413 and "upload limit" in response.json()["detail"]


def test_health_reports_the_load_and_answers_while_the_queue_is_full():
    fake = Held()
    with TestClient(create_app(fake, max_concurrent=1, queue=1)) as c, ThreadPoolExecutor(2) as pool:
        running = pool.submit(c.post, "/analyze", files=upload("a.png"))
        wait_until(lambda: fake.started == ["a.png"])
        waiting = pool.submit(c.post, "/analyze", files=upload("b.png"))
        wait_until(lambda: load(c)["waiting"] == 1)
        began = time.perf_counter()
        health = c.get("/health")
        answered_in = time.perf_counter() - began
        fake.release.set()
        assert running.result(timeout=30).status_code == waiting.result(timeout=30).status_code == 200
    assert health.status_code == 200 and health.json()["load"]["waiting"] == 1 and answered_in < 0.5


def test_gate_hands_a_slot_that_comes_as_the_wait_times_out_to_the_waiter(monkeypatch):
    """The slot is passed on in the same instant the wait runs out: the waiter takes it, none is lost."""

    async def scenario() -> tuple[int, int]:
        gate = Gate(limit=1, queue=1, timeout=5)
        await gate._acquire()

        async def released_then_timed_out(awaitable, timeout):
            awaitable.cancel()  # the shield around the turn, as wait_for would cancel it
            gate._release()
            raise asyncio.TimeoutError

        monkeypatch.setattr(api.asyncio, "wait_for", released_then_timed_out)
        await gate._acquire()  # the slot given at the timeout is taken, not dropped
        busy, waiting = gate.busy, len(gate.waiters)
        gate._release()
        return busy, waiting + gate.busy

    assert asyncio.run(scenario()) == (1, 0)


def test_gate_cancelled_waiter_leaves_the_queue_and_the_slots_intact():
    async def scenario() -> tuple[int, int, int]:
        gate = Gate(limit=1, queue=2, timeout=30)
        await gate._acquire()
        waiter = asyncio.ensure_future(gate._acquire())
        await asyncio.sleep(0.01)
        queued = len(gate.waiters)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        gate._release()
        await asyncio.wait_for(gate._acquire(), 1)  # free at once: nobody holds a phantom slot
        return queued, len(gate.waiters), gate.busy

    assert asyncio.run(scenario()) == (1, 0, 1)


def test_a_bad_field_is_422_in_one_line():
    with TestClient(create_app(Held())) as c:
        negative = c.post("/analyze", files=upload(), data={"spacing_mm": "-1"})
        missing = c.post("/analyze", data={"spacing_mm": "1"})
    assert negative.status_code == missing.status_code == 422
    assert negative.json() == {"detail": "spacing_mm: Input should be greater than 0"}
    assert missing.json() == {"detail": "file: Field required"}


def test_cli_defaults_are_the_apis():
    args = serve_args()
    assert (args.queue, args.queue_timeout) == (DEFAULT_QUEUE, DEFAULT_QUEUE_TIMEOUT_S) == (64, 30)
    assert args.upload_memory_mb * 2**20 == DEFAULT_UPLOAD_MEMORY == 512 * 2**20
    assert args.token_file is None and args.insecure is False


@pytest.mark.parametrize(
    "flags, line",
    [
        (["--queue", "-1"], "--queue: must be 0 or more, got -1"),
        (["--queue-timeout", "0"], "--queue-timeout: must be a number of seconds above 0, got 0.0"),
        (["--queue-timeout", "nan"], "--queue-timeout: must be a number of seconds above 0, got nan"),
        (["--upload-memory-mb", "0"], "--upload-memory-mb: must be at least 1, got 0"),
        (["--max-concurrent", "0"], "--max-concurrent: must be at least 1, got 0"),
    ],
)
def test_bad_limits_are_one_line_and_exit_2(monkeypatch, capsys, flags, line):
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("started"))
    assert main(["serve", *flags]) == 2
    assert capsys.readouterr().err == f"braintumor serve: error: {line}\n"
