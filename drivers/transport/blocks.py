"""IEEE 488.2 definite-length arbitrary blocks (``#<n><length><data>``) over a transport.

Waveform and pattern uploads to AWGs, and binary curve reads, wrap their bytes in a block: ``#``,
one digit ``n``, then ``n`` decimal digits giving the data length, then the data. For example
``b"#15hello"`` carries ``b"hello"``. The indefinite form ``#0...`` is not supported: it cannot
carry a terminator byte, and the instruments we drive do not need it.
"""

from __future__ import annotations

from ..errors import TransportError
from .base import Transport, error_prefix

__all__ = ["MAX_BLOCK_LENGTH", "decode_block", "encode_block", "read_block", "write_block"]

# The length field has at most nine digits (the count digit is one decimal digit, and 0 means
# the indefinite form), so a definite block holds at most 10**9 - 1 bytes.
MAX_BLOCK_LENGTH = 10**9 - 1


def encode_block(data: bytes) -> bytes:
    """Wraps ``data`` in a definite-length block header.

    Raises:
        ValueError: if ``data`` is longer than :data:`MAX_BLOCK_LENGTH`.
    """
    if len(data) > MAX_BLOCK_LENGTH:
        raise ValueError(f"a definite-length block holds at most {MAX_BLOCK_LENGTH} bytes")
    length = str(len(data)).encode("ascii")
    return b"#" + str(len(length)).encode("ascii") + length + bytes(data)


def decode_block(buffer: bytes) -> tuple[bytes, int]:
    """Decodes the definite-length block at the start of ``buffer``.

    Returns:
        The block's data and the number of bytes of ``buffer`` it used (header and data), so a
        caller can continue after it.

    Raises:
        ValueError: if the header is malformed or ``buffer`` is shorter than the block.
    """
    if buffer[:1] != b"#":
        raise ValueError(f"a block starts with '#', got {bytes(buffer[:1])!r}")
    count = buffer[1:2]
    if not count.isdigit() or count == b"0":
        raise ValueError(f"block length digit count must be 1..9, got {bytes(count)!r}")
    digits = int(count)
    length_field = buffer[2 : 2 + digits]
    if len(length_field) != digits or not length_field.isdigit():
        raise ValueError(f"block length field must be {digits} decimal digits")
    length = int(length_field)
    start = 2 + digits
    if len(buffer) < start + length:
        raise ValueError(f"block announces {length} bytes, only {len(buffer) - start} present")
    return bytes(buffer[start : start + length]), start + length


def write_block(
    transport: Transport, prefix: str, data: bytes, *, termination: str = "\n",
    encoding: str = "ascii",
) -> None:
    """Sends ``prefix`` followed by ``data`` as a block and ``termination``, in one write.

    Example: ``write_block(awg, "DATA:ARB qkd,", samples)`` sends
    ``b"DATA:ARB qkd,#41024<1024 bytes>\\n"``.

    Args:
        transport: the instrument's transport.
        prefix: the command text before the block, including any separator.
        data: the payload.
        termination: appended after the block (``""`` for none); the transport's own write
            termination is not added to raw writes.
        encoding: of ``prefix`` and ``termination``.
    """
    transport.write_bytes(
        prefix.encode(encoding) + encode_block(data) + termination.encode(encoding)
    )


def read_block(transport: Transport, *, termination: str = "\n", encoding: str = "ascii") -> bytes:
    """Reads one definite-length block (after its command was sent) and its termination.

    Args:
        transport: the instrument's transport.
        termination: what the instrument sends after the block (``""`` if nothing).
        encoding: of ``termination``.

    Returns:
        The block's data.

    Raises:
        TransportError: if the instrument's reply is not a definite-length block or the
            termination after it differs.
        TransportTimeout: if the block does not arrive in time.
    """
    where = error_prefix(transport.instrument, transport.resource)
    head = transport.read_bytes(2)
    if head[:1] != b"#" or not head[1:2].isdigit() or head[1:2] == b"0":
        raise TransportError(f"{where}: expected a definite-length block, reply starts {head!r}")
    length_field = transport.read_bytes(int(head[1:2]))
    if not length_field.isdigit():
        raise TransportError(f"{where}: malformed block length field {length_field!r}")
    data = transport.read_bytes(int(length_field))
    tail = termination.encode(encoding)
    if tail:
        got = transport.read_bytes(len(tail))
        if got != tail:
            raise TransportError(f"{where}: expected {tail!r} after the block, got {got!r}")
    return data
