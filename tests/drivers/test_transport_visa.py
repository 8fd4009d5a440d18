"""VisaTransport against a pyvisa-sim power meter (test_transport_sim_devices.yaml)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import pyvisa
import pyvisa_sim  # noqa: F401  (the test extra installs it; a missing backend must fail loudly)
from pyvisa.constants import StatusCode
from pyvisa.errors import VisaIOError

from qkdnode.drivers.errors import TransportError, TransportTimeout
from qkdnode.drivers.transport import (
    RecordingTransport,
    ScriptedTransport,
    Transport,
    VisaTransport,
    open_transport,
)

DEVICES = Path(__file__).with_name("test_transport_sim_devices.yaml")
PM100 = "USB0::0x1313::0x8078::P0012345::INSTR"
URL = f"visa://{PM100}?backend={DEVICES}@sim"
# Short, so the timeout cases cost a fraction of a second each.
TIMEOUT_S = 0.2


@pytest.fixture
def pm():
    with open_transport(URL, instrument="power meter 'pm'", timeout_s=TIMEOUT_S) as transport:
        yield transport


def test_open_transport_builds_a_visa_transport(pm):
    assert isinstance(pm, VisaTransport)
    assert isinstance(pm, Transport)
    assert pm.resource == URL
    assert pm.instrument == "power meter 'pm'"
    assert pm.timeout_s == TIMEOUT_S


def test_query_write_and_read(pm):
    assert pm.query("*IDN?") == "Thorlabs,PM100USB,P0012345,1.7.0"
    assert float(pm.query("MEAS:POW?")) == pytest.approx(1.234e-3)
    pm.write("SENS:CORR:WAV 1310")
    pm.write("SENS:CORR:WAV?")
    assert float(pm.read()) == 1310.0
    pm.write("SENS:CORR:WAV 1550")
    assert float(pm.query("SENS:CORR:WAV?")) == 1550.0


def test_read_bytes_returns_raw_reply_with_its_terminator(pm):
    pm.write("*IDN?")
    assert pm.read_bytes(9) == b"Thorlabs,"
    assert pm.read_bytes(24) == b"PM100USB,P0012345,1.7.0\n"
    assert pm.read_bytes(0) == b""


def test_write_bytes_sends_raw_command(pm):
    pm.write_bytes(b"MEAS:POW?\n")
    assert pm.read() == "1.234E-03"


def test_unknown_query_times_out_naming_instrument_resource_and_command(pm):
    with pytest.raises(TransportTimeout) as info:
        pm.query("SYST:SENSOR:IDN?")
    assert str(info.value) == (
        f"power meter 'pm' at {URL}: no reply to 'SYST:SENSOR:IDN?' within {TIMEOUT_S} s"
    )
    assert isinstance(info.value, TimeoutError)
    assert info.value.__cause__ is not None  # the pyvisa error stays attached for debugging
    copy = pickle.loads(pickle.dumps(info.value))
    assert str(copy) == str(info.value)
    # The instrument is still usable after a timeout.
    assert pm.query("*IDN?").startswith("Thorlabs,")


def test_device_clear_before_the_command_after_a_timeout(pm, monkeypatch):
    clears: list[str] = []
    monkeypatch.setattr(pm._visa, "clear", lambda: clears.append("clear"))
    assert pm.query("*IDN?").startswith("Thorlabs,")
    with pytest.raises(TransportTimeout):
        pm.query("FETCH?")
    assert clears == []
    assert pm.query("*IDN?").startswith("Thorlabs,")
    assert clears == ["clear"]
    assert pm.query("*IDN?").startswith("Thorlabs,")
    assert clears == ["clear"]


def test_unsupported_device_clear_does_not_block_the_next_command(pm):
    with pytest.raises(TransportTimeout):
        pm.query("FETCH?")
    # pyvisa-sim has no device clear; the command still goes out.
    assert float(pm.query("MEAS:POW?")) == pytest.approx(1.234e-3)


def test_read_bytes_timeout_names_last_command(pm):
    pm.write("*IDN?")
    with pytest.raises(TransportTimeout, match=r"no reply to '\*IDN\?'"):
        pm.read_bytes(100)


def test_open_failure_is_a_transport_error_naming_the_resource(monkeypatch):
    def not_found(self, name, **kwargs):
        raise VisaIOError(StatusCode.error_resource_not_found)

    monkeypatch.setattr(pyvisa.ResourceManager, "open_resource", not_found)
    with pytest.raises(TransportError) as info:
        open_transport(URL, instrument="power meter 'pm'", timeout_s=TIMEOUT_S)
    assert str(info.value).startswith(
        f"power meter 'pm' at {URL}: cannot open {PM100}: VI_ERROR_RSRC_NFOUND"
    )
    assert not isinstance(info.value, TransportTimeout)


def test_lost_connection_is_a_transport_error_naming_the_command(pm, monkeypatch):
    def lost(*args, **kwargs):
        raise VisaIOError(StatusCode.error_connection_lost)

    # On write, so no reply is left queued in the simulated device for later tests.
    monkeypatch.setattr(pm._visa, "write", lost)
    with pytest.raises(TransportError) as info:
        pm.query("MEAS:POW?")
    assert not isinstance(info.value, TransportTimeout)
    assert str(info.value).startswith(
        f"power meter 'pm' at {URL}: sending 'MEAS:POW?' failed: VI_ERROR_CONN_LOST"
    )


def test_non_message_based_resource_is_refused(monkeypatch):
    class Register(pyvisa.resources.Resource):
        def __init__(self) -> None:
            self.closed = False

        def close(self) -> None:
            self.closed = True

        def __del__(self) -> None:  # pyvisa's would look for a session this fake lacks
            pass

    register = Register()
    monkeypatch.setattr(pyvisa.ResourceManager, "open_resource", lambda self, name, **kw: register)
    with pytest.raises(ValueError, match="is not a message-based VISA resource"):
        open_transport(URL, instrument="power meter 'pm'", timeout_s=TIMEOUT_S)
    assert register.closed


def test_missing_backend_file_is_a_transport_error():
    url = f"visa://{PM100}?backend=/nonexistent/devices.yaml@sim"
    with pytest.raises(TransportError, match="power meter 'pm' at visa://"):
        open_transport(url, instrument="power meter 'pm'", timeout_s=TIMEOUT_S)


def test_closed_transport_refuses_and_close_is_idempotent():
    pm = VisaTransport(
        PM100, instrument="power meter 'pm'", timeout_s=TIMEOUT_S, backend=f"{DEVICES}@sim"
    )
    assert pm.resource == f"visa://{PM100}"
    pm.close()
    pm.close()
    assert pm.closed
    with pytest.raises(TransportError, match=r"'\*IDN\?' not sent: transport closed"):
        pm.query("*IDN?")


def test_record_a_visa_session_and_replay_it(tmp_path):
    def session(transport: Transport) -> list[str]:
        out = [transport.query("*IDN?"), transport.query("MEAS:POW?")]
        try:
            transport.query("FETCH?")
        except TransportTimeout as exc:
            out.append(str(exc))
        return out

    with RecordingTransport(
        open_transport(URL, instrument="power meter 'pm'", timeout_s=TIMEOUT_S)
    ) as recorder:
        lab = session(recorder)
    path = tmp_path / "pm.jsonl"
    recorder.save(path)

    replay = ScriptedTransport.load(path)
    assert replay.timeout_s == TIMEOUT_S
    assert lab[2] == f"power meter 'pm' at {URL}: no reply to 'FETCH?' within {TIMEOUT_S} s"
    assert session(replay) == [*lab[:2], f"{lab[2]} (scripted)"]
    replay.assert_done()
