"""Inbox discovery, pairing, settling, claiming and adoption, on real folders and processes."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import time
from pathlib import Path

import pytest

from daemon import inbox
from daemon_helpers import drop_flat, drop_folder, pair_audio
from sourcesep import InputError
from sourcesep.audio import probe


@pytest.fixture
def dirs(tmp_path):
    for d in ("inbox", "work"):
        (tmp_path / d).mkdir()
    return tmp_path / "inbox", tmp_path / "work"


def _assess(cand, box, stable_s, settle_s=0.3, orphan=3600.0, now=None):
    return inbox.assess(
        cand, box, stable_s=stable_s, settle_s=settle_s, orphan_timeout_s=orphan,
        now_wall=time.time() if now is None else now, probe=probe, input_error=InputError,
    )


def test_scan_pairs_flat_files_folders_and_strays(dirs):
    box, _ = dirs
    weird = "a b ü $(rm -rf) ;'\"&.."
    drop_flat(box, weird, sidecar="opt_steps: 3\n", gt=True)
    drop_folder(box, "folder job", params="opt_steps: 4\n")
    (box / "lonely.mix.wav").write_bytes(pair_audio()[0])
    (box / "notes.txt").write_text("hello")
    (box / ".hidden-scratch").write_text("x")
    (box / "copying.mix.wav.part").write_text("x")
    (box / ".Trash").mkdir()
    c = inbox.scan(box)
    assert set(c) == {("flat", weird), ("folder", "folder job"), ("flat", "lonely"), ("stray", "notes.txt")}
    flat = c[("flat", weird)]
    assert flat.complete and not flat.problems
    assert flat.order == [f"{weird}.mix.wav", f"{weird}.query.wav", f"{weird}.gt.wav", f"{weird}.yaml"]
    folder = c[("folder", "folder job")]
    assert folder.complete and folder.roles["params"] == ["folder job/params.yaml"]
    assert not c[("flat", "lonely")].complete


def test_symlinks_and_ambiguous_roles_are_problems(dirs, tmp_path):
    box, _ = dirs
    secret = tmp_path / "secret.wav"
    secret.write_bytes(pair_audio()[0])
    os.symlink(secret, box / "evil.mix.wav")
    (box / "evil.query.wav").write_bytes(pair_audio()[1])
    os.symlink(tmp_path, box / "dirlink")
    drop_flat(box, "twice")
    (box / "twice.mix.flac").write_bytes(b"x")
    c = inbox.scan(box)
    assert any("symbolic link" in p for p in c[("flat", "evil")].problems)
    assert any("symbolic link" in p for p in c[("stray", "dirlink")].problems)
    assert any("ambiguous mix" in p for p in c[("flat", "twice")].problems)
    # Problems fail the job once settled, without reading the link's target.
    v = _assess(c[("flat", "evil")], box, stable_s=1.0)
    assert v.status == "bad" and "evil.mix.wav" in v.reason


def test_settle_waits_for_unchanged_files_and_parseable_headers(dirs):
    box, _ = dirs
    mix, query, _ = pair_audio()
    (box / "j.query.wav").write_bytes(query)
    (box / "j.mix.wav").write_bytes(mix[:20])  # a header still arriving
    settler = inbox.Settler()
    c = inbox.scan(box)
    settler.observe(c, now=100.0)
    assert _assess(c[("flat", "j")], box, settler.stable_for(("flat", "j"), 100.0)).status == "pending"
    # Unchanged for settle_s, but the header does not parse: still pending (maybe still copying)...
    assert _assess(c[("flat", "j")], box, 0.5).status == "pending"
    # ...and bad once unchanged for 3 x settle_s.
    v = _assess(c[("flat", "j")], box, 1.0)
    assert v.status == "bad" and "j.mix.wav" in v.reason
    # The rest of the file arrives: the signature changes and the clock restarts.
    (box / "j.mix.wav").write_bytes(mix)
    c = inbox.scan(box)
    settler.observe(c, now=101.0)
    assert settler.stable_for(("flat", "j"), 101.1) == pytest.approx(0.1)
    assert _assess(c[("flat", "j")], box, settler.stable_for(("flat", "j"), 101.4)).status == "ready"


def test_orphans_fail_after_the_timeout_from_their_arrival(dirs):
    box, _ = dirs
    (box / "solo.mix.wav").write_bytes(pair_audio()[0])
    old = time.time() - 86400
    os.utime(box / "solo.mix.wav", (old, old))  # copied with its old mtime: still just arrived
    cand = inbox.scan(box)[("flat", "solo")]
    assert _assess(cand, box, 1.0, orphan=60).status == "waiting"
    v = _assess(cand, box, 1.0, orphan=60, now=time.time() + 61)
    assert v.status == "bad" and "solo.query.EXT" in v.reason


def test_claim_moves_everything_and_records_the_manifest(dirs):
    box, work = dirs
    drop_flat(box, "x y", sidecar="opt_steps: 2\n")
    cand = inbox.scan(box)[("flat", "x y")]
    c = inbox.claim(cand, box, work, "host:1")
    assert c is not None and not list(box.iterdir())
    assert sorted(os.listdir(c.inputs)) == ["x y.mix.wav", "x y.query.wav", "x y.yaml"]
    files = c.files()
    assert files["mix"][0].name == "x y.mix.wav" and files["params"][0].name == "x y.yaml"
    manifest = json.loads((c.dir / "claim.json").read_text())
    assert manifest["name"] == "x y" and manifest["sources"][0] == "x y.mix.wav"
    # The lock is held: nobody else can adopt it.
    assert inbox.adopt(c.dir, box, "other:2") is None
    c.discard()
    assert not c.dir.exists()


def _claim_all(box: Path, work: Path, out: Path) -> None:
    won = []
    for cand in sorted(inbox.scan(box).values(), key=lambda c: c.name):
        c = inbox.claim(cand, box, work, f"proc:{os.getpid()}")
        if c is not None:
            won.append(c.name)
            c.release()
    out.write_text(json.dumps(won))


def test_two_processes_racing_claim_each_job_once(dirs, tmp_path):
    box, work = dirs
    mix, query, _ = pair_audio(1.0)
    names = [f"job{i:02d}" for i in range(30)]
    for n in names:
        (box / f"{n}.query.wav").write_bytes(query)
        (box / f"{n}.mix.wav").write_bytes(mix)
    pids = []
    for k in range(2):
        pid = os.fork()
        if pid == 0:
            try:
                _claim_all(box, work, tmp_path / f"won{k}.json")
            finally:
                os._exit(0)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)
    won = [json.loads((tmp_path / f"won{k}.json").read_text()) for k in range(2)]
    assert sorted(won[0] + won[1]) == names  # every job once, none twice
    assert not [p for p in work.iterdir() if p.name.startswith(inbox.STAGE_PREFIX)]
    for d in inbox.job_dirs(work):  # every work folder holds its complete pair
        assert len(os.listdir(d / "inputs")) == 2


def test_adopt_only_after_the_owner_dies_and_finishes_a_cut_claim(dirs):
    box, work = dirs
    drop_flat(box, "a")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        c = inbox.claim(inbox.scan(box)[("flat", "a")], box, work, "child:1")
        # Simulate a crash between the mix and the query renames: put the query back.
        os.rename(c.inputs / "a.query.wav", box / "a.query.wav")
        os.write(w, str(c.dir).encode())
        os.close(w)
        time.sleep(60)
        os._exit(0)
    os.close(w)
    job_dir = Path(os.read(r, 4096).decode())
    os.close(r)
    assert inbox.adopt(job_dir, box, "me:2") is None  # owner alive
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    c = inbox.adopt(job_dir, box, "me:2")
    assert c is not None and c.name == "a"
    assert sorted(os.listdir(c.inputs)) == ["a.mix.wav", "a.query.wav"] and not list(box.iterdir())
    assert (job_dir / ".lock").read_text().strip() == "me:2"
    c.discard()


def test_adopt_discards_a_claim_that_never_got_its_primary(dirs):
    box, work = dirs
    drop_flat(box, "b")
    c = inbox.claim(inbox.scan(box)[("flat", "b")], box, work, "x:1")
    for f in os.listdir(c.inputs):  # as if the daemon died before its first rename
        os.rename(c.inputs / f, box / f)
    c.release()
    assert inbox.adopt(c.dir, box, "y:2") is None
    assert not c.dir.exists() and sorted(os.listdir(box)) == ["b.mix.wav", "b.query.wav"]


def test_stale_stage_folders_are_removed(dirs):
    box, work = dirs
    stage = work / f"{inbox.STAGE_PREFIX}dead"
    stage.mkdir()
    (stage / ".lock").write_text("dead:1\n")
    held = work / f"{inbox.STAGE_PREFIX}alive"
    held.mkdir()
    fd = os.open(held / ".lock", os.O_CREAT | os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        assert inbox.remove_stale_stages(work, "me:1") == 1
        assert not stage.exists() and held.exists()
    finally:
        os.close(fd)


def test_display_keeps_undecodable_names_printable():
    raw = b"bad\xffname".decode("utf-8", "surrogateescape")
    assert inbox.display(raw) == "bad\\xffname"
    json.dumps(inbox.display(raw))


def test_discard_killed_midway_leaves_no_half_deleted_job(dirs):
    # Regression (crash chaos): SIGKILL during Claim.discard()'s rmtree left an empty or partial
    # work/<id>/: without claim.json it was never adopted nor removed (left in work/ forever);
    # without commit.json but with its inputs, a committed job would have been run again.
    import subprocess
    import sys

    box, work = dirs
    drop_flat(box, "big")
    c = inbox.claim(inbox.scan(box)[("flat", "big")], box, work, "t:1")
    for i in range(30000):  # enough files that the deletion takes a while
        (c.inputs / f"extra-{i:05d}").write_bytes(b"x")
    job_dir = c.dir
    c.release()
    code = (
        "import sys; from pathlib import Path; from daemon import inbox\n"
        "c = inbox.adopt(Path(sys.argv[1]), Path(sys.argv[2]), 't:2')\n"
        "print('adopted', flush=True); c.discard(); print('done', flush=True)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code, str(job_dir), str(box)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "adopted"

    def deleting() -> bool:
        trash = [n for n in os.listdir(work) if n.startswith(inbox.TRASH_PREFIX)]
        target = work / trash[0] / "inputs" if trash else c.inputs
        try:
            return len(os.listdir(target)) < 29000
        except FileNotFoundError:
            return False

    deadline = time.monotonic() + 30
    while not deleting() and time.monotonic() < deadline:
        time.sleep(0.002)
    p.send_signal(signal.SIGKILL)
    p.wait(10)
    assert not job_dir.exists()  # all or nothing under the job's own name
    assert inbox.job_dirs(work) == []
    assert inbox.remove_stale_stages(work, "t:3") >= 1
    assert os.listdir(work) == []


def test_names_that_are_not_utf8_are_refused_with_a_reason(dirs):
    # Regression (torture suite, security): libsndfile cannot open such a path, so a valid WAV
    # failed as "not a readable audio file ('utf-8' codec can't encode …)".
    box, _ = dirs
    mix, query, _ = pair_audio()
    for role, data in (("mix", mix), ("query", query)):
        with open(os.fsencode(box) + b"/caf\xe9." + role.encode() + b".wav", "wb") as f:
            f.write(data)
    (cand,) = inbox.scan(box).values()
    assert cand.complete and len(cand.problems) == 2
    assert all("the file name is not valid UTF-8" in p for p in cand.problems)
    v = _assess(cand, box, stable_s=1.0)
    assert v.status == "bad" and v.reason.startswith("caf\\xe9.")
