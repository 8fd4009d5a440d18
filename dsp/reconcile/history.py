"""What blind reconciliation learns about a link's codes, carried from block to block.

Each verified frame tells where its code decoded: its decoding threshold lies between the bits
disclosed before its last blind step and those at its success; the middle of that step, per
payload bit, in units of h(the frame's own error rate), is its success value. It depends on the
code and the decoder far more than on the link. A
:class:`ReconcileHistory` keeps the last ``window`` of these per code, and the error rates of the
frames, so that the first frames of the next block start their first syndrome near the
thresholds (:meth:`ReconcileHistory.start_efficiency`) instead of stepping up, one decoding round
per blind step, from ``START_EFFICIENCY``.

One rule for every caller: :func:`~.local.reconcile_local` (and so
:func:`qkdnode.dsp.distill.distill_local`) and the module's Qdist Alice plan their frames with
:meth:`ReconcileHistory.start_efficiency` and feed it with :meth:`ReconcileHistory.record`.

The history holds no key material: decoding verdicts, disclosure counts and Bob's error counts
depend on the channel only (they are public in the reconciliation dialogue). It serialises to a
plain dict of numbers (:meth:`ReconcileHistory.to_dict`), e.g. to keep it across restarts.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ..estimation import binary_entropy
from ..ldpc.codes import LdpcCode
from .plan import (
    MIN_FULL_EFFICIENCY,
    MIN_PLANNING_QBER,
    START_EFFICIENCY,
    full_efficiency,
    plan_frame,
)

__all__ = [
    "START_BELOW_FULL",
    "START_MARGIN",
    "START_PRIOR_SPREAD",
    "START_QUANTILE",
    "START_WINDOW",
    "ReconcileHistory",
]

# Adaptive start: once frames of a code have decoded, later frames start their first syndrome at
# an estimate of the START_QUANTILE quantile of their thresholds, less START_MARGIN; never below
# START_EFFICIENCY. A new frame's threshold in units of the planned h(q) also moves with its own
# error count, whose spread is known: see ReconcileHistory.start_efficiency. Starting near the
# thresholds saves most blind rounds (each a decoder run) and costs little: only the frames that
# would have decoded below the start overpay. Estimating the spread instead of taking the
# successes' empirical quantile matters after the pilots: two frames whose error rates happen to
# be above the plan put an empirical start above most frames' thresholds (n384000_r085 at 2 %,
# 12 frames, seed 71: f 1.1027, 6 frames decoded at their first syndrome). 0.2 rather than 0.1
# (reconcile_local with 60-iteration warm rounds; QBER 1.96 %, n384000_r085, 4 Mbit blocks,
# steady state of 3 blocks, same data): f 1.0925 -> 1.0919, iterations per frame 77 -> 73.5;
# 0.3: f 1.0928, 66 iterations (see reconcile_local's start_quantile).
START_QUANTILE = 0.2

# Successes kept per code: enough for a steady mean and spread (the spread of 64 samples is known
# to ~9 %), few enough to follow a drift of the link within a few blocks.
START_WINDOW = 64

# The start sits this much lower still: frames that decode at their first syndrome overpay by the
# start's distance from their threshold, frames below it pay one round per blind step.
START_MARGIN = 0.005

# Spread of a code's successes assumed while fewer than 3 are known (their own spread is not yet
# measurable): about what the long codes show at 2 % (n384000_r085: 0.007-0.01 in units of
# h(own error rate)). Without it, one or two pilots whose thresholds happened to be high put
# the next frames' start above most thresholds (n384000_r085 at 2 %, 12 frames, seed 71:
# f 1.1007 with 6 frames started from one pilot's success).
START_PRIOR_SPREAD = 0.01

# First frames of a code with its own required efficiency start this much below it.
START_BELOW_FULL = 0.15

# Frames whose error rates make the QBER prior (ReconcileHistory.qber): as many as the window.
_QBER_KEYS = ("errors", "bits")


def _check_quantile(quantile: float) -> float:
    if isinstance(quantile, bool) or not isinstance(quantile, int | float | np.floating):
        raise TypeError(f"start_quantile must be a real number, got {quantile!r}")
    if not 0.0 < float(quantile) < 1.0:
        raise ValueError(f"start_quantile must lie in (0, 1), got {quantile}")
    return float(quantile)


def _check_count(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if int(value) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


class ReconcileHistory:
    """Per-code start statistics of blind reconciliation, shared by the blocks of one link.

    Pass the same object to every block's :func:`~.local.reconcile_local` or
    :func:`qkdnode.dsp.distill.distill_local` call (``history=``); each call reads it to plan
    its first syndromes and records its verified frames in it. Not thread-safe: one link's
    blocks are reconciled one after another.

    Args:
        window: Successes kept per code (and frames kept for :attr:`qber`), the most recent.
    """

    __slots__ = ("_errors", "_successes", "window")

    def __init__(self, window: int = START_WINDOW) -> None:
        self.window = _check_count("window", window, 1)
        self._successes: dict[str, deque[float]] = {}
        self._errors: deque[tuple[int, int]] = deque(maxlen=self.window)

    def __repr__(self) -> str:
        counts = {name: len(values) for name, values in self._successes.items()}
        return f"ReconcileHistory(window={self.window}, successes={counts})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ReconcileHistory):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def successes(self, code_name: str) -> tuple[float, ...]:
        """The recent successes of a code (oldest first): disclosure per payload bit half a blind
        step below each verified frame's success, in units of h(that frame's own error rate)."""
        return tuple(self._successes.get(code_name, ()))

    @property
    def codes(self) -> tuple[str, ...]:
        """Names of the codes with at least one success."""
        return tuple(name for name, values in self._successes.items() if values)

    @property
    def qber(self) -> float | None:
        """Error rate of the recent verified frames (errors / payload bits), or ``None``."""
        bits = sum(b for _, b in self._errors)
        return None if bits == 0 else sum(e for e, _ in self._errors) / bits

    def record(
        self,
        code_name: str,
        payload_length: int,
        decoded_disclosed: int,
        last_step: int,
        errors: int,
    ) -> float:
        """Records a verified frame; returns the success value stored.

        Args:
            code_name: Code of the frame.
            payload_length: Its payload bits.
            decoded_disclosed: Bits disclosed until it decoded (syndrome and reveals, no tag).
            last_step: Bits of the frame's blind step (the plan's ``step``); the success is
                counted half a step below ``decoded_disclosed``: the frame failed a step below
                it, so its threshold lies in that step (the middle, not the lower end, so that
                the start's quantile is the thresholds' and not one step lower).
            errors: Errors Bob corrected in it (public: ``FrameVerified.errors``).

        Raises:
            TypeError, ValueError: An argument is not a count of the right range.
        """
        if not isinstance(code_name, str) or not code_name:
            raise TypeError(f"code_name must be a non-empty str, got {code_name!r}")
        payload = _check_count("payload_length", payload_length, 1)
        disclosed = _check_count("decoded_disclosed", decoded_disclosed, 0)
        step = _check_count("last_step", last_step, 0)
        wrong = _check_count("errors", errors, 0)
        if wrong > payload:
            raise ValueError(f"errors ({wrong}) exceed payload_length ({payload})")
        own = binary_entropy(max(wrong / payload, MIN_PLANNING_QBER))
        value = (disclosed - step / 2) / (payload * own)
        self._successes.setdefault(code_name, deque(maxlen=self.window)).append(value)
        self._errors.append((wrong, payload))
        return value

    def start_efficiency(
        self, code: LdpcCode, qber: float, quantile: float = START_QUANTILE
    ) -> float:
        """Efficiency of the next first syndrome of ``code`` at the planned ``qber``.

        From the recent successes: an estimate of their ``quantile`` quantile, less
        ``START_MARGIN``, never below ``START_EFFICIENCY``. The estimate is the mean less
        ``z(quantile)`` standard deviations, where the deviation adds the successes' own spread
        (``START_PRIOR_SPREAD`` while fewer than 3 are known; times sqrt(1 + 1/k) for the
        uncertainty of the mean of k) and the binomial spread of a new frame's error rate over
        a full payload (its threshold in units of the planned h(q) moves with it). Without
        successes: ``START_EFFICIENCY``, or ``START_BELOW_FULL`` below what a code that
        needs more than the default (:func:`.plan.full_efficiency`) needs: its frames never
        decode lower, and each blind step below costs a decoding round.

        Args:
            code: The code the frames use.
            qber: The QBER their plan assumes.
            quantile: Which quantile of the thresholds to start at, in (0, 1): higher starts
                closer to where most frames decode (fewer blind rounds, more disclosure).
        """
        z = statistics.NormalDist().inv_cdf(1.0 - _check_quantile(quantile))
        values = self._successes.get(code.name)
        if not values:
            own = full_efficiency(code)
            if own > MIN_FULL_EFFICIENCY:
                return max(START_EFFICIENCY, own - START_BELOW_FULL)
            return START_EFFICIENCY
        q = max(qber, MIN_PLANNING_QBER)
        h = binary_entropy(q)
        recent = np.fromiter(values, dtype=np.float64, count=len(values))
        # A new frame's threshold in units of the planned h(q) is its threshold in units of its
        # own h times h(own error rate) / h(q); the error rate's binomial spread over a full
        # payload P, sqrt(q (1 - q) / P), moves it by h'(q) / h(q) times that (relative, first
        # order). That dominates the long codes' spread (n192000_r085 at 2 %: +/-0.015 in f).
        # The two are independent (a frame's error count, and where a code decodes given it),
        # so their variances add.
        payload = plan_frame(code, code.n, q).payload_length
        relative = math.log2((1.0 - q) / q) / h * math.sqrt(q * (1.0 - q) / payload)
        # A new frame's own threshold varies about the code's mean by the successes' spread,
        # and the mean of k of them is known to that spread / sqrt(k): predictive spread.
        mean = float(recent.mean())
        spread = float(recent.std(ddof=1)) if recent.size >= 3 else START_PRIOR_SPREAD
        spread *= math.sqrt(1.0 + 1.0 / recent.size)
        point = mean - z * math.hypot(mean * relative, spread)
        return max(START_EFFICIENCY, point - START_MARGIN)

    def copy(self) -> ReconcileHistory:
        """An independent copy."""
        return ReconcileHistory.from_dict(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-serialisable form (see :meth:`from_dict`)."""
        return {
            "window": self.window,
            "successes": {name: list(values) for name, values in self._successes.items()},
            "frames": [{"errors": e, "bits": b} for e, b in self._errors],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReconcileHistory:
        """The history :meth:`to_dict` gave.

        Raises:
            TypeError, ValueError: A field is missing or not of its type and range (named).
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"history data must be a mapping, got {type(data).__name__}")
        missing = {"window", "successes", "frames"} - set(data)
        if missing:
            raise ValueError(f"history data: missing {sorted(missing)}")
        history = cls(data["window"])
        successes = data["successes"]
        if not isinstance(successes, Mapping):
            raise TypeError("history data: successes must map code names to lists of numbers")
        for name, values in successes.items():
            if not isinstance(name, str) or not name:
                raise TypeError(f"history data: code name {name!r} is not a non-empty str")
            history._successes[name] = deque(
                _finite_values(f"successes[{name!r}]", values), maxlen=history.window
            )
        frames = data["frames"]
        if not isinstance(frames, list | tuple):
            raise TypeError("history data: frames must be a list of {errors, bits}")
        for k, frame in enumerate(frames):
            if not isinstance(frame, Mapping) or set(frame) != set(_QBER_KEYS):
                raise ValueError(f"history data: frames[{k}] must hold exactly errors and bits")
            bits = _check_count(f"frames[{k}].bits", frame["bits"], 1)
            errors = _check_count(f"frames[{k}].errors", frame["errors"], 0)
            if errors > bits:
                raise ValueError(f"history data: frames[{k}] has more errors than bits")
            history._errors.append((errors, bits))
        return history


def _finite_values(name: str, values: object) -> Iterable[float]:
    if not isinstance(values, list | tuple):
        raise TypeError(f"history data: {name} must be a list of numbers")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
            raise ValueError(f"history data: {name} holds {v!r}, not a finite number >= 0")
        out.append(float(v))
    return out
