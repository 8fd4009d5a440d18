"""pyserial's ``sim://BENCH/INSTRUMENT[?driver=NAME]`` ports: a simulated serial instrument.

Bytes written go to the instrument's emulator; its replies wait in the receive buffer. A read
returns what is there, at most ``size`` bytes, at once: the emulator answers as it is
written to, so whatever has not arrived never will, and waiting out the timeout would only
slow the tests down. Line settings are accepted and ignored (nothing is clocked).
"""

from __future__ import annotations

import threading
from urllib.parse import parse_qs, urlsplit

from serial.serialutil import PortNotOpenError, SerialBase, SerialException

from ..bench import DeviceHandle, get_bench

__all__ = ["Serial"]


class Serial(SerialBase):  # type: ignore[misc]
    """A pyserial port on a simulated instrument."""

    def open(self) -> None:
        if getattr(self, "is_open", False):
            raise SerialException("port already open")
        if self._port is None:
            raise SerialException("port must be configured before it can be used")
        self._device: DeviceHandle = self.from_url(self.portstr)
        self._rx = bytearray()
        self._rx_lock = threading.Lock()
        self.is_open = True

    def from_url(self, url: str) -> DeviceHandle:
        """Finds the instrument a ``sim://BENCH/INSTRUMENT[?driver=NAME]`` URL names."""
        parts = urlsplit(url)
        if parts.scheme != "sim":
            raise SerialException(f"expected a URL of the form sim://BENCH/INSTRUMENT, got {url!r}")
        instrument = parts.path.lstrip("/")
        if not parts.netloc or not instrument or "/" in instrument:
            raise SerialException(f"expected a URL of the form sim://BENCH/INSTRUMENT, got {url!r}")
        options = parse_qs(parts.query)
        unknown = set(options) - {"driver"}
        if unknown:
            raise SerialException(f"{url}: unknown option(s) {', '.join(sorted(unknown))}")
        driver = options.get("driver", [None])[0]
        try:
            return get_bench(parts.netloc).device(instrument, driver)
        except ValueError as exc:
            raise SerialException(str(exc)) from None

    def close(self) -> None:
        if getattr(self, "is_open", False):
            close = getattr(self._device, "close", None)  # a bench service connection
            if close is not None:
                close()
        self.is_open = False

    def _reconfigure_port(self) -> None:
        """Nothing is clocked: line settings are kept only."""

    @property
    def in_waiting(self) -> int:
        if not self.is_open:
            raise PortNotOpenError()
        return len(self._rx)

    def read(self, size: int = 1) -> bytes:
        if not self.is_open:
            raise PortNotOpenError()
        with self._rx_lock:
            data = bytes(self._rx[:size])
            del self._rx[:size]
        return data

    def write(self, data: bytes) -> int:
        if not self.is_open:
            raise PortNotOpenError()
        payload = bytes(data)
        try:
            reply = self._device.feed(payload)
        except OSError as exc:
            raise SerialException(f"simulated instrument unreachable: {exc}") from exc
        with self._rx_lock:
            self._rx += reply
        return len(payload)

    def reset_input_buffer(self) -> None:
        if not self.is_open:
            raise PortNotOpenError()
        with self._rx_lock:
            self._rx.clear()

    def reset_output_buffer(self) -> None:
        if not self.is_open:
            raise PortNotOpenError()

    def cancel_read(self) -> None:
        """Reads never block."""

    def cancel_write(self) -> None:
        """Writes never block."""

    @property
    def out_waiting(self) -> int:
        return 0

    def _update_break_state(self) -> None:
        """A break reaches no simulated instrument."""

    def _update_rts_state(self) -> None:
        """Modem lines are not simulated."""

    def _update_dtr_state(self) -> None:
        """Modem lines are not simulated."""

    @property
    def cts(self) -> bool:
        return True

    @property
    def dsr(self) -> bool:
        return True

    @property
    def ri(self) -> bool:
        return False

    @property
    def cd(self) -> bool:
        return True
