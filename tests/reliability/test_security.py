"""Security: the systemd unit's exposure score, the refusal to run as root, the modes of what the
daemon writes (its documented umask), and no input path escaping the configured folders."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from daemon_helpers import REPO, run_cli, write_config
from workload import drop, synthetic

pytestmark = [pytest.mark.reliability, pytest.mark.slow]
ANALYZE = shutil.which("systemd-analyze")


def exposure_score(unit: Path) -> float:
    """``systemd-analyze security --offline=yes UNIT``'s overall exposure (0 safest … 10)."""
    p = subprocess.run([ANALYZE, "security", "--offline=yes", str(unit)], capture_output=True, text=True, timeout=120)
    m = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", p.stdout)
    if m is None:
        if "--offline" in p.stderr or "offline" in p.stderr.lower():
            pytest.skip(f"this systemd-analyze has no --offline security review: {p.stderr.strip()[:200]}")
        raise AssertionError(p.stdout + p.stderr)
    return float(m.group(1))


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed (apt-get install systemd)")
@pytest.mark.parametrize("unit", ["sourcesep.service", "sourcesep@.service"])
def test_systemd_unit_exposure_at_most_2_5(tmp_path, unit, figures):
    exe = shutil.which("sourcesep-daemon") or str(Path(sys.executable).with_name("sourcesep-daemon"))
    text = (REPO / "systemd" / unit).read_text().replace("/opt/sourcesep/.venv/bin/sourcesep-daemon", exe)
    dst = tmp_path / unit.replace("@.", "@lab1.")
    dst.write_text(text)
    score = exposure_score(dst)
    version = subprocess.run([ANALYZE, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    figures("systemd exposure", unit=unit, score=score, systemd=version)
    assert score <= 2.5


def test_refuses_root_unless_told(tmp_path, figures):
    cfg = write_config(tmp_path, allow_root=False)
    if os.geteuid() != 0:
        pytest.skip("not running as root: nothing to refuse")
    p = run_cli("once", "--config", str(cfg), timeout=120)
    assert p.returncode == 2 and "refusing to run as root" in p.stdout
    assert not (tmp_path / "work" / "state.db").exists()  # refused before touching anything
    p = run_cli("once", "--config", str(cfg), "--allow-root", timeout=120)
    assert p.returncode == 0, p.stdout[-2000:]
    figures("root refusal", refused_exit=2, allowed_exit=0)


def _modes(root: Path) -> dict[str, int]:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            p = Path(dirpath) / n
            out[str(p.relative_to(root))] = os.lstat(p).st_mode
    return out


@pytest.mark.parametrize("umask", ["0027", "0077"])
def test_output_modes_follow_the_documented_umask(tmp_path, umask):
    mask = int(umask, 8)
    cfg = write_config(tmp_path, umask=umask, params={"save_visualizations": True, "opt_steps": 2}, report_time="07:00")
    box = tmp_path / "inbox"
    audio = synthetic(1, seconds=2.0)[0]
    drop(box, "good", audio, with_gt=True)
    drop(box, "folder job", audio, folder=True)
    (box / "bad.query.wav").write_bytes(audio.query)
    (box / "bad.mix.wav").write_bytes(b"junk" * 50)
    os.chmod(box / "good.mix.wav", 0o644)  # inputs keep the mode they were dropped with
    os.chmod(box / "good.query.wav", 0o600)
    p = run_cli("once", "--config", str(cfg), timeout=240)
    assert p.returncode == 0, p.stdout[-2000:]
    assert run_cli("report", "--config", str(cfg), timeout=60).returncode == 0
    want_file, want_dir = 0o666 & ~mask, 0o777 & ~mask
    wrong = []
    for top in ("outbox", "failed", "work"):
        for rel, mode in _modes(tmp_path / top).items():
            if "/inputs/" in f"/{rel}/" and not rel.endswith("/inputs"):
                continue  # the user's files, moved as they were
            want = want_dir if stat.S_ISDIR(mode) else want_file
            if stat.S_IMODE(mode) != want:
                wrong.append(f"{top}/{rel}: {stat.S_IMODE(mode):04o}, want {want:04o}")
    assert not wrong, wrong
    assert stat.S_IMODE(os.stat(tmp_path / "outbox" / "good" / "inputs" / "good.mix.wav").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(tmp_path / "outbox" / "good" / "inputs" / "good.query.wav").st_mode) == 0o600
    assert list((tmp_path / "outbox" / "_reports").glob("*.html"))


def _tree(root: Path) -> dict[str, tuple]:
    """Everything under ``root`` (not following links): kind, mode, size, mtime, content hash."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            p = Path(dirpath) / n
            st = os.lstat(p)
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else os.readlink(p) if stat.S_ISLNK(st.st_mode) else None
            out[str(p.relative_to(root))] = (stat.S_IFMT(st.st_mode), st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino, digest)
    return out


def test_no_input_path_escapes_the_configured_folders(tmp_path, figures):
    base = tmp_path / "site"
    base.mkdir()
    cfg = write_config(base, settle_s=0.3, orphan_timeout_s=3, params={"save_visualizations": False, "opt_steps": 2})
    box = base / "inbox"
    audio = synthetic(1, seconds=2.0)[0]
    # Things a hostile or careless user might point at: files and a folder outside the inbox.
    canary = tmp_path / "canary"
    (canary / "sub").mkdir(parents=True)
    (canary / "secret.wav").write_bytes(audio.mix)
    (canary / "secret.yaml").write_text("opt_steps: 3\n")
    (canary / "sub" / "mix.wav").write_bytes(audio.mix)
    (canary / "sub" / "query.wav").write_bytes(audio.query)
    (canary / "segments.txt").write_text("0 1\n")
    before = _tree(canary)
    expect_failed, expect_done = {}, {}

    # 1. Links: a flat file, a sidecar, a whole job folder, a link inside a job folder.
    os.symlink(canary / "secret.wav", box / "link-mix.mix.wav")
    (box / "link-mix.query.wav").write_bytes(audio.query)
    expect_failed["link-mix"] = "symbolic link"
    drop(box, "link-sidecar", audio)
    os.symlink(canary / "secret.yaml", box / "link-sidecar.yaml")
    expect_failed["link-sidecar"] = "symbolic link"
    os.symlink(canary / "sub", box / "link-folder")
    expect_failed["link-folder"] = "symbolic link"
    drop(box, "inner-link", audio, folder=True)
    os.symlink(canary, box / "inner-link" / "escape")
    expect_failed["inner-link"] = "symbolic link"
    # 2. A sidecar's segments file outside the job folder (relative and absolute).
    drop(box, "seg-relative", audio, folder=True, sidecar="detector: oracle\nsegments: ../../../canary/segments.txt\n")
    expect_failed["seg-relative"] = "inside the job folder"
    drop(box, "seg-absolute", audio, folder=True, sidecar=f"detector: oracle\nsegments: {canary / 'segments.txt'}\n")
    expect_failed["seg-absolute"] = "inside the job folder"
    # 3. Names made of dots: they name folders inside outbox/, never above it.
    for name, folder in (("..", "__"), ("..up", "__up"), ("a..b", "a..b")):
        drop(box, name, audio)
        expect_done[name] = folder
    # 4. A FIFO named like audio: never opened (reading it would block the daemon).
    os.mkfifo(box / "pipe.mix.wav")
    (box / "pipe.query.wav").write_bytes(audio.query)
    expect_failed["pipe"] = "not a regular file"
    # 5. A name that is not valid UTF-8 (latin-1 bytes from an old tool).
    raw = os.fsencode(box) + b"/caf\xe9 \xff"
    for role, data in (("query", audio.query), ("mix", audio.mix)):
        with open(raw + f".{role}.wav".encode(), "wb") as f:
            f.write(data)
    top_before = sorted(os.listdir(tmp_path))

    p = run_cli("once", "--config", str(cfg), timeout=240)
    assert p.returncode == 0, p.stdout[-3000:]

    assert _tree(canary) == before, "something outside the configured folders changed"
    assert sorted(os.listdir(tmp_path)) == top_before
    assert sorted(os.listdir(base)) == ["daemon.yaml", "failed", "inbox", "outbox", "work"]
    assert os.listdir(box) == []
    canary_inodes = {v[4] for v in before.values()}
    for top in ("outbox", "failed"):
        for dirpath, dirs, files in os.walk(base / top):
            for n in dirs + files:
                st = os.lstat(Path(dirpath) / n)
                assert st.st_ino not in canary_inodes or not stat.S_ISREG(st.st_mode), f"{dirpath}/{n} is a canary file"
    for name, word in expect_failed.items():
        err = json.loads((base / "failed" / name / "error.json").read_text())
        assert word in err["message"], (name, err["message"])
    for name, folder in expect_done.items():
        ev = json.loads((base / "outbox" / folder / "event.json").read_text())
        assert ev["job"]["name"] == name
    # Not valid UTF-8: refused with a reason (audio libraries cannot open such a path), kept as dropped.
    odd = [n for n in os.listdir(os.fsencode(base / "failed")) if n.startswith(b"caf")]
    assert odd == [b"caf\xe9 \xff"], odd
    err = json.loads((base / "failed" / os.fsdecode(odd[0]) / "error.json").read_text())
    assert err["job"]["name"] == "caf\\xe9 \\xff"  # shown with escapes, stored as dropped
    assert "caf\\xe9 \\xff.mix.wav: the file name is not valid UTF-8" in err["message"], err["message"]
    assert sorted(os.listdir(os.fsencode(base / "failed" / os.fsdecode(odd[0]) / "inputs"))) == [
        b"caf\xe9 \xff.mix.wav", b"caf\xe9 \xff.query.wav"]
    assert (base / "failed" / "inner-link" / "inputs" / "escape").is_symlink()
    figures("path escapes", cases=len(expect_failed) + len(expect_done) + 1, escaped=0)
