"""Fixtures shared by the node tests: the two ends of a simulated link as node files."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from qkdnode.node.bench import open_lab, simulated_lab_config
from qkdnode.node.bench.runner import PROCEDURES

# One end of link "ab" on the simulated bench (5 km, the Lim et al. decoys at 5 km); the
# {placeholders} are filled by write_link_ends.
LINK_END = """\
[node]
name = "{who}"

[bench]
name = "{bench}"
seed = {seed}
{bench_extra}[bench.fibre]
length_km = 5.0
[bench.source]
mu1 = 0.485
mu2 = 0.13

[[links]]
name = "ab"
peer = "{peer}"
role = "{role}"
{qdist} = "127.0.0.1:{port}"
auth_secret_file = "secret.bin"
audit_log = "audit-{who}.jsonl"
block_slots = {block_slots}
{link_extra}[links.decoy]
mu1 = 0.485
mu2 = 0.13
p_mu1 = 0.0577
p_mu2 = 0.5285
q_x = 0.5
[links.distillation]
kappa = 1e-15
code_length = {code_length}
{distillation_extra}
[key_manager]
kq1_socket = "kq1-{who}.sock"
{key_manager_extra}
[[peers]]
name = "{peer}"
kx_address = "127.0.0.1:{peer_kx}"
"""

WriteLinkEnds = Callable[..., tuple[Path, Path]]


def write_link_ends(directory: Path, *, bench: str, seed: int, block_slots: int,
                    port: int, bob_port: int | None = None, link_extra: str = "",
                    distillation_extra: str = "", code_length: int = 16000,
                    secret: bool = True) -> tuple[Path, Path]:
    """Writes ``alice.toml`` (transmitter, listening on ``port``) and ``bob.toml`` (receiver,
    connecting to ``bob_port``, default ``port``) and, unless ``secret`` is false, the shared
    authentication secret; returns both paths."""
    if secret:
        (directory / "secret.bin").write_bytes(bytes(range(256)) * 8)
    common = {"bench": bench, "seed": seed, "block_slots": block_slots,
              "link_extra": link_extra, "distillation_extra": distillation_extra,
              "code_length": code_length, "bench_extra": "", "key_manager_extra": "",
              "peer_kx": 9}
    paths = []
    for who, peer, role, qdist, p in (
            ("alice", "bob", "transmitter", "qdist_listen", port),
            ("bob", "alice", "receiver", "qdist_connect", port if bob_port is None else bob_port)):
        path = directory / f"{who}.toml"
        path.write_text(LINK_END.format(who=who, peer=peer, role=role, qdist=qdist, port=p,
                                        **common))
        paths.append(path)
    return paths[0], paths[1]


@pytest.fixture
def link_ends() -> WriteLinkEnds:
    """:func:`write_link_ends`: the two ends of link "ab" written as node files."""
    return write_link_ends


# Nodes "A" (transmitter) and "B" (receiver) of link "ab", each with its key manager (mutual
# TLS from pki/, Kx to the other): LINK_END with these additions (write_node_pair).
NODE_PAIR_KEY_MANAGER = """\
store_path = "keys-{who}.sqlite"
kx_listen = "127.0.0.1:{kx}"
etsi014_listen = "127.0.0.1:0"
management_listen = "127.0.0.1:0"
[key_manager.tls]
ca = "pki/ca.pem"
cert = "pki/{who}.pem"
key = "pki/{who}.key"
"""

WriteNodePair = Callable[..., dict[str, Path]]


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports that were free a moment ago."""
    import socket

    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [int(s.getsockname()[1]) for s in socks]
    for s in socks:
        s.close()
    return ports


def write_node_pair(directory: Path, *, bench: str, seed: int, block_slots: int = 1 << 24,
                    service: str | None = None) -> dict[str, Path]:
    """Writes ``A.toml`` and ``B.toml`` (:data:`LINK_END` with a full key manager, fresh
    ports), the PKI and the shared secret (once per directory); returns ``{"A": path, "B":
    path}``."""
    from qkdnode.node.km.pki import make_pki

    if not (directory / "pki").exists():
        make_pki(directory / "pki", ["A", "B"], [])
        (directory / "secret.bin").write_bytes(bytes(range(256)) * 8)
    qdist, kx_a, kx_b = free_ports(3)
    files = {}
    for who, peer, role, kind, kx, peer_kx in (
            ("A", "B", "transmitter", "qdist_listen", kx_a, kx_b),
            ("B", "A", "receiver", "qdist_connect", kx_b, kx_a)):
        files[who] = directory / f"{who}.toml"
        files[who].write_text(LINK_END.format(
            who=who, peer=peer, role=role, qdist=kind, port=qdist, peer_kx=peer_kx,
            bench=bench, seed=seed, block_slots=block_slots,
            link_extra="timing_slots = 4_194_304\n", distillation_extra="", code_length=16000,
            bench_extra="" if service is None else f'service = "{service}"\n',
            key_manager_extra=NODE_PAIR_KEY_MANAGER.format(who=who, kx=kx)))
    return files


@pytest.fixture
def node_pair() -> WriteNodePair:
    """:func:`write_node_pair`: nodes A and B of link "ab", each with its key manager."""
    return write_node_pair


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def port() -> int:
    """A TCP port that was free a moment ago (the Qdist transmitter listens on it)."""
    return free_port()


def open_modulator_lab(procedure: str, params: dict[str, Any],
                       limit: float | None = None) -> Any:
    """The simulated lab a modulator procedure opens, its bias controller limited to ``limit``
    volts (``max_modulator_bias_v``) when given."""
    config = simulated_lab_config(params)
    if limit is not None:
        config = dataclasses.replace(config, instruments=tuple(
            dataclasses.replace(i, settings={**i.settings, "max_modulator_bias_v": limit})
            if i.role == "bias_controller" else i for i in config.instruments))
    return open_lab(config, PROCEDURES[procedure].roles)


@pytest.fixture
def modulator_lab() -> Callable[..., Any]:
    """:func:`open_modulator_lab`: (procedure, params, limit=None) -> the opened lab."""
    return open_modulator_lab
