"""Recording a module run's raw data, and reading it back (for ``qkdnode distill``).

A recording is one directory per link, every file mode 0600 (the directory 0700):

``manifest.json``
    the frame plan, the Qdist parameters, Qsync's settings, the tagger channel map and the
    paths of the pre-shared Qdist secrets (never the secrets themselves).
``tags.rec``
    Bob's time tags exactly as read, one record per tagger read.
``alice-choices.rec``
    **Key material**: Alice's basis, bit and intensity of every slot of every block whose frame
    the transmitter took (one byte per slot: ``basis | bit << 1 | intensity << 2``), written
    once the frame is queued; a block that did not play (its frame came late, or the
    transmitter reported it as played dark) is a record of zero slots, so its replay refuses
    the block as the run did.
``alice-public.rec``
    the random bytes Alice's Qdist end drew for its public seeds (verification and privacy
    amplification), one record per draw. The live run draws them from the operating system's
    CSPRNG as an unrecorded run does; the replay gives them back in order.
``bob-squash.rec``
    **Key material**: the random bytes of Bob's squashing rule (his raw key bits for double
    clicks), one record per block closed, as drawn from the link's random source.
``qdist-alice.rec``, ``qdist-bob.rec``
    the Qdist bytes each end sent, in the order sent.
``outcomes-alice.jsonl``, ``outcomes-bob.jsonl``
    each end's audit record of every block (as in the audit log: no key bits).

The ``.rec`` files: the line ``QKDREC1\\n``, then records of ``<u32 length, u32 CRC-32>`` and
``length`` bytes of payload. A short or corrupted record raises :class:`RecordingError`
naming the file, the record and the byte offset.
"""

from __future__ import annotations

import json
import os
import secrets
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from numpy.typing import NDArray

from qkdnode.drivers.roles import RandomSource
from qkdnode.drivers.sim.link import TagBatch

from ..protocol.qdist import BlockAudit
from .instruments import FrameMissed
from .runtime import AuditLog, FrameSink, TagSource

__all__ = ["MAGIC", "RecordedDraws", "Recorder", "Recording", "RecordingError", "read_records"]

MAGIC = b"QKDREC1\n"
_HEADER = struct.Struct("<II")
_TAGS = struct.Struct("<Qqq")  # tags, complete_until_ps, lost_events
_CHOICES = struct.Struct("<qQ")  # block, slots

MANIFEST = "manifest.json"
TAGS = "tags.rec"
CHOICES = "alice-choices.rec"
PUBLIC = "alice-public.rec"
SQUASH = "bob-squash.rec"
# 2: Alice's public seeds and Bob's squashing bits are recorded as drawn (format 1 held the
# seeds of numpy generators, which made them predictable from the recording); blocks that did
# not play are marked.
FORMAT_VERSION = 2


class RecordingError(ValueError):
    """A recording file is missing, truncated or corrupted (the message names the file)."""


def _open_private(path: Path, mode: str) -> IO[Any]:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, mode)


class _RecordWriter:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = _open_private(path, "wb")
        self._file.write(MAGIC)
        self._file.flush()

    def write(self, *parts: bytes | memoryview) -> None:
        payload = b"".join(parts)
        self._file.write(_HEADER.pack(len(payload), zlib.crc32(payload)) + payload)
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_records(path: Path) -> Iterator[bytes]:
    """The payloads of a ``.rec`` file.

    Raises:
        RecordingError: missing file, wrong magic, a truncated or corrupted record.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise RecordingError(f"{path}: cannot read: {exc.strerror}") from None
    if not data.startswith(MAGIC):
        raise RecordingError(f"{path}: not a qkdnode recording file (no {MAGIC!r} header)")
    off, i = len(MAGIC), 0
    while off < len(data):
        if off + _HEADER.size > len(data):
            raise RecordingError(f"{path}: truncated: record {i} at byte {off} has an "
                                 "incomplete header")
        length, crc = _HEADER.unpack_from(data, off)
        start = off + _HEADER.size
        if start + length > len(data):
            raise RecordingError(f"{path}: truncated: record {i} at byte {off} needs {length} "
                                 f"bytes, {len(data) - start} left")
        payload = data[start:start + length]
        if zlib.crc32(payload) != crc:
            raise RecordingError(f"{path}: record {i} at byte {off} is corrupted (CRC-32 "
                                 "mismatch)")
        yield payload
        off, i = start + length, i + 1


class _RecordingAudit(AuditLog):
    """The module's audit log, with every record also written to the recording."""

    def __init__(self, path: Path, copy: IO[str]) -> None:
        super().__init__(path)
        self._copy = copy

    def write(self, link: str, audit: BlockAudit) -> None:
        super().write(link, audit)
        self._copy.write(json.dumps(audit.to_json(), allow_nan=True) + "\n")
        self._copy.flush()


class _RecordingSource:
    """Bob's tag source with every read written to the recording: the tags as the module's
    Qsync gets them (a tagger's: after the start marker, relative to it).

    The start order's controls pass through to the source, so a recorded run arms, fences and
    times out on the marker as an unrecorded one does: :meth:`arm`, :meth:`armed_announced`,
    :meth:`expect_marker`, and the counters the module's status shows. A source without them
    (a source with no start order) has none here either: the controls do nothing and the
    counters are those of a source that needs no marker. The instrument is closed by its
    owner (the link end), not through this wrapper.
    """

    def __init__(self, source: TagSource, out: _RecordWriter) -> None:
        self._source = source
        self._out = out

    async def read(self) -> TagBatch:
        batch = await self._source.read()
        ts = np.ascontiguousarray(batch.timestamps_ps, np.int64)
        ch = np.ascontiguousarray(batch.channels, np.int16)
        self._out.write(_TAGS.pack(ts.size, batch.complete_until_ps, batch.lost_events),
                        ts.tobytes(), ch.tobytes())
        return batch

    async def arm(self) -> None:
        """Arms the source's tagger (:meth:`.instruments.TaggerSource.arm`)."""
        arm = getattr(self._source, "arm", None)
        if arm is not None:
            await arm()

    def armed_announced(self) -> None:
        """The arm is about to be announced (:meth:`.instruments.TaggerSource.armed_announced`)."""
        announced = getattr(self._source, "armed_announced", None)
        if announced is not None:
            announced()

    def expect_marker(self, now: float | None = None) -> None:
        """The marker is due (:meth:`.instruments.TaggerSource.expect_marker`)."""
        expect = getattr(self._source, "expect_marker", None)
        if expect is not None:
            expect(now)

    @property
    def marker_seen(self) -> bool:
        return bool(getattr(self._source, "marker_seen", True))

    @property
    def arms(self) -> int:
        return int(getattr(self._source, "arms", 0))

    @property
    def before_marker(self) -> int:
        return int(getattr(self._source, "before_marker", 0))

    @property
    def markers(self) -> int:
        return int(getattr(self._source, "markers", 0))

    @property
    def stale_markers(self) -> int:
        return int(getattr(self._source, "stale_markers", 0))

    @property
    def markers_after_origin(self) -> int:
        return int(getattr(self._source, "markers_after_origin", 0))

    @property
    def lost(self) -> int:
        return int(getattr(self._source, "lost", 0))


class _RecordingFrames:
    def __init__(self, frames: FrameSink, out: _RecordWriter) -> None:
        self._frames = frames
        self._out = out

    async def load(self, block: int, basis: NDArray[np.uint8], bit: NDArray[np.uint8],
                   intensity: NDArray[np.uint8]) -> None:
        try:
            await self._frames.load(block, basis, bit, intensity)
        except FrameMissed:
            self._out.write(_CHOICES.pack(block, 0))  # played as vacuum: no choices
            raise
        # Recorded once queued, so the choices of a frame that never played are not kept.
        # One byte per slot: basis | bit << 1 | intensity << 2.
        packed = (np.asarray(basis, np.uint8) | (np.asarray(bit, np.uint8) << 1)
                  | (np.asarray(intensity, np.uint8) << 2)).astype(np.uint8)
        self._out.write(_CHOICES.pack(block, packed.size), packed.tobytes())

    async def _underruns(self) -> tuple[int, ...]:
        dark: tuple[int, ...] = await self._frames.underruns()  # type: ignore[attr-defined]
        for block in dark:
            self._out.write(_CHOICES.pack(block, 0))
        return dark

    def __getattr__(self, name: str) -> Any:
        # A frame streamer's underrun reports are recorded (their blocks did not play); its
        # next_block passes through. A sink without them has none here either.
        if name == "underruns":
            getattr(self._frames, name)
            return self._underruns
        return getattr(self._frames, name)


class _RecordingRandom:
    """A random source whose every draw is also written to the recording."""

    def __init__(self, source: RandomSource, out: _RecordWriter) -> None:
        self._source = source
        self._out = out

    def random_bytes(self, n: int) -> bytes:
        data = self._source.random_bytes(n)
        self._out.write(data)
        return data

    def close(self) -> None:
        self._source.close()

    def __repr__(self) -> str:
        return f"recorded({self._source!r})"


class RecordedDraws:
    """A recording's random draws given back in order (a replay's random source and Alice's
    ``random_bytes``): each draw must ask for as many bytes as the run's did.

    Raises:
        RecordingError: a draw the run did not make, or of another size (the replay has
            diverged from the run).
    """

    def __init__(self, path: Path, draws: list[bytes]) -> None:
        self.path = path
        self._draws = draws
        self.used = 0

    @property
    def remaining(self) -> int:
        """Draws not given back yet."""
        return len(self._draws) - self.used

    def __call__(self, n: int) -> bytes:
        return self.random_bytes(n)

    def random_bytes(self, n: int) -> bytes:
        if self.used >= len(self._draws):
            raise RecordingError(f"{self.path}: the replay draws more random values than the "
                                 f"run did ({len(self._draws)} draws recorded)")
        data = self._draws[self.used]
        if len(data) != n:
            raise RecordingError(f"{self.path}: draw {self.used} of the run was {len(data)} "
                                 f"bytes, the replay asks for {n}")
        self.used += 1
        return data

    def close(self) -> None:
        """Nothing to release."""


class _RecordingEnd:
    """A Qdist end whose sent bytes are also written to the recording (everything else is the
    end's own)."""

    def __init__(self, end: Any, out: _RecordWriter) -> None:
        self._end = end
        self._out = out

    def data_to_send(self) -> bytes:
        data: bytes = self._end.data_to_send()
        if data:
            self._out.write(data)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._end, name)


class Recorder:
    """Records one link's run into ``directory`` (created mode 0700; files 0600).

    Wrap the module's parts with :meth:`source`, :meth:`frames`, :meth:`end` and
    :meth:`audit`, and describe the run with :meth:`describe`.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.directory, 0o700)
        self._writers: dict[str, _RecordWriter] = {}
        self._copies: list[IO[str]] = []
        self._manifest: dict[str, Any] = {"format": FORMAT_VERSION,
                                          "key_material": [CHOICES, SQUASH]}

    def _writer(self, name: str) -> _RecordWriter:
        if name not in self._writers:
            self._writers[name] = _RecordWriter(self.directory / name)
        return self._writers[name]

    @property
    def manifest(self) -> dict[str, Any]:
        """The manifest so far (a copy)."""
        return dict(self._manifest)

    def describe(self, **fields: Any) -> None:
        """Adds ``fields`` to the manifest (rewritten at once)."""
        self._manifest.update(fields)
        tmp = self.directory / (MANIFEST + ".tmp")
        with _open_private(tmp, "w") as f:
            json.dump(self._manifest, f, indent=1, allow_nan=True)
        tmp.replace(self.directory / MANIFEST)

    def source(self, source: TagSource) -> TagSource:
        return _RecordingSource(source, self._writer(TAGS))

    def frames(self, frames: FrameSink) -> FrameSink:
        return _RecordingFrames(frames, self._writer(CHOICES))

    def public_random(self) -> Callable[[int], bytes]:
        """Alice's Qdist ``random_bytes``: the OS CSPRNG, as unrecorded, each draw recorded."""
        out = self._writer(PUBLIC)

        def draw(n: int) -> bytes:
            data = secrets.token_bytes(n)
            out.write(data)
            return data

        return draw

    def squash(self, source: RandomSource) -> RandomSource:
        """Bob's squashing source (the link's random source), each draw recorded."""
        return _RecordingRandom(source, self._writer(SQUASH))

    def end(self, end: Any, role: str) -> Any:
        return _RecordingEnd(end, self._writer(f"qdist-{role}.rec"))

    def audit(self, role: str, path: Path) -> AuditLog:
        copy = _open_private(self.directory / f"outcomes-{role}.jsonl", "w")
        self._copies.append(copy)
        return _RecordingAudit(path, copy)

    def close(self) -> None:
        """Closes the files (again: nothing)."""
        for writer in self._writers.values():
            writer.close()
        for copy in self._copies:
            copy.close()


@dataclass(frozen=True)
class Recording:
    """A recording directory opened for reading (files are read when asked for)."""

    directory: Path
    manifest: dict[str, Any]

    @classmethod
    def open(cls, directory: Path) -> Recording:
        """Raises RecordingError: no readable manifest."""
        path = Path(directory) / MANIFEST
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise RecordingError(f"{path}: cannot read: {exc.strerror}") from None
        except json.JSONDecodeError as exc:
            raise RecordingError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})"
                                 ) from None
        if manifest.get("format") != FORMAT_VERSION:
            raise RecordingError(f"{path}: a format-{manifest.get('format')} recording; this "
                                 f"qkdnode reads format {FORMAT_VERSION} (record the run again)")
        missing = [k for k in ("link", "plan", "qdist", "tracker", "channel_map")
                   if k not in manifest]
        if missing:
            raise RecordingError(f"{path}: the manifest lacks {', '.join(missing)}")
        return cls(Path(directory), manifest)

    def tag_reads(self) -> Iterator[tuple[NDArray[np.int64], NDArray[np.int16]]]:
        """Bob's tagger reads in order: (timestamps_ps, channels)."""
        path = self.directory / TAGS
        for i, payload in enumerate(read_records(path)):
            if len(payload) < _TAGS.size:
                raise RecordingError(f"{path}: record {i} is too short for a tag read")
            n = _TAGS.unpack_from(payload)[0]
            if len(payload) != _TAGS.size + 10 * n:
                raise RecordingError(f"{path}: record {i} holds {len(payload)} bytes, not "
                                     f"those of {n} tags")
            ts = np.frombuffer(payload, np.int64, n, _TAGS.size)
            ch = np.frombuffer(payload, np.int16, n, _TAGS.size + 8 * n)
            yield ts, ch

    def choices(self) -> tuple[dict[int, tuple[NDArray[np.uint8], ...]], set[int]]:
        """Alice's choices per block that played: (basis, bit, intensity), key material; and
        the blocks that did not play (their frame came late or played dark)."""
        path = self.directory / CHOICES
        out: dict[int, tuple[NDArray[np.uint8], ...]] = {}
        missed: set[int] = set()
        for i, payload in enumerate(read_records(path)):
            if len(payload) < _CHOICES.size:
                raise RecordingError(f"{path}: record {i} is too short for a frame")
            block, n = _CHOICES.unpack_from(payload)
            if n == 0 and len(payload) == _CHOICES.size:
                missed.add(int(block))
                continue
            if len(payload) != _CHOICES.size + n:
                raise RecordingError(f"{path}: record {i} holds {len(payload)} bytes, not "
                                     f"those of a {n}-slot frame")
            packed = np.frombuffer(payload, np.uint8, n, _CHOICES.size)
            if int(packed.max(initial=0)) >= 12:
                raise RecordingError(f"{path}: record {i} holds a slot with no valid "
                                     "basis/bit/intensity")
            out[int(block)] = ((packed & 1).astype(np.uint8), ((packed >> 1) & 1).astype(np.uint8),
                               (packed >> 2).astype(np.uint8))
        for block in missed:  # reported dark after its frame was queued
            out.pop(block, None)
        return out, missed

    def first_block(self) -> int:
        """The block of Alice's first frame (the first block of the run; 0 if none)."""
        path = self.directory / CHOICES
        for payload in read_records(path):
            if len(payload) < _CHOICES.size:
                raise RecordingError(f"{path}: record 0 is too short for a frame")
            return int(_CHOICES.unpack_from(payload)[0])
        return 0

    def draws(self, name: str) -> RecordedDraws:
        """The random draws recorded in ``name`` (:data:`PUBLIC`, :data:`SQUASH`)."""
        path = self.directory / name
        return RecordedDraws(path, list(read_records(path)))

    def qdist_bytes(self, role: str) -> bytes:
        """Everything ``role``'s Qdist end sent."""
        return b"".join(read_records(self.directory / f"qdist-{role}.rec"))

    def outcomes(self, role: str) -> list[dict[str, Any]]:
        """``role``'s audit records, in order (empty if the run recorded none)."""
        path = self.directory / f"outcomes-{role}.jsonl"
        if not path.exists():
            return []
        out = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise RecordingError(f"{path}: line {n} is not valid JSON ({exc.msg})"
                                     ) from None
        return out
