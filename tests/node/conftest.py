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
[bench.fibre]
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

[[peers]]
name = "{peer}"
kx_address = "127.0.0.1:9"
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
              "code_length": code_length}
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
