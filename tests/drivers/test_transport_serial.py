"""SerialTransport over pyserial's loop:// and a small MBX-like URL handler defined here."""

from __future__ import annotations

import sys
import types
from concurrent.futures import ThreadPoolExecutor

import pytest
import serial
from serial.serialutil import SerialBase, SerialException, SerialTimeoutException

from qkdnode.drivers.errors import TransportError, TransportTimeout
from qkdnode.drivers.transport import (
    ReconnectingTransport,
    ReconnectPolicy,
    SerialTransport,
    Transport,
    open_transport,
    read_block,
    serialport,
    write_block,
)

# Replies that do not come fail after this long; loop:// really waits, so keep it short.
TIMEOUT_S = 0.05
LOOP = "serial://loop://?baudrate=115200"


@pytest.fixture
def loop():
    with open_transport(LOOP, instrument="echo 'loop'", timeout_s=TIMEOUT_S) as transport:
        yield transport


def test_loop_url_builds_a_serial_transport(loop):
    assert isinstance(loop, SerialTransport)
    assert isinstance(loop, Transport)
    assert loop.resource == LOOP
    assert loop._port.baudrate == 115200


def test_url_line_settings_reach_pyserial():
    url = (
        "serial://loop://?baudrate=19200&bytesize=7&parity=E&stopbits=2&rtscts=1&xonxoff=0"
        "&write_timeout=0.5"
    )
    with open_transport(url, instrument="x", timeout_s=TIMEOUT_S) as transport:
        port = transport._port
        assert (port.baudrate, port.bytesize, port.parity, port.stopbits) == (19200, 7, "E", 2)
        assert (port.rtscts, port.xonxoff, port.write_timeout, port.timeout) == (
            True, False, 0.5, TIMEOUT_S
        )
    with open_transport("serial://loop://", instrument="x", timeout_s=TIMEOUT_S) as transport:
        assert transport._port.baudrate == serialport.DEFAULT_BAUDRATE


def test_loop_echoes_commands(loop):
    assert loop.query("MZM:VOLTAGE?") == "MZM:VOLTAGE?"
    loop.write("A")
    loop.write("B")
    assert [loop.read(), loop.read()] == ["A", "B"]


def test_concurrent_queries_each_get_their_own_reply(loop):
    # query holds the transport's lock across write and read, so threads do not swap replies.
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda i: loop.query(f"VOA:ATTEN {i}"), range(200)))
    assert replies == [f"VOA:ATTEN {i}" for i in range(200)]


def test_read_with_nothing_sent_times_out(loop):
    with pytest.raises(TransportTimeout) as info:
        loop.read()
    assert str(info.value) == (
        f"echo 'loop' at {LOOP}: no data (nothing sent yet) within {TIMEOUT_S} s"
    )


def test_partial_reply_times_out_and_is_discarded_before_the_next_command(loop):
    loop.write_bytes(b"MZM:TAP:MW")  # a reply cut short: no terminator
    with pytest.raises(TransportTimeout) as info:
        loop.read()
    assert "no reply to a binary block of 10 bytes" in str(info.value)
    assert "10 bytes without the terminator" in str(info.value)
    # The rest of the late reply arrives after the timeout; it is not taken for the next
    # command's reply.
    loop._port.write(b"=0.5\n")
    assert loop.query("VOA:ATTEN?") == "VOA:ATTEN?"


def test_read_bytes_short_read_times_out_naming_the_count(loop):
    loop.write("XY")
    with pytest.raises(TransportTimeout, match=r"no reply to 'XY' within .*received 3 of 8 bytes"):
        loop.read_bytes(8)


def test_blocks_round_trip_over_loop():
    # loop:// holds at most 4096 bytes (its queue's size); a larger write would block forever.
    # All of it arrives, so a generous timeout costs nothing and keeps a loaded machine from
    # failing the test.
    payload = bytes(range(256)) * 12
    with open_transport(LOOP, instrument="echo 'loop'", timeout_s=5.0) as loop:
        write_block(loop, "", payload)
        assert read_block(loop) == payload


def test_garbled_reply_is_a_transport_error(loop):
    loop.write_bytes(b"\xff\xfe\n")
    with pytest.raises(TransportError, match=r"not valid ascii \(wrong baud rate"):
        loop.read()


def test_runaway_reply_is_cut_off(loop, monkeypatch):
    monkeypatch.setattr(serialport, "MAX_REPLY_BYTES", 16)
    loop.write_bytes(b"x" * 40)
    with pytest.raises(TransportError, match="exceeds 16 bytes without the terminator"):
        loop.read()


def test_missing_port_is_a_transport_error_naming_it():
    url = "serial:///dev/ttyQKDNODE_NO_SUCH_PORT?baudrate=115200"
    with pytest.raises(TransportError) as info:
        open_transport(url, instrument="bias controller 'mbx'", timeout_s=TIMEOUT_S)
    assert str(info.value).startswith(
        f"bias controller 'mbx' at {url}: cannot open /dev/ttyQKDNODE_NO_SUCH_PORT"
    )


def test_unknown_pyserial_protocol_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match="'x' at serial://nosuch://a: cannot open nosuch://a"):
        open_transport("serial://nosuch://a", instrument="'x'", timeout_s=TIMEOUT_S)


def test_closed_serial_transport_refuses():
    transport = SerialTransport("loop://", instrument="echo", timeout_s=TIMEOUT_S)
    assert transport.resource == "serial://loop://"
    transport.close()
    transport.close()
    with pytest.raises(TransportError, match="not sent: transport closed"):
        transport.write("A")


# --- a simulated MBX behind a pyserial URL handler ---------------------------------------------


class MbxBench:
    """State that survives reconnects, like the instrument behind the cable."""

    def __init__(self) -> None:
        self.hold_mv = 1234
        self.ports: list[MbxSerial] = []
        self.received: list[bytes] = []


BENCH = MbxBench()


class MbxSerial(SerialBase):
    """Answers like a Thorlabs MBX: commands end with CR (or LF), replies with LF."""

    def open(self) -> None:
        self._in = bytearray()
        self._out = bytearray()
        self.unplugged = False
        self.stalled_writes = False
        self.is_open = True
        BENCH.ports.append(self)

    def close(self) -> None:
        self.is_open = False

    def _reconfigure_port(self, force_update: bool = False) -> None:
        pass

    @property
    def in_waiting(self) -> int:
        return len(self._out)

    def reset_input_buffer(self) -> None:
        self._out.clear()

    def reset_output_buffer(self) -> None:
        pass

    def write(self, data: bytes) -> int:
        if self.unplugged:
            raise SerialException("device reports readiness to read but returned no data")
        if self.stalled_writes:
            raise SerialTimeoutException("Write timeout")
        BENCH.received.append(bytes(data))
        self._in += data
        while (end := self._in.find(b"\r")) >= 0:
            line, self._in = bytes(self._in[:end]).strip(b"\n"), self._in[end + 1 :]
            self._answer(line.decode("ascii"))
        return len(data)

    def read(self, size: int = 1) -> bytes:
        if self.unplugged:
            raise SerialException("device disconnected")
        data, self._out = bytes(self._out[:size]), self._out[size:]
        return data

    def _answer(self, command: str) -> None:
        if command == "MZM:VOLTAGE?":
            self._out += f"{BENCH.hold_mv / 1000:.3f}\n".encode()
        elif command.startswith("MZM:HOLD:VOLTAGE "):
            BENCH.hold_mv = int(command.split()[1])
        # Anything else: the MBX stays silent.


@pytest.fixture
def mbx_url(monkeypatch):
    """Registers the handler as ``mbxsim://`` through serial.protocol_handler_packages."""
    package = types.ModuleType("qkdnode_test_serial_handlers")
    package.__path__ = []
    module = types.ModuleType("qkdnode_test_serial_handlers.protocol_mbxsim")
    module.Serial = MbxSerial  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, package.__name__, package)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(serial, "protocol_handler_packages", [package.__name__])
    BENCH.__init__()  # type: ignore[misc]
    return "serial://mbxsim://bench/mbx?baudrate=115200&bytesize=8&parity=N&stopbits=1"


def open_mbx(url: str, **kwargs: object) -> Transport:
    return open_transport(
        url,
        instrument="bias controller 'mbx'",
        timeout_s=TIMEOUT_S,
        write_termination="\r",
        read_termination="\n",
        **kwargs,  # type: ignore[arg-type]
    )


def test_mbx_handler_answers_through_serial_transport(mbx_url):
    with open_mbx(mbx_url) as mbx:
        assert mbx.query("MZM:VOLTAGE?") == "1.234"
        mbx.write("MZM:HOLD:VOLTAGE 1500")
        assert float(mbx.query("MZM:VOLTAGE?")) == 1.5
    port = BENCH.ports[0]
    assert (port.baudrate, port.bytesize, port.parity, port.stopbits) == (115200, 8, "N", 1)
    assert port.timeout == TIMEOUT_S
    assert BENCH.received == [b"MZM:VOLTAGE?\r", b"MZM:HOLD:VOLTAGE 1500\r", b"MZM:VOLTAGE?\r"]
    assert not port.is_open


def test_mbx_silence_is_a_timeout_naming_the_command(mbx_url):
    with open_mbx(mbx_url) as mbx, pytest.raises(TransportTimeout) as info:
        mbx.query("MZM:TAP:MW?")
    assert str(info.value) == (
        f"bias controller 'mbx' at {mbx_url}: no reply to 'MZM:TAP:MW?' within {TIMEOUT_S} s"
    )


def test_mbx_unplugged_is_a_transport_error_naming_the_command(mbx_url):
    with open_mbx(mbx_url) as mbx:
        BENCH.ports[-1].unplugged = True
        with pytest.raises(TransportError) as info:
            mbx.query("MZM:VOLTAGE?")
    assert str(info.value) == (
        f"bias controller 'mbx' at {mbx_url}: sending 'MZM:VOLTAGE?' failed: "
        "device reports readiness to read but returned no data"
    )
    assert isinstance(info.value.__cause__, SerialException)


def test_mbx_write_timeout_is_a_transport_timeout(mbx_url):
    with open_mbx(mbx_url) as mbx:
        BENCH.ports[-1].stalled_writes = True
        with pytest.raises(TransportTimeout, match="sending 'MZM:MODE: 7' timed out"):
            mbx.write("MZM:MODE: 7")


def test_mbx_reconnects_after_unplug_and_resends_the_query(mbx_url, caplog):
    policy = ReconnectPolicy(initial_delay_s=0.0, max_delay_s=0.0, max_attempts=3)
    with open_mbx(mbx_url, reconnect=policy) as mbx:
        assert isinstance(mbx, ReconnectingTransport)
        BENCH.hold_mv = 2000
        BENCH.ports[-1].unplugged = True
        assert mbx.query("MZM:VOLTAGE?") == "2.000"
        assert mbx.reconnects == 1
    assert len(BENCH.ports) == 2
    assert "reconnect attempt 1 of 3" in caplog.text
