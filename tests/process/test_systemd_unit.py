import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.daemon_process import cli

UNIT = ROOT / "systemd" / "trio-broker.service"
INSTALLED = "/opt/trio-broker/bin/trio-broker"


def _service() -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    section = ""
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line.strip("[]")
        elif line and not line.startswith("#") and section == "Service":
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def test_unit_is_a_hardened_notify_service() -> None:
    service = _service()
    assert service["Type"] == ["notify"]
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert service["Restart"] == ["on-failure"]
    assert service["RestartPreventExitStatus"] == ["78"]
    for key, value in {
        "DynamicUser": "yes",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "CapabilityBoundingSet": "",
    }.items():
        assert service[key] == [value], key
    assert service["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]
    assert int(service["LimitNOFILE"][0]) >= 65536


def test_unit_commands_are_valid_cli_invocations() -> None:
    service = _service()
    for key, command in (("ExecStartPre", "check-config"), ("ExecStart", "serve")):
        argv = shlex.split(service[key][0])
        assert argv[:2] == [INSTALLED, command]
        assert argv[2:] == ["--config", "/etc/trio-broker/trio-broker.toml"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify checks that ExecStart exists, so point it at this checkout's entry point.
    unit = tmp_path / "trio-broker.service"
    unit.write_text(UNIT.read_text().replace(INSTALLED, cli()[0]))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr
