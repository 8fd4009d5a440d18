"""ScriptedTransport semantics, the recorder, and the JSON-lines round trip."""

from __future__ import annotations

import json
import pickle
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qkdnode.drivers.errors import DeviceError, TransportError, TransportTimeout
from qkdnode.drivers.transport import (
    SCRIPTED_DISCONNECT,
    SCRIPTED_TIMEOUT,
    RecordingTransport,
    ScriptedTransport,
    Step,
    Transport,
    load_steps,
    read_block,
    save_steps,
    scripted,
    write_block,
)

PM = {"instrument": "power meter 'pm'", "resource": "visa://USB0::0x1313::0x8078::P1::INSTR"}


def test_query_write_and_split_read_follow_the_script():
    with scripted(
        [
            ("*IDN?", "Thorlabs,PM100USB,P1,1.7.0"),
            ("SENS:CORR:WAV 1550", None),
            ("MEAS:POW?", "1.0E-03"),
            (None, "late line"),
        ],
        **PM,
    ) as transport:
        assert isinstance(transport, Transport)
        assert transport.query("*IDN?") == "Thorlabs,PM100USB,P1,1.7.0"
        transport.write("SENS:CORR:WAV 1550")
        transport.write("MEAS:POW?")
        assert transport.read() == "1.0E-03"
        assert transport.read() == "late line"
        assert transport.position == 4


def test_wrong_command_names_step_expected_and_actual():
    transport = ScriptedTransport([("*IDN?", "x"), ("MEAS:POW?", "1")], **PM)
    transport.query("*IDN?")
    with pytest.raises(AssertionError) as info:
        transport.query("MEAS:POWER?")
    text = str(info.value)
    assert "step 1" in text
    assert "'MEAS:POW?'" in text
    assert "'MEAS:POWER?'" in text
    assert "first difference at character 8" in text


def test_query_of_a_scripted_write_fails():
    transport = ScriptedTransport([("OUTP ON", None)])
    with pytest.raises(AssertionError, match=r"step 0: 'OUTP ON' is scripted as a write"):
        transport.query("OUTP ON")


def test_unread_reply_before_next_command_fails():
    transport = ScriptedTransport([("A?", "1"), ("B?", "2")])
    transport.write("A?")
    with pytest.raises(AssertionError, match=r"step 0: the reply '1' was not read before"):
        transport.write("B?")


def test_read_with_nothing_pending_names_the_expected_command():
    transport = ScriptedTransport([("A?", "1")])
    with pytest.raises(AssertionError, match=r"step 0: expected to be sent 'A\?', got read\(\)"):
        transport.read()


def test_commands_beyond_the_script_fail():
    transport = ScriptedTransport([("A?", "1")])
    transport.query("A?")
    with pytest.raises(AssertionError, match=r"step 1: script ended, but got query 'B\?'"):
        transport.query("B?")


def test_assert_done_reports_unused_steps_and_unread_replies():
    transport = ScriptedTransport([("A?", "1"), ("B", None)])
    transport.write("A?")
    with pytest.raises(AssertionError, match="reply '1' was never read"):
        transport.assert_done()
    transport.read()
    unused = r"1 scripted step\(s\) not used.*step 1: \('B', None\)"
    with pytest.raises(AssertionError, match=unused):
        transport.assert_done()
    transport.write("B")
    transport.assert_done()


def test_scripted_context_manager_checks_completion():
    with pytest.raises(AssertionError, match="not used"), scripted([("A?", "1")]):
        pass


def test_scripted_timeout_raises_on_read_and_names_everything():
    transport = ScriptedTransport(
        [("COUNTERS:DETECTION_FREQ?", SCRIPTED_TIMEOUT), ("REG:RUN?", "1")],
        instrument="detector 'spd'",
        resource="visa://USB0::1::INSTR",
        timeout_s=2.0,
    )
    with pytest.raises(TransportTimeout) as info:
        transport.query("COUNTERS:DETECTION_FREQ?")
    assert str(info.value) == (
        "detector 'spd' at visa://USB0::1::INSTR: no reply to 'COUNTERS:DETECTION_FREQ?' "
        "within 2.0 s (scripted)"
    )
    assert isinstance(info.value, TimeoutError)
    # The script goes on after the fault, as a driver's recovery would.
    assert transport.query("REG:RUN?") == "1"
    transport.assert_done()


def test_scripted_timeout_after_a_separate_write():
    transport = ScriptedTransport([("A?", SCRIPTED_TIMEOUT)])
    transport.write("A?")
    with pytest.raises(TransportTimeout, match="no reply to 'A\\?'"):
        transport.read()
    transport.assert_done()


def test_scripted_disconnect_raises_on_send_or_on_read():
    transport = ScriptedTransport(
        [("MZM:VOLTAGE?", SCRIPTED_DISCONNECT), ("MZM:MODE: 7", None), (None, SCRIPTED_DISCONNECT)],
        instrument="bias controller 'mbx'",
        resource="serial:///dev/ttyUSB0",
    )
    with pytest.raises(TransportError) as info:
        transport.query("MZM:VOLTAGE?")
    assert "bias controller 'mbx' at serial:///dev/ttyUSB0" in str(info.value)
    assert "'MZM:VOLTAGE?'" in str(info.value)
    assert isinstance(info.value, OSError)
    transport.write("MZM:MODE: 7")
    with pytest.raises(TransportError, match="reading the reply to 'MZM:MODE: 7'"):
        transport.read()
    transport.assert_done()


def test_binary_steps_and_blocks():
    payload = bytes(range(256)) * 4
    transport = ScriptedTransport(
        [
            (b"DATA:ARB qkd,#41024" + payload + b"\n", None),
            ("CURV?", b"#15hello\n"),
        ]
    )
    write_block(transport, "DATA:ARB qkd,", payload)
    transport.write("CURV?")
    assert read_block(transport) == b"hello"
    transport.assert_done()


def test_binary_mismatch_fails_and_text_read_of_binary_reply_fails():
    transport = ScriptedTransport([(b"\x01\x02", None), ("CURV?", b"#11x\n")])
    with pytest.raises(AssertionError, match="first difference at character 1"):
        transport.write_bytes(b"\x01\x03")
    transport.write_bytes(b"\x01\x02")
    transport.write("CURV?")
    with pytest.raises(AssertionError, match="binary"):
        transport.read()
    with pytest.raises(AssertionError, match="only 5 scripted bytes are left"):
        transport.read_bytes(6)


def test_closed_scripted_transport_refuses_commands():
    transport = ScriptedTransport([("A?", "1")])
    with transport:
        pass
    assert transport.closed
    with pytest.raises(TransportError, match="'A\\?' not sent: transport closed"):
        transport.query("A?")


@pytest.mark.parametrize(
    "bad",
    [
        [("A?",)],
        [(1, "x")],
        [("A?", 3)],
        [(None, None)],
    ],
)
def test_malformed_scripts_are_refused(bad):
    with pytest.raises((TypeError, ValueError)):
        ScriptedTransport(bad)


def test_long_commands_and_binary_payloads_stay_out_of_messages():
    secret = "DATA:ARB qkd," + ",".join("1" * 200)
    transport = ScriptedTransport(
        [(secret, SCRIPTED_DISCONNECT), (b"\x07" * 50, SCRIPTED_DISCONNECT)]
    )
    with pytest.raises(TransportError) as info:
        transport.write(secret)
    assert "1,1,1" not in str(info.value)
    assert f"'DATA:ARB'... ({len(secret)} characters)" in str(info.value)
    with pytest.raises(TransportError) as info:
        transport.write_bytes(b"\x07" * 50)
    assert "a binary block of 50 bytes" in str(info.value)
    assert "\\x07" not in str(info.value)


@pytest.mark.parametrize(
    "exc",
    [
        TransportTimeout("detector 'spd' at visa://X: no reply to 'A?' within 2.0 s"),
        TransportError("detector 'spd' at visa://X: link lost sending 'A?'"),
    ],
)
def test_transport_errors_pickle_with_their_message(exc):
    copy = pickle.loads(pickle.dumps(exc))
    assert type(copy) is type(exc)
    assert str(copy) == str(exc)
    assert isinstance(copy, DeviceError)


def test_raised_scripted_errors_pickle():
    transport = ScriptedTransport([("A?", SCRIPTED_TIMEOUT)], **PM)
    with pytest.raises(TransportTimeout) as info:
        transport.query("A?")
    copy = pickle.loads(pickle.dumps(info.value))
    assert str(copy) == str(info.value)
    assert "power meter 'pm'" in str(copy)


# --- recording ---------------------------------------------------------------------------------


def _session(transport: Transport) -> list[object]:
    """A driver-like session touching every kind of step, faults included."""
    seen: list[object] = [transport.query("*IDN?")]
    transport.write("SENS:CORR:WAV 1550")
    transport.write("MEAS:POW?")
    seen.append(transport.read())
    seen.append(transport.read())
    transport.write_bytes(b"DATA:ARB q,#13\x00\x01\x02\n")
    transport.write("CURV?")
    seen.append(read_block(transport))
    try:
        transport.query("COUNTERS:DETECTION_FREQ?")
    except TransportTimeout as exc:
        seen.append(type(exc).__name__)
    try:
        transport.write("REG:RUN")
    except TransportError as exc:
        seen.append(type(exc).__name__)
    transport.write("OUTP ON")
    try:
        transport.read()
    except TransportError as exc:
        seen.append(type(exc).__name__)
    return seen


SESSION = [
    ("*IDN?", "Thorlabs,PM100USB,P1,1.7.0"),
    ("SENS:CORR:WAV 1550", None),
    ("MEAS:POW?", "1.0E-03"),
    (None, "second line"),
    (b"DATA:ARB q,#13\x00\x01\x02\n", None),
    ("CURV?", b"#14\xff\x00\n\r\n"),
    ("COUNTERS:DETECTION_FREQ?", SCRIPTED_TIMEOUT),
    ("REG:RUN", SCRIPTED_DISCONNECT),
    ("OUTP ON", None),
    (None, SCRIPTED_DISCONNECT),
]


def test_recorder_captures_the_exchange_in_script_form(tmp_path):
    lab = ScriptedTransport(SESSION, **PM)
    with RecordingTransport(lab, redact_binary_writes=False) as recorder:
        assert recorder.instrument == PM["instrument"]
        first = _session(recorder)
    lab.assert_done()
    assert first[-3:] == ["TransportTimeout", "TransportError", "TransportError"]
    assert first[3] == b"\xff\x00\n\r"
    assert recorder.steps == SESSION

    path = tmp_path / "pm.jsonl"
    recorder.save(path)
    lines = path.read_text().splitlines()
    header = json.loads(lines[0])
    assert header["instrument"] == PM["instrument"]
    assert header["resource"] == PM["resource"]
    assert json.loads(lines[5])["sent"] == {"base64": "REFUQTpBUkIgcSwjMTMAAQIK"}
    assert json.loads(lines[7])["reply"] == {"fault": "timeout"}

    replay = ScriptedTransport.load(path)
    assert replay.instrument == PM["instrument"]
    assert replay.resource == PM["resource"]
    assert _session(replay) == first
    replay.assert_done()


def test_save_and_load_steps_round_trip(tmp_path):
    path = tmp_path / "x.jsonl"
    save_steps(path, SESSION, instrument="i", resource="r")
    header, steps = load_steps(path)
    assert steps == SESSION
    assert (header["instrument"], header["resource"]) == ("i", "r")


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"format": "other"}'], "not a qkdnode-transport-exchange file"),
        (['{"format": "qkdnode-transport-exchange", "version": 99}'], "version 99"),
        (
            ['{"format": "qkdnode-transport-exchange", "version": 1}', '{"sent": "A?"}'],
            ":2: a step has exactly the keys",
        ),
        (
            ['{"format": "qkdnode-transport-exchange", "version": 1}',
             '{"sent": {"fault": "timeout"}, "reply": null}'],
            ":2: a fault can only be a reply",
        ),
        (
            ['{"format": "qkdnode-transport-exchange", "version": 1}',
             '{"sent": "A?", "reply": {"fault": "melted"}}'],
            ":2: not a recorded value",
        ),
    ],
)
def test_malformed_recordings_name_file_and_line(tmp_path, lines, message):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=message):
        load_steps(path)


# --- property: recording, saving, loading and replaying preserves what a driver sees ----------

COMMANDS = st.text(alphabet="ABCMZ:?* 0123456789", min_size=1, max_size=12)
REPLIES = st.text(max_size=16)


@st.composite
def exchanges(draw: st.DrawFn) -> tuple[list[Step], list[tuple[object, ...]]]:
    """A script and the driver actions that use it exactly."""
    steps: list[Step] = []
    actions: list[tuple[object, ...]] = []
    for kind in draw(st.lists(st.sampled_from("QWVDBRT"), max_size=12)):
        if kind == "Q":  # query: a reply, a timeout or a disconnect
            cmd = draw(COMMANDS)
            faults = st.sampled_from([SCRIPTED_TIMEOUT, SCRIPTED_DISCONNECT])
            reply = draw(st.one_of(REPLIES, faults))
            steps.append((cmd, reply))
            actions.append(("query", cmd))
        elif kind == "W":  # write, then read its reply separately
            cmd, reply = draw(COMMANDS), draw(REPLIES)
            steps.append((cmd, reply))
            actions += [("write", cmd), ("read",)]
        elif kind == "V":  # write with no reply
            cmd = draw(COMMANDS)
            steps.append((cmd, None))
            actions.append(("write", cmd))
        elif kind == "D":  # a write on a dead link
            cmd = draw(COMMANDS)
            steps.append((cmd, SCRIPTED_DISCONNECT))
            actions.append(("write", cmd))
        elif kind == "B":  # binary out, binary reply read in pieces
            data, reply = draw(st.binary(min_size=1, max_size=20)), draw(st.binary(max_size=20))
            steps.append((data, reply or None))
            actions.append(("write_bytes", data))
            left = len(reply)
            while left:
                n = draw(st.integers(1, left))
                actions.append(("read_bytes", n))
                left -= n
        elif kind == "R":  # a line read with nothing sent
            steps.append((None, draw(REPLIES)))
            actions.append(("read",))
        else:  # a read that times out with nothing sent
            steps.append((None, SCRIPTED_TIMEOUT))
            actions.append(("read",))
    return steps, actions


def _drive(transport: Transport, actions: list[tuple[object, ...]]) -> list[object]:
    seen: list[object] = []
    for name, *args in actions:
        try:
            seen.append(getattr(transport, str(name))(*args))
        except (TransportError, TransportTimeout) as exc:
            seen.append((type(exc).__name__, str(exc)))
    return seen


@given(exchanges())
def test_record_save_load_replay_preserves_what_the_driver_sees(exchange):
    steps, actions = exchange
    with tempfile.TemporaryDirectory() as folder:
        lab = ScriptedTransport(steps, **PM)
        recorder = RecordingTransport(lab)
        seen = _drive(recorder, actions)
        lab.assert_done()
        path = Path(folder) / "session.jsonl"
        recorder.save(path)

        replay = ScriptedTransport.load(path)
        again = RecordingTransport(replay)
        assert _drive(again, actions) == seen
        replay.assert_done()
        # The recorded form is canonical: recording the replay gives the same steps.
        assert again.steps == recorder.steps


def test_binary_writes_are_recorded_by_digest_and_still_checked_on_replay(tmp_path):
    frame = b"DATA:ARB q,#13\x00\x01\x02\n"
    lab = ScriptedTransport([("OUTP OFF", None), (frame, None)], **PM)
    recorder = RecordingTransport(lab)
    recorder.write("OUTP OFF")
    recorder.write_bytes(frame)
    path = tmp_path / "awg.jsonl"
    recorder.save(path)
    text = path.read_text()
    assert "REFUQTpBUkIgcSwjMTMAAQIK" not in text   # the bytes are not in the file
    assert '"sha256"' in text
    replay = ScriptedTransport.load(path)
    replay.write("OUTP OFF")
    replay.write_bytes(frame)
    replay.assert_done()
    other = ScriptedTransport.load(path)
    other.write("OUTP OFF")
    with pytest.raises(AssertionError, match="expected to be sent <18 bytes, sha256") as info:
        other.write_bytes(frame[:-2] + b"\x09\n")
    assert "\\x09" not in str(info.value)          # the bytes sent stay out of it too
