"""The per-layer exceptions: hierarchy, codes as attributes, pickling, one import place."""

from __future__ import annotations

import pickle

import pytest

from qkdnode.drivers import errors as drivers_errors
from qkdnode.dsp import errors as dsp_errors
from qkdnode.node import errors


def test_node_errors_reexports_every_layer():
    assert errors.DeviceError is drivers_errors.DeviceError
    assert errors.DistillationError is dsp_errors.DistillationError
    for name in errors.__all__:
        assert hasattr(errors, name)


def test_transport_errors_are_builtin_kinds_too():
    assert issubclass(errors.TransportError, OSError)
    assert issubclass(errors.TransportTimeout, TimeoutError)
    assert issubclass(errors.TransportTimeout, errors.DeviceError)
    assert issubclass(errors.LocalProtocolError, errors.ProtocolError)
    assert issubclass(errors.RemoteProtocolError, errors.ProtocolError)
    assert issubclass(errors.ReconciliationFailed, errors.DistillationError)
    assert issubclass(errors.VerificationFailed, errors.DistillationError)


@pytest.mark.parametrize("cls", [errors.InstrumentError, errors.VendorLibraryError])
def test_coded_errors_carry_code_and_pickle(cls):
    exc = cls(-113, "Undefined header")
    assert exc.code == -113
    assert "-113" in str(exc)
    assert "Undefined header" in str(exc)
    copy = pickle.loads(pickle.dumps(exc))
    assert (copy.code, copy.message, str(copy)) == (exc.code, exc.message, str(exc))


def test_config_error_without_line_or_key():
    exc = errors.ConfigError("lab.toml", None, None, "no such file")
    assert str(exc) == "lab.toml: no such file"
