"""The simulated bench behind the C mock libraries (``bindings/mocks``).

A C mock has the vendor's ABI, so the bindings and drivers load and drive it exactly as they
would the vendor's library. What the vendor API returns comes from the bench: the mock calls
back into Python once per read call while a measurement runs (``qkdmock_set_pull``), and the
callback runs the bench for :data:`DEFAULT_SLICE_PS` of bench time and pushes the tags its
tagger delivered, with the count it dropped (``qkdmock_push_tags``). So the events a driver reads
are the bench's events: same seed, same frame, same reads -> same tags as calling
:meth:`SimulatedLink.run` with ``duration_ps=slice_ps`` directly (floored to the device's
resolution).

A tagger attached to a named bench counts from its own origin, like a real one (which counts
from its power-on or its start): its tags are the bench's times plus :attr:`MockLibrary.origin_ps`,
a few seconds drawn anew at every attach (every opening of the instrument), so two openings
never share a time axis and the transmitter's slot 0 is known only through the frame
streamer's marker tag. A stand-alone link (no bench) keeps the link's own times.

This module declares the mock-only entry points for itself (:data:`CDEF`); the bindings know
nothing of them. :class:`MockLibrary` wraps them; :func:`attach_bench` is what a driver's
``build`` uses for a ``sim://BENCH/INSTRUMENT`` resource.
"""

from __future__ import annotations

import atexit
import itertools
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, cast

import numpy as np
from cffi import FFI
from numpy.typing import NDArray

from .link import SimulatedLink, TagBatch
from .params import BenchParams

__all__ = [
    "CDEF",
    "DEFAULT_FRAME_SLOTS",
    "DEFAULT_SLICE_PS",
    "MockLibrary",
    "TagSource",
    "attach_bench",
    "bench_source",
]

# Bench time simulated per read call of the vendor API: 1 ms, about what a polling reader
# collects between two calls, and ~10^3..10^5 tags at the default link's rates.
DEFAULT_SLICE_PS = 10**9
# A named bench's tagger starts counting this long before the bench's slot 0 (uniformly
# drawn): two programs on two PCs start seconds apart. A multiple of ORIGIN_STEP_PS so that
# any device resolution up to 1 us keeps tags on its bins.
ORIGIN_RANGE_S = (1.0, 10.0)
ORIGIN_STEP_PS = 10**6
# Length of the frame a stand-alone bench plays when no transmitter has loaded one.
DEFAULT_FRAME_SLOTS = 4096
# Intensity classes of that frame (signal, decoy, vacuum-like), a typical decoy-state mix.
DEFAULT_FRAME_INTENSITY_P = (0.7, 0.2, 0.1)

CDEF = """
typedef int (*qkdmock_pull_fn)(void *ctx);
void qkdmock_set_pull(qkdmock_pull_fn fn, void *ctx);
int64_t qkdmock_push_tags(const int64_t *t_ps, const int32_t *ch, int64_t n, int64_t lost);
int64_t qkdmock_lost_events(void);
int qkdmock_set_fifo_capacity(int64_t events);
int qkdmock_set_resolution_ps(int64_t ps);
void qkdmock_reset(void);
const char *qkdmock_library(void);
int qkdmock_set_record_version(int version);
"""

ffi = FFI()
ffi.cdef(CDEF)

# The callback each mock (by path) holds now. A mock is process-wide state, so its callback
# must outlive any one MockLibrary object: freed while the C side still held it, the next
# vendor read call would jump into freed memory.
_INSTALLED: dict[str, Any] = {}

_PUSH_ERRORS = {
    -2: "a tag's channel is outside 0..64 (the bench's tagger channels must fit the device)",
    -3: "a tag's time is negative (T2 records cannot carry it: check the bench clock offset)",
    -4: "the mock could not allocate memory",
    -5: "bad arguments",
}


class TagSource(Protocol):
    """What feeds a mock: a :class:`SimulatedLink` or a named bench."""

    def run(self, n_slots: int | None = None, *, duration_ps: int | None = None) -> TagBatch:
        """The next tags."""
        ...


class MockLibrary:
    """The mock-only entry points of one loaded C mock library.

    Args:
        path: the built mock (see :func:`qkdnode.bindings.mock_library_path`).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._lib: Any = ffi.dlopen(self.path)
        self.library = ffi.string(self._lib.qkdmock_library()).decode("ascii")
        self._callback: Any = None
        self._source: TagSource | None = None
        self._slice_ps = DEFAULT_SLICE_PS
        self.origin_ps = 0
        self.last_error: BaseException | None = None

    def reset(self) -> None:
        """Power-on state: settings, buffer and counters cleared, the bench detached."""
        self._lib.qkdmock_reset()
        _INSTALLED.pop(self.path, None)
        self._callback = None
        self._source = None

    def push(self, timestamps_ps: NDArray[np.int64], channels: NDArray[Any], lost: int = 0
             ) -> int:
        """Pushes tags (bench clock, ps) into the device; returns how many its inputs took.

        Raises:
            ValueError: the mock refused them (naming why).
        """
        t = np.ascontiguousarray(timestamps_ps, dtype=np.int64)
        c = np.ascontiguousarray(channels, dtype=np.int32)
        if t.shape != c.shape or t.ndim != 1:
            raise ValueError("timestamps and channels must be 1-D arrays of one length")
        rc = int(self._lib.qkdmock_push_tags(ffi.from_buffer("int64_t[]", t),
                                             ffi.from_buffer("int32_t[]", c), t.shape[0],
                                             int(lost)))
        if rc < 0:
            raise ValueError(f"the {self.library} mock refused the tags: "
                             f"{_PUSH_ERRORS.get(rc, f'code {rc}')}")
        return rc

    def lost_events(self) -> int:
        """Events lost so far: full buffer, plus those the bench's tagger dropped."""
        return int(self._lib.qkdmock_lost_events())

    def set_fifo_capacity(self, events: int) -> None:
        """The device buffer's size in events (the quTAG's is set through its own API)."""
        if self._lib.qkdmock_set_fifo_capacity(int(events)) != 0:
            raise ValueError(f"bad FIFO capacity {events!r} (need >= 1)")

    def set_resolution_ps(self, ps: int) -> None:
        """The device's time unit, ps."""
        if self._lib.qkdmock_set_resolution_ps(int(ps)) != 0:
            raise ValueError(f"bad resolution {ps!r} ps (need >= 1)")

    def set_record_version(self, version: int) -> None:
        """HydraHarp mock only: 1 makes it an HHLib 1.x writing v1 T2 records, 2 (default) v2."""
        if self.library != "hhlib":
            raise ValueError(f"the {self.library} mock has no record version setting")
        if self._lib.qkdmock_set_record_version(int(version)) != 0:
            raise ValueError(f"record version must be 1 or 2, got {version!r}")

    def attach(self, source: TagSource, slice_ps: int = DEFAULT_SLICE_PS,
               origin_ps: int = 0) -> None:
        """Feeds the device from ``source``: ``slice_ps`` of bench time per vendor read call,
        the device's clock ``origin_ps`` ahead of the bench's."""
        if isinstance(slice_ps, bool) or not isinstance(slice_ps, int) or slice_ps <= 0:
            raise ValueError(f"slice_ps must be a positive integer, got {slice_ps!r}")
        if isinstance(origin_ps, bool) or not isinstance(origin_ps, int) or origin_ps < 0:
            raise ValueError(f"origin_ps must be a non-negative integer, got {origin_ps!r}")
        self.origin_ps = origin_ps
        self._source = source
        self._slice_ps = slice_ps
        self._callback = ffi.callback("qkdmock_pull_fn", self._pull, error=-1,
                                      onerror=self._on_error)
        self._lib.qkdmock_set_pull(self._callback, ffi.NULL)
        _INSTALLED[self.path] = self._callback

    def detach(self) -> None:
        """Stops feeding the device (it then records nothing new)."""
        self._lib.qkdmock_set_pull(ffi.NULL, ffi.NULL)
        _INSTALLED.pop(self.path, None)
        self._callback = None
        self._source = None

    def _pull(self, ctx: Any) -> int:
        del ctx
        source = self._source
        if source is None or not (getattr(source, "frame_loaded", True)
                                  or getattr(source, "streaming", False)):
            return 0  # no transmitter playing: nothing to simulate yet (a streamed bench
            # waits for its frames itself)
        batch = source.run(duration_ps=self._slice_ps)
        times = batch.timestamps_ps + np.int64(self.origin_ps) if self.origin_ps else \
            batch.timestamps_ps
        self.push(times, batch.channels, batch.lost_events)
        return 0

    def _on_error(self, exc_type: type[BaseException], exc: BaseException,
                  tb: TracebackType | None) -> None:
        # The vendor call then fails with a transfer error; the cause is kept for diagnosis.
        del exc_type, tb
        self.last_error = exc

    def __repr__(self) -> str:
        return f"MockLibrary({self.path!r}, library={self.library!r})"


def _default_link(seed: int) -> SimulatedLink:
    link_seed, frame_seed = np.random.SeedSequence(seed).spawn(2)
    link = SimulatedLink(BenchParams(), link_seed)
    rng = np.random.default_rng(frame_seed)
    n = DEFAULT_FRAME_SLOTS
    link.load_frame(rng.integers(0, 2, n, dtype=np.uint8), rng.integers(0, 2, n, dtype=np.uint8),
                    rng.choice(3, n, p=DEFAULT_FRAME_INTENSITY_P).astype(np.uint8))
    return link


def bench_source(bench: str, seed: int) -> TagSource:
    """The named bench if one is registered (:mod:`.bench`: in this process, or a client of a
    bench service), else a stand-alone link.

    The stand-alone link has the default :class:`BenchParams`, ``seed``, and a seeded random
    frame of :data:`DEFAULT_FRAME_SLOTS` slots (no transmitter drives it).
    """
    try:
        from .bench import get_bench
    except ImportError:
        return _default_link(seed)
    try:
        handle = get_bench(bench)
    except ValueError:
        return _default_link(seed)
    if not callable(getattr(handle, "run", None)):
        raise ValueError(f"simulated bench {bench!r} ({type(handle).__name__}) has no tag "
                         "stream (run) for a time tagger's C mock")
    return cast(TagSource, handle)


_COPIES: list[Path] = []
# Attaches so far in this process: each draws its own origin.
_ATTACHES = itertools.count()


def _remove_copies() -> None:
    for directory in _COPIES:
        shutil.rmtree(directory, ignore_errors=True)


def _private_copy(path: Path) -> Path:
    """A copy of the mock at ``path`` in a temporary directory removed at exit (dlopen of
    another file loads another instance: separate buffers, settings and callback)."""
    directory = Path(tempfile.mkdtemp(prefix="qkdnode-mock-"))
    if not _COPIES:
        atexit.register(_remove_copies)
    _COPIES.append(directory)
    copy = directory / path.name
    shutil.copyfile(path, copy)
    return copy


def attach_bench(library: str, bench: str, seed: int, slice_ps: int = DEFAULT_SLICE_PS
                 ) -> tuple[Path, MockLibrary]:
    """Resets the C mock of ``library`` and attaches bench ``bench`` to it.

    Returns:
        The mock's path (for the binding to open) and its :class:`MockLibrary` (the driver
        keeps it: it holds the callback the mock calls).

    Raises:
        FileNotFoundError: the mock is not built.
    """
    from qkdnode.bindings import mock_library_path

    path = mock_library_path(library)
    if str(path) in _INSTALLED:
        # A mock is process-wide state and this one feeds another instrument already (two
        # links' taggers in one process): a private copy of the library has its own state.
        path = _private_copy(path)
    mock = MockLibrary(path)
    mock.reset()
    source = bench_source(bench, seed)
    origin = 0
    if not isinstance(source, SimulatedLink):
        rng = np.random.default_rng([seed, next(_ATTACHES)])
        origin = int(rng.uniform(*ORIGIN_RANGE_S) * 1e12) // ORIGIN_STEP_PS * ORIGIN_STEP_PS
    mock.attach(source, slice_ps, origin)
    return path, mock
