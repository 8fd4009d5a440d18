"""open_transport and the scheme registry; lazy imports; IEEE 488.2 blocks; message helpers."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qkdnode.drivers.errors import TransportError
from qkdnode.drivers.resource import ResourceUrl
from qkdnode.drivers.transport import (
    MAX_COMMAND_IN_MESSAGE,
    ReconnectingTransport,
    ReconnectPolicy,
    RecordingTransport,
    ScriptedTransport,
    Transport,
    TransportOptions,
    decode_block,
    describe_command,
    encode_block,
    open_transport,
    read_block,
    register_scheme,
    registered_schemes,
    unregister_scheme,
)
from qkdnode.drivers.transport import factory as factory_module


@pytest.fixture
def registry(monkeypatch):
    """A private copy of the scheme registry (and no sim:// factory, whoever imported one)."""
    private = {k: v for k, v in factory_module._FACTORIES.items() if k != "sim"}
    monkeypatch.setattr(factory_module, "_FACTORIES", private)
    return private


def test_lib_urls_are_refused_with_a_pointer_to_bindings(registry):
    with pytest.raises(ValueError, match=r"take a binding object from qkdnode\.bindings") as info:
        open_transport("lib:///opt/qutag/libtdcbase.so?device=0", instrument="time tagger 'qt'",
                       timeout_s=1.0)
    assert "time tagger 'qt' at lib:///opt/qutag/libtdcbase.so?device=0" in str(info.value)


def test_sim_urls_without_the_sim_package_name_it(registry):
    with pytest.raises(ValueError, match=r"provided by qkdnode\.drivers\.sim") as info:
        open_transport("sim://bench/spd", instrument="detector 'spd'", timeout_s=1.0)
    assert "import qkdnode.drivers.sim" in str(info.value)


def test_registered_sim_factory_receives_url_and_options(registry):
    calls: list[tuple[ResourceUrl, TransportOptions]] = []

    def sim_factory(url: ResourceUrl, options: TransportOptions) -> Transport:
        calls.append((url, options))
        return ScriptedTransport([("*IDN?", "sim")], instrument=options.instrument,
                                 resource=options.resource)

    register_scheme("sim", sim_factory)
    assert "sim" in registered_schemes()
    transport = open_transport("sim://bench/spd", instrument="detector 'spd'", timeout_s=2.0,
                               write_termination="\r", read_termination="\r\n", encoding="latin-1")
    assert transport.query("*IDN?") == "sim"
    url, options = calls[0]
    assert (url.bench, url.instrument) == ("bench", "spd")
    assert options == TransportOptions(
        resource="sim://bench/spd", instrument="detector 'spd'", timeout_s=2.0,
        write_termination="\r", read_termination="\r\n", encoding="latin-1",
    )


def test_register_scheme_rules(registry):
    def factory(url: ResourceUrl, options: TransportOptions) -> Transport:
        raise AssertionError("not called")

    register_scheme("sim", factory)
    with pytest.raises(ValueError, match="already has a transport factory"):
        register_scheme("sim", factory)
    register_scheme("sim", factory, replace=True)
    with pytest.raises(ValueError, match="take a binding object"):
        register_scheme("lib", factory)
    with pytest.raises(ValueError, match="unknown resource URL scheme 'http'"):
        register_scheme("http", factory)
    register_scheme("visa", factory, replace=True)
    unregister_scheme("visa")
    assert registry["visa"] is factory_module._open_visa
    unregister_scheme("sim")
    assert "sim" not in registered_schemes()


def test_open_transport_with_reconnect_policy_reopens_through_the_factory(registry):
    opened: list[ScriptedTransport] = []

    def sim_factory(url: ResourceUrl, options: TransportOptions) -> Transport:
        opened.append(ScriptedTransport([("A?", "1")], instrument=options.instrument,
                                        resource=options.resource))
        return opened[-1]

    register_scheme("sim", sim_factory)
    transport = open_transport("sim://bench/x", instrument="x", timeout_s=1.0,
                               reconnect=ReconnectPolicy())
    assert isinstance(transport, ReconnectingTransport)
    assert transport.resource == "sim://bench/x"
    assert transport.query("A?") == "1"
    assert len(opened) == 1


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("serial:///dev/ttyUSB0?baud=115200", "unknown parameter 'baud'"),
        ("ftp://x", "unknown resource URL scheme"),
        ("/dev/ttyUSB0", "has no scheme"),
    ],
)
def test_malformed_urls_are_value_errors(url, message):
    with pytest.raises(ValueError, match=message):
        open_transport(url, instrument="x", timeout_s=1.0)


@pytest.mark.parametrize("timeout_s", [0, -1.0, math.nan, math.inf])
def test_bad_timeouts_are_value_errors(timeout_s):
    with pytest.raises(ValueError, match="timeout_s must be a positive finite number"):
        open_transport("serial://loop://", instrument="x", timeout_s=timeout_s)


def test_timeout_of_wrong_type_is_a_type_error():
    with pytest.raises(TypeError, match="timeout_s must be a number"):
        open_transport("serial://loop://", instrument="x", timeout_s="2")  # type: ignore[arg-type]


def test_every_transport_satisfies_the_protocol():
    scripted = ScriptedTransport([("A?", "1")])
    assert isinstance(scripted, Transport)
    assert isinstance(RecordingTransport(scripted), Transport)
    assert isinstance(ReconnectingTransport(lambda: scripted), Transport)


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60,
        check=False,
    )


def test_package_import_does_not_import_pyvisa_or_pyserial():
    result = _run(
        """
        import sys
        import qkdnode.drivers.transport as transport
        assert "pyvisa" not in sys.modules, "pyvisa imported"
        assert "serial" not in sys.modules, "serial imported"
        transport.SerialTransport
        assert "serial" in sys.modules
        assert "pyvisa" not in sys.modules
        """
    )
    assert result.returncode == 0, result.stderr


def test_package_works_without_pyvisa_and_says_what_is_missing():
    result = _run(
        """
        import sys
        sys.modules["pyvisa"] = None  # as if not installed
        from qkdnode.drivers.transport import ScriptedTransport, open_transport
        assert ScriptedTransport([("A?", "1")]).query("A?") == "1"
        try:
            open_transport("visa://USB0::1::INSTR", instrument="pm", timeout_s=1.0)
        except ImportError as exc:
            print(exc)
        """
    )
    assert result.returncode == 0, result.stderr
    assert "visa:// resources need pyvisa" in result.stdout


# --- blocks ------------------------------------------------------------------------------------


def test_encode_block_examples():
    assert encode_block(b"hello") == b"#15hello"
    assert encode_block(b"") == b"#10"
    assert encode_block(b"x" * 1024) == b"#41024" + b"x" * 1024


@given(st.binary(max_size=3000), st.binary(max_size=8))
def test_decode_inverts_encode_and_reports_the_used_length(data, rest):
    block = encode_block(data)
    assert decode_block(block + rest) == (data, len(block))


@pytest.mark.parametrize(
    ("buffer", "message"),
    [
        (b"15hello", "starts with '#'"),
        (b"#0hello\n", "digit count must be 1..9"),
        (b"#x5hello", "digit count must be 1..9"),
        (b"#2a5hello", "must be 2 decimal digits"),
        (b"#16hello", "announces 6 bytes, only 5 present"),
    ],
)
def test_decode_block_rejects_malformed(buffer, message):
    with pytest.raises(ValueError, match=message):
        decode_block(buffer)


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (b"ERR\n", r"expected a definite-length block, reply starts b'ER'"),
        (b"#2x5hello\n", "malformed block length field"),
        (b"#15hello;", r"expected b'\\n' after the block, got b';'"),
    ],
)
def test_read_block_rejects_malformed_replies_naming_the_instrument(reply, message):
    transport = ScriptedTransport([("CURV?", reply)], instrument="awg 'tx'", resource="visa://A")
    transport.write("CURV?")
    with pytest.raises(TransportError, match=message) as info:
        read_block(transport)
    assert str(info.value).startswith("awg 'tx' at visa://A: ")


def test_read_block_without_termination():
    transport = ScriptedTransport([("CURV?", b"#13abc")])
    transport.write("CURV?")
    assert read_block(transport, termination="") == b"abc"
    transport.assert_done()


def test_describe_command():
    assert describe_command("MEAS:POW?") == "'MEAS:POW?'"
    assert describe_command(None) == "(no command)"
    assert describe_command(b"\x00" * 7) == "a binary block of 7 bytes"
    long = "DATA:ARB qkd," + "0," * MAX_COMMAND_IN_MESSAGE
    assert describe_command(long) == f"'DATA:ARB'... ({len(long)} characters)"
    # No separator: the header stops before the data, which may be per-slot choices.
    pattern = "PATTERN:" + "01" * 100
    assert describe_command(pattern) == f"'PATTERN'... ({len(pattern)} characters)"
    assert describe_command("0110" * 30) == "''... (120 characters)"
