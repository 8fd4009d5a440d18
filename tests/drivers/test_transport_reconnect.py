"""ReconnectingTransport: back-off, resend policy, giving up; with an injected sleep."""

from __future__ import annotations

import logging
import pickle
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from qkdnode.drivers.errors import TransportError, TransportTimeout
from qkdnode.drivers.transport import (
    SCRIPTED_DISCONNECT,
    ReconnectingTransport,
    ReconnectPolicy,
    ScriptedTransport,
    Transport,
    TransportBase,
)
from qkdnode.drivers.transport import reconnect as reconnect_module

NAME = "bias controller 'mbx'"
URL = "serial:///dev/ttyUSB0?baudrate=115200"


class Bench:
    """The instrument behind a flaky link: its state survives reconnects."""

    def __init__(self, *, failing_opens: int = 0) -> None:
        self.failing_opens = failing_opens
        self.opens = 0
        self.links: list[FlakyLink] = []
        self.sent: list[str] = []  # every command that reached the wire, even on a dying link
        self.voltage = "1.234"

    def open(self) -> FlakyLink:
        self.opens += 1
        if self.failing_opens:
            self.failing_opens -= 1
            raise TransportError(f"{NAME} at {URL}: cannot open /dev/ttyUSB0: no such device")
        link = FlakyLink(self)
        self.links.append(link)
        return link


class FlakyLink(TransportBase):
    """A link that breaks (or times out) on demand."""

    def __init__(self, bench: Bench) -> None:
        super().__init__(instrument=NAME, resource=URL, timeout_s=1.0)
        self.bench = bench
        self.breaks = 0  # the next this many commands fail with a broken link
        self.timeouts = 0  # the next this many replies time out

    def _send(self, command: str) -> None:
        self._check_open(command)
        self.bench.sent.append(command)
        if self.breaks:
            self.breaks -= 1
            raise self._error(f"sending {command!r} failed: device disconnected")

    def write(self, command: str) -> None:
        self._send(command)

    def query(self, command: str) -> str:
        self._send(command)
        if self.timeouts:
            self.timeouts -= 1
            raise self._timeout(command)
        return self.bench.voltage

    def read(self) -> str:
        self._check_open(None)
        if self.breaks:
            self.breaks -= 1
            raise self._error("reading failed: device disconnected")
        return self.bench.voltage

    def write_bytes(self, data: bytes) -> None:
        self._check_open(data)
        if self.breaks:
            self.breaks -= 1
            raise self._error("sending failed: device disconnected")

    def read_bytes(self, n: int) -> bytes:
        return b"\0" * n


class Sleeps(list[float]):
    """An injected sleep that only notes the delays."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def make(bench: Bench, **policy: object) -> tuple[ReconnectingTransport, Sleeps]:
    sleeps = Sleeps()
    transport = ReconnectingTransport(
        bench.open, policy=ReconnectPolicy(**policy), sleep=sleeps  # type: ignore[arg-type]
    )
    return transport, sleeps


def test_policy_defaults_and_capped_exponential_delays():
    policy = ReconnectPolicy()
    assert policy.delays() == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert ReconnectPolicy(initial_delay_s=1, factor=3, max_delay_s=5, max_attempts=5).delays() == [
        1, 3, 5, 5, 5
    ]
    assert len(policy.delays()) == reconnect_module.DEFAULT_MAX_ATTEMPTS


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial_delay_s": -1},
        {"factor": 0.5},
        {"initial_delay_s": 10, "max_delay_s": 1},
        {"max_attempts": 0},
        {"max_attempts": True},
    ],
)
def test_policy_rejects_nonsense(kwargs):
    with pytest.raises(ValueError, match="must"):
        ReconnectPolicy(**kwargs)


def test_policy_headers_must_be_a_collection():
    with pytest.raises(TypeError):
        ReconnectPolicy(safe_writes="MZM:HOLD:VOLTAGE")  # type: ignore[arg-type]


def test_disconnect_twice_then_work(caplog):
    bench = Bench()
    transport, sleeps = make(bench)
    assert isinstance(transport, Transport)
    assert (transport.instrument, transport.resource) == (NAME, URL)
    bench.links[0].breaks = 1
    bench.failing_opens = 2
    bench.voltage = "2.000"
    with caplog.at_level(logging.WARNING, logger=reconnect_module.__name__):
        assert transport.query("MZM:VOLTAGE?") == "2.000"
    assert sleeps == [0.5, 1.0, 2.0]
    assert bench.opens == 4  # the first open, two failed reopens, one that worked
    assert bench.links[0].closed
    assert transport.reconnects == 1
    assert transport.connected
    assert bench.sent == ["MZM:VOLTAGE?", "MZM:VOLTAGE?"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage().split("; ")[-1] for r in warnings[:3]] == [
        "reconnect attempt 1 of 8 in 0.5 s",
        "reconnect attempt 2 of 8 in 1 s",
        "reconnect attempt 3 of 8 in 2 s",
    ]
    assert all(r.getMessage().startswith(f"{NAME} at {URL}: ") for r in warnings)
    assert "device disconnected" in warnings[0].getMessage()
    assert warnings[3].getMessage().endswith("reconnected on attempt 3")


def test_gives_up_after_max_attempts_with_a_clear_error():
    bench = Bench()
    transport, sleeps = make(bench, max_attempts=4)
    bench.links[0].breaks = 1
    bench.failing_opens = 100
    with pytest.raises(TransportError) as info:
        transport.query("MZM:VOLTAGE?")
    text = str(info.value)
    assert text.startswith(f"{NAME} at {URL}: link lost at 'MZM:VOLTAGE?'; gave up after 4 ")
    assert "reconnect attempts over 7.5 s; last error:" in text
    assert "no such device" in text
    assert sleeps == [0.5, 1.0, 2.0, 4.0]
    assert isinstance(info.value.__cause__, TransportError)
    assert not transport.connected
    copy = pickle.loads(pickle.dumps(info.value))
    assert str(copy) == text
    # The next command starts over, and works once the instrument is back.
    bench.failing_opens = 0
    sleeps.clear()
    assert transport.query("MZM:VOLTAGE?") == "1.234"
    assert sleeps == [0.5]


def test_resend_that_breaks_again_uses_the_same_budget():
    bench = Bench()
    transport, sleeps = make(bench, max_attempts=3)
    bench.links[0].breaks = 1
    original_open = bench.open

    def open_breaking_once() -> FlakyLink:
        link = original_open()
        if len(bench.links) == 2:
            link.breaks = 1  # the first new link dies on the resend too
        return link

    bench.open = open_breaking_once  # type: ignore[method-assign]
    transport._opener = open_breaking_once
    assert transport.query("MZM:VOLTAGE?") == "1.234"
    assert sleeps == [0.5, 1.0]
    assert bench.sent == ["MZM:VOLTAGE?"] * 3
    assert transport.reconnects == 2


def test_unsafe_write_is_not_resent_and_the_link_reopens_on_the_next_command():
    bench = Bench()
    transport, sleeps = make(bench)
    bench.links[0].breaks = 1
    with pytest.raises(TransportError) as info:
        transport.write("MZM:MODE: 1")
    assert "'MZM:MODE: 1' failed: device disconnected; not resent: not safe to repeat" in str(
        info.value
    )
    assert sleeps == []
    assert not transport.connected
    assert transport.query("MZM:VOLTAGE?") == "1.234"
    assert sleeps == [0.5]
    assert bench.sent == ["MZM:MODE: 1", "MZM:VOLTAGE?"]


def test_safe_write_is_resent_headers_case_insensitive():
    bench = Bench()
    transport, sleeps = make(bench, safe_writes=frozenset({"mzm:hold:voltage"}))
    bench.links[0].breaks = 1
    transport.write("MZM:HOLD:VOLTAGE 1200")
    assert bench.sent == ["MZM:HOLD:VOLTAGE 1200"] * 2
    assert sleeps == [0.5]


def test_unsafe_query_is_not_resent():
    bench = Bench()
    transport, _ = make(bench, unsafe_queries=frozenset({"SYST:ERR?"}))
    bench.links[0].breaks = 1
    with pytest.raises(TransportError, match="not resent"):
        transport.query("SYST:ERR?")
    assert bench.sent == ["SYST:ERR?"]


def test_bare_reads_and_binary_writes_are_never_repeated():
    bench = Bench()
    transport, sleeps = make(bench)
    bench.links[0].breaks = 1
    with pytest.raises(TransportError, match="not repeated"):
        transport.read()
    transport.query("MZM:VOLTAGE?")  # reconnects
    bench.links[-1].breaks = 1
    with pytest.raises(TransportError, match="not resent"):
        transport.write_bytes(b"#13abc")
    assert sleeps == [0.5]


def test_timeouts_pass_through_unless_configured():
    bench = Bench()
    transport, sleeps = make(bench)
    bench.links[0].timeouts = 1
    with pytest.raises(TransportTimeout, match=r"no reply to 'MZM:TAP:MW\?' within 1.0 s"):
        transport.query("MZM:TAP:MW?")
    assert (sleeps, bench.opens, transport.connected) == ([], 1, True)

    transport, sleeps = make(bench, reconnect_on_timeout=True)
    bench.links[-1].timeouts = 1
    assert transport.query("MZM:TAP:MW?") == "1.234"
    assert sleeps == [0.5]
    assert transport.reconnects == 1


def test_configuration_errors_from_the_opener_are_not_retried():
    bench = Bench()
    transport, sleeps = make(bench)
    bench.links[0].breaks = 1

    def misconfigured() -> Transport:
        raise ValueError("resource URL 'serial://x': unknown parameter 'baud'")

    transport._opener = misconfigured
    with pytest.raises(ValueError, match="unknown parameter"):
        transport.query("MZM:VOLTAGE?")
    assert sleeps == [0.5]


def test_first_open_is_not_retried():
    bench = Bench(failing_opens=1)
    with pytest.raises(TransportError, match="cannot open"):
        make(bench)
    assert bench.opens == 1


def test_closed_reconnecting_transport_refuses():
    bench = Bench()
    transport, sleeps = make(bench)
    with transport:
        transport.write("MZM:MODE: 7")
    assert bench.links[0].closed
    with pytest.raises(TransportError, match="'MZM:VOLTAGE\\?' not sent: closed"):
        transport.query("MZM:VOLTAGE?")
    assert (sleeps, bench.opens) == ([], 1)


def test_close_during_back_off_stops_the_reconnect():
    bench = Bench(failing_opens=0)
    holder: list[ReconnectingTransport] = []

    def sleep_then_close(seconds: float) -> None:
        holder[0].close()  # as another thread would, while this one waits

    transport = ReconnectingTransport(bench.open, sleep=sleep_then_close)
    holder.append(transport)
    bench.links[0].breaks = 1
    with pytest.raises(TransportError, match=r"closed while reconnecting for 'MZM:VOLTAGE\?'"):
        transport.query("MZM:VOLTAGE?")
    assert bench.opens == 1


def test_threads_sharing_a_reconnecting_transport_are_serialised():
    bench = Bench()
    transport, _ = make(bench)
    active = 0
    overlaps = 0
    original_query = FlakyLink.query

    def slow_query(self: FlakyLink, command: str) -> str:
        nonlocal active, overlaps
        active += 1
        overlaps += active > 1
        time.sleep(0.001)
        active -= 1
        return original_query(self, command)

    FlakyLink.query = slow_query  # type: ignore[method-assign]
    try:
        with ThreadPoolExecutor(4) as pool:
            replies = list(pool.map(lambda _: transport.query("MZM:VOLTAGE?"), range(40)))
    finally:
        FlakyLink.query = original_query  # type: ignore[method-assign]
    assert replies == ["1.234"] * 40
    assert overlaps == 0


def test_reconnect_over_scripted_links_tests_a_driver_fault_path():
    """Drivers' fault handling: one script per connection, the first ending in a disconnect."""
    scripts = iter(
        [
            ScriptedTransport([("MEAS:POW?", "1.0E-03"), ("MEAS:POW?", SCRIPTED_DISCONNECT)]),
            ScriptedTransport([("MEAS:POW?", "1.1E-03")]),
        ]
    )
    opened: list[ScriptedTransport] = []

    def opener() -> Transport:
        opened.append(next(scripts))
        return opened[-1]

    sleeps = Sleeps()
    transport = ReconnectingTransport(opener, sleep=sleeps)
    assert [transport.query("MEAS:POW?") for _ in range(2)] == ["1.0E-03", "1.1E-03"]
    for script in opened:
        script.assert_done()
    assert opened[0].closed
    assert sleeps == [0.5]
