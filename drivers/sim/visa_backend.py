"""A pyvisa backend whose resources are the simulated bench's instruments.

``VisaTransport`` (the lab's code, unchanged) opens ``TCPIP0::<BENCH>::<INSTRUMENT>::INSTR``
with the backend ``<anything>@qkdnode_sim``; this module is that pyvisa plug-in (pyvisa finds
``pyvisa_qkdnode_sim.WRAPPER_CLASS``, registered in ``sys.modules`` by
:func:`install`). Each session routes its writes to the instrument's emulator
(:meth:`~qkdnode.drivers.sim.devices.base.MessageDevice.feed`) and serves its reads from the
replies, one message at a time: a read ends at the termination character when it is enabled,
else at the end of the message (the IEEE 488 END). A read with nothing to read times out at
once, as a real instrument that will never answer would after the timeout.
"""

from __future__ import annotations

import itertools
import sys
import threading
from collections import deque
from typing import Any

from pyvisa import constants, errors, highlevel, rname
from pyvisa.util import LibraryPath

from .bench import DeviceHandle, get_bench

__all__ = ["BACKEND", "WRAPPER_CLASS", "BenchVisaLibrary", "install", "resource_name"]

# The name of the backend in pyvisa's "path@backend" specifications.
BACKEND = "qkdnode_sim"
_MODULE = f"pyvisa_{BACKEND}"
# pyvisa's own default chunk; reads are served from memory.
_DEFAULT_TIMEOUT_MS = 2000
_COUNTER = itertools.count(1)


def resource_name(bench: str, instrument: str) -> str:
    """The VISA resource string of a simulated instrument."""
    return f"TCPIP0::{bench}::{instrument}::INSTR"


def backend_spec() -> str:
    """A backend specification for one transport: its own library, so its own manager.

    pyvisa caches libraries by path and a resource manager per library, and closing a manager
    closes every resource it opened; one library per transport keeps transports independent.
    """
    return f"transport-{next(_COUNTER)}@{BACKEND}"


class _Session:
    """One open simulated instrument."""

    def __init__(self, name: str, parsed: rname.ResourceName, device: DeviceHandle) -> None:
        self.device = device
        self.replies: deque[bytearray] = deque()
        self.attrs: dict[int, Any] = {
            constants.ResourceAttribute.resource_name: name,
            constants.ResourceAttribute.interface_type: parsed.interface_type_const,
            constants.ResourceAttribute.resource_class: parsed.resource_class,
            constants.ResourceAttribute.timeout_value: _DEFAULT_TIMEOUT_MS,
            constants.ResourceAttribute.termchar: ord("\n"),
            constants.ResourceAttribute.termchar_enabled: False,
            constants.ResourceAttribute.send_end_enabled: True,
            constants.ResourceAttribute.suppress_end_enabled: False,
            constants.ResourceAttribute.interface_number: 0,
        }

    def write(self, data: bytes) -> None:
        reply = self.device.feed(bytes(data))
        if reply:
            self.replies.append(bytearray(reply))

    def read(self, count: int) -> tuple[bytes, constants.StatusCode]:
        if not self.replies:
            raise errors.VisaIOError(constants.StatusCode.error_timeout)
        message = self.replies[0]
        chunk = message[:count]
        if self.attrs[constants.ResourceAttribute.termchar_enabled]:
            at = chunk.find(self.attrs[constants.ResourceAttribute.termchar])
            if at >= 0:
                chunk = chunk[: at + 1]
                del message[: at + 1]
                if not message:
                    self.replies.popleft()
                return bytes(chunk), constants.StatusCode.success_termination_character_read
        del message[: len(chunk)]
        if message:
            return bytes(chunk), constants.StatusCode.success_max_count_read
        self.replies.popleft()
        return bytes(chunk), constants.StatusCode.success


class BenchVisaLibrary(highlevel.VisaLibraryBase):
    """A VISA library whose resources are ``TCPIP0::<BENCH>::<INSTRUMENT>::INSTR`` on benches
    of :mod:`qkdnode.drivers.sim.bench`'s registry (local or served)."""

    sessions: dict[int, Any]

    @staticmethod
    def get_library_paths() -> tuple[LibraryPath, ...]:
        return (LibraryPath("qkdnode-sim"),)

    @staticmethod
    def get_debug_info() -> dict[str, str]:
        return {"backend": "qkdnode simulated bench"}

    def _init(self) -> None:
        self.sessions = {}
        self._handles = itertools.count(1)
        self._lock = threading.Lock()

    def _register(self, obj: Any) -> int:
        with self._lock:
            handle = next(self._handles)
            self.sessions[handle] = obj
            return handle

    def open_default_resource_manager(self) -> tuple[Any, constants.StatusCode]:
        return self._register(self), constants.StatusCode.success

    def list_resources(self, session: Any, query: str = "?*::INSTR") -> tuple[str, ...]:
        raise errors.VisaIOError(constants.StatusCode.error_resource_not_found)

    def open(self, session: Any, resource_name: str,
             access_mode: constants.AccessModes = constants.AccessModes.no_lock,
             open_timeout: Any = constants.VI_TMO_IMMEDIATE) -> tuple[Any, constants.StatusCode]:
        try:
            parsed = rname.parse_resource_name(resource_name)
        except rname.InvalidResourceName:
            raise errors.VisaIOError(constants.StatusCode.error_invalid_resource_name) from None
        host = getattr(parsed, "host_address", None)
        device_name = getattr(parsed, "lan_device_name", None)
        if parsed.interface_type_const != constants.InterfaceType.tcpip or not host or (
                not device_name):
            raise errors.VisaIOError(constants.StatusCode.error_resource_not_found)
        try:
            device = get_bench(host).device(device_name)
        except (ValueError, OSError):
            raise errors.VisaIOError(constants.StatusCode.error_resource_not_found) from None
        return self._register(_Session(resource_name, parsed, device)), (
            constants.StatusCode.success)

    def close(self, session: Any) -> constants.StatusCode:
        with self._lock:
            obj = self.sessions.pop(session, None)
        if obj is None:
            return constants.StatusCode.error_invalid_object
        if obj is self:
            # The resource manager closed: this library served one transport; forget it.
            type(self)._registry.pop((type(self), self.library_path), None)
        elif isinstance(obj, _Session):
            close = getattr(obj.device, "close", None)  # a bench service connection
            if close is not None:
                close()
        return constants.StatusCode.success

    def _session(self, session: Any) -> _Session:
        obj = self.sessions.get(session)
        if not isinstance(obj, _Session):
            raise errors.VisaIOError(constants.StatusCode.error_invalid_object)
        return obj

    def read(self, session: Any, count: int) -> tuple[bytes, constants.StatusCode]:
        return self._session(session).read(count)

    def write(self, session: Any, data: bytes) -> tuple[int, constants.StatusCode]:
        sess = self._session(session)
        try:
            sess.write(data)
        except OSError as exc:
            raise errors.VisaIOError(constants.StatusCode.error_connection_lost) from exc
        return len(data), constants.StatusCode.success

    def clear(self, session: Any) -> constants.StatusCode:
        sess = self._session(session)
        sess.replies.clear()
        try:
            sess.device.clear()
        except OSError as exc:
            raise errors.VisaIOError(constants.StatusCode.error_connection_lost) from exc
        return constants.StatusCode.success

    def flush(self, session: Any, mask: Any) -> constants.StatusCode:
        sess = self._session(session)
        if int(mask) & int(constants.BufferOperation.discard_read_buffer):
            sess.replies.clear()
        return constants.StatusCode.success

    def get_attribute(self, session: Any, attribute: Any) -> tuple[Any, constants.StatusCode]:
        sess = self.sessions.get(session)
        if not isinstance(sess, _Session):
            return 0, constants.StatusCode.error_invalid_object
        if attribute not in sess.attrs:
            return 0, constants.StatusCode.error_nonsupported_attribute
        return sess.attrs[attribute], constants.StatusCode.success

    def set_attribute(self, session: Any, attribute: Any, attribute_state: Any
                      ) -> constants.StatusCode:
        sess = self.sessions.get(session)
        if not isinstance(sess, _Session):
            return constants.StatusCode.error_invalid_object
        sess.attrs[attribute] = attribute_state
        return constants.StatusCode.success

    def assert_trigger(self, session: Any, protocol: Any) -> constants.StatusCode:
        self.write(session, b"*TRG\n")
        return constants.StatusCode.success

    def disable_event(self, session: Any, event_type: Any, mechanism: Any
                      ) -> constants.StatusCode:
        return constants.StatusCode.success

    def discard_events(self, session: Any, event_type: Any, mechanism: Any
                       ) -> constants.StatusCode:
        return constants.StatusCode.success


WRAPPER_CLASS = BenchVisaLibrary


def install() -> None:
    """Makes ``@qkdnode_sim`` a pyvisa backend name (pyvisa imports ``pyvisa_<name>``)."""
    sys.modules.setdefault(_MODULE, sys.modules[__name__])
