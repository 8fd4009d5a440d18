"""`qkdnode bench`: the command line of the bench procedures (simulated bench)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading

import pytest

from qkdnode.node.bench.lab import parse_sim_params, simulated_lab_config
from qkdnode.node.cli import main


def test_bench_json_on_the_simulated_bench(tmp_path, capsys):
    out = tmp_path / "o"
    status = main(["bench", "dark-counts", "--out", str(out), "--json",
                   "--sim-param", "dark_count_rate_hz=20000", "--sim-param", "seed=4",
                   "--set", "target_counts=800"])
    assert status == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert data["simulated"] is True
    assert data["status"] == "complete"
    assert data["unit"] == "Hz"
    assert abs(data["value"] - 20000) <= 3 * data["uncertainty"]
    assert data["settings"]["target_counts"] == 800
    assert "acquir" in captured.err  # progress goes to stderr, never into the JSON
    assert {p.name for p in out.iterdir()} >= {"result.json", "tags.csv", "dark-counts.png"}


def test_bench_summary_table(tmp_path, capsys):
    assert main(["bench", "dead-time", "--out", str(tmp_path), "--set", "target_counts=300",
                 "--sim-param", "seed=9"]) == 0
    text = capsys.readouterr().out
    assert "dead-time: dead time  (SIMULATED bench)" in text
    assert "result" in text
    assert "unit: ps" in text


@pytest.mark.parametrize(("argv", "message"), [
    (["--sim-param", "efficiency=0.2"], "unknown parameter 'efficiency' (known: "),
    (["--sim-param", "mu1"], "expected NAME=VALUE"),
    (["--sim-param", "dead_time_ps=1.5"], "dead_time_ps: '1.5' is not an integer"),
    (["--set", "bogus=1"], "unknown setting(s) bogus"),
    (["--duration", "0"], "--duration must be > 0"),
    (["--config", "lab.toml", "--sim-param", "mu1=0.3"], "--sim-param applies to the "
                                                         "simulated bench only"),
])
def test_bench_usage_errors(argv, message, tmp_path, capsys):
    assert main(["bench", "dark-counts", "--out", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err


def test_bench_out_of_range_sim_param_names_the_key(tmp_path, capsys):
    assert main(["bench", "dark-counts", "--out", str(tmp_path),
                 "--sim-param", "afterpulse_probability=1.5"]) == 2
    assert "afterpulse_probability" in capsys.readouterr().err


def test_bench_unknown_procedure_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "no-such-procedure"])
    assert exc.value.code == 2


def test_bench_config_without_a_role(tmp_path, capsys):
    (tmp_path / "lab.toml").write_text('[node]\nname = "a"\n')
    assert main(["bench", "dark-counts", "--config", str(tmp_path / "lab.toml"),
                 "--out", str(tmp_path)]) == 2
    assert "no instrument with role 'time_tagger'" in capsys.readouterr().err


def test_sim_params_reach_the_bench_configuration():
    config = simulated_lab_config(parse_sim_params(
        ["detector_efficiency=0.2", "dead_time_ps=70000", "mu1=0.4", "extinction_ratio_db=25",
         "jitter_fwhm_ps=80", "seed=3"]))
    params = config.bench.params()
    assert config.bench.seed == 3
    assert params.detectors[0].efficiency == 0.2
    assert params.detectors[3].dead_time_ps == 70000
    assert params.detectors[2].jitter_fwhm_ps == 80
    assert params.source.mu1 == 0.4
    assert params.source.extinction_ratio_db == 25


def test_bench_duration_of_a_procedure_without_acquisition(tmp_path, capsys):
    assert main(["bench", "mean-photon-number", "--out", str(tmp_path), "--duration", "3"]) == 2
    assert "mean-photon-number has no acquisition time" in capsys.readouterr().err


def test_bench_mean_photon_number_files(tmp_path, capsys):
    assert main(["bench", "mean-photon-number", "--out", str(tmp_path),
                 "--sim-param", "mu1=0.6"]) == 0
    captured = capsys.readouterr()
    assert "readings.csv" in captured.out
    # The power meter's readings are counted on stderr, the line ended with the final count.
    assert captured.err.endswith("\rmean-photon-number: 80 of 80 points done\n")
    data = json.loads((tmp_path / "result.json").read_text())
    assert abs(data["value"] - 0.6) <= 3 * data["uncertainty"]
    # No time tagger in this procedure: no (empty) tags.csv, and the listing does not name one.
    assert not (tmp_path / "tags.csv").exists()
    assert "tags" not in data
    assert "tags.csv" not in captured.out


def test_bench_scan_shows_its_points_on_stderr(tmp_path, capsys):
    # points=20: a 1.0526 V grid, rounded to the 1 mV the bias controller takes.
    assert main(["bench", "extinction-ratio", "--out", str(tmp_path), "--json",
                 "--set", "points=20", "--sim-param", "seed=5"]) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)  # nothing but the JSON on stdout
    assert data["readings"]["count"] == 31
    lines = [x for x in captured.err.replace("\r", "\n").splitlines() if x]
    assert lines[0] == "extinction-ratio: 1 of 31 points done (coarse scan)"
    assert lines[-1] == "extinction-ratio: 31 of 31 points done (fine scan)"
    assert captured.err.endswith("\n")


def test_ctrl_c_stops_at_a_safe_point_keeping_the_tags(tmp_path):
    # A real SIGINT to a real process: on the simulated bench the tagger's reads run through
    # a vendor-library callback, where a KeyboardInterrupt used to be swallowed and come back
    # as lost data ("failed"); the first Ctrl-C now only asks the run to stop at its next read.
    from qkdnode.node.cli import EXIT_INTERRUPTED

    out = tmp_path / "o"
    proc = subprocess.Popen(
        [sys.executable, "-m", "qkdnode", "bench", "dark-counts", "--out", str(out),
         "--set", "target_counts=100000000", "--duration", "1000000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        # Python ignores SIGINT in a child whose parent ignores it (a background job).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    err = bytearray()
    acquiring = threading.Event()

    def collect():
        while chunk := proc.stderr.read1(4096):
            err.extend(chunk)
            if b"acquiring" in err:
                acquiring.set()

    reader = threading.Thread(target=collect, daemon=True)
    reader.start()
    try:
        assert acquiring.wait(timeout=300), bytes(err).decode(errors="replace")
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=60)
    text = bytes(err).decode(errors="replace")
    assert proc.returncode == EXIT_INTERRUPTED, text
    assert "Ctrl-C, stopping at the next safe point" in text
    data = json.loads((out / "result.json").read_text())
    assert data["status"] == "interrupted"
    assert data["complete"] is False
    assert "error" not in data
    assert "safe_state_failures" not in data  # the safe state ran without a failure
    assert data["tags"]["overflows"] == 0
    rows = (out / "tags.csv").read_text().splitlines()
    assert len(rows) - 1 == data["tags"]["count"] > 0
