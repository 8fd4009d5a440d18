"""A replay's result never shows key bits in its repr (they are key material)."""

from __future__ import annotations

import numpy as np

from qkdnode.node.module.replay import Replay


def test_replay_repr_leaves_out_the_keys() -> None:
    key = np.array([1, 0, 1, 1, 0, 0, 1, 0] * 4, dtype=np.uint8)
    replay = Replay("ab", [], {"alice": {3: key}, "bob": {3: key.copy()}},
                    {"alice": True, "bob": True}, reads=5, detections=7, late_detections=0)
    text = repr(replay)
    assert "keys" not in text
    assert "1, 0, 1, 1" not in text
    assert "array" not in text
    assert "detections=7" in text
    assert replay.keys["alice"][3] is key  # still there for the caller
