"""What the library-backed time tagger drivers share: settings and opening the binding.

A time tagger on a vendor C library is configured by a resource URL and a settings table:

* ``lib:///path/to/library?device=N`` opens the vendor's library at that path;
* ``sim://BENCH/INSTRUMENT`` opens the same binding on the library's C mock with bench
  ``BENCH`` attached (:func:`qkdnode.drivers.sim.clib.attach_bench`).

Settings every such driver takes: ``channels`` (input numbers to stream), ``threshold_v`` (one
trigger level for all of them), ``dead_time_ps`` and ``delay_ps`` (per channel, a table
``{channel = value}``, or one value for all); simulated bench only: ``seed`` (of a stand-alone
bench) and ``sim_slice_ps`` (bench time per read call).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from ..resource import ResourceUrl, parse_resource_url

__all__ = [
    "COMMON_SETTINGS",
    "SIM_SETTINGS",
    "build_tagger",
    "channel_values",
    "open_binding",
    "parse_channels",
]

B = TypeVar("B")
T = TypeVar("T")

SIM_SETTINGS = ("seed", "sim_slice_ps")
COMMON_SETTINGS = ("channels", "threshold_v", "dead_time_ps", "delay_ps", *SIM_SETTINGS)


def parse_channels(value: Any, allowed: Sequence[int], name: str) -> tuple[int, ...]:
    """A non-empty list of distinct channel numbers from ``allowed``."""
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise ValueError(f"channels must be a non-empty list of channel numbers, got {value!r}")
    out = []
    for ch in value:
        if isinstance(ch, bool) or not isinstance(ch, int) or ch not in allowed:
            raise ValueError(f"channel {ch!r} is not an input of the {name} "
                             f"(inputs: {', '.join(map(str, allowed))})")
        if ch in out:
            raise ValueError(f"channel {ch} is listed twice")
        out.append(ch)
    return tuple(out)


def channel_values(value: Any, channels: Sequence[int], key: str) -> dict[int, Any]:
    """``{channel: value}`` from one value for all channels or a ``{channel = value}`` table."""
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            try:
                ch = int(k)
            except (TypeError, ValueError):
                raise ValueError(f"{key}: {k!r} is not a channel number") from None
            if ch not in channels:
                raise ValueError(f"{key}: channel {ch} is not one of the streamed channels "
                                 f"{list(channels)}")
            out[ch] = v
        return out
    return dict.fromkeys(channels, value)


def _sim_int(settings: Mapping[str, Any], key: str, default: int, minimum: int) -> int:
    value = settings.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"setting {key} must be an integer >= {minimum}, got {value!r}")
    return value


def open_binding(resource: str, settings: Mapping[str, Any], mock: str,
                 factory: Callable[[str, int | None], B]) -> tuple[B, Any, ResourceUrl]:
    """Opens a library binding for a ``lib://`` or ``sim://`` resource.

    Args:
        resource: the configured resource URL.
        settings: the settings table (only the simulated-bench keys are read here).
        mock: the binding's C mock name (``"tdcbase"``, ``"hhlib"``, ``"mhlib"``).
        factory: ``factory(path, device)`` opens the binding (``device`` None: the default).

    Returns:
        ``(binding, keepalive, url)``: ``keepalive`` is the attached
        :class:`~qkdnode.drivers.sim.clib.MockLibrary` for ``sim://`` (the driver keeps it
        and detaches it on close), else None.

    Raises:
        ValueError: another scheme, a ``serial=`` parameter, or simulated-bench settings with
            a ``lib://`` resource.
    """
    url = parse_resource_url(resource)
    if url.scheme == "lib":
        if "serial" in url.params:
            raise ValueError(f"resource {resource!r}: this library opens devices by index; "
                             "use ?device=N instead of serial=")
        extra = [k for k in SIM_SETTINGS if k in settings]
        if extra:
            raise ValueError(f"settings {', '.join(extra)} are for the simulated bench only "
                             f"(sim:// resources), not {resource!r}")
        device = url.params.get("device")
        return factory(url.target, device if isinstance(device, int) else None), None, url
    if url.scheme == "sim":
        from ..sim.clib import DEFAULT_SLICE_PS, attach_bench

        seed = _sim_int(settings, "seed", 0, 0)
        slice_ps = _sim_int(settings, "sim_slice_ps", DEFAULT_SLICE_PS, 1)
        path, keepalive = attach_bench(mock, url.bench, seed, slice_ps)
        try:
            binding = factory(str(path), None)
        except BaseException:
            keepalive.detach()
            raise
        return binding, keepalive, url
    raise ValueError(f"resource {resource!r}: a library time tagger needs a lib:///path or "
                     "sim://BENCH/INSTRUMENT resource")


def build_tagger(resource: str, settings: Mapping[str, Any], mock: str,
                 factory: Callable[[str, int | None], B],
                 make: Callable[[B, Any], T]) -> T:
    """Opens a library time tagger and applies its settings table; nothing is left open on
    failure.

    Args:
        resource, settings, mock, factory: as :func:`open_binding`.
        make: ``make(binding, keepalive)`` builds the driver around the binding.

    Returns:
        The driver with ``threshold_v``, ``dead_time_ps`` and ``delay_ps`` applied (each a
        value for all streamed channels or a table per channel; absent keys leave the
        instrument's own values).
    """
    binding, keepalive, _ = open_binding(resource, settings, mock, factory)
    try:
        tagger: Any = make(binding, keepalive)
    except BaseException:
        binding.close()  # type: ignore[attr-defined]
        if keepalive is not None:
            keepalive.detach()
        raise
    try:
        streamed = tagger.channels()
        for key, setter in (("threshold_v", tagger.set_threshold_v),
                            ("dead_time_ps", tagger.set_dead_time_ps),
                            ("delay_ps", tagger.set_delay_ps)):
            if key in settings:
                for ch, value in channel_values(settings[key], streamed, key).items():
                    setter(ch, value)
    except BaseException:
        tagger.close()
        raise
    return tagger  # type: ignore[no-any-return]
