"""The qkdnode command: version, help, config sub-commands, exit statuses, log formats."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from qkdnode import __version__
from qkdnode.node.cli import EXIT_USAGE, main
from qkdnode.node.logs import JsonFormatter, setup_logging

EXAMPLE = Path(__file__).parents[2] / "examples" / "lab.toml"


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"qkdnode {__version__}"


def test_help_lists_only_working_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "config" in out


def test_config_check_valid(capsys):
    assert main(["config", "check", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "valid configuration of node 'alice'" in out
    assert "tagger: time_tagger" in out


def test_config_check_quiet(capsys):
    assert main(["config", "check", "-q", str(EXAMPLE)]) == 0
    assert capsys.readouterr().out == ""


def test_config_check_invalid_exits_2_with_one_message(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text(EXAMPLE.read_text().replace("qber_abort = 0.11", "qber_abort = 0.5"))
    assert main(["config", "check", str(bad)]) == EXIT_USAGE == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert f"{bad}:" in err[0]
    assert "links[0].distillation.qber_abort" in err[0]


def test_config_check_missing_file(tmp_path, capsys):
    assert main(["config", "check", str(tmp_path / "nope.toml")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_config_show_is_json_with_defaults(capsys):
    assert main(["config", "show", str(EXAMPLE)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["node"]["name"] == "alice"
    assert shown["instruments"][0]["timeout_s"] == 2.0


def test_config_schema_lists_keys(capsys):
    assert main(["config", "schema"]) == 0
    out = capsys.readouterr().out
    assert "[[instruments]]" in out
    assert "qber_abort: a number, default 0.11." in out


def test_unknown_command_is_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["fly"])
    assert info.value.code == 2


def test_console_script_runs_from_any_directory(tmp_path):
    exe = Path(sys.executable).with_name("qkdnode")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "qkdnode"]
    done = subprocess.run([*cmd, "config", "check", str(EXAMPLE)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[node\n")
    done = subprocess.run([*cmd, "config", "check", str(bad)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "bad.toml:1: TOML syntax error" in done.stderr


def test_installed_package_has_no_generic_top_level_names(tmp_path):
    probe = ("import importlib.util as u, qkdnode.dsp, qkdnode.drivers, qkdnode.node, "
             "qkdnode.bindings; print([n for n in ('dsp', 'drivers', 'node', 'bindings') "
             "if u.find_spec(n)])")
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_json_log_lines(capsys):
    setup_logging("DEBUG", "json")
    logging.getLogger("qkdnode.test").info("block %d done", 7, extra={"link": "ab"})
    entry = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert entry["message"] == "block 7 done"
    assert entry["level"] == "INFO"
    assert entry["logger"] == "qkdnode.test"
    assert entry["link"] == "ab"
    assert entry["time"].endswith("+00:00")


def test_text_log_lines(capsys):
    setup_logging("WARNING", "text")
    log = logging.getLogger("qkdnode.test")
    log.info("hidden")
    log.warning("shown")
    err = capsys.readouterr().err
    assert "hidden" not in err
    assert "WARNING qkdnode.test: shown" in err


def test_log_format_option_reaches_setup(capsys):
    assert main(["--log-format", "json", "config", "check", "-q", str(EXAMPLE)]) == 0
    assert isinstance(logging.getLogger().handlers[0].formatter, JsonFormatter)


def test_bad_log_format_rejected():
    with pytest.raises(ValueError, match="log format"):
        setup_logging("INFO", "xml")


def _lab_with(tmp_path, old: str, new: str) -> Path:
    text = EXAMPLE.read_text()
    assert old in text
    path = tmp_path / "lab.toml"
    path.write_text(text.replace(old, new))
    return path


def test_config_check_warns_about_drivers_not_installed(tmp_path, capsys):
    lab = _lab_with(tmp_path, 'driver = "qutools.qutag"', 'driver = "acme.tagger9000"')
    assert main(["config", "check", "-q", str(lab)]) == 0
    err = capsys.readouterr().err
    assert "warning: instrument 'tagger': driver 'acme.tagger9000' is not available" in err
    assert "idq.id120" in err  # the available drivers are listed


def test_config_check_refuses_a_driver_in_the_wrong_role(tmp_path, capsys):
    lab = _lab_with(tmp_path, 'role = "power_meter"', 'role = "detector"')
    assert main(["config", "check", str(lab)]) == 2
    err = capsys.readouterr().err
    assert "instruments[5].role" in err
    assert "does not implement role 'detector'" in err


def test_config_check_refuses_an_unknown_driver_setting(tmp_path, capsys):
    lab = _lab_with(tmp_path, "threshold_v = 0.1", "threshold_mv = 100")
    assert main(["config", "check", str(lab)]) == 2
    err = capsys.readouterr().err
    line = next(i for i, text in enumerate(lab.read_text().splitlines(), 1)
                if text.startswith("threshold_mv"))
    assert f"{lab}:{line}: instruments[1].settings.threshold_mv: unknown setting" in err
    assert "threshold_v" in err


def test_config_check_needs_a_resource_for_a_message_instrument(tmp_path, capsys):
    lab = _lab_with(tmp_path, 'resource = "visa://GPIB0::12::INSTR"\n', "")
    assert main(["config", "check", str(lab)]) == 2
    assert "give its resource" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "message"), [
    (["demo", "--duration", "abc"], "--duration: must be a number, got 'abc'"),
    (["demo", "--duration", "0"], "--duration: must be > 0 and finite, got 0"),
    (["keyrate", "--distance-km", "50", "--pulse-rate-hz", "inf"],
     "--pulse-rate-hz: must be > 0 and finite, got inf"),
    (["run", "--config", "x.toml", "--status-interval", "-3"],
     "--status-interval: must be > 0 and finite, got -3"),
])
def test_positive_number_options_name_the_bad_value(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == EXIT_USAGE
    assert message in capsys.readouterr().err


def test_a_protocol_error_ends_with_a_message_not_a_traceback(capsys, monkeypatch):
    from qkdnode.node import cli
    from qkdnode.node.errors import LocalProtocolError

    def failing(args):
        raise LocalProtocolError("Qdist: cannot send X: authentication key exhausted (...)")

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    args = parser.parse_args(["config", "schema"])
    args.handler = failing  # the command fails with a protocol error
    monkeypatch.setattr(parser, "parse_args", lambda argv=None: args)
    assert cli.main(["config", "schema"]) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert err.startswith("qkdnode: LocalProtocolError: Qdist: cannot send X")
    assert "Traceback" not in err
