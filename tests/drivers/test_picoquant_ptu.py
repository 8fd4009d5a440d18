"""PTU files: write/read round trips, a hand-built file, error cases, decoding T2 records."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qkdnode.drivers.picoquant import (
    PtuFormatError,
    T2Events,
    T2State,
    Tag,
    TagType,
    decode_ptu_t2,
    decode_t2,
    encode_t2,
    read_ptu,
    write_ptu,
)
from qkdnode.drivers.picoquant.records import RT_HYDRAHARP2_T2, RT_HYDRAHARP_T2, WRAP_V2


def every_type_header() -> dict[str, Tag]:
    tags = [
        Tag("File_Comment", TagType.EMPTY8, None),
        Tag("Meas_Running", TagType.BOOL8, True),
        Tag("Meas_Stopped", TagType.BOOL8, False),
        Tag("TTResultFormat_TTTRRecType", TagType.INT8, RT_HYDRAHARP2_T2),
        Tag("HW_InpChan_Offset", TagType.INT8, -12, index=0),
        Tag("HW_InpChan_Offset", TagType.INT8, 34, index=1),
        Tag("HW_Flags", TagType.BITSET64, 0xFFFF_0000_0000_0001),
        Tag("Disp_Color", TagType.COLOR8, 0x00FF8800),
        Tag("MeasDesc_GlobalResolution", TagType.FLOAT8, 1e-12),
        Tag("File_CreatingTime", TagType.TDATETIME, 45000.25),
        Tag("Calib_Values", TagType.FLOAT8_ARRAY, (1.5, -2.0, 3e-9)),
        Tag("Calib_Empty", TagType.FLOAT8_ARRAY, ()),
        Tag("CreatorSW_Name", TagType.ANSI_STRING, "HydraHarp 400 café"),
        Tag("File_Note", TagType.WIDE_STRING, "Größe ✓ 測定"),
        Tag("UsrHeadBlob", TagType.BINARY_BLOB, b"\x00\x01\x02abc"),
    ]
    return {t.key: t for t in tags}


def test_round_trip_every_type(tmp_path: Path) -> None:
    header = every_type_header()
    records = np.array([1, 2, 0xFFFFFFFF, 0], dtype=np.uint32)
    path = tmp_path / "a.ptu"
    write_ptu(path, header, records)
    ptu = read_ptu(path)
    expected = dict(header)
    expected["TTResult_NumberOfRecords"] = Tag("TTResult_NumberOfRecords", TagType.INT8, 4)
    assert ptu.header == expected
    assert list(ptu.header) == list(expected)
    assert "HW_InpChan_Offset(1)" in ptu.header
    assert ptu.record_type == RT_HYDRAHARP2_T2
    assert ptu.resolution_ps == 1
    assert ptu.version == "1.0.00"
    assert ptu.records.dtype == np.uint32
    np.testing.assert_array_equal(ptu.records, records)


tag_values = st.one_of(
    st.builds(lambda v: (TagType.BOOL8, v), st.booleans()),
    st.builds(lambda v: (TagType.INT8, v), st.integers(-(2**63), 2**63 - 1)),
    st.builds(lambda v: (TagType.BITSET64, v), st.integers(0, 2**64 - 1)),
    st.builds(lambda v: (TagType.FLOAT8, v), st.floats(allow_nan=False)),
    st.builds(
        lambda v: (TagType.FLOAT8_ARRAY, tuple(v)), st.lists(st.floats(allow_nan=False))
    ),
    st.builds(
        lambda v: (TagType.ANSI_STRING, v),
        st.text(st.characters(min_codepoint=1, max_codepoint=255)),
    ),
    st.builds(
        lambda v: (TagType.WIDE_STRING, v),
        st.text(st.characters(min_codepoint=1, max_codepoint=0xD7FF)),  # below the surrogates
    ),
    st.builds(lambda v: (TagType.BINARY_BLOB, v), st.binary()),
)


@settings(
    deadline=None, max_examples=50, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    values=st.lists(tag_values, max_size=8),
    records=st.lists(st.integers(0, 2**32 - 1), max_size=20),
)
def test_round_trip_property(
    tmp_path: Path, values: list[tuple[TagType, object]], records: list[int]
) -> None:
    header = {f"Tag_{i}": Tag(f"Tag_{i}", t, v) for i, (t, v) in enumerate(values)}  # type: ignore[arg-type]
    recs = np.array(records, dtype=np.uint32)
    path = tmp_path / "p.ptu"
    write_ptu(path, header, recs)
    ptu = read_ptu(path)
    assert {k: v for k, v in ptu.header.items() if k != "TTResult_NumberOfRecords"} == header
    np.testing.assert_array_equal(ptu.records, recs)


def entry(ident: str, index: int, type_code: int, value: bytes) -> bytes:
    return struct.pack("<32siI8s", ident.encode(), index, type_code, value)


def hand_built(records: list[int], count: int | None = None) -> bytes:
    """A PTU file laid out byte by byte, independently of write_ptu."""
    n = len(records) if count is None else count
    text = "HydraHarp".encode("utf-16-le") + b"\0\0"
    return b"".join([
        b"PQTTTR\0\0",
        b"1.0.00\0\0",
        entry("File_GUID", -1, 0x4001FFFF, struct.pack("<q", 8)),
        b"{abcd}\0\0",
        entry("CreatorSW_Name", -1, 0x4002FFFF, struct.pack("<q", len(text))),
        text,
        entry("TTResultFormat_TTTRRecType", -1, 0x10000008, struct.pack("<q", RT_HYDRAHARP_T2)),
        entry("MeasDesc_GlobalResolution", -1, 0x20000008, struct.pack("<d", 4e-12)),
        entry("TTResult_NumberOfRecords", -1, 0x10000008, struct.pack("<q", n)),
        entry("Header_End", -1, 0xFFFF0008, bytes(8)),
        struct.pack(f"<{len(records)}I", *records),
    ])


V1_RECORDS = [
    (0 << 25) | 100,  # channel 1 at 100
    (1 << 31) | (0x3F << 25) | 999,  # v1 overflow: time field ignored
    (1 << 31) | (0 << 25) | 50,  # sync
    (1 << 31) | (3 << 25) | 60,  # marker 3
    (7 << 25) | 70,  # channel 8
]


def test_decode_hand_built_file(tmp_path: Path) -> None:
    path = tmp_path / "h.ptu"
    path.write_bytes(hand_built(V1_RECORDS))
    ptu = read_ptu(path)
    assert ptu.header["File_GUID"].value == "{abcd}"
    assert ptu.header["CreatorSW_Name"].value == "HydraHarp"
    assert ptu.record_type == RT_HYDRAHARP_T2
    assert ptu.resolution_ps == 4
    ev, state = decode_ptu_t2(ptu)
    w = 33552000
    assert ev.channels.tolist() == [1, 0, -3, 8]
    assert ev.timestamps_ps.tolist() == [400, (w + 50) * 4, (w + 60) * 4, (w + 70) * 4]
    assert state == T2State(w)


def test_chunked_decode_of_file_equals_whole(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    times = np.cumsum(rng.integers(0, 3 * WRAP_V2, size=500)).astype(np.int64)
    channels = rng.integers(-15, 65, size=500).astype(np.int16)
    recs, _ = encode_t2(times, channels, RT_HYDRAHARP2_T2)
    header = {
        "TTResultFormat_TTTRRecType": Tag(
            "TTResultFormat_TTTRRecType", TagType.INT8, RT_HYDRAHARP2_T2
        ),
        "MeasDesc_GlobalResolution": Tag("MeasDesc_GlobalResolution", TagType.FLOAT8, 5e-12),
    }
    path = tmp_path / "c.ptu"
    write_ptu(path, header, recs)
    ptu = read_ptu(path)
    whole, whole_state = decode_ptu_t2(ptu)
    np.testing.assert_array_equal(whole.timestamps_ps, times * 5)
    np.testing.assert_array_equal(whole.channels, channels)
    state = T2State()
    parts: list[T2Events] = []
    for chunk in np.array_split(ptu.records, 7):
        ev, state = decode_t2(chunk, RT_HYDRAHARP2_T2, 5, state)
        parts.append(ev)
    np.testing.assert_array_equal(
        np.concatenate([p.timestamps_ps for p in parts]), whole.timestamps_ps
    )
    np.testing.assert_array_equal(np.concatenate([p.channels for p in parts]), whole.channels)
    assert state == whole_state


def write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "bad.ptu"
    path.write_bytes(data)
    return path


def test_wrong_magic(tmp_path: Path) -> None:
    with pytest.raises(PtuFormatError, match="wrong magic"):
        read_ptu(write(tmp_path, b"PQHISTO\0" + hand_built(V1_RECORDS)[8:]))


@pytest.mark.parametrize("cut", [0, 10, 16, 40, 16 + 48 + 4, 16 + 48 + 8 + 20])
def test_truncated_header(tmp_path: Path, cut: int) -> None:
    with pytest.raises(PtuFormatError, match="truncated"):
        read_ptu(write(tmp_path, hand_built(V1_RECORDS)[:cut]))


def test_truncated_records(tmp_path: Path) -> None:
    data = hand_built(V1_RECORDS)
    with pytest.raises(PtuFormatError, match=r"truncated.*is 5, the file holds 4"):
        read_ptu(write(tmp_path, data[:-4]))
    with pytest.raises(PtuFormatError, match="truncated"):
        read_ptu(write(tmp_path, data[:-2]))


def test_record_count_mismatch(tmp_path: Path) -> None:
    with pytest.raises(PtuFormatError, match=r"record count mismatch.*is 3, the file holds 5"):
        read_ptu(write(tmp_path, hand_built(V1_RECORDS, count=3)))


def test_unknown_tag_type_names_tag(tmp_path: Path) -> None:
    data = hand_built(V1_RECORDS)
    bad = data.replace(
        entry("MeasDesc_GlobalResolution", -1, 0x20000008, struct.pack("<d", 4e-12)),
        entry("MeasDesc_GlobalResolution", -1, 0x30000008, struct.pack("<d", 4e-12)),
    )
    with pytest.raises(PtuFormatError, match=r"'MeasDesc_GlobalResolution'.*0x30000008"):
        read_ptu(write(tmp_path, bad))


def test_write_errors(tmp_path: Path) -> None:
    path = tmp_path / "w.ptu"
    recs = np.zeros(3, dtype=np.uint32)
    with pytest.raises(ValueError, match="does not match"):
        write_ptu(path, {"A": Tag("B", TagType.INT8, 1)}, recs)
    with pytest.raises(TypeError, match=r"'A'.*Int8"):
        write_ptu(path, {"A": Tag("A", TagType.INT8, "x")}, recs)
    with pytest.raises(ValueError, match=r"'A'.*out of range"):
        write_ptu(path, {"A": Tag("A", TagType.INT8, 2**63)}, recs)
    with pytest.raises(ValueError, match="ident"):
        write_ptu(path, {"A" * 33: Tag("A" * 33, TagType.INT8, 1)}, recs)
    n = Tag("TTResult_NumberOfRecords", TagType.INT8, 2)
    with pytest.raises(ValueError, match="TTResult_NumberOfRecords"):
        write_ptu(path, {n.key: n}, recs)
    with pytest.raises(TypeError, match="uint32"):
        write_ptu(path, {}, recs.astype(np.int32))


def test_decode_needs_type_and_resolution(tmp_path: Path) -> None:
    path = tmp_path / "n.ptu"
    write_ptu(path, {}, np.zeros(1, dtype=np.uint32))
    with pytest.raises(ValueError, match="TTResultFormat_TTTRRecType"):
        decode_ptu_t2(read_ptu(path))
    rt = Tag("TTResultFormat_TTTRRecType", TagType.INT8, RT_HYDRAHARP2_T2)
    res = Tag("MeasDesc_GlobalResolution", TagType.FLOAT8, 2.5e-13)
    write_ptu(path, {rt.key: rt, res.key: res}, np.zeros(1, dtype=np.uint32))
    with pytest.raises(ValueError, match="whole number of picoseconds"):
        decode_ptu_t2(read_ptu(path))


def test_duplicate_tag_and_bad_wide_string(tmp_path: Path) -> None:
    data = hand_built(V1_RECORDS)
    guid = entry("File_GUID", -1, 0x4001FFFF, struct.pack("<q", 8)) + b"{abcd}\0\0"
    with pytest.raises(PtuFormatError, match="'File_GUID' appears twice"):
        read_ptu(write(tmp_path, data[:16] + guid + data[16:]))
    odd = entry("Note", -1, 0x4002FFFF, struct.pack("<q", 3)) + b"abc"
    with pytest.raises(PtuFormatError, match="'Note': bad WideString"):
        read_ptu(write(tmp_path, data[:16] + odd + data[16:]))
