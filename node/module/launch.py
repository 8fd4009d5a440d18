"""Modules built from node configurations, and run: what ``qkdnode module`` does.

One :class:`LinkEnd` per ``[[links]]`` table: its Qdist end (parameters from
``[links.decoy]`` and ``[links.distillation]``, the secret from ``auth_secret_file``), its key
output (a :class:`~.keys_out.KeyOutbox` over Kq-1 to the node's key manager at
``[key_manager] kq1_socket``), its audit log, and its instruments. :func:`build_ends` opens
them (blocking up to the instruments' timeouts, so a running event loop calls
:func:`open_ends`, which builds them in a worker thread); whatever it opened is closed again if
a later step fails.

Instruments (:mod:`.instruments`): the transmitter queues one frame per block into its frame
streamer, the receiver reads its time tagger, both through the drivers and transports, on the
simulated bench (in this process, or hosted by a bench service for processes that each run one
end: ``[bench] service``) or real ones; the tagger times slots from the frame streamer's start
marker (:func:`.instruments.marker_channel`, the start order in :mod:`.runtime`). A link on the
simulated bench that names no instruments gets the bench's defaults. ``frames_of`` (tests and
benchmarks only) runs both ends in this process on :class:`~.sim.BenchFrames` instead,
bypassing the instruments.

Randomness (:func:`random_source`): Alice's choices and Bob's squashing bits come from the
link's ``random_source`` instrument if it names one (a QRNG driver, ``os.csprng``, or
``sim.seeded_random`` on the simulated bench only), else from the operating system's CSPRNG;
``rng_seed`` (tests, benchmarks) seeds them on the simulated bench only. Alice's public Qdist
seeds come from the OS CSPRNG (:class:`~..protocol.qdist.QdistAlice`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qkdnode.drivers.registry import open_instrument
from qkdnode.drivers.roles import OsRandomSource, RandomSource, SeededRandomSource
from qkdnode.drivers.sim.bench import Bench, get_bench
from qkdnode.dsp.ldpc.codes import available_codes, validated_qber
from qkdnode.dsp.qsync import SlotTracker

from ..config.schema import MAX_QBER_ABORT, LinkConfig, NodeConfig
from ..errors import ConfigError, LocalProtocolError
from ..io.kq1 import Kq1Client
from ..io.qdist import (
    READ_BYTES,
    QdistConnection,
    connect,
    connect_with_backoff,
    parse_hostport,
)
from ..protocol.qdist import QdistAlice, QdistBob, QdistEnd, QdistParams, StreamError
from ..protocol.qdist.wire import WireReader
from .frames import FramePlan, channel_patterns, drawn_probabilities
from .instruments import StreamerFrames, TaggerSource, link_instrument, open_link_instrument
from .keys_out import KeyOutbox, session_name
from .recording import Recorder
from .runtime import AliceModule, AuditLog, BobModule
from .session_state import StateFile, state_path
from .sim import BenchFrames

__all__ = ["LinkEnd", "QdistListener", "build_ends", "claim_secrets", "open_ends", "random_source",
           "run_ends"]

log = logging.getLogger(__name__)

# Seconds a stopping module waits for the key manager to acknowledge its last keys (a key
# manager restart takes a few seconds; one that is not running never answers).
DRAIN_S = 10.0
# Tagger reads on the simulated bench: 1 ms of slots at 1 GHz (as the quTAG mock reads).
SIM_READ_SLOTS = 1 << 20
# The passive receiver's channels when the configuration gives no channel_map.
DEFAULT_CHANNEL_MAP = {1: "X0", 2: "X1", 3: "Z0", 4: "Z1"}
# New connections to the transmitter's Qdist port that may wait to deliver their first
# authentic frame: the partner reconnects one connection at a time, so two leave room for one
# stale attempt; every connection beyond is closed at once (a stranger cannot pile up sockets,
# nor the 64 MiB a frame may buffer).
MAX_CANDIDATES = 2
# Seconds such a connection has to deliver its first authentic frame: the receiver announces a
# block as soon as one closes, well within this; one that stays silent longer (a receiver
# stopped over Kq-2) is closed and reconnects with back-off.
AUTH_WAIT_S = 30.0


@dataclass
class LinkEnd:
    """One configured end of a link, ready to run."""

    config: NodeConfig
    link: LinkConfig
    module: AliceModule | BobModule
    outbox: KeyOutbox
    client: Kq1Client | None
    recorder: Recorder | None = None
    instrument: StreamerFrames | TaggerSource | None = None
    random: RandomSource | None = None

    def close_instruments(self) -> None:
        """Closes the link's instrument and random source (each even if the other fails)."""
        try:
            if self.instrument is not None:
                self.instrument.close()
        finally:
            if self.random is not None:
                self.random.close()

    def report(self) -> dict[str, Any]:
        """The Kq-2 status report: what ``qkdnode module`` shows (numbers and words only)."""
        summary = self.module.status.summary(time.monotonic())
        out: dict[str, Any] = {"node": self.config.node.name, "link": self.link.name,
                               "running": self.module.running.is_set(),
                               "block_in_flight": not self.module.idle,
                               "keys_waiting": self.outbox.pending,
                               "qdist_connections": self.module.connections}
        for name, value in summary.items():
            # A status value is a finite number, text, a boolean or null (Kq-2's rule).
            if isinstance(value, np.integer):
                value = int(value)
            elif isinstance(value, float | np.floating):
                value = float(value) if math.isfinite(value) else None
            out[name] = value
        return out


def _error(config: NodeConfig, key: str, reason: str) -> ConfigError:
    return ConfigError(None, key, None, f"node {config.node.name!r}: {reason}")


def claim_secrets(ends: list[LinkEnd]) -> list[Path]:
    """Claims each end's pre-shared Qdist secret for its role, or resumes the role's saved
    session, once per process start; from then on the end saves its session state.

    The Qdist session starts from the secret: its first authentication pads and the hash keys.
    A module process must never use a pad twice (the tags' one-time pads would repeat, and
    an earlier run's frames would be valid again), so ``qkdnode module``, ``run`` and ``demo``
    claim the secret before running, per role:

    * the role's session state ``<auth_secret_file>.<role>.state`` exists (a restarted
      module): the session resumes from it (:mod:`.session_state`): sending resumes after
      every pad the previous process may have used, and block numbers, so key IDs, go on;
    * no state, and no marker ``<auth_secret_file>.<role>.used``: a fresh secret; the marker
      is created exclusively (mode 0600, saying when, where and by which node and link);
    * no state but a marker: refused (the secret was used and its session state is lost:
      only a fresh secret at both ends can go on).

    Two ends of one link in one process share the secret and claim it once per role. An end
    with a Qdist end (a built :class:`LinkEnd`) then saves its state to the state file (first
    right away).

    Returns:
        The markers created (all removed again when one end is refused).

    Raises:
        ConfigError: a secret already used by that role whose state is missing, an unusable
            state file (named), or a marker or state that cannot be written, naming
            ``links[i].auth_secret_file``.
    """
    made: list[Path] = []
    claimed: set[Path] = set()
    try:
        for end in ends:
            i = end.config.links.index(end.link)
            key = f"links[{i}].auth_secret_file"
            secret = Path(str(end.link.auth_secret_file))
            marker = secret.with_name(f"{secret.name}.{end.link.role}.used")
            state = StateFile(state_path(secret, end.link.role), key)
            qdist = getattr(getattr(end, "module", None), "qdist", None)
            if marker in claimed:
                continue
            claimed.add(marker)
            _lock_session(end, key, secret)
            if state.exists():
                if getattr(end, "recorder", None) is not None:
                    # A replay starts both Qdist ends from the secret.
                    raise _error(end.config, key,
                                 f"the Qdist session resumes from {state.path}, and a "
                                 "recording must start its session from the pre-shared "
                                 "secret (its replay does): record with a fresh secret at "
                                 "both ends")
                if qdist is not None:
                    state.restore(qdist)
                    log.info("link %s: the Qdist session resumes from %s (blocks from %d)",
                             end.link.name, state.path, qdist.next_block)
            else:
                _mark(end, key, secret, marker)
                made.append(marker)
            if qdist is not None:
                try:
                    qdist.persist_to(state.save)
                except LocalProtocolError as exc:
                    raise _error(end.config, key, f"cannot save the Qdist session state "
                                                  f"{state.path}: {exc}") from None
    except BaseException:
        for marker in made:
            marker.unlink(missing_ok=True)
        raise
    return made


# The sessions this process holds: lock file -> its open descriptor (held, with an exclusive
# flock, until the process ends).
_SESSION_LOCKS: dict[Path, int] = {}


def _lock_session(end: LinkEnd, key: str, secret: Path) -> None:
    """Takes the exclusive lock ``<auth_secret_file>.<role>.lock`` for this process's life:
    two processes on one Qdist session (a second start of the same module, which would
    restore the same state) would send with the same authentication pads. A module started
    again in the same process (its tasks ended) takes it again.

    Raises:
        ConfigError: another process holds the session (its pid named).
    """
    path = secret.with_name(f"{secret.name}.{end.link.role}.lock").resolve()
    if path in _SESSION_LOCKS:
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError:
        return  # no file there at all: marking or saving the session fails next, naming it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 100).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise _error(end.config, key,
                     f"the Qdist session of {secret} ({end.link.role}) is in use by another "
                     f"process (pid {holder}, lock {path}): two processes on one session "
                     "would use the same authentication pads; stop the other one first") \
            from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    _SESSION_LOCKS[path] = fd


def _mark(end: LinkEnd, key: str, secret: Path, marker: Path) -> None:
    """Creates the marker of a fresh secret (refused if the secret was used)."""
    try:
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        try:
            before = marker.read_text()[:300]
        except OSError:
            before = "unreadable"
        state = state_path(secret, end.link.role)
        raise _error(end.config, key,
                     f"the pre-shared secret {secret} was already used by a "
                     f"{end.link.role} module ({marker}: {before.strip()}), and its session "
                     f"state {state} is missing, so the session cannot resume; its "
                     "authentication pads must never be used twice. Give both ends of the "
                     "link a fresh secret (delete the marker only if no module ever ran "
                     "with this one)") from None
    except OSError as exc:
        raise _error(end.config, key,
                     f"cannot mark the secret {secret} as used ({marker}): "
                     f"{exc.strerror}") from None
    with os.fdopen(fd, "w") as f:
        json.dump({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                   "host": socket.gethostname(), "pid": os.getpid(),
                   "node": end.config.node.name, "link": end.link.name,
                   "role": end.link.role}, f)


def _drawn(link: LinkConfig) -> tuple[tuple[float, float, float], float]:
    """The link's intensity and basis probabilities as Alice's choices are drawn (multiples of
    2^-16): both ends take these for the frame plan and the parameter estimation alike."""
    d = link.decoy
    return drawn_probabilities((d.p_mu1, d.p_mu2, 1.0 - d.p_mu1 - d.p_mu2), d.q_x)


def _params(link: LinkConfig) -> QdistParams:
    d, s = link.decoy, link.distillation
    p, _ = _drawn(link)
    return QdistParams((d.mu1, d.mu2, d.mu3), p, eps_cor=s.eps_cor,
                       eps_sec=s.eps_sec, kappa=s.kappa, qber_abort=s.qber_abort,
                       code_length=s.code_length, block_timeout_s=s.block_timeout_s,
                       start_quantile=s.start_quantile)


def _secret(config: NodeConfig, i: int, link: LinkConfig) -> bytes:
    if link.auth_secret_file is None:
        raise _error(config, f"links[{i}].auth_secret_file",
                     "the module needs the pre-shared Qdist secret (auth_secret_file)")
    try:
        return Path(link.auth_secret_file).read_bytes()
    except OSError as exc:
        raise _error(config, f"links[{i}].auth_secret_file",
                     f"cannot read {link.auth_secret_file}: {exc.strerror}") from None


def _channel_map(config: NodeConfig) -> dict[int, str]:
    for instrument in config.instruments_with_role("receiver"):
        raw = instrument.settings.get("channel_map")
        if raw:
            return {int(k): str(v) for k, v in raw.items()}
    return dict(DEFAULT_CHANNEL_MAP)


def code_coverage(link: LinkConfig) -> str | None:
    """Why the link's ``code_length`` does not cover every QBER a block may have (None: it
    does): a block whose QBER lies between the highest validated QBER of that length and
    ``qber_abort`` (at most the protocol's 11 %) is aborted ("no reconciliation code")."""
    n = link.distillation.code_length
    if n is None:
        return None  # the reconciler then tries the other lengths too
    ranges = [r for info in available_codes() if info.n == n
              if (r := validated_qber(info.name)) is not None]
    top = max((high for _, high in ranges), default=0.0)
    need = min(link.distillation.qber_abort, MAX_QBER_ABORT)
    if top >= need:
        return None
    return (f"code_length {n} has codes validated up to QBER {top:.4f} only, below qber_abort "
            f"{need:.4f}: blocks with a QBER in between are aborted (no reconciliation code); "
            "lower qber_abort or choose another code_length")


def _seed_for(rng_seed: int, role: str) -> int:
    """The seed of one end's source: Alice's is ``rng_seed`` itself (the same seed gives the
    same choices); Bob's is derived, so his squashing bits do not repeat Alice's bytes."""
    if role == "transmitter":
        return rng_seed
    return int.from_bytes(hashlib.sha256(f"qkdnode bob/{rng_seed}".encode()).digest()[:8]) >> 1


def random_source(config: NodeConfig, i: int, link: LinkConfig, on_bench: bool,
                  rng_seed: int | None = None) -> RandomSource:
    """The random source of a link end: the ``random_source`` instrument the link names, the
    operating system's CSPRNG if it names none, or (``rng_seed``: tests and benchmarks) a
    seeded source.

    Args:
        on_bench: the link end runs on the simulated bench (its frames or tags are simulated).

    Raises:
        ConfigError: several random sources named, one that cannot be opened, or a seeded
            source (or ``rng_seed``) for a link end that is not on the simulated bench: a
            seeded source's output is predictable, so it refuses to make keys elsewhere.
    """
    key = f"links[{i}].instruments"
    by_name = {inst.name: inst for inst in config.instruments}
    named = [by_name[n] for n in link.instruments
             if n in by_name and by_name[n].role == "random_source"]
    if rng_seed is not None:
        if not on_bench:
            raise _error(config, key, "a seeded random source (rng_seed) is for the simulated "
                                      f"bench only; link {link.name!r} is not on it")
        if named:
            raise _error(config, key, f"rng_seed is given but link {link.name!r} names the "
                                      f"random source {named[0].name!r}: use one")
        return SeededRandomSource(f"sim://{config.bench.name}/{link.name}-rng",
                                  _seed_for(rng_seed, link.role))
    if len(named) > 1:
        raise _error(config, key, f"names {len(named)} random sources "
                                  f"({', '.join(n.name for n in named)}); a link uses one")
    if not named:
        return OsRandomSource()
    inst = named[0]
    try:
        source: RandomSource = open_instrument(inst.name, inst.role, inst.driver,
                                               inst.resource or "", inst.timeout_s,
                                               dict(inst.settings))
    except (ValueError, OSError) as exc:
        raise _error(config, key, f"cannot open random source {inst.name!r}: {exc}") from None
    if isinstance(source, SeededRandomSource) and not on_bench:
        source.close()
        raise _error(config, key, f"random source {inst.name!r} ({inst.driver}) is seeded, so "
                                  "predictable: it is for the simulated bench only, and link "
                                  f"{link.name!r} is not on it; use os.csprng or a QRNG")
    return source


def _on_bench(config: NodeConfig, i: int, link: LinkConfig) -> bool:
    """Whether the link end's frame streamer or time tagger is the simulated bench's."""
    return (link_instrument(config, i, link).resource or "").startswith("sim://")


def _sim_bench(config: NodeConfig, i: int, link: LinkConfig) -> Bench:
    """The in-process bench of a link run on BenchFrames (``frames_of``: tests only)."""
    if link.instruments or config.bench.service is not None:
        raise _error(config, f"links[{i}].instruments",
                     "frames_of runs both ends on the simulated bench in this process; this "
                     "link names instruments or a bench service: run it through them")
    bench = get_bench(config.bench.name)
    if not isinstance(bench, Bench):
        raise _error(config, "bench", f"bench {config.bench.name!r} is not in this process")
    return bench


def _recorders(configs: list[tuple[Path, NodeConfig]], links: set[str] | None,
               record: Path) -> dict[str, Recorder]:
    roles: dict[str, set[str]] = {}
    for _, config in configs:
        for link in config.links:
            if links is None or link.name in links:
                roles.setdefault(link.name, set()).add(link.role)
    if len(roles) != 1:
        raise ConfigError(None, "--record", None,
                          f"a recording holds one link; {len(roles)} are selected "
                          f"({sorted(roles)}): choose one with --link")
    name, found = next(iter(roles.items()))
    if found != {"transmitter", "receiver"}:
        raise ConfigError(None, "--record", None,
                          f"recording link {name!r} needs both its ends in this run (give both "
                          "nodes' configuration files)")
    return {name: Recorder(record)}


def build_ends(configs: list[tuple[Path, NodeConfig]], links: set[str] | None,
               frames_of: Callable[[Bench, LinkConfig], BenchFrames] | None = None,
               rng_seed: int | None = None, record: Path | None = None, *,
               claim: bool = False) -> list[LinkEnd]:
    """The link ends of the configurations (only the links named in ``links`` if given), with
    their instruments open (:func:`run_ends` closes them). It blocks while the instruments
    open (up to their timeouts): inside a running event loop, use :func:`open_ends`.

    Args:
        frames_of: tests and benchmarks only: both ends on BenchFrames (module docstring).
        record: record the run into this directory (:mod:`.recording`; one link, both ends).
        claim: claim the ends' secrets or resume their saved Qdist sessions, and save the
            sessions from then on (:func:`claim_secrets`; what a process that runs the
            modules does), once everything else opened.

    Raises:
        ConfigError: a link the module cannot run (no instrument for its role, one that
            cannot be opened), no secret, an audit log that cannot be opened.
        OSError: the recording directory cannot be written.
        On any error, whatever was opened (instruments, random sources, audit logs, the
        recording's files) is closed again.
    """
    ends: list[LinkEnd] = []
    recorders: dict[str, Recorder] = {}
    try:
        if record is not None:
            recorders = _recorders(configs, links, record)
        for path, config in configs:
            for i, link in enumerate(config.links):
                if links is None or link.name in links:
                    ends.append(_build_end(path, config, i, link, frames_of, rng_seed,
                                           recorders.get(link.name)))
        if claim:
            claim_secrets(ends)
    except BaseException:
        for end in ends:
            _close_built(end)
        for recorder in recorders.values():
            recorder.close()
        raise
    return ends


async def open_ends(configs: list[tuple[Path, NodeConfig]], links: set[str] | None,
                    rng_seed: int | None = None, record: Path | None = None, *,
                    claim: bool = False) -> list[LinkEnd]:
    """:func:`build_ends` in a worker thread, so that the event loop (the key managers', a
    running demo's) goes on while the instruments open (a bench service or an instrument that
    does not answer takes up to its timeout). If the caller is cancelled meanwhile, the ends
    are closed once the thread has built them."""
    work = asyncio.ensure_future(asyncio.to_thread(build_ends, configs, links, None, rng_seed,
                                                   record, claim=claim))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        work.add_done_callback(_close_abandoned)
        raise


def _close_abandoned(work: asyncio.Future[list[LinkEnd]]) -> None:
    """Closes the ends built for a caller that was cancelled meanwhile."""
    if work.cancelled() or work.exception() is not None:
        return  # build_ends closed what it had opened
    for end in work.result():
        try:
            _close_built(end)
        except Exception as exc:  # the others still close
            log.warning("link %s: closing its instrument failed: %s", end.link.name, exc)


def _close_built(end: LinkEnd) -> None:
    """Closes what :func:`_build_end` opened for ``end`` (a run that never started)."""
    try:
        end.close_instruments()
    finally:
        if end.module.audit is not None:
            end.module.audit.close()


def _build_end(path: Path, config: NodeConfig, i: int, link: LinkConfig,
               frames_of: Callable[[Bench, LinkConfig], BenchFrames] | None,
               rng_seed: int | None, rec: Recorder | None) -> LinkEnd:
    """One link end (its instrument, random source and audit log open)."""
    if (gap := code_coverage(link)) is not None:
        log.warning("%s: links[%d] (%s): %s", path, i, link.name, gap)
    frames: Any
    d = link.decoy
    try:
        p, q_x = _drawn(link)
        plan = FramePlan(link.name, link.block_slots, link.timing_slots,
                         (d.mu1, d.mu2, d.mu3), p, q_x=q_x)
    except ValueError as exc:  # before anything is opened
        raise _error(config, f"links[{i}]", str(exc)) from None
    secret = _secret(config, i, link)  # before anything is opened
    params = _params(link)
    if frames_of is not None:
        on_bench = True
        frames = frames_of(_sim_bench(config, i, link), link)
    else:
        on_bench = _on_bench(config, i, link)
    # Before the link's instrument: a refused source leaves nothing open.
    randomness = random_source(config, i, link, on_bench, rng_seed)
    # Everything opened from here on is closed again if a later step fails.
    opened: list[Callable[[], None]] = [randomness.close]
    try:
        instrument: StreamerFrames | TaggerSource | None = None
        if frames_of is None:
            frames = instrument = open_link_instrument(config, i, link)
            opened.append(instrument.close)
        role = "alice" if link.role == "transmitter" else "bob"
        audit_path = link.audit_log or path.parent / f"audit-{link.name}.jsonl"
        try:
            audit = AuditLog(audit_path) if rec is None else rec.audit(role, audit_path)
        except OSError as exc:
            raise _error(config, f"links[{i}].audit_log",
                         f"cannot open the audit log {audit_path}: {exc.strerror}") from None
        opened.append(audit.close)
        client = Kq1Client(config.key_manager.kq1_socket,
                           f"{config.node.name}/{link.name}", link.name, link.peer)
        outbox = KeyOutbox(client, link.name, session=session_name(secret))
        try:
            module = _module(config, i, link, plan, params, secret, frames, outbox, audit,
                             randomness, rec)
        except ValueError as exc:
            raise _error(config, f"links[{i}]", str(exc)) from None
        if rec is not None:
            _describe(rec, config, link, plan, params, role)
    except BaseException:
        for close in reversed(opened):
            try:
                close()
            except Exception as exc:  # the others still close; the first error is raised
                log.warning("link %s: closing after a failed start: %s", link.name, exc)
        raise
    end = LinkEnd(config, link, module, outbox, client, rec, instrument, randomness)
    client.on_control = module.control
    client.status = end.report
    return end


def _module(config: NodeConfig, i: int, link: LinkConfig, plan: FramePlan,
            params: QdistParams, secret: bytes, frames: Any, outbox: KeyOutbox,
            audit: AuditLog, randomness: RandomSource, rec: Recorder | None
            ) -> AliceModule | BobModule:
    """The module of a link end. A recorded run draws as an unrecorded one does (Alice's
    public seeds from the OS CSPRNG, Bob's squashing bits from the link's random source) and
    keeps what it drew, so that its replay gives the same values back."""
    if link.role == "transmitter":
        if link.qdist_listen is None:
            raise _error(config, f"links[{i}].qdist_listen", "a transmitter needs qdist_listen")
        if rec is None:
            return AliceModule(plan, QdistAlice(params, secret), frames, outbox, audit,
                               randomness)
        return AliceModule(plan, QdistAlice(params, secret, random_bytes=rec.public_random()),
                           rec.frames(frames), outbox, audit, randomness)
    if link.qdist_connect is None:
        raise _error(config, f"links[{i}].qdist_connect", "a receiver needs qdist_connect")
    tracker = SlotTracker(period_ps=1e12 / link.pulse_rate_hz, pattern=plan.pattern(),
                          delay_ps=link.slot_delay_ps,
                          detector_channels=tuple(_channel_map(config)))
    return BobModule(plan, QdistBob(params, secret),
                     frames if rec is None else rec.source(frames), tracker,
                     channel_patterns(_channel_map(config)), outbox, audit,
                     randomness if rec is None else rec.squash(randomness),
                     lock_timeout_s=link.lock_timeout_s or None)


def _describe(rec: Recorder, config: NodeConfig, link: LinkConfig, plan: FramePlan,
              params: QdistParams, role: str) -> None:
    """Adds a link end's settings to the recording's manifest."""
    described = rec.manifest
    rec.describe(
        link=link.name,
        plan={"block_slots": plan.block_slots, "timing_slots": plan.timing_slots,
              "mu": plan.mu, "p": plan.p, "q_x": plan.q_x},
        qdist=asdict(params),
        secret_files={**described.get("secret_files", {}),
                      role: str(Path(str(link.auth_secret_file)).resolve())},
        nodes={**described.get("nodes", {}), role: config.node.name})
    if role == "bob":
        rec.describe(tracker={"period_ps": 1e12 / link.pulse_rate_hz,
                              "delay_ps": link.slot_delay_ps,
                              "detector_channels": list(_channel_map(config))},
                     channel_map={str(k): v for k, v in _channel_map(config).items()})


class QdistListener:
    """The transmitter's Qdist port.

    A new connection is taken (:attr:`accepted`; it replaces the live one, :attr:`current`, if
    any) only once it has delivered an authentic frame that this end has not received yet,
    checked without spending a pad
    (:meth:`~qkdnode.node.protocol.qdist.QdistEnd.authentic_new`): the receiver, which
    speaks first (it announces its blocks), connected or reconnected. So a stranger who reaches
    the port can neither cut the live link (aborting the block in flight, whose pads are spent)
    nor feed forged frames to the end (each would spend a pad). At most ``max_candidates`` wait
    to authenticate; others are closed at once. Refusals are logged with the peer's address.

    Args:
        link: the link's name (for the log).
        qdist: the transmitter's Qdist end (the one the connections serve).
        auth_wait_s: how long a new connection has to deliver its first authentic frame.
        max_candidates: new connections that may wait to do so.
    """

    def __init__(self, link: str, qdist: QdistEnd, auth_wait_s: float = AUTH_WAIT_S,
                 max_candidates: int = MAX_CANDIDATES) -> None:
        self.link = link
        self.qdist = qdist
        self.auth_wait_s = auth_wait_s
        self.max_candidates = max_candidates
        self.current: QdistConnection | None = None
        # (reader, writer, bytes already read): the next connection to run.
        self.accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]] \
            = asyncio.Queue(1)
        self.candidates = 0
        self.refused = 0

    async def on_client(self, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
        """The server's callback for a new connection."""
        peer = writer.get_extra_info("peername")
        if self.candidates >= self.max_candidates:
            await self._refuse(writer, peer, f"{self.max_candidates} connections already wait "
                                             "to authenticate")
            return
        self.candidates += 1
        try:
            async with asyncio.timeout(self.auth_wait_s):
                first = await self._first_frame(reader)
        except asyncio.CancelledError:  # the server is closing
            writer.close()
            raise
        except TimeoutError:
            first, why = None, f"no authentic frame within {self.auth_wait_s:g} s"
        except OSError as exc:
            first, why = None, f"connection failed ({type(exc).__name__})"
        else:
            why = "its first frame is not authentic (or a replay), or it closed"
        finally:
            self.candidates -= 1
        if first is None:
            await self._refuse(writer, peer, why)
            return
        log.info("link %s: Qdist connection from %s authenticated", self.link, peer)
        if self.current is not None:
            log.info("link %s: it replaces the current connection", self.link)
            await self.current.close()
        self.close_waiting()
        self.accepted.put_nowait((reader, writer, first))

    async def _first_frame(self, reader: asyncio.StreamReader) -> bytes | None:
        """The bytes read up to and including an authentic first frame (None: foreign, not
        authentic or a replay, or the connection closed first)."""
        data = bytearray()
        wire = WireReader()
        while chunk := await reader.read(READ_BYTES):
            data += chunk
            wire.feed(chunk)
            try:
                raw = wire.next_frame()
            except StreamError:
                return None
            if raw is None:
                continue
            # Under the live connection's lock: its end may be decoding in a worker thread.
            current = self.current
            if current is not None:
                ok = await current.call(self.qdist.authentic_new, raw)
            else:
                ok = self.qdist.authentic_new(raw)
            return bytes(data) if ok else None
        return None

    async def _refuse(self, writer: asyncio.StreamWriter, peer: Any, why: str) -> None:
        self.refused += 1
        log.warning("link %s: Qdist connection from %s refused: %s", self.link, peer, why)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    def close_waiting(self) -> None:
        """Closes the connection waiting in :attr:`accepted`, if any."""
        while not self.accepted.empty():
            _, writer, _ = self.accepted.get_nowait()
            writer.close()


def _tapped(end: LinkEnd, role: str) -> Any:
    qdist = end.module.qdist
    return qdist if end.recorder is None else end.recorder.end(qdist, role)


async def _run_end(end: LinkEnd, blocks: int | None, drain_s: float,
                   peer_done: asyncio.Event | None = None) -> None:
    """Runs one end until ``blocks`` blocks ended, reconnecting after a dropped Qdist
    connection: the transmitter keeps listening (:class:`QdistListener`), the
    receiver reconnects with back-off; the block in flight is aborted (reason in the audit).
    ``peer_done`` is set when the other end of the link in this process has ended: a lost
    connection then ends this end too (it may count a block less: one whose announcement the
    cut lost)."""
    link = end.link
    module = end.module
    server: asyncio.AbstractServer | None = None
    listener: QdistListener | None = None
    if isinstance(module, AliceModule):
        assert link.qdist_listen is not None
        host, port = parse_hostport(link.qdist_listen)
        listener = QdistListener(link.name, module.qdist)
        # The frames play before the receiver's first frame can come (it announces blocks it
        # detected): a connection is taken only after that frame.
        module.start()
        server = await asyncio.start_server(listener.on_client, host, port)
    role = "alice" if isinstance(module, AliceModule) else "bob"
    try:
        while True:
            if listener is not None:
                waiting: Any = listener.accepted.get()
            else:
                assert link.qdist_connect is not None
                waiting = connect(link.qdist_connect) if module.connections == 0 else \
                    connect_with_backoff(link.qdist_connect)
            if peer_done is None:
                got = await waiting
            else:
                got = await _first(waiting, peer_done.wait())
                if got is None:
                    log.info("link %s: the other end has ended; not reconnecting", link.name)
                    break
            reader, writer, first = got if len(got) == 3 else (*got, b"")
            conn = QdistConnection(_tapped(end, role), reader, writer, initial=first)
            if listener is not None:
                listener.current = conn
            try:
                await module.run_connection(conn, blocks)
                break
            except ConnectionError as exc:
                log.warning("link %s: Qdist connection lost (%s); reconnecting", link.name,
                            exc)
                await module.connection_lost(conn, str(exc) or type(exc).__name__)
            finally:
                if listener is not None:
                    listener.current = None
                await conn.close()
        try:
            async with asyncio.timeout(drain_s):
                await end.outbox.drain()
        except TimeoutError:
            log.warning("link %s: the key manager did not acknowledge %d QKD-keys within %g s; "
                        "they are dropped at exit", link.name, end.outbox.pending, drain_s)
    finally:
        await module.shutdown()
        if server is not None:
            server.close()
        if listener is not None:
            listener.close_waiting()
        if module.audit is not None:
            module.audit.close()


async def run_ends(ends: list[LinkEnd], blocks: int | None,
                   show: Callable[[list[LinkEnd]], None], interval_s: float,
                   drain_s: float = DRAIN_S) -> None:
    """Runs every end (each until ``blocks`` blocks ended, reconnecting its Qdist connection
    when it drops, then waits up to ``drain_s`` for the key manager to acknowledge its keys),
    calling ``show`` every ``interval_s`` seconds and at the end. Each end's Kq-1 client stays
    connected to its key manager (reconnecting), which reaches the module over Kq-2."""
    background = []
    for end in ends:
        if end.client is not None:
            background.append(asyncio.create_task(end.client.keep_connected()))
        background.append(asyncio.create_task(end.outbox.run()))

    async def ticker() -> None:
        while True:
            await asyncio.sleep(interval_s)
            show(ends)

    background.append(asyncio.create_task(ticker()))
    try:
        done = {end.link.name: asyncio.Event() for end in ends}

        async def run_end(end: LinkEnd) -> None:
            others = [e for e in ends if e.link.name == end.link.name and e is not end]
            try:
                await _run_end(end, blocks, drain_s, done[end.link.name] if others else None)
            finally:
                done[end.link.name].set()

        await asyncio.gather(*(run_end(end) for end in ends))
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        for end in ends:
            if end.client is not None:
                with contextlib.suppress(Exception):
                    await end.client.close()
            if end.recorder is not None:
                end.recorder.close()
            if end.instrument is not None or end.random is not None:
                try:
                    await asyncio.to_thread(end.close_instruments)
                except Exception as exc:  # the others still close
                    log.warning("link %s: closing its instrument failed: %s", end.link.name,
                                exc)
        show(ends)


async def _first(awaitable: Any, stop: Any) -> Any:
    """``awaitable``'s result, or None if ``stop`` finishes first (``awaitable`` cancelled)."""
    task = asyncio.ensure_future(awaitable)
    stopper = asyncio.ensure_future(stop)
    try:
        await asyncio.wait([task, stopper], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if not task.done():
            task.cancel()
    if task.done() and not task.cancelled():
        return task.result()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None


def status_lines(ends: list[LinkEnd], now: float | None = None) -> list[str]:
    """One status line per end, for people."""
    now = time.monotonic() if now is None else now
    out = []
    for end in ends:
        s = end.module.status.summary(now)
        qber = "-" if s["qber"] is None else f"{100 * s['qber']:.2f} %"
        out.append(f"{end.config.node.name}/{end.link.name} {s['role']}: sync {s['sync']}, "
                   f"sifted {s['sifted_rate_bps']:.0f} bit/s, QBER {qber}, secret "
                   f"{s['secret_key_rate_bps']:.0f} bit/s, blocks {s['blocks_completed']} ok / "
                   f"{s['blocks_aborted']} aborted, keys at KM waiting {end.outbox.pending}"
                   + (f", Qdist reconnects {end.module.connections - 1}"
                      if end.module.connections > 1 else "")
                   + ("" if end.module.running.is_set() else ", STOPPED (Kq-2)"))
    return out
