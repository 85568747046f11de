"""Atomic result folders and the SQLite ledger."""

from __future__ import annotations

import json
import os
import threading

import pytest

from daemon import outbox
from daemon.ledger import DONE, QUEUED, RETRIED, RUNNING, Ledger


@pytest.mark.parametrize(
    "name, expected",
    [("plain", "plain"), ("..", "__"), (".hidden", "_hidden"), ("_reports", "_reports_job"),
     ("a b ü $(x);&", "a b ü $(x);&"), ("", "_")],
)
def test_folder_names_never_escape_or_hide(name, expected):
    assert outbox.folder_name(name) == expected


def test_long_names_are_cut_to_fit():
    name = "ü" * 300
    out = outbox.folder_name(name)
    assert len(out.encode()) <= 200 and out == "ü" * 100


def _finished_tmp(root, job_id, text="x"):
    tmp = outbox.fresh_tmp(root, job_id)
    (tmp / "event.json").write_text(json.dumps({"job": {"id": job_id}, "outputs": {"t": "t.wav"}}))
    (tmp / "t.wav").write_text(text)
    return tmp


def test_commit_is_one_rename_with_unique_suffixes(tmp_path):
    root = tmp_path / "outbox"
    root.mkdir()
    marker_dir = tmp_path / "work"
    marker_dir.mkdir()
    (root / "job").mkdir()
    (root / "job" / "old.txt").write_text("keep me")
    (root / "job-2").write_text("a file in the way")
    dest = outbox.commit(_finished_tmp(root, "id1"), root, "job", marker_dir / "commit.json", "id1")
    assert dest.name == "job-3"
    assert (root / "job" / "old.txt").read_text() == "keep me"  # nothing overwritten
    assert not list(root.glob(".tmp-*"))
    assert outbox.committed_folder(marker_dir / "commit.json", "id1") == dest
    assert outbox.committed_folder(marker_dir / "commit.json", "other") is None
    assert outbox.missing_outputs(dest) == []


def test_committed_folder_ignores_a_marker_whose_rename_never_happened(tmp_path):
    root = tmp_path / "outbox"
    root.mkdir()
    marker = tmp_path / "commit.json"
    outbox.write_json_atomic(marker, {"job_id": "id9", "root": str(root), "dest": "job"})
    assert outbox.committed_folder(marker, "id9") is None


def test_place_inputs_links_files_and_never_follows_links(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.wav").write_bytes(b"abc")
    (src / "sub" / "b.txt").write_text("b")
    os.symlink("/etc/passwd", src / "evil.wav")
    os.mkfifo(src / "pipe")
    dst = tmp_path / "dst"
    notes = outbox.place_inputs(src, dst)
    assert os.stat(dst / "a.wav").st_ino == os.stat(src / "a.wav").st_ino  # moved, not copied
    assert (dst / "sub" / "b.txt").read_text() == "b"
    assert os.path.islink(dst / "evil.wav") and os.readlink(dst / "evil.wav") == "/etc/passwd"
    assert notes == ["pipe: not a regular file; not copied"]


def test_ledger_records_transitions(tmp_path):
    led = Ledger(tmp_path / "state.db")
    led.add("j1", name="a b", kind="flat", owner="h:1", claimed_at=1.0, dropped_at=0.5)
    led.add("j1", name="a b", kind="flat", owner="h:1")  # idempotent
    led.transition("j1", RUNNING, attempt=1, started_at=2.0)
    led.transition("j1", RETRIED, detail="Timeout")
    led.transition("j1", RUNNING, attempt=2)
    led.transition("j1", DONE, finished_at=3.0, summary={"class_name": "Dog"}, run_s=0.5)
    led.update("j1", inputs={"mix": {"sha256": "ab"}})
    row = led.get("j1")
    assert row["state"] == DONE and row["attempt"] == 2 and row["summary"] == {"class_name": "Dog"}
    assert row["inputs"]["mix"]["sha256"] == "ab"
    assert [t["state"] for t in led.history("j1")] == [QUEUED, RUNNING, RETRIED, RUNNING, DONE]
    assert led.counts()[DONE] == 1
    assert [r["id"] for r in led.finished_between(2.5, 4.0)] == ["j1"]
    with pytest.raises(ValueError):
        led.transition("j1", "exploded")


def test_ledger_is_shared_by_threads_and_connections(tmp_path):
    path = tmp_path / "state.db"
    a, b = Ledger(path), Ledger(path)

    def work(led, prefix):
        for i in range(25):
            led.add(f"{prefix}{i}", name=str(i), kind="flat", owner=prefix)
            led.transition(f"{prefix}{i}", DONE)

    threads = [threading.Thread(target=work, args=(led, p)) for led, p in ((a, "a"), (b, "b"), (a, "c"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Ledger(path, readonly=True).counts()[DONE] == 75


def test_stale_status_tmp_files_are_removed(tmp_path):
    # Regression (crash chaos): a daemon killed while rewriting status.json left
    # work/.status.json.tmp-PID behind, one more after every such kill.
    from daemon.outbox import remove_stale_json_tmp

    status = tmp_path / "status.json"
    outbox.write_json_atomic(status, {"a": 1})
    for pid in (11, 12, os.getpid()):
        (tmp_path / f".status.json.tmp-{pid}").write_text("{")
    (tmp_path / ".other.json.tmp-11").write_text("{")
    assert sorted(remove_stale_json_tmp(status, os.getpid())) == [".status.json.tmp-11", ".status.json.tmp-12"]
    assert sorted(os.listdir(tmp_path)) == [".other.json.tmp-11", f".status.json.tmp-{os.getpid()}", "status.json"]


def test_apply_umask_fixes_writer_modes_but_not_inputs(tmp_path):
    # Regression (torture suite, umask): the core writes audio through mkstemp (always 0600), so
    # target.wav/residual.wav ignored the documented umask (0027 → rw-r-----).
    res = tmp_path / ".tmp-x"
    (res / "inputs").mkdir(parents=True)
    (res / "sub").mkdir()
    for p, mode in ((res / "target.wav", 0o600), (res / "event.json", 0o644), (res / "sub" / "a.png", 0o666),
                    (res / "inputs" / "mix.wav", 0o604)):
        p.write_bytes(b"x")
        os.chmod(p, mode)
    os.symlink("/etc/passwd", res / "link")
    outbox.apply_umask(res, 0o027)
    mode = lambda p: os.lstat(p).st_mode & 0o7777  # noqa: E731
    assert [mode(res / n) for n in ("target.wav", "event.json", "sub/a.png")] == [0o640] * 3
    assert mode(res / "sub") == 0o750 and mode(res) == 0o750
    assert mode(res / "inputs" / "mix.wav") == 0o604  # the user's file keeps its mode
    assert os.path.islink(res / "link")


def _open_ledger_at(path: str, barrier) -> None:
    barrier.wait()
    Ledger(path).close()


def test_daemons_opening_a_new_ledger_at_once_all_succeed(tmp_path):
    """Regression: two daemons starting together on a fresh work/ raced to switch the new
    database to WAL and create its tables; SQLite answered one "database is locked" at once
    (no busy wait), and that daemon exited. Eight processes, twenty fresh ledgers."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    for i in range(20):
        path = str(tmp_path / f"state-{i}.db")
        barrier = ctx.Barrier(8)
        procs = [ctx.Process(target=_open_ledger_at, args=(path, barrier)) for _ in range(8)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0] * 8, f"round {i}: {[p.exitcode for p in procs]}"
