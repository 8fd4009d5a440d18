"""The bench service: Alice's and Bob's sides share one link over a real local socket."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from qkdnode.drivers.errors import TransportError
from qkdnode.drivers.registry import open_instrument
from qkdnode.drivers.sim import Bench, BenchParams, FibreParams, remove_bench
from qkdnode.drivers.sim.bench import get_bench
from qkdnode.drivers.sim.service import BenchClient, BenchService, connect_bench, parse_address


def frame(seed: int, n: int = 2048) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 2, n, dtype=np.uint8), rng.integers(0, 2, n, dtype=np.uint8),
            rng.choice(3, n, p=(0.7, 0.2, 0.1)).astype(np.uint8))


def x_qber(times: np.ndarray, channels: np.ndarray, sent: tuple[np.ndarray, ...],
           params: BenchParams) -> float:
    det = np.searchsorted(np.array(params.tagger.channels), channels)
    slot = np.rint((times - params.fibre.delay_ps) / params.source.slot_period_ps).astype(int)
    pos = slot % sent[0].size
    sifted = (sent[0][pos] == 0) & (det < 2)
    return float(np.mean(sent[1][pos][sifted] != det[sifted] % 2))


def test_two_sides_in_two_threads_share_one_link() -> None:
    params = BenchParams(fibre=FibreParams(length_km=5.0))
    hosted = Bench("hosted-threads", params, seed=3)
    sent = frame(1)
    with BenchService(hosted, "127.0.0.1:0") as service:
        # Alice's side opens instruments through sim:// URLs; Bob's side reads the tags.
        alice = connect_bench("alice-view", service.address, replace=True)
        bob = BenchClient("bob-view", service.address)
        errors: list[BaseException] = []

        def alice_side() -> None:
            try:
                with open_instrument("awg", "transmitter", "keysight.33500",
                                     "sim://alice-view/awg", 5.0,
                                     {"slot_rate_hz": 1e9, "max_sample_rate_hz": 1e9}) as awg:
                    awg.load_frame(*sent)
                    awg.start()
                with open_instrument("mbc", "bias_controller", "thorlabs.mbx",
                                     "sim://alice-view/bias", 5.0, {"lock_mode": "null"}) as mbc:
                    assert mbc.bias_v() == pytest.approx(1.0)
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        thread = threading.Thread(target=alice_side)
        thread.start()
        thread.join()
        assert not errors, errors
        # Bob's side: the link Alice loaded, read through the service.
        bob.run(duration_ps=10**8)  # the first tags need the fibre delay to arrive
        batch = bob.run(duration_ps=2 * 10**9)
        assert len(batch) > 10_000
        assert x_qber(batch.timestamps_ps, batch.channels, sent, params) < 0.03
        bob.close()
        remove_bench(alice.name)


def test_two_processes_share_one_link(tmp_path: Path) -> None:
    config = tmp_path / "bench.toml"
    config.write_text('[node]\nname = "host"\n[bench]\nname = "shared"\nseed = 4\n'
                      '[bench.fibre]\nlength_km = 5.0\n')
    host = subprocess.Popen(
        [sys.executable, "-m", "qkdnode.node.config.bench", str(config), "--listen",
         "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert host.stdout is not None
        line = host.stdout.readline()
        assert "served at" in line, host.stderr.read() if host.stderr else line
        address = line.rsplit(" ", 1)[-1].strip()
        client = connect_bench("shared", address, replace=True)
        sent = frame(2)
        with open_instrument("awg", "transmitter", "keysight.33500", "sim://shared/awg", 5.0,
                             {"slot_rate_hz": 1e9, "max_sample_rate_hz": 1e9}) as awg, \
             open_instrument("pm", "power_meter", "thorlabs.pm100", "sim://shared/pm",
                             5.0) as pm, \
             open_instrument("voa", "attenuator", "scpi.voa", "sim://shared/voa", 5.0) as voa:
            awg.load_frame(*sent)
            before = pm.measure_power_w()
            voa.set_attenuation_db(10.0)
            assert pm.measure_power_w() == pytest.approx(before / 10, rel=0.02)
            voa.set_attenuation_db(0.0)
        client.run(duration_ps=10**8)
        batch = client.run(duration_ps=10**9)
        params = BenchParams(fibre=FibreParams(length_km=5.0))
        assert x_qber(batch.timestamps_ps, batch.channels, sent, params) < 0.03
        remove_bench("shared")
    finally:
        host.terminate()
        host.communicate(timeout=10)  # reaps it and closes its pipes


def test_unix_socket_service_and_errors(tmp_path: Path) -> None:
    hosted = Bench("hosted-unix", seed=1)
    address = f"unix:{tmp_path / 'bench.sock'}"
    with BenchService(hosted, address) as service:
        assert service.address == address
        client = connect_bench("unix-view", address, replace=True)
        try:
            with pytest.raises(ValueError, match="no instrument 'nothing'"):
                client.device("nothing")  # neither declared nor opened through a driver
            client.declare("meter", "thorlabs.pm100")
            assert hosted.instruments() == {"meter": "thorlabs.pm100"}
            with open_instrument("pm", "power_meter", "thorlabs.pm100",
                                 "sim://unix-view/meter", 1.0) as pm:
                assert "PM100" in pm.identify()
        finally:
            remove_bench("unix-view")
    connect_bench("gone", address, replace=True)
    try:
        with pytest.raises(TransportError, match="bench service unreachable"):
            open_instrument("pm", "power_meter", "thorlabs.pm100", "sim://gone/meter", 1.0)
        assert get_bench("gone") is not None
    finally:
        remove_bench("gone")


def test_addresses() -> None:
    assert parse_address("127.0.0.1:7781")[1] == ("127.0.0.1", 7781)
    assert parse_address("[::1]:7781")[1] == ("::1", 7781)
    assert parse_address("unix:/tmp/b.sock")[1] == "/tmp/b.sock"
    for bad in ("nohost", "host:x", "unix:"):
        with pytest.raises(ValueError, match="bench service address"):
            parse_address(bad)
