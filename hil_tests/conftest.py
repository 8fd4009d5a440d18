"""Hardware-in-the-loop harness.

``pytest --hil-config lab.toml`` runs the tests in this folder against the real instruments the
lab file names. Without it they run against the simulated optical bench's instruments
(``sim_lab.toml`` beside this file), so CI runs every one of them.

A test declares the instrument roles it needs::

    @pytest.mark.hil
    @pytest.mark.roles("time_tagger", "detector")
    def test_dark_counts(lab_instrument): ...

and is skipped, with the reason, when the lab file has no instrument of one of those roles.
The ``lab_instrument(role)`` fixture returns that instrument's configuration entry, and
``open_lab_instrument(role)`` opens it through its driver (closed after the test).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from qkdnode.node.config import ROLES, ConfigError, InstrumentConfig, NodeConfig, load_config

SIM_LAB = Path(__file__).with_name("sim_lab.toml")


@dataclass(frozen=True)
class HilLab:
    """The lab the hardware-in-the-loop tests run against."""

    config: NodeConfig
    path: Path
    simulated: bool

    def instrument(self, role: str) -> InstrumentConfig | None:
        """The first instrument of ``role`` in the lab file, or None."""
        found = self.config.instruments_with_role(role)
        return found[0] if found else None


_LAB_KEY = pytest.StashKey[HilLab]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("qkdnode hardware-in-the-loop")
    group.addoption(
        "--hil-config", metavar="FILE", default=None,
        help="run hil tests on the real instruments named in this node configuration "
             "(default: the simulated bench)")


def pytest_configure(config: pytest.Config) -> None:
    path = config.getoption("--hil-config")
    try:
        lab = (HilLab(load_config(path), Path(path), simulated=False) if path
               else HilLab(load_config(SIM_LAB), SIM_LAB, simulated=True))
    except ConfigError as exc:
        raise pytest.UsageError(f"--hil-config: {exc}") from None
    config.stash[_LAB_KEY] = lab
    if lab.simulated or any((i.resource or "").startswith("sim://")
                            for i in lab.config.instruments):
        # The lab's sim:// instruments live on the bench its [bench] section describes
        # (imported here: a real lab's run never loads the simulation).
        from qkdnode.node.config.bench import install_bench

        install_bench(lab.config, replace=True)


def pytest_report_header(config: pytest.Config) -> str:
    lab = config.stash[_LAB_KEY]
    where = "simulated bench" if lab.simulated else "REAL INSTRUMENTS"
    return f"hil: {where} from {lab.path}"


def pytest_runtest_setup(item: pytest.Item) -> None:
    lab = item.config.stash[_LAB_KEY]
    for marker in item.iter_markers("roles"):
        for role in marker.args:
            if role not in ROLES:
                raise pytest.UsageError(
                    f"{item.nodeid}: unknown instrument role {role!r} in @pytest.mark.roles "
                    f"(roles: {', '.join(ROLES)})")
            if lab.instrument(role) is None:
                pytest.skip(f"lab file {lab.path} has no instrument with role {role!r}")


@pytest.fixture(scope="session")
def hil_lab(pytestconfig: pytest.Config) -> HilLab:
    """The lab (real or simulated) this run uses."""
    return pytestconfig.stash[_LAB_KEY]


@pytest.fixture
def lab_instrument(request: pytest.FixtureRequest,
                   hil_lab: HilLab) -> Callable[[str], InstrumentConfig]:
    """``lab_instrument(role)``: the configuration of the instrument playing ``role``.

    Only roles the test declared with ``@pytest.mark.roles`` may be asked for, so a test's
    needs are visible in its markers and its skips are honest.
    """
    declared = {role for marker in request.node.iter_markers("roles") for role in marker.args}

    def get(role: str) -> InstrumentConfig:
        if role not in declared:
            raise pytest.UsageError(
                f"{request.node.nodeid} asks for role {role!r} without declaring it in "
                "@pytest.mark.roles")
        instrument = hil_lab.instrument(role)
        assert instrument is not None  # pytest_runtest_setup skipped the test otherwise
        return instrument

    return get


@pytest.fixture
def open_lab_instrument(lab_instrument: Callable[[str], InstrumentConfig]
                        ) -> Iterator[Callable[[str], Any]]:
    """``open_lab_instrument(role)``: the instrument playing ``role``, opened by its driver with
    the lab file's settings; closed after the test."""
    from qkdnode.drivers.registry import open_instrument

    opened: list[Any] = []

    def open_(role: str) -> Any:
        entry = lab_instrument(role)
        assert entry.resource is not None, f"{entry.name} has no resource"
        instrument = open_instrument(entry.name, entry.role, entry.driver, entry.resource,
                                     entry.timeout_s, entry.settings)
        opened.append(instrument)
        return instrument

    yield open_
    for instrument in opened:
        instrument.close()
