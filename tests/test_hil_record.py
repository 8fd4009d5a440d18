"""``--hil-record DIR``: the hil harness records each message-based instrument's exchange, and
the files replay through ``ScriptedTransport.load``.

The inner sessions run in a subprocess: pytester's in-process runs restore ``sys.modules``
after each run, which the simulated bench's transport registrations (pyserial URL handlers, the
VISA backend) do not survive from one run to the next.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from qkdnode.drivers.instruments.base import build_instrument
from qkdnode.drivers.registry import DRIVERS
from qkdnode.drivers.roles import LockMode
from qkdnode.drivers.transport.scripted import ScriptedTransport
from qkdnode.node.config import load_config

HIL = Path(__file__).parents[1] / "hil_tests"

TESTS = """
import json
import numpy as np
import pytest
from qkdnode.drivers.roles import LockMode

@pytest.mark.roles("bias_controller")
def test_bias(open_lab_instrument, tmp_path_factory):
    bc = open_lab_instrument("bias_controller")
    bc.set_lock_mode(LockMode.MANUAL)
    bc.set_manual_bias_v(1.234)
    readings = {"bias_v": bc.bias_v(), "tap_power_w": bc.tap_power_w()}
    print("READINGS " + json.dumps(readings))

@pytest.mark.roles("transmitter")
def test_frame(open_lab_instrument):
    tx = open_lab_instrument("transmitter")
    rng = np.random.default_rng(3)
    tx.load_frame(rng.integers(0, 2, 64).astype(np.uint8),
                  rng.integers(0, 2, 64).astype(np.uint8), np.zeros(64, np.uint8))
    tx.start()
    tx.stop()
"""


def _harness(pytester):
    pytester.makeconftest((HIL / "conftest.py").read_text())
    (pytester.path / "sim_lab.toml").write_text((HIL / "sim_lab.toml").read_text())
    pytester.makeini("[pytest]\nmarkers =\n    roles: roles\n    hil: hil\n")
    pytester.makepyfile(test_lab=TESTS)


def _entry(role):
    return load_config(HIL / "sim_lab.toml").instruments_with_role(role)[0]


def test_recorded_exchange_replays(pytester, tmp_path):
    _harness(pytester)
    out = tmp_path / "exchanges"
    result = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider", f"--hil-record={out}")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*hil-record: 2 exchange file(s) in*"])
    line = next(x for x in result.stdout.lines if "READINGS " in x)
    recorded = json.loads(line.split("READINGS ", 1)[1])
    assert sorted(p.name for p in out.iterdir()) == ["bias_controller-mbc.jsonl",
                                                     "transmitter-awg.jsonl"]

    # The bias controller's session replays: same driver, same calls, same readings.
    entry = _entry("bias_controller")
    script = ScriptedTransport.load(out / "bias_controller-mbc.jsonl")
    assert script.resource == entry.resource
    bc = build_instrument(DRIVERS[entry.driver].cls, script, entry.settings)
    bc.set_lock_mode(LockMode.MANUAL)
    bc.set_manual_bias_v(1.234)
    assert bc.bias_v() == recorded["bias_v"]
    assert bc.tap_power_w() == recorded["tap_power_w"]
    bc.close()
    script.assert_done()

    # The frame upload is kept as a digest: the replay accepts the same frame only.
    lines = [json.loads(x) for x in (out / "transmitter-awg.jsonl").read_text().splitlines()]
    assert not any(isinstance(x.get("sent"), dict) and "base64" in x["sent"] for x in lines[1:])
    entry = _entry("transmitter")
    script = ScriptedTransport.load(out / "transmitter-awg.jsonl")
    tx = build_instrument(DRIVERS[entry.driver].cls, script, entry.settings)
    rng = np.random.default_rng(3)
    tx.load_frame(rng.integers(0, 2, 64).astype(np.uint8),
                  rng.integers(0, 2, 64).astype(np.uint8), np.zeros(64, np.uint8))
    tx.start()
    tx.stop()
    tx.close()
    script.assert_done()


def test_without_hil_record_nothing_is_written(pytester):
    _harness(pytester)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    assert "hil-record" not in result.stdout.str()


def test_hil_record_onto_a_file_is_a_usage_error(pytester, tmp_path):
    _harness(pytester)
    target = tmp_path / "a-file"
    target.write_text("")
    # (--opt=VALUE: an existing path given as a separate argument would be taken for a test
    # path before the harness's conftest defines the option)
    result = pytester.runpytest_subprocess(f"--hil-record={target}")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*--hil-record*is not a directory*"])
