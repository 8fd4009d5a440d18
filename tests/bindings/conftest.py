"""Fixtures for the binding tests: the built C mocks, reset to power-on before each test.

A missing mock fails the test with the locator's message (how to build it); it never skips, so
a CI run without a C compiler shows up red.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from qkdnode.bindings import mock_library_path
from qkdnode.drivers.sim.clib import MockLibrary


def _mock(name: str) -> Iterator[tuple[Path, MockLibrary]]:
    path = mock_library_path(name)
    mock = MockLibrary(path)
    mock.reset()
    yield path, mock
    mock.reset()


@pytest.fixture
def tdc_mock() -> Iterator[tuple[Path, MockLibrary]]:
    yield from _mock("tdcbase")


@pytest.fixture
def hh_mock() -> Iterator[tuple[Path, MockLibrary]]:
    yield from _mock("hhlib")


@pytest.fixture
def mh_mock() -> Iterator[tuple[Path, MockLibrary]]:
    yield from _mock("mhlib")
