"""``generic.passive_receiver``: passive basis choice, one detector channel per (basis, bit).

Bob's beam splitter chooses the basis; which detector clicked says the basis and the bit. There
is nothing to talk to: the receiver is the mapping, given in the settings table::

    settings = { channel_map = { "1" = "X0", "2" = "X1", "3" = "Z0", "4" = "Z1" } }

Basis 0 is X and 1 is Z (as in the transmitter's frames); each (basis, bit) appears exactly once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from ...roles import BASIS_NAMES

__all__ = ["PassiveReceiver"]


class PassiveReceiver:
    """Passive basis choice: a beam splitter, and one detector channel per (basis, bit).

    Args:
        channel_map: channel -> (basis, bit), basis 0 = X, 1 = Z; each of the four pairs
            exactly once.

    Raises:
        ValueError: if a pair is missing or repeated, or a value is out of range.
    """

    SETTINGS_DOC: ClassVar[str] = (
        'channel_map: a table channel -> "X0" | "X1" | "Z0" | "Z1", e.g. '
        '{ "1" = "X0", "2" = "X1", "3" = "Z0", "4" = "Z1" }'
    )

    def __init__(self, channel_map: Mapping[int, tuple[int, int]]) -> None:
        checked: dict[int, tuple[int, int]] = {}
        owner: dict[tuple[int, int], int] = {}
        for channel, pair in channel_map.items():
            if isinstance(channel, bool) or not isinstance(channel, int):
                raise ValueError(f"receiver channel must be an integer, got {channel!r}")
            if len(pair) != 2 or any(v not in (0, 1) or isinstance(v, bool) for v in pair):
                raise ValueError(f"channel {channel}: (basis, bit) must be 0/1 values, got {pair}")
            key = (int(pair[0]), int(pair[1]))
            if key in owner:
                raise ValueError(
                    f"receiver channels {owner[key]} and {channel} both map to "
                    f"{BASIS_NAMES[key[0]]}{key[1]}; each (basis, bit) must appear once"
                )
            owner[key] = channel
            checked[channel] = key
        missing = [f"{BASIS_NAMES[b]}{v}" for b in (0, 1) for v in (0, 1) if (b, v) not in owner]
        if missing:
            raise ValueError(f"receiver channel map has no channel for {', '.join(missing)}")
        self._map = checked

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> PassiveReceiver:
        """Builds the receiver from ``settings["channel_map"]`` (see :attr:`SETTINGS_DOC`).

        Raises:
            ValueError: naming the bad entry.
        """
        unknown = sorted(set(settings) - {"channel_map"})
        if unknown:
            raise ValueError(f"unknown receiver setting {unknown[0]!r} (known: channel_map)")
        table = settings.get("channel_map")
        if not isinstance(table, Mapping) or not table:
            raise ValueError(f"receiver setting channel_map is required: {cls.SETTINGS_DOC}")
        parsed: dict[int, tuple[int, int]] = {}
        for key, value in table.items():
            try:
                channel = int(key)
            except (TypeError, ValueError):
                raise ValueError(f"channel_map key {key!r} is not a channel number") from None
            if channel in parsed:
                raise ValueError(f"channel_map names channel {channel} twice")
            text = str(value).strip().upper()
            if len(text) != 2 or text[0] not in BASIS_NAMES or text[1] not in "01":
                raise ValueError(
                    f"channel_map[{key!r}] = {value!r}: expected X0, X1, Z0 or Z1"
                )
            parsed[channel] = (BASIS_NAMES.index(text[0]), int(text[1]))
        return cls(parsed)

    @property
    def channel_map(self) -> dict[int, tuple[int, int]]:
        """channel -> (basis, bit)."""
        return dict(self._map)

    def basis_bit(self, channel: int) -> tuple[int, int]:
        """The (basis, bit) of a detector channel.

        Raises:
            KeyError: for a channel that is not a receiver detector.
        """
        try:
            return self._map[channel]
        except KeyError:
            raise KeyError(f"channel {channel} is not a receiver detector channel") from None

    def decode(
        self, channels: NDArray[np.int32]
    ) -> tuple[NDArray[np.uint8], NDArray[np.uint8], NDArray[np.bool_]]:
        """Maps tag channels to (basis, bit, known) arrays; unknown channels give known False."""
        ch = np.asarray(channels)
        basis = np.zeros(ch.shape, dtype=np.uint8)
        bit = np.zeros(ch.shape, dtype=np.uint8)
        known = np.zeros(ch.shape, dtype=np.bool_)
        for channel, (b, v) in self._map.items():
            hit = ch == channel
            basis[hit] = b
            bit[hit] = v
            known |= hit
        return basis, bit, known

    def close(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        pairs = ", ".join(
            f"{c}: {BASIS_NAMES[b]}{v}" for c, (b, v) in sorted(self._map.items())
        )
        return f"PassiveReceiver({{{pairs}}})"
