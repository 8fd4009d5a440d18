"""`qkdnode sim serve`: hosts a configuration's bench; a client in another process reaches it."""

from __future__ import annotations

import subprocess
import sys

from qkdnode.node.cli import main


def test_sim_serve_needs_an_address(tmp_path, capsys):
    (tmp_path / "b.toml").write_text('[node]\nname = "a"\n[bench]\nname = "bench"\n')
    assert main(["sim", "serve", "--config", str(tmp_path / "b.toml")]) == 2
    assert "no address" in capsys.readouterr().err


def test_sim_serve_hosts_the_bench_for_another_process(tmp_path):
    from qkdnode.drivers.sim.service import connect_bench

    (tmp_path / "b.toml").write_text('[node]\nname = "a"\n[bench]\nname = "bench"\nseed = 3\n')
    proc = subprocess.Popen([sys.executable, "-m", "qkdnode", "sim", "serve", "--config",
                             str(tmp_path / "b.toml"), "--listen", "127.0.0.1:0"],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "served at 127.0.0.1:" in line
        address = line.rsplit(" ", 1)[1].strip()
        client = connect_bench("bench-client-test", address)
        device = client.device("pm", "thorlabs.pm100")
        assert b"PM100" in device.feed(b"*IDN?\n")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
