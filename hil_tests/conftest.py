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

``--hil-record DIR`` wraps the transport of every message-based instrument opened during the
session (through the driver registry: the fixtures, the bench procedures' labs) in a
:class:`~qkdnode.drivers.transport.recording.RecordingTransport`, and at the end of the session
writes one exchange file per instrument, ``DIR/<role>-<name>.jsonl``: the instrument's
exchanges in the order they happened, over every time it was opened. A lab failure is then
replayed in CI with ``ScriptedTransport.load(path)`` and the same driver calls. Binary uploads
(frames: key material) are kept as their digest only. Library-based instruments (taggers
through a vendor library) have no message exchange and are not recorded.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
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


@dataclass
class ExchangeRecorder:
    """Records every message-based instrument's exchange while installed (``--hil-record``).

    Attributes:
        directory: where :meth:`save` writes the exchange files.
        opened: instrument label -> (resource, timeout_s, the recording transports in order).
    """

    directory: Path
    opened: dict[str, tuple[str, float | None, list[Any]]] = field(default_factory=dict)
    _original: Any = None

    def install(self) -> None:
        """Makes the driver registry open every transport through a recording wrapper."""
        from qkdnode.drivers import registry
        from qkdnode.drivers.transport.recording import RecordingTransport

        original = registry.open_transport

        def recording_open(resource: str, **options: Any) -> Any:
            transport = RecordingTransport(original(resource, **options))
            label = str(options.get("instrument") or resource)
            timeout = options.get("timeout_s")
            entry = self.opened.setdefault(
                label, (resource, float(timeout) if timeout is not None else None, []))
            entry[2].append(transport)
            return transport

        self._original = original
        registry.open_transport = recording_open

    def uninstall(self) -> None:
        """Restores the registry's own transport opening."""
        if self._original is not None:
            from qkdnode.drivers import registry

            registry.open_transport = self._original
            self._original = None

    def save(self) -> list[Path]:
        """Writes one exchange file per instrument (its openings' steps in order)."""
        from qkdnode.drivers.transport.scripted import save_steps

        self.directory.mkdir(parents=True, exist_ok=True)
        written = []
        for label, (resource, timeout_s, transports) in sorted(self.opened.items()):
            steps = [step for t in transports for step in t.steps]
            if not steps:
                continue
            path = self.directory / (exchange_file_stem(label) + ".jsonl")
            save_steps(path, steps, instrument=label, resource=resource, timeout_s=timeout_s)
            written.append(path)
        return written


def exchange_file_stem(label: str) -> str:
    """The file name (without suffix) of an instrument's exchange: its label, e.g.
    ``bias controller 'mbc'``, as ``bias_controller-mbc``."""
    role, _, name = label.partition(" '")
    parts = [re.sub(r"[^A-Za-z0-9_.]+", "_", x).strip("_") for x in (role, name)]
    return "-".join(p for p in parts if p) or "instrument"


_RECORDER_KEY = pytest.StashKey[ExchangeRecorder]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("qkdnode hardware-in-the-loop")
    group.addoption(
        "--hil-config", metavar="FILE", default=None,
        help="run hil tests on the real instruments named in this node configuration "
             "(default: the simulated bench)")
    group.addoption(
        "--hil-record", metavar="DIR", default=None,
        help="record every message-based instrument's exchange and write one file per "
             "instrument into DIR at the end (replay: ScriptedTransport.load)")


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
    record = config.getoption("--hil-record")
    if record:
        directory = Path(record)
        if directory.exists() and not directory.is_dir():
            raise pytest.UsageError(f"--hil-record: {directory} exists and is not a directory")
        recorder = ExchangeRecorder(directory)
        recorder.install()
        config.stash[_RECORDER_KEY] = recorder


def pytest_unconfigure(config: pytest.Config) -> None:
    recorder = config.stash.get(_RECORDER_KEY, None)
    if recorder is not None:
        recorder.uninstall()


def pytest_sessionfinish(session: pytest.Session) -> None:
    recorder = session.config.stash.get(_RECORDER_KEY, None)
    if recorder is not None:
        written = recorder.save()
        session.config.stash[_WRITTEN_KEY] = written


_WRITTEN_KEY = pytest.StashKey[list[Path]]()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    written = config.stash.get(_WRITTEN_KEY, None)
    if written is not None:
        recorder = config.stash[_RECORDER_KEY]
        terminalreporter.write_line(
            f"hil-record: {len(written)} exchange file(s) in {recorder.directory}: "
            + ", ".join(p.name for p in written))


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
