"""Node configuration: a good file loads; each kind of bad file gets its one clear error."""

from __future__ import annotations

import dataclasses
import pickle
import re
from pathlib import Path

import pytest

from qkdnode.node.config import ConfigError, load_config, parse_config
from qkdnode.node.config.describe import schema_keys, to_plain

EXAMPLE = Path(__file__).parents[2] / "examples" / "lab.toml"

MINIMAL = """\
[node]
name = "alice"

[[instruments]]
name = "tagger"
role = "time_tagger"
driver = "qutools.qutag"
resource = "sim://bench/tagger"

[[links]]
name = "ab"
peer = "bob"
role = "transmitter"
instruments = ["tagger"]

[links.distillation]
qber_abort = 0.08

[[peers]]
name = "bob"
kx_address = "127.0.0.1:9443"
"""


def error_of(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "node.toml")
    return info.value


def test_example_template_is_valid_and_documents_every_key():
    config = load_config(EXAMPLE)
    assert config.node.name == "alice"
    assert {i.role for i in config.instruments} >= {"time_tagger", "detector", "transmitter"}
    assert config.links[0].distillation.kappa == 1e-15
    # Relative paths are taken relative to the file, whatever the working directory.
    assert config.key_manager.store_path == EXAMPLE.parent / "keys.sqlite"
    text = EXAMPLE.read_text()
    for key in schema_keys():
        leaf = key.rsplit(".", 1)[-1]
        # A key may be shown commented out (eps_sec and kappa exclude each other).
        pattern = rf"^\s*#?\s*({leaf}\s*=|\[[\w.]*\b{leaf}\])"
        assert re.search(pattern, text, re.M), f"template lacks {key}"


def test_minimal_file_gets_defaults():
    config = parse_config(MINIMAL)
    link = config.links[0]
    assert link.distillation.qber_abort == 0.08
    assert link.distillation.block_timeout_s == 60.0
    assert link.distillation.effective_eps_sec == 1e-10
    assert link.decoy.mu1 > link.decoy.mu2 > link.decoy.mu3
    assert config.key_manager.tls is None
    assert config.node.kme_id is None


def test_config_is_frozen():
    config = parse_config(MINIMAL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.node.name = "mallory"  # type: ignore[misc]


def test_syntax_error_names_file_and_line():
    err = error_of(MINIMAL.replace('name = "ab"', 'name = "ab'))
    assert err.file == "node.toml"
    assert err.line == 11
    assert err.key is None
    assert "syntax" in str(err)
    assert str(err).startswith("node.toml:11:")


def test_unknown_key_names_key_and_line():
    err = error_of(MINIMAL.replace("qber_abort = 0.08", "qber_abrot = 0.08"))
    assert err.key == "links[0].distillation.qber_abrot"
    assert err.line == 17
    assert "unknown key" in err.reason
    assert "qber_abort" in err.reason


def test_removed_key_names_its_replacement():
    err = error_of(MINIMAL.replace("qber_abort = 0.08", "block_bits = 1_000_000"))
    assert err.key == "links[0].distillation.block_bits"
    assert err.line == 17
    assert "block_slots" in err.reason
    assert "unknown key" not in err.reason


def test_block_timeout_is_checked_and_reaches_the_protocol():
    from qkdnode.node.module.launch import _params

    config = parse_config(MINIMAL.replace("qber_abort = 0.08",
                                          "qber_abort = 0.08\nblock_timeout_s = 7.5"))
    link = config.links[0]
    assert link.distillation.block_timeout_s == 7.5
    params = _params(link)
    assert params.block_timeout_s == 7.5
    # Each end's own policy: the ends still agree on the parameters they must share.
    assert params.digest() == _params(parse_config(MINIMAL).links[0]).digest()
    for bad in ("0", "0.5", "1e6", "-3"):
        err = error_of(MINIMAL.replace("qber_abort = 0.08", f"block_timeout_s = {bad}"))
        assert err.key == "links[0].distillation.block_timeout_s"
        assert err.line == 17


def test_wrong_type():
    err = error_of(MINIMAL.replace("qber_abort = 0.08", 'qber_abort = "low"'))
    assert err.key == "links[0].distillation.qber_abort"
    assert err.line == 17
    assert "must be a number" in err.reason


def test_boolean_is_not_a_number():
    err = error_of(MINIMAL.replace("qber_abort = 0.08", "qber_abort = true"))
    assert "must be a number" in err.reason


def test_value_out_of_range():
    err = error_of(MINIMAL.replace("qber_abort = 0.08", "qber_abort = 0.3"))
    assert err.key == "links[0].distillation.qber_abort"
    assert err.line == 17
    assert "(0, 0.11]" in err.reason


def test_missing_required_key_points_at_its_table():
    err = error_of(MINIMAL.replace('kx_address = "127.0.0.1:9443"\n', ""))
    assert err.key == "peers[0].kx_address"
    assert err.line == 19  # the [[peers]] header
    assert "missing required key" in err.reason


def test_missing_required_section():
    err = error_of(MINIMAL.replace('[node]\nname = "alice"\n', ""))
    assert err.key == "node"
    assert "missing required key" in err.reason


def test_bad_resource_url():
    err = error_of(MINIMAL.replace("sim://bench/tagger", "serial:///dev/ttyUSB0?baud=9600"))
    assert err.key == "instruments[0].resource"
    assert err.line == 8
    assert "unknown parameter 'baud'" in err.reason


def test_unknown_role_lists_the_roles():
    err = error_of(MINIMAL.replace('role = "time_tagger"', 'role = "tagger"'))
    assert err.key == "instruments[0].role"
    assert "time_tagger" in err.reason


def test_cross_reference_to_unknown_instrument():
    err = error_of(MINIMAL.replace('instruments = ["tagger"]', 'instruments = ["tagger", "x"]'))
    assert err.key == "links[0].instruments[1]"
    assert err.line == 14
    assert "unknown instrument 'x'" in err.reason


def test_cross_reference_to_unknown_peer():
    err = error_of(MINIMAL.replace('peer = "bob"', 'peer = "carol"'))
    assert err.key == "links[0].peer"
    assert "unknown peer 'carol'" in err.reason


def test_duplicate_names():
    text = MINIMAL + '\n[[peers]]\nname = "bob"\nkx_address = "127.0.0.1:9444"\n'
    err = error_of(text)
    assert err.key == "peers[1].name"
    assert err.line == 24
    assert "duplicate" in err.reason


def test_decoy_ordering_rule():
    text = MINIMAL + "\n[links.decoy]\nmu1 = 0.1\nmu2 = 0.2\n"
    err = error_of(text)
    assert err.key == "links[0].decoy.mu1"
    assert "mu2 + mu3" in err.reason


def test_eps_sec_and_kappa_are_exclusive():
    text = MINIMAL.replace("qber_abort = 0.08", "eps_sec = 1e-9\nkappa = 1e-15")
    err = error_of(text)
    assert err.key == "links[0].distillation.kappa"


def test_dotted_keys_are_located():
    text = MINIMAL.replace("[links.distillation]\nqber_abort = 0.08\n",
                           "distillation.qber_abort = 0.9\n")
    err = error_of(text)
    assert err.key == "links[0].distillation.qber_abort"
    assert err.line == 16


def test_bad_host_port():
    err = error_of(MINIMAL.replace("127.0.0.1:9443", "localhost"))
    assert err.key == "peers[0].kx_address"
    assert "HOST:PORT" in err.reason


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file") as info:
        load_config(tmp_path / "absent.toml")
    assert info.value.file.endswith("absent.toml")


def test_not_utf8(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_bytes(b'[node]\nname = "\xff"\n')
    with pytest.raises(ConfigError, match="UTF-8"):
        load_config(path)


def test_config_error_pickles():
    err = error_of(MINIMAL.replace("qber_abort = 0.08", "qber_abort = 0.3"))
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.file, copy.key, copy.line, copy.reason) == (err.file, err.key, err.line,
                                                             err.reason)
    assert str(copy) == str(err)


def test_to_plain_round_trips_through_toml_types():
    plain = to_plain(parse_config(MINIMAL))
    assert plain["links"][0]["distillation"]["qber_abort"] == 0.08
    assert isinstance(plain["key_manager"]["store_path"], str)


@dataclasses.dataclass(frozen=True)
class Inner:
    low: float = 0.0
    high: float = 1.0

    def __post_init__(self) -> None:
        if self.low >= self.high:
            raise ValueError("Inner: low must be below high")


@dataclasses.dataclass(frozen=True)
class Outer:
    inner: Inner


def test_constructor_rules_of_a_section_are_reported_at_its_key():
    from qkdnode.node.config.loader import load_toml

    with pytest.raises(ConfigError) as info:
        load_toml(Outer, "[inner]\nlow = 2.0\nhigh = 1.0\n", "x.toml")
    assert info.value.key == "inner"
    assert info.value.line == 1
    assert "low must be below high" in info.value.reason


def test_simulated_bench_parameters_load_through_the_config_loader():
    from qkdnode.drivers.sim.params import BenchParams
    from qkdnode.node.config.loader import load_toml

    params = load_toml(BenchParams, "", "bench.toml")
    assert params == BenchParams()


def test_start_quantile_reaches_qdist_and_defaults_to_reconciliations():
    from qkdnode.dsp.reconcile.history import START_QUANTILE
    from qkdnode.node.config.schema import DEFAULT_START_QUANTILE
    from qkdnode.node.module.launch import _params

    assert DEFAULT_START_QUANTILE == START_QUANTILE
    link = load_config(EXAMPLE).links[0]
    assert link.distillation.start_quantile == START_QUANTILE
    eager = dataclasses.replace(link, distillation=dataclasses.replace(
        link.distillation, start_quantile=0.6))
    assert _params(eager).start_quantile == 0.6
