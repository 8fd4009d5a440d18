"""A bench procedure recorded by the hil harness's ``--hil-record`` recorder replays through
``ScriptedTransport.load`` to the same result: the lab-failure-to-CI path of issue 7, for the
procedures whose instruments are all message-based (extinction ratio: the bias controller;
mean photon number: transmitter, power meter and attenuator, the frame upload by digest)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from qkdnode.drivers.instruments.base import build_instrument
from qkdnode.drivers.registry import DRIVERS
from qkdnode.drivers.transport.scripted import ScriptedTransport
from qkdnode.node.bench import open_lab, run_procedure, simulated_lab_config
from qkdnode.node.bench.lab import Lab, _identify
from qkdnode.node.bench.runner import PROCEDURES

HIL_CONFTEST = Path(__file__).parents[2] / "hil_tests" / "conftest.py"


@pytest.fixture(scope="module")
def hil_harness():
    """hil_tests/conftest.py as a module (its ExchangeRecorder and file naming)."""
    name = "_qkdnode_hil_conftest"
    spec = importlib.util.spec_from_file_location(name, HIL_CONFTEST)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[name]


@pytest.mark.parametrize(("name", "params"), [
    ("extinction-ratio", {"seed": 81, "extinction_ratio_db": 23.0, "bias_null_v": -1.2}),
    ("mean-photon-number", {"seed": 82, "mu1": 0.6}),
])
def test_recorded_procedure_replays_to_the_same_result(name, params, hil_harness, tmp_path):
    config = simulated_lab_config(params)
    roles = PROCEDURES[name].roles
    recorder = hil_harness.ExchangeRecorder(tmp_path / "exchanges")
    recorder.install()
    try:
        lab = open_lab(config, roles)
        try:
            recorded = run_procedure(name, lab, tmp_path / "recorded")
        finally:
            lab.close()
    finally:
        recorder.uninstall()
    written = {p.name for p in recorder.save()}

    # The replay: each instrument built by its driver on its recorded exchange, opened and
    # identified as open_lab does, then the same procedure.
    scripts, instruments, identities = [], {}, {}
    for role in roles:
        entry = config.instruments_with_role(role)[0]
        stem = hil_harness.exchange_file_stem(f"{role.replace('_', ' ')} '{entry.name}'")
        assert f"{stem}.jsonl" in written
        script = ScriptedTransport.load(tmp_path / "exchanges" / f"{stem}.jsonl")
        assert script.resource == entry.resource
        scripts.append(script)
        instruments[role] = build_instrument(DRIVERS[entry.driver].cls, script, entry.settings)
        identities[role] = _identify(instruments[role])
    assert identities == {role: recorded["instruments"][role].rsplit(": ", 1)[1]
                          for role in roles}
    lab = Lab(instruments, identities, simulated=False)
    try:
        replayed = run_procedure(name, lab, tmp_path / "replayed")
    finally:
        lab.close()
    for script in scripts:
        script.assert_done()
    assert replayed["status"] == "complete"
    assert replayed["simulated"] is False
    assert replayed["value"] == recorded["value"]
    assert replayed["uncertainty"] == recorded["uncertainty"]
    assert replayed["channels"] == recorded["channels"]
