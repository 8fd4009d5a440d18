"""keysight.33500: the frame encoding, the exact upload bytes, and no key material in errors."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qkdnode.drivers.errors import DeviceError, InstrumentError, TransportError, TransportTimeout
from qkdnode.drivers.instruments.base import build_instrument
from qkdnode.drivers.instruments.keysight.awg33500 import AWG33500
from qkdnode.drivers.roles import Transmitter
from qkdnode.drivers.transport import SCRIPTED_DISCONNECT, SCRIPTED_TIMEOUT, scripted

NAMES = {"instrument": "transmitter 'awg'", "resource": "visa://TCPIP0::10.0.0.9::inst0::INSTR"}
OK = ("SYST:ERR?", '+0,"No error"')

# Eight slots covering every (basis, bit) and intensity class.
BASIS = np.array([0, 0, 1, 1, 0, 1, 0, 1], dtype=np.uint8)
BIT = np.array([0, 1, 0, 1, 1, 0, 0, 1], dtype=np.uint8)
INTENSITY = np.array([0, 1, 2, 0, 0, 1, 2, 0], dtype=np.uint8)
# Default codes written out by hand: intensity 0/1/2 -> 32767/8191/-32767; X0, X1, Z0, Z1 ->
# 0, 16382, 8191, 24573.
CH1_CODES = [32767, 8191, -32767, 32767, 32767, 8191, -32767, 32767]
CH2_CODES = [0, 16382, 8191, 24573, 16382, 8191, 0, 24573]


def little_endian(codes: list[int]) -> bytes:
    return struct.pack(f"<{len(codes)}h", *codes)


def upload_steps(ch1: bytes, ch2: bytes, points: int) -> list:
    steps: list = [("FORM:BORD SWAP", None), OK]
    for n, name, data in ((1, "QKD_INT", ch1), (2, "QKD_PHASE", ch2)):
        header = f"#{len(str(len(data)))}{len(data)}".encode()
        steps += [
            (f"SOUR{n}:DATA:VOL:CLE", None), OK,
            (f"SOUR{n}:DATA:ARB:DAC {name},".encode() + header + data + b"\n", None), OK,
            (f"SOUR{n}:DATA:ATTR:POIN? {name}", str(points)),
            (f"SOUR{n}:FUNC ARB", None), OK,
            (f"SOUR{n}:FUNC:ARB {name}", None), OK,
        ]
    return [*steps, ("FUNC:ARB:SYNC", None), OK]


def test_is_a_transmitter():
    with scripted([], **NAMES) as t:
        assert isinstance(AWG33500(t), Transmitter)


def test_upload_sends_exactly_these_bytes():
    ch1, ch2 = little_endian(CH1_CODES), little_endian(CH2_CODES)
    assert ch1[:4] == b"\xff\x7f\xff\x1f"  # 32767, 8191 little-endian: the byte order is fixed
    with scripted(upload_steps(ch1, ch2, 8), **NAMES) as t:
        awg = AWG33500(t)
        assert awg.frame_slots() == 0
        awg.load_frame(BASIS, BIT, INTENSITY)
        assert awg.frame_slots() == 8
    first_block = upload_steps(ch1, ch2, 8)[4][0]
    assert first_block == b"SOUR1:DATA:ARB:DAC QKD_INT,#216" + ch1 + b"\n"


def test_samples_per_slot_repeat_each_slot_and_custom_codes():
    ch1 = little_endian([c for c in (100, 200, 300, 100, 100, 200, 300, 100) for _ in range(2)])
    ch2 = little_endian([c for c in (1, 2, 3, 4, 2, 3, 1, 4) for _ in range(2)])
    with scripted(upload_steps(ch1, ch2, 16), **NAMES) as t:
        awg = AWG33500(t, samples_per_slot=2, intensity_codes=[100, 200, 300],
                       phase_codes=[1, 2, 3, 4])
        awg.load_frame(BASIS, BIT, INTENSITY)
        assert awg.frame_slots() == 8


def test_encode_matches_the_documented_mapping():
    with scripted([], **NAMES) as t:
        ch1, ch2 = AWG33500(t).encode(BASIS, BIT, INTENSITY)
    assert ch1.tolist() == CH1_CODES
    assert ch2.tolist() == CH2_CODES


@pytest.mark.parametrize(
    ("basis", "bit", "intensity", "error", "match"),
    [
        (BASIS, BIT, INTENSITY[:7], ValueError, "one length"),
        (BASIS, BIT, INTENSITY + 1, ValueError, r"intensity values must be in 0\.\.2"),
        (BASIS * 2, BIT, INTENSITY, ValueError, r"basis values must be in 0\.\.1"),
        (BASIS[:4], BIT[:4], INTENSITY[:4], ValueError, r"takes 8\.\.1048576"),
        (BASIS.astype(float), BIT, INTENSITY, TypeError, "integer array"),
        (BASIS.reshape(2, 4), BIT, INTENSITY, ValueError, "1-D"),
    ],
)
def test_malformed_frames_are_refused_before_sending(basis, bit, intensity, error, match):
    with scripted([], **NAMES) as t, pytest.raises(error, match=match):
        AWG33500(t).load_frame(basis, bit, intensity)


def test_point_count_mismatch_is_an_error_and_leaves_no_frame():
    ch1 = little_endian(CH1_CODES)
    steps = [*upload_steps(ch1, b"", 8)[:6], ("SOUR1:DATA:ATTR:POIN? QKD_INT", "7")]
    with scripted(steps, **NAMES) as t:
        awg = AWG33500(t)
        with pytest.raises(DeviceError, match="holds 7 points after an upload of 8"):
            awg.load_frame(BASIS, BIT, INTENSITY)
        assert awg.frame_slots() == 0


def test_slot_rate_start_stop_trigger():
    steps = [
        ("SOUR1:FUNC:ARB:SRAT 200000000", None), OK,
        ("SOUR2:FUNC:ARB:SRAT 200000000", None), OK,
        ("SOUR1:FUNC:ARB:SRAT?", "+2.000000000000000E+08"),
        ("OUTP1 ON", None), OK, ("OUTP2 ON", None), OK,
        ("*TRG", None), OK,
        ("OUTP1 OFF", None), OK, ("OUTP2 OFF", None), OK,
    ]
    with scripted(steps, **NAMES) as t:
        awg = AWG33500(t, samples_per_slot=2)
        awg.set_slot_rate_hz(100e6)
        assert awg.slot_rate_hz() == 100e6
        awg.start()
        awg.trigger()
        awg.stop()


def test_a_sample_rate_above_the_awg_s_is_refused_before_sending():
    with scripted([], **NAMES) as t, pytest.raises(ValueError, match="outside"):
        AWG33500(t, samples_per_slot=4).set_slot_rate_hz(100e6)


def test_settings_build_and_bad_codes():
    steps = [("SOUR1:FUNC:ARB:SRAT 50000000", None), OK, ("SOUR2:FUNC:ARB:SRAT 50000000", None), OK]
    with scripted(steps, **NAMES) as t:
        awg = build_instrument(AWG33500, t, {"slot_rate_hz": 5e7, "samples_per_slot": 1})
        assert awg.samples_per_slot == 1
    with scripted([], **NAMES) as t, pytest.raises(ValueError, match="'phase_codes'"):
        build_instrument(AWG33500, t, {"phase_codes": [0, 1, 2]})
    with scripted([], **NAMES) as t, pytest.raises(ValueError, match="'intensity_codes'"):
        build_instrument(AWG33500, t, {"intensity_codes": [0, 1, 40000]})


# --- no key material in any exception ------------------------------------------------------------

RNG = np.random.default_rng(2024)
SECRET_BASIS = RNG.integers(0, 2, 64, dtype=np.uint8)
SECRET_BIT = RNG.integers(0, 2, 64, dtype=np.uint8)
SECRET_INTENSITY = RNG.integers(0, 3, 64, dtype=np.uint8)


def secret_renderings() -> list[str]:
    """Ways the frame could leak into text: digits, lists, arrays, the encoded bytes."""
    with scripted([], **NAMES) as t:
        ch1, ch2 = AWG33500(t).encode(SECRET_BASIS, SECRET_BIT, SECRET_INTENSITY)
    out = []
    for array in (SECRET_BASIS, SECRET_BIT, SECRET_INTENSITY):
        out += ["".join(map(str, array[:16])), str(array.tolist())[:24], str(array)[:16],
                ", ".join(map(str, array[:12]))]
    for codes in (ch1, ch2):
        data = codes.astype("<i2").tobytes()
        out += [repr(data)[2:40], data.hex()[:24], str(codes.tolist())[:24]]
    return out


def test_the_leak_detector_would_see_a_leak():
    leaky = f"bad frame {SECRET_BASIS.tolist()} {SECRET_BIT} {SECRET_INTENSITY.tolist()}"
    assert sum(secret in leaky for secret in secret_renderings()) >= 3


def _secret_steps(fault_at: int, fault):
    with scripted([], **NAMES) as t:
        ch1, ch2 = AWG33500(t).encode(SECRET_BASIS, SECRET_BIT, SECRET_INTENSITY)
    steps = upload_steps(ch1.astype("<i2").tobytes(), ch2.astype("<i2").tobytes(), 64)
    sent, _ = steps[fault_at]
    return [*steps[:fault_at], (sent, fault)]


@pytest.mark.parametrize(
    ("fault_at", "fault", "error"),
    [
        (4, SCRIPTED_DISCONNECT, TransportError),  # the block write fails
        (5, SCRIPTED_TIMEOUT, TransportTimeout),  # the error query after the block times out
        (5, '-257,"Invalid arbitrary waveform"', InstrumentError),
        (6, "garbage", DeviceError),  # POIN? reply unreadable
        (6, "63", DeviceError),  # point count mismatch
    ],
)
def test_no_key_material_in_exceptions(fault_at, fault, error):
    steps = _secret_steps(fault_at, fault)
    if error is InstrumentError:
        steps.append(OK)
    if fault == "garbage":
        steps.append(OK)
    with scripted(steps, **NAMES) as t, pytest.raises(error) as info:
        AWG33500(t).load_frame(SECRET_BASIS, SECRET_BIT, SECRET_INTENSITY)
    texts = [str(info.value), repr(info.value), *map(str, info.value.args)]
    for text in texts:
        for secret in secret_renderings():
            assert secret not in text


@pytest.mark.parametrize("which", ["basis", "bit", "intensity", "length"])
def test_no_key_material_in_validation_errors(which):
    basis, bit, intensity = SECRET_BASIS.copy(), SECRET_BIT.copy(), SECRET_INTENSITY.copy()
    if which == "basis":
        basis[5] = 7
    elif which == "bit":
        bit[9] = 2
    elif which == "intensity":
        intensity[3] = 9
    else:
        intensity = intensity[:-1]
    with scripted([], **NAMES) as t, pytest.raises(ValueError, match=r"basis|bit|intens") as info:
        AWG33500(t).load_frame(basis, bit, intensity)
    for secret in secret_renderings():
        assert secret not in str(info.value)


def test_timeout_and_disconnect_name_instrument_resource_and_command():
    with scripted([("SOUR1:FUNC:ARB:SRAT?", SCRIPTED_TIMEOUT)], **NAMES) as t, pytest.raises(
        TransportTimeout
    ) as info:
        AWG33500(t).slot_rate_hz()
    assert str(info.value).startswith(
        f"transmitter 'awg' at {NAMES['resource']}: no reply to 'SOUR1:FUNC:ARB:SRAT?'"
    )
    with scripted([("OUTP1 ON", SCRIPTED_DISCONNECT)], **NAMES) as t, pytest.raises(
        TransportError
    ) as info:
        AWG33500(t).start()
    assert f"transmitter 'awg' at {NAMES['resource']}" in str(info.value)
    assert "'OUTP1 ON'" in str(info.value)


@settings(max_examples=60, deadline=None)
@given(
    slots=st.integers(8, 200),
    samples_per_slot=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
)
def test_decode_inverts_encode(slots, samples_per_slot, seed):
    rng = np.random.default_rng(seed)
    basis = rng.integers(0, 2, slots, dtype=np.uint8)
    bit = rng.integers(0, 2, slots, dtype=np.uint8)
    intensity = rng.integers(0, 3, slots, dtype=np.uint8)
    with scripted([], **NAMES) as t:
        awg = AWG33500(t, samples_per_slot=samples_per_slot)
        ch1, ch2 = awg.encode(basis, bit, intensity)
        assert ch1.size == ch2.size == slots * samples_per_slot
        decoded = awg.decode(ch1, ch2)
    for got, want in zip(decoded, (basis, bit, intensity), strict=True):
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, want)


def test_decode_refuses_foreign_codes_and_partial_slots():
    with scripted([], **NAMES) as t:
        awg = AWG33500(t, samples_per_slot=2)
        ch1, ch2 = awg.encode(BASIS, BIT, INTENSITY)
        with pytest.raises(ValueError, match="channel 1 holds samples that are not"):
            awg.decode(ch1 + 1, ch2)
        with pytest.raises(ValueError, match="not one frame"):
            awg.decode(ch1[:-1], ch2[:-1])
