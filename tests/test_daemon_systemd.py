"""The systemd units: `systemd-analyze verify` and the hardening score (skipped without systemd)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ANALYZE = shutil.which("systemd-analyze")
pytestmark = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed (apt-get install systemd)")
# systemd < 254 does not know the exponential restart backoff keys and says so; nothing else may show.
TOLERATED = re.compile(r"Unknown key '(RestartSteps|RestartMaxDelaySec)'")


def _units(tmp_path: Path) -> list[Path]:
    """The units with ExecStart pointed at this checkout's script (verify checks it exists)."""
    exe = shutil.which("sourcesep-daemon") or str(Path(sys.executable).with_name("sourcesep-daemon"))
    if not Path(exe).exists():
        pytest.skip("sourcesep-daemon is not installed (pip install -e .)")
    out = []
    for src, name in (("sourcesep.service", "sourcesep.service"), ("sourcesep@.service", "sourcesep@lab1.service")):
        text = (REPO / "systemd" / src).read_text()
        assert "/opt/sourcesep/.venv/bin/sourcesep-daemon" in text
        dst = tmp_path / name
        dst.write_text(text.replace("/opt/sourcesep/.venv/bin/sourcesep-daemon", exe))
        out.append(dst)
    return out


def test_units_verify(tmp_path):
    units = _units(tmp_path)
    p = subprocess.run([ANALYZE, "verify", *map(str, units)], capture_output=True, text=True, timeout=120)
    problems = [l for l in (p.stdout + p.stderr).splitlines() if l.strip() and not TOLERATED.search(l)]
    assert p.returncode == 0 and not problems, p.stdout + p.stderr


def test_units_are_hardened(tmp_path):
    for unit in _units(tmp_path):
        p = subprocess.run([ANALYZE, "security", "--offline=yes", str(unit)], capture_output=True, text=True, timeout=120)
        if "--offline" in p.stderr and p.returncode != 0:
            pytest.skip("this systemd-analyze has no --offline security review")
        m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", p.stdout)
        assert m, p.stdout + p.stderr
        assert float(m.group(1)) <= 2.5, p.stdout
    text = (REPO / "systemd" / "sourcesep.service").read_text()
    for key in ("Type=notify", "WatchdogSec=", "User=sourcesep", "NoNewPrivileges=yes", "ProtectSystem=strict",
                "ReadWritePaths=", "PrivateTmp=yes", "ProtectHome=yes", "Restart=on-failure", "UMask=0027"):
        assert key in text
