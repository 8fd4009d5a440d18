"""``build_ends`` closes what it opened when a later step fails, and ``open_ends`` opens the
instruments in a worker thread (the event loop goes on meanwhile; a cancelled caller's ends are
closed once the thread has built them).

The instruments are the simulated bench's own (frame streamer over its VISA transport, quTAG C
mock); the tests watch their ``close`` and the random sources' (the real objects, wrapped).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qkdnode.node.config import load_config
from qkdnode.node.errors import ConfigError
from qkdnode.node.module import launch
from qkdnode.node.module.host import sim_benches
from qkdnode.node.module.launch import LinkEnd, build_ends, open_ends

ENDS = {"seed": 3, "block_slots": 16_777_216, "link_extra": "timing_slots = 4_194_304\n"}
# Seconds a cancelled open_ends' thread gets to finish and close what it built.
CLOSE_WAIT_S = 120.0


class Opened:
    """The instruments and random sources build_ends opens, and which were closed."""

    def __init__(self) -> None:
        self.objects: list[Any] = []
        self.closed: list[Any] = []
        self.threads: set[str] = set()

    def watch(self, obj: Any) -> Any:
        self.objects.append(obj)
        self.threads.add(threading.current_thread().name)
        close = obj.close

        def closing() -> None:
            self.closed.append(obj)
            close()

        obj.close = closing
        return obj

    @property
    def all_closed(self) -> bool:
        return bool(self.objects) and all(
            any(c is o for c in self.closed) for o in self.objects)


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> Opened:
    watch = Opened()
    real_instrument, real_random = launch.open_link_instrument, launch.random_source
    monkeypatch.setattr(launch, "open_link_instrument",
                        lambda *a, **k: watch.watch(real_instrument(*a, **k)))
    monkeypatch.setattr(launch, "random_source",
                        lambda *a, **k: watch.watch(real_random(*a, **k)))
    return watch


@pytest.fixture
def configs(tmp_path: Path, link_ends: Any, port: int, request: pytest.FixtureRequest
            ) -> Iterator[list[tuple[Path, Any]]]:
    files = link_ends(tmp_path, port=port, bench=f"cleanup-{request.node.name}"[:60], **ENDS)
    loaded = [(p, load_config(p)) for p in files]
    with sim_benches([c for _, c in loaded]):
        yield loaded


def test_an_unopenable_audit_log_closes_the_instruments(configs: list[tuple[Path, Any]],
                                                        opened: Opened) -> None:
    bob_path, _ = configs[1]
    (bob_path.parent / "audit-bob.jsonl").mkdir()  # the audit log's path is a directory
    with pytest.raises(ConfigError, match=r"links\[0\]\.audit_log.*audit-bob\.jsonl"):
        build_ends(configs, None)
    # Alice's end was complete, Bob's random source and tagger were open: all closed.
    assert len(opened.objects) == 4
    assert opened.all_closed


def test_a_failing_kq1_client_closes_the_instruments(configs: list[tuple[Path, Any]],
                                                     opened: Opened,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError(24, "Too many open files (injected)")

    monkeypatch.setattr(launch, "Kq1Client", refuse)
    with pytest.raises(OSError, match="injected"):
        build_ends(configs, None)
    assert len(opened.objects) == 2  # Alice's random source and streamer
    assert opened.all_closed


def test_open_ends_opens_in_a_worker_thread(configs: list[tuple[Path, Any]],
                                            opened: Opened) -> None:
    async def scenario() -> list[LinkEnd]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        tick = asyncio.create_task(ticker())
        try:
            ends = await open_ends(configs, None)
        finally:
            tick.cancel()
        assert ticks > 1  # the loop went on while the ends were built
        return ends

    ends = asyncio.run(scenario())
    try:
        assert [e.link.role for e in ends] == ["transmitter", "receiver"]
        assert threading.main_thread().name not in opened.threads
    finally:
        for end in ends:
            end.close_instruments()
            assert end.module.audit is not None
            end.module.audit.close()


def test_a_cancelled_open_ends_closes_what_it_built(configs: list[tuple[Path, Any]],
                                                    opened: Opened) -> None:
    async def scenario() -> None:
        task = asyncio.create_task(open_ends(configs, None))
        while not opened.objects:  # noqa: ASYNC110 - the worker thread gives no event
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        deadline = time.monotonic() + CLOSE_WAIT_S
        while not (len(opened.objects) == 4 and opened.all_closed):
            assert time.monotonic() < deadline, "the built ends were not closed"
            await asyncio.sleep(0.05)

    asyncio.run(scenario())
