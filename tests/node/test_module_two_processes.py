"""One end of a link per process: ``qkdnode sim serve`` hosts the bench, Alice's and Bob's
``qkdnode module`` run in two more processes through their instruments (a frame streamer and a
quTAG, over the bench service's socket), and their keys reach two key managers (in this
process, over Kq-1), which then hold the same key bytes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from qkdnode.node.config import load_config
from qkdnode.node.module.host import check_link_ends, node_daemons

# Seconds the whole run may take on a loaded 2-core machine (typically ~1 minute).
RUN_TIMEOUT_S = 900.0


def serve_bench(config: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "qkdnode", "sim", "serve", "--config",
                             str(config), "--listen", "127.0.0.1:0"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "served at 127.0.0.1:" in line, line
    return proc, line.rsplit(" ", 1)[1].strip()


def test_one_end_alone_is_refused_only_on_a_bench_in_this_process(tmp_path: Path,
                                                                  node_pair: Any) -> None:
    from qkdnode.node.errors import ConfigError

    local = node_pair(tmp_path, bench="two-proc", seed=11)
    with pytest.raises(ConfigError, match="host the bench with 'qkdnode sim serve'"):
        check_link_ends([(local["A"], load_config(local["A"]))])
    served = node_pair(tmp_path, bench="two-proc", seed=11, service="127.0.0.1:9")
    check_link_ends([(served["A"], load_config(served["A"]))])


@pytest.mark.slow
def test_two_module_processes_give_both_key_managers_the_same_keys(tmp_path: Path,
                                                                   node_pair: Any) -> None:
    plain = node_pair(tmp_path, bench="two-proc", seed=11, block_slots=1 << 26)
    bench, address = serve_bench(plain["A"])
    files = node_pair(tmp_path, bench="two-proc", seed=11, block_slots=1 << 26,
                      service=address)
    configs = [(p, load_config(p)) for p in files.values()]

    async def scenario() -> tuple[list[tuple[int, str, str]], bytes, bytes]:
        daemons = node_daemons(configs)
        for daemon in daemons.values():
            await daemon.start()
        try:
            modules = [await asyncio.create_subprocess_exec(
                sys.executable, "-m", "qkdnode", "module", "--config", str(files[who]),
                "--blocks", "1", "--json", "--status-interval", "600", "--drain-timeout", "60",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
                for who in ("A", "B")]
            outputs = await asyncio.wait_for(
                asyncio.gather(*(m.communicate() for m in modules)), RUN_TIMEOUT_S)
            results = [(m.returncode, out.decode(), err.decode())
                       for m, (out, err) in zip(modules, outputs, strict=True)]
            # The key managers agree on the keys over Kx, then they are available.
            deadline = time.monotonic() + 120.0
            while not all(lv.available_keys for d in daemons.values()
                          for lv in d.store.levels().values()):
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)
            a, b = daemons["A"].store, daemons["B"].store
            # Each key manager's pool of the link is named after its peer.
            plan, pad_a = a.take_pad("B", 64, time.time())
            pad_b = b.take_pad_as("A", plan, time.time())
            return results, pad_a, pad_b
        finally:
            for daemon in daemons.values():
                await daemon.stop()

    try:
        results, pad_a, pad_b = asyncio.run(scenario())
    finally:
        bench.terminate()
        bench.wait(timeout=30)
    for code, out, err in results:
        assert code == 0, err[-2000:]
        assert '"blocks_completed": 1' in out, out[-2000:] + err[-2000:]
    assert '"sync": "locked"' in results[1][1]
    assert len(pad_a) == 64
    assert pad_a == pad_b


def test_the_one_end_per_pc_examples_name_their_instruments() -> None:
    from qkdnode.node.module.instruments import link_instrument

    where = Path(__file__).parents[2] / "examples" / "one-end-per-pc"
    roles = {}
    for name in ("alice", "bob"):
        config = load_config(where / f"{name}.toml")
        (link,) = config.links
        instrument = link_instrument(config, 0, link)
        assert instrument.name in link.instruments
        assert config.bench.service is not None
        roles[link.role] = (instrument.role, instrument.driver)
    assert roles == {"transmitter": ("frame_streamer", "scpi.frame_streamer"),
                     "receiver": ("time_tagger", "qutools.qutag")}


def test_real_instruments_run_with_a_marker_channel_and_are_refused_without(tmp_path: Path
                                                                            ) -> None:
    # The tagger's clock shares no origin with the transmitter's: a real tagger needs the
    # channel the streamer's marker output is cabled to (a real streamer is taken as it is).
    from qkdnode.node.errors import ConfigError
    from qkdnode.node.module.instruments import link_instrument

    where = Path(__file__).parents[2] / "examples" / "one-end-per-pc"
    alice = (where / "alice.toml").read_text()
    assert "sim://ab/tx" in alice
    path = tmp_path / "alice.toml"
    path.write_text(alice.replace("sim://ab/tx", "visa://TCPIP0::192.168.10.30::5025::SOCKET"))
    config = load_config(path)
    assert link_instrument(config, 0, config.links[0]).driver == "scpi.frame_streamer"

    bob = (where / "bob.toml").read_text()
    real = bob.replace("sim://ab/tagger", "lib:///opt/qutools/lib/libtdcbase.so?device=0")
    for name, text, refused in (
            ("with", real, None),
            ("without", real.replace("marker_channel = 0", "# no marker"),
             r"links\[0\]\.marker_channel: .*real instrument: give the channel the frame "
             "streamer's marker output is cabled to"),
            ("unstreamed", real.replace("marker_channel = 0", "marker_channel = 0").replace(
                "channels = [0, 1, 2, 3, 4]", "channels = [1, 2, 3, 4]"),
             r"links\[0\]\.marker_channel: .*marker channel 0 is not among the channels "
             r"tagger 'tagger' streams \(\[1, 2, 3, 4\]\)"),
            ("a detector's", real.replace("marker_channel = 0", "marker_channel = 3"),
             r"links\[0\]\.marker_channel: .*channel 3 is a detector's")):
        path = tmp_path / f"bob-{name}.toml"
        path.write_text(text)
        config = load_config(path)
        if refused is None:
            assert link_instrument(config, 0, config.links[0]).name == "tagger"
        else:
            with pytest.raises(ConfigError, match=refused):
                link_instrument(config, 0, config.links[0])
    # A transmitter has no tagger: the marker channel is the receiver's key.
    path = tmp_path / "alice-marker.toml"
    path.write_text(alice.replace('qdist_listen', 'marker_channel = 0\nqdist_listen'))
    with pytest.raises(ConfigError, match="marker_channel"):
        load_config(path)
