"""Exceptions of the device layer.

Every instrument failure is a :class:`DeviceError`; the subclasses also derive from the built-in
exception a caller would naturally catch (``OSError`` for a broken transport, ``TimeoutError``
for a silent instrument). Codes are attributes, and every exception pickles (so it can cross a
thread pool or a process boundary unchanged).
"""

from __future__ import annotations


class DeviceError(Exception):
    """Base of all instrument and transport failures."""


class TransportError(DeviceError, OSError):
    """The link to an instrument failed (disconnect, port gone, VISA I/O error)."""


class TransportTimeout(DeviceError, TimeoutError):
    """An instrument did not answer within its timeout."""


class InstrumentError(DeviceError):
    """The instrument reported an error (for example a SCPI error queue entry).

    Attributes:
        code: the instrument's own error code.
        message: the instrument's own error text.
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"instrument error {self.code}: {self.message}"


class VendorLibraryError(DeviceError):
    """A vendor C library returned an error code.

    Attributes:
        code: the library's return code.
        message: the library's own text for that code.
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"vendor library error {self.code}: {self.message}"
