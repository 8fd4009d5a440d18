"""The hardware-in-the-loop harness: --hil-config selects the lab; missing roles skip."""

from __future__ import annotations

from pathlib import Path

HIL = Path(__file__).parents[1] / "hil_tests"

LAB_WITHOUT_DETECTOR = """
[node]
name = "lab"
[[instruments]]
name = "tagger"
role = "time_tagger"
driver = "qutools.qutag"
resource = "lib:///opt/libtdcbase.so?device=0"
"""

TESTS = """
import pytest

@pytest.mark.roles("time_tagger")
def test_tagger(lab_instrument, hil_lab):
    assert lab_instrument("time_tagger").name == "tagger"
    print("SIMULATED" if hil_lab.simulated else "REAL")

@pytest.mark.roles("time_tagger", "detector")
def test_needs_detector(lab_instrument):
    assert lab_instrument("detector")

def test_undeclared_role(lab_instrument):
    lab_instrument("time_tagger")
"""


def _harness(pytester):
    pytester.makeconftest((HIL / "conftest.py").read_text())
    (pytester.path / "sim_lab.toml").write_text((HIL / "sim_lab.toml").read_text())
    pytester.makeini("[pytest]\nmarkers =\n    roles: roles\n    hil: hil\n")
    pytester.makepyfile(test_lab=TESTS)


def test_without_hil_config_runs_on_the_simulated_bench(pytester):
    _harness(pytester)
    result = pytester.runpytest("-s", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, errors=0, failed=1)
    result.stdout.fnmatch_lines(["*hil: simulated bench*", "*SIMULATED*"])
    result.stdout.fnmatch_lines(["*without declaring it in @pytest.mark.roles*"])


def test_lab_file_lacking_a_role_skips_with_reason(pytester):
    _harness(pytester)
    lab = pytester.path / "lab.toml"
    lab.write_text(LAB_WITHOUT_DETECTOR)
    result = pytester.runpytest("-s", "-rs", "--hil-config", str(lab))
    result.assert_outcomes(passed=1, skipped=1, failed=1)
    result.stdout.fnmatch_lines(["*REAL INSTRUMENTS*", "*REAL*",
                                 "*has no instrument with role 'detector'*"])


def test_bad_lab_file_is_a_usage_error(pytester):
    _harness(pytester)
    lab = pytester.path / "lab.toml"
    lab.write_text("[node]\nname = 3\n")
    result = pytester.runpytest("--hil-config", str(lab))
    assert result.ret == 4  # pytest's usage-error status
    result.stderr.fnmatch_lines(["*--hil-config*node.name*must be a string*"])
