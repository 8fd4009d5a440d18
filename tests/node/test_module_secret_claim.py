"""A module process claims its link's pre-shared secret (no second run from the same pads), and
the key IDs name the Qdist session, so a restart with a fresh secret never repeats an ID."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from qkdnode.node.errors import ConfigError
from qkdnode.node.module.keys_out import cut_block, qkd_key_id, session_name
from qkdnode.node.module.launch import claim_secrets


def _end(secret: Path, role: str, index: int = 0, node: str = "A") -> Any:
    link = SimpleNamespace(name="ab", role=role, auth_secret_file=str(secret))
    others = [SimpleNamespace(name=f"other{i}") for i in range(index)]
    config = SimpleNamespace(node=SimpleNamespace(name=node), links=[*others, link])
    return SimpleNamespace(config=config, link=link)


def test_a_secret_is_claimed_once_per_role_and_a_second_run_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret-ab.bin"
    secret.write_bytes(os.urandom(4096))
    # Both ends of the link in one process (qkdnode run, the demo): one claim per role.
    made = claim_secrets([_end(secret, "transmitter"), _end(secret, "receiver", node="B")])
    assert sorted(p.name for p in made) == ["secret-ab.bin.receiver.used",
                                            "secret-ab.bin.transmitter.used"]
    for marker in made:
        assert stat.S_IMODE(marker.stat().st_mode) == 0o600
        record = json.loads(marker.read_text())
        assert {"time", "host", "pid", "node", "link", "role"} <= set(record)
    with pytest.raises(ConfigError) as info:
        claim_secrets([_end(secret, "receiver", index=1, node="B")])
    text = str(info.value)
    assert "links[1].auth_secret_file" in text
    assert "already used by a receiver module" in text
    assert "fresh secret" in text


def test_a_refused_claim_removes_the_markers_it_made(tmp_path: Path) -> None:
    fresh, used = tmp_path / "fresh.bin", tmp_path / "used.bin"
    for path in (fresh, used):
        path.write_bytes(os.urandom(4096))
    claim_secrets([_end(used, "transmitter")])
    with pytest.raises(ConfigError):
        claim_secrets([_end(fresh, "transmitter"), _end(used, "transmitter")])
    assert not (tmp_path / "fresh.bin.transmitter.used").exists()
    assert claim_secrets([_end(fresh, "transmitter")])  # still free


def test_a_marker_that_cannot_be_written_is_a_config_error(tmp_path: Path) -> None:
    secret = tmp_path / "missing-dir" / "secret.bin"
    with pytest.raises(ConfigError, match="cannot mark the secret"):
        claim_secrets([_end(secret, "transmitter")])


def test_key_ids_name_the_session_of_the_secret() -> None:
    a, b = os.urandom(4096), os.urandom(4096)
    assert session_name(a) == session_name(bytes(a))  # both ends name it the same
    assert session_name(a) != session_name(b)
    assert len(session_name(a)) == 16
    bits = np.random.default_rng(3).integers(0, 2, 512, dtype=np.uint8)
    first, _ = cut_block("ab", 0, bits, 32, session=session_name(a))
    again, _ = cut_block("ab", 0, bits, 32, session=session_name(a))
    fresh, _ = cut_block("ab", 0, bits, 32, session=session_name(b))
    assert [k.key_id for k in first] == [k.key_id for k in again]
    # Block 0 of a run from a fresh secret names its keys anew.
    assert not {k.key_id for k in first} & {k.key_id for k in fresh}
    assert first[1].key_id == qkd_key_id("ab", 0, 1, session_name(a)) != qkd_key_id("ab", 0, 1)


def test_a_session_another_process_holds_is_refused(tmp_path: Path) -> None:
    # A second start of the same module while the first runs would restore the same state and
    # send with the same authentication pads.
    import subprocess
    import sys

    secret = tmp_path / "secret-ab.bin"
    secret.write_bytes(os.urandom(4096))
    lock = tmp_path / "secret-ab.bin.receiver.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, os, sys, time\n"
         f"fd = os.open({str(lock)!r}, os.O_RDWR | os.O_CREAT, 0o600)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\n"
         "os.write(fd, str(os.getpid()).encode())\n"
         "print('locked', flush=True)\n"
         "sys.stdin.read()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError) as info:
            claim_secrets([_end(secret, "receiver")])
        text = str(info.value)
        assert f"in use by another process (pid {holder.pid}" in text
        assert not (tmp_path / "secret-ab.bin.receiver.used").exists()
    finally:
        holder.communicate("", timeout=60)
    assert claim_secrets([_end(secret, "receiver")])  # free once the other process ended


def test_a_save_removes_a_temp_file_left_by_a_killed_save(tmp_path: Path) -> None:
    from qkdnode.node.module.session_state import StateFile

    state = StateFile(tmp_path / "secret.bin.receiver.state", "links[0].auth_secret_file")
    stale = tmp_path / ".secret.bin.receiver.state.99999.tmp"
    stale.write_bytes(b"pads of a save killed mid-way")
    state.save(b"{}")
    assert not stale.exists()
    assert (tmp_path / "secret.bin.receiver.state").read_bytes() == b"{}"
    assert stat.S_IMODE((tmp_path / "secret.bin.receiver.state").stat().st_mode) == 0o600


def test_a_state_of_a_replaced_secret_says_which_files_to_remove(tmp_path: Path) -> None:
    from qkdnode.node.module.session_state import StateFile
    from qkdnode.node.protocol.qdist import QdistBob, QdistParams

    params = QdistParams((0.5, 0.1, 2e-4), (0.2, 0.5, 0.3))
    old, new = os.urandom(4096), os.urandom(4096)
    path = tmp_path / "secret.bin.receiver.state"
    state = StateFile(path, "links[0].auth_secret_file")
    QdistBob(params, old).persist_to(state.save)
    with pytest.raises(ConfigError) as info:
        state.restore(QdistBob(params, new))
    text = str(info.value)
    assert "belongs to another pre-shared secret" in text
    assert "secret.bin.receiver.used" in text
