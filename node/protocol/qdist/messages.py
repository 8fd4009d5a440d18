"""The messages of the Qdist dialogue and their bodies (see :mod:`.wire` for the field codec).

Bob (receiver) -> Alice (transmitter): :class:`DetectionsAnnounced`, :class:`ZBitsDisclosed`,
:class:`ReconciliationReplied`, :class:`KeyConfirmed`. Alice -> Bob: :class:`SiftingAnswered`,
:class:`CountsAnnounced`, :class:`ReconciliationSent`, :class:`AmplificationAnnounced`. Either:
:class:`BlockAbandoned`. Outside blocks (the start order of the instruments):
:class:`ArmedAnnounced` (Bob), :class:`StartAnnounced` and :class:`ResumeAnnounced`
(Alice). The reconciliation messages carry the dsp ends' own messages
(:mod:`qkdnode.dsp.reconcile.messages`) for every frame of the block at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from qkdnode.dsp.reconcile import (
    BitsRevealed,
    DecodingReported,
    FramePlan,
    FrameVerified,
    SyndromeComputed,
    TagComputed,
)

from ...errors import RemoteProtocolError
from .wire import BodyReader, BodyWriter

__all__ = [
    "CONTROL_BLOCK",
    "MAX_FRAMES_PER_BLOCK",
    "AmplificationAnnounced",
    "ArmedAnnounced",
    "BlockAbandoned",
    "CountsAnnounced",
    "DetectionsAnnounced",
    "KeyConfirmed",
    "Message",
    "ReconciliationReplied",
    "ReconciliationSent",
    "ResumeAnnounced",
    "SiftingAnswered",
    "StartAnnounced",
    "ZBitsDisclosed",
    "decode_message",
]

# LDPC frames per block: 10^7 sifted bits in frames of >= 4 000 payload bits; bounds every list.
MAX_FRAMES_PER_BLOCK = 4096
# Reasons are for people; longer ones are cut.
MAX_REASON = 500
_STATUS = ("decoded", "need_more", "failed")
# The block field of frames that belong to no block (:class:`ArmedAnnounced`,
# :class:`StartAnnounced`): above every block number (block numbers are below 2^63).
CONTROL_BLOCK = 2**64 - 1


@dataclass(frozen=True, slots=True, eq=False)
class DetectionsAnnounced:
    """Bob: the slot and basis of each of his detections, his parameters' digest and the last
    block he completed (-1 for none)."""

    KIND: ClassVar[int] = 1
    params_digest: str
    completed: int
    slots: NDArray[np.int64]
    basis: NDArray[np.uint8]

    def body(self) -> bytes:
        return (BodyWriter().text(self.params_digest).i64([self.completed]).i64(self.slots)
                .bits(self.basis).finish())

    @classmethod
    def read(cls, r: BodyReader) -> DetectionsAnnounced:
        digest, completed = r.text("params"), r.scalar("completed", -1)
        slots = r.i64("slots")
        basis = r.bits("basis")
        if basis.size != slots.size:
            raise RemoteProtocolError(f"{r.what}: 'slots' and 'basis' differ in length")
        if slots.size > 1 and not bool(np.all(slots[1:] > slots[:-1])):
            raise RemoteProtocolError(f"{r.what}: 'slots' is not strictly increasing")
        return cls(digest, completed, slots, basis)


@dataclass(frozen=True, slots=True, eq=False)
class SiftingAnswered:
    """Alice: which announced detections match her basis, their intensity classes, and the last
    block she completed."""

    KIND: ClassVar[int] = 2
    completed: int
    match: NDArray[np.bool_]
    intensity: NDArray[np.uint8]

    def body(self) -> bytes:
        return (BodyWriter().i64([self.completed]).bits(self.match.view(np.uint8))
                .u8(self.intensity).finish())

    @classmethod
    def read(cls, r: BodyReader) -> SiftingAnswered:
        completed = r.scalar("completed", -1)
        match = r.bits("match").astype(np.bool_)
        intensity = r.u8("intensity")
        if intensity.size != match.size or (intensity.size and int(intensity.max()) > 2):
            raise RemoteProtocolError(f"{r.what}: 'intensity' is malformed")
        return cls(completed, match, intensity)


@dataclass(frozen=True, slots=True, eq=False)
class ZBitsDisclosed:
    """Bob: his sifted Z-basis bits, for the phase-error estimate (Lim et al. 2014)."""

    KIND: ClassVar[int] = 3
    bits: NDArray[np.uint8]

    def body(self) -> bytes:
        return BodyWriter().bits(self.bits).finish()

    @classmethod
    def read(cls, r: BodyReader) -> ZBitsDisclosed:
        return cls(r.bits("bits"))


@dataclass(frozen=True, slots=True)
class CountsAnnounced:
    """Alice: the block's counts per intensity class (sifted X and Z, Z errors)."""

    KIND: ClassVar[int] = 4
    n_x: tuple[int, int, int]
    n_z: tuple[int, int, int]
    m_z: tuple[int, int, int]

    def body(self) -> bytes:
        return BodyWriter().i64(self.n_x).i64(self.n_z).i64(self.m_z).finish()

    @classmethod
    def read(cls, r: BodyReader) -> CountsAnnounced:
        def triple(name: str) -> tuple[int, int, int]:
            a = r.i64(name, 3, 0)
            return int(a[0]), int(a[1]), int(a[2])

        n_x, n_z, m_z = triple("n_x"), triple("n_z"), triple("m_z")
        if any(m > n for m, n in zip(m_z, n_z, strict=True)):
            raise RemoteProtocolError(f"{r.what}: more Z errors than Z detections")
        return cls(n_x, n_z, m_z)


def _frames(r: BodyReader, name: str) -> NDArray[np.int64]:
    frames = r.i64(name, None, 0)
    if frames.size > MAX_FRAMES_PER_BLOCK:
        raise RemoteProtocolError(f"{r.what}: more than {MAX_FRAMES_PER_BLOCK} frames")
    return frames


def _split(r: BodyReader, name: str, lengths: NDArray[np.int64],
           values: NDArray[np.generic]) -> list[NDArray[np.generic]]:
    if int(lengths.sum()) != values.size:
        raise RemoteProtocolError(f"{r.what}: field {name!r} does not match its lengths")
    return list(np.split(values, np.cumsum(lengths)[:-1])) if lengths.size else []


@dataclass(frozen=True, slots=True, eq=False)
class ReconciliationSent:
    """Alice: first syndromes, blind reveals and verification tags, for any frames."""

    KIND: ClassVar[int] = 5
    syndromes: tuple[SyndromeComputed, ...] = ()
    reveals: tuple[BitsRevealed, ...] = ()
    tags: tuple[TagComputed, ...] = ()

    def body(self) -> bytes:
        s, v, t = self.syndromes, self.reveals, self.tags
        w = BodyWriter().i64([m.frame for m in s]).text(",".join(m.plan.code_name for m in s))
        w.i64([x for m in s for x in (m.plan.payload_length, m.plan.n_punctured,
                                      m.plan.payload_reveals, m.plan.step)])
        w.f64([m.plan.qber for m in s]).i64([m.syndrome.size for m in s])
        w.bits(np.concatenate([m.syndrome for m in s]) if s else np.zeros(0, np.uint8))
        w.i64([m.frame for m in v]).i64([m.values.size for m in v])
        w.bits(np.concatenate([m.values for m in v]) if v else np.zeros(0, np.uint8))
        w.i64([m.frame for m in t]).i64([m.seed.size for m in t])
        w.u64(np.concatenate([m.seed for m in t]) if t else np.zeros(0, np.uint64))
        w.i64([m.tag.size for m in t])
        w.bits(np.concatenate([m.tag for m in t]) if t else np.zeros(0, np.uint8))
        return w.finish()

    @classmethod
    def read(cls, r: BodyReader) -> ReconciliationSent:
        frames = _frames(r, "syndrome frames")
        k = frames.size
        names = r.text("codes")
        codes = names.split(",") if names else []
        ints = r.i64("plans", 4 * k, 0).reshape(k, 4)
        qber = r.f64("qber", k)
        if len(codes) != k or not bool(np.all((qber > 0.0) & (qber < 0.5))):
            raise RemoteProtocolError(f"{r.what}: a frame plan is malformed")
        lengths = r.i64("syndrome lengths", k, 0)
        synd = _split(r, "syndromes", lengths, r.bits("syndromes"))
        syndromes = tuple(
            SyndromeComputed(int(f), FramePlan(c, int(row[0]), int(row[1]), int(row[2]),
                                               int(row[3]), float(q)), b)  # type: ignore[arg-type]
            for f, c, row, q, b in zip(frames, codes, ints, qber, synd, strict=True))
        rv_frames = _frames(r, "reveal frames")
        rv_lengths = r.i64("reveal lengths", rv_frames.size, 0)
        values = _split(r, "reveals", rv_lengths, r.bits("reveals"))
        reveals = tuple(BitsRevealed(int(f), v) for f, v in zip(rv_frames, values, strict=True))  # type: ignore[arg-type]
        tg_frames = _frames(r, "tag frames")
        seed_lengths = r.i64("seed lengths", tg_frames.size, 1)
        seeds = _split(r, "seeds", seed_lengths, r.u64("seeds"))
        tag_lengths = r.i64("tag lengths", tg_frames.size, 0)
        tag_bits = _split(r, "tags", tag_lengths, r.bits("tags"))
        tags = tuple(TagComputed(int(f), s, b)  # type: ignore[arg-type]
                     for f, s, b in zip(tg_frames, seeds, tag_bits, strict=True))
        return cls(syndromes, reveals, tags)


@dataclass(frozen=True, slots=True, eq=False)
class ReconciliationReplied:
    """Bob: decoding reports and verification verdicts, for any frames."""

    KIND: ClassVar[int] = 6
    reports: tuple[DecodingReported, ...] = ()
    verdicts: tuple[FrameVerified, ...] = ()

    def body(self) -> bytes:
        return (BodyWriter().i64([m.frame for m in self.reports])
                .u8(np.array([_STATUS.index(m.status) for m in self.reports], np.uint8))
                .i64([m.frame for m in self.verdicts])
                .u8(np.array([m.accepted for m in self.verdicts], np.uint8))
                .i64([m.errors for m in self.verdicts]).finish())

    @classmethod
    def read(cls, r: BodyReader) -> ReconciliationReplied:
        frames = _frames(r, "report frames")
        status = r.u8("status")
        if status.size != frames.size or (status.size and int(status.max()) >= len(_STATUS)):
            raise RemoteProtocolError(f"{r.what}: 'status' is malformed")
        reports = tuple(DecodingReported(int(f), _STATUS[int(s)])  # type: ignore[arg-type]
                        for f, s in zip(frames, status, strict=True))
        v_frames = _frames(r, "verdict frames")
        accepted = r.u8("accepted")
        errors = r.i64("errors", v_frames.size, 0)
        if accepted.size != v_frames.size or (accepted.size and int(accepted.max()) > 1):
            raise RemoteProtocolError(f"{r.what}: 'accepted' is malformed")
        verdicts = tuple(FrameVerified(int(f), bool(a), int(e))
                         for f, a, e in zip(v_frames, accepted, errors, strict=True))
        return cls(reports, verdicts)


@dataclass(frozen=True, slots=True, eq=False)
class AmplificationAnnounced:
    """Alice: the final length (before the authentication key is taken off), the Toeplitz
    seed (``kept bits + length - 1`` bits; empty when the length is 0), and the pads the block
    pays back (Alice -> Bob, Bob -> Alice), which Bob checks against his own count."""

    KIND: ClassVar[int] = 7
    length: int
    seed: NDArray[np.uint8]
    auth_pads: tuple[int, int] = (0, 0)

    def body(self) -> bytes:
        return BodyWriter().i64([self.length, *self.auth_pads]).bits(self.seed).finish()

    @classmethod
    def read(cls, r: BodyReader) -> AmplificationAnnounced:
        values = r.i64("length and pads", 3, 0)
        return cls(int(values[0]), r.bits("seed"), (int(values[1]), int(values[2])))


@dataclass(frozen=True, slots=True)
class KeyConfirmed:
    """Bob: he holds the key of the announced length."""

    KIND: ClassVar[int] = 8
    length: int

    def body(self) -> bytes:
        return BodyWriter().i64([self.length]).finish()

    @classmethod
    def read(cls, r: BodyReader) -> KeyConfirmed:
        return cls(r.scalar("length", 0))


@dataclass(frozen=True, slots=True)
class BlockAbandoned:
    """Either end: it aborted the block, and why (never key material)."""

    KIND: ClassVar[int] = 9
    reason: str

    def body(self) -> bytes:
        return BodyWriter().text(self.reason[:MAX_REASON]).finish()

    @classmethod
    def read(cls, r: BodyReader) -> BlockAbandoned:
        return cls(r.text("reason")[:MAX_REASON])


@dataclass(frozen=True, slots=True)
class ArmedAnnounced:
    """Bob: his time tagger runs and waits for the start marker (arm ``epoch``: larger than
    any before in this session; a new one after every restart of his acquisition)."""

    KIND: ClassVar[int] = 10
    epoch: int

    def body(self) -> bytes:
        return BodyWriter().i64([self.epoch]).finish()

    @classmethod
    def read(cls, r: BodyReader) -> ArmedAnnounced:
        return cls(r.scalar("epoch", 0))


@dataclass(frozen=True, slots=True)
class StartAnnounced:
    """Alice: her frame streamer's output started for Bob's arm ``epoch``; its start marker
    fired at the first slot of block ``first_block`` (later than every block she played)."""

    KIND: ClassVar[int] = 11
    epoch: int
    first_block: int

    def body(self) -> bytes:
        return BodyWriter().i64([self.epoch, self.first_block]).finish()

    @classmethod
    def read(cls, r: BodyReader) -> StartAnnounced:
        values = r.i64("epoch and first block", 2, 0)
        return cls(int(values[0]), int(values[1]))


@dataclass(frozen=True, slots=True)
class ResumeAnnounced:
    """Alice: her end restarted from its saved session state while Bob's arm ``epoch`` was the
    last she knew; her output's run is gone, so Bob must arm anew (a new epoch)."""

    KIND: ClassVar[int] = 12
    epoch: int

    def body(self) -> bytes:
        return BodyWriter().i64([self.epoch]).finish()

    @classmethod
    def read(cls, r: BodyReader) -> ResumeAnnounced:
        return cls(r.scalar("epoch", 0))


Message = (DetectionsAnnounced | SiftingAnswered | ZBitsDisclosed | CountsAnnounced
           | ReconciliationSent | ReconciliationReplied | AmplificationAnnounced | KeyConfirmed
           | BlockAbandoned | ArmedAnnounced | StartAnnounced | ResumeAnnounced)
_BY_KIND: dict[int, type[Message]] = {
    cls.KIND: cls for cls in (DetectionsAnnounced, SiftingAnswered, ZBitsDisclosed,
                              CountsAnnounced, ReconciliationSent, ReconciliationReplied,
                              AmplificationAnnounced, KeyConfirmed, BlockAbandoned,
                              ArmedAnnounced, StartAnnounced, ResumeAnnounced)
}


def decode_message(kind: int, body: bytes | memoryview) -> Message:
    """The message of an authenticated frame.

    Raises:
        RemoteProtocolError: unknown kind or a malformed body (the message names the field).
    """
    cls = _BY_KIND.get(kind)
    if cls is None:
        raise RemoteProtocolError(f"Qdist: unknown frame kind {kind}")
    reader = BodyReader(body, f"Qdist {cls.__name__}")
    message = cls.read(reader)
    reader.end()
    return message
