"""Which random source a link end gets: the one the link names, the OS CSPRNG by default, and
a seeded one only on the simulated bench (refused elsewhere with a clear error)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from qkdnode.drivers.roles import OsRandomSource, SeededRandomSource
from qkdnode.node.config import load_config
from qkdnode.node.errors import ConfigError
from qkdnode.node.module.launch import build_ends, random_source

LAB = Path(__file__).resolve().parents[2] / "examples" / "lab.toml"
SEEDED = 'driver = "sim.seeded_random"\nresource = "sim://bench/rng"'


def lab(tmp_path: Path, rng: str | None) -> Path:
    """examples/lab.toml (a transmitter on real instruments) with its "rng" instrument's
    driver line replaced by ``rng`` (None: unchanged), and its Qdist secret written."""
    text = LAB.read_text()
    if rng is not None:
        old = 'driver = "os.csprng"'
        assert text.count(old) == 1
        text = text.replace(old, rng)
    path = tmp_path / "lab.toml"
    path.write_text(text)
    (tmp_path / "qdist-alice-bob.secret").write_bytes(bytes(range(256)) * 8)
    return path


def test_the_lab_example_names_the_os_csprng_and_gets_it(tmp_path: Path) -> None:
    config = load_config(lab(tmp_path, None))
    assert isinstance(random_source(config, 0, config.links[0], on_bench=False), OsRandomSource)


def test_a_link_that_names_no_random_source_gets_the_os_csprng(tmp_path: Path) -> None:
    config = load_config(lab(tmp_path, SEEDED))
    link = dataclasses.replace(config.links[0], instruments=("fpga", "mbc", "voa"))
    assert isinstance(random_source(config, 0, link, on_bench=False), OsRandomSource)


def test_a_seeded_source_is_refused_off_the_simulated_bench(tmp_path: Path) -> None:
    path = lab(tmp_path, SEEDED)
    config = load_config(path)
    with pytest.raises(ConfigError, match=r"random source 'rng' \(sim.seeded_random\) is "
                                          r"seeded.*simulated bench only.*'alice-bob' is not "
                                          "on it; use os.csprng or a QRNG"):
        random_source(config, 0, config.links[0], on_bench=False)
    # The module refuses it before opening any instrument (the FPGA's address is not real).
    with pytest.raises(ConfigError, match="simulated bench only") as err:
        build_ends([(path, config)], None)
    assert "links[0].instruments" in str(err.value)
    # On the simulated bench the same source is taken, and reproducible.
    a = random_source(config, 0, config.links[0], on_bench=True)
    assert isinstance(a, SeededRandomSource)
    assert a.random_bytes(32) == SeededRandomSource("sim://x/rng", 0).random_bytes(32)


def test_rng_seed_is_for_the_simulated_bench_only(tmp_path: Path) -> None:
    config = load_config(lab(tmp_path, None))
    link = dataclasses.replace(config.links[0], instruments=("fpga", "mbc", "voa"))
    with pytest.raises(ConfigError, match=r"seeded random source \(rng_seed\) is for the "
                                          "simulated bench only"):
        random_source(config, 0, link, on_bench=False, rng_seed=5)
    with pytest.raises(ConfigError, match="rng_seed is given but link 'alice-bob' names the "
                                          "random source 'rng'"):
        random_source(config, 0, config.links[0], on_bench=True, rng_seed=5)
    alice = random_source(config, 0, link, on_bench=True, rng_seed=5)
    again = random_source(config, 0, link, on_bench=True, rng_seed=5)
    bob = random_source(config, 0, dataclasses.replace(link, role="receiver"), on_bench=True,
                        rng_seed=5)
    first = alice.random_bytes(64)
    assert first == again.random_bytes(64)
    assert first == SeededRandomSource("sim://x/rng", 5).random_bytes(64)
    assert bob.random_bytes(64) != first


def test_two_random_sources_for_one_link_are_an_error(tmp_path: Path) -> None:
    config = load_config(lab(tmp_path, None))
    extra = dataclasses.replace(next(i for i in config.instruments if i.name == "rng"),
                                name="rng2")
    config = dataclasses.replace(config, instruments=(*config.instruments, extra))
    link = dataclasses.replace(config.links[0],
                               instruments=(*config.links[0].instruments, "rng2"))
    with pytest.raises(ConfigError, match=r"names 2 random sources \(rng, rng2\)"):
        random_source(config, 0, link, on_bench=False)


def test_a_probability_below_16_bit_resolution_is_a_config_error(tmp_path: Path) -> None:
    path = lab(tmp_path, None)
    path.write_text(path.read_text().replace("p_mu2 = 0.2", "p_mu2 = 0.299999"))
    with pytest.raises(ConfigError, match=r"links\[0\].*every intensity needs a probability "
                                          "of at least 2\\^-17"):
        build_ends([(path, load_config(path))], None)
