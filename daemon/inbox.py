"""The inbox: discovery, pairing, settling and claiming of jobs, and adoption of jobs that a dead
daemon left in the work folder.

Protocol (see the README):

* flat files ``NAME.mix.EXT`` + ``NAME.query.EXT`` (+ ``NAME.gt.EXT``, + ``NAME.yaml`` sidecar);
* or a job folder ``NAME/`` holding ``mix.EXT``, ``query.EXT`` (+ ``gt.EXT``, ``params.yaml``,
  anything else, which travels with the job).

Nothing here follows a symbolic link: entries are ``lstat``-ed, links are reported as problems and
moved (as links) to ``failed/``. Names come from directory listings, so they cannot contain ``/``;
undecodable bytes survive as surrogate escapes (:func:`display` renders them for JSON/SQLite).

A claim is exactly-once across processes and hosts: the job's work folder is built under a
private name with its lock held, renamed to ``work/<id>/``, and then the *primary* input (the mix,
or the whole job folder) is renamed into it. ``rename`` succeeds for exactly one claimer; a loser
gets ``ENOENT`` and backs off. The lock (``flock`` on ``work/<id>/.lock``) is held for as long as
the owning daemon lives, so a live daemon's jobs are never adopted by another one, and a dead
daemon's jobs (its locks vanish with the process) are.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import secrets
import shutil
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .outbox import write_json_atomic

AUDIO_ROLES = ("mix", "query", "gt")
FLAT_AUDIO = re.compile(r"^(?P<name>.+)\.(?P<role>mix|query|gt)\.(?P<ext>[^.]+)$", re.IGNORECASE)
FLAT_SIDECAR = re.compile(r"^(?P<name>.+)\.(?P<ext>ya?ml)$", re.IGNORECASE)
FOLDER_AUDIO = re.compile(r"^(?P<role>mix|query|gt)\.(?P<ext>[^.]+)$", re.IGNORECASE)
FOLDER_SIDECAR = re.compile(r"^params\.ya?ml$", re.IGNORECASE)
# Partial-download names left by browsers, editors and copy tools: never part of a job.
TEMP_SUFFIXES = (".part", ".partial", ".tmp", ".crdownload", ".download", ".swp", "~")
MAX_FOLDER_ENTRIES = 200
LOCK_NAME = ".lock"
CLAIM_NAME = "claim.json"
STAGE_PREFIX = ".claim-"
TRASH_PREFIX = ".trash-"


def display(name: str) -> str:
    """A name safe for JSON and SQLite: undecodable bytes become ``\\xNN`` escapes."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def new_job_id() -> str:
    """A sortable, unique job id: ``YYYYmmdd-HHMMSS-<8 hex>``."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}"


# ---------------------------------------------------------------------------------------------
# Discovery
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One inbox entry as ``lstat`` saw it. ``name`` is relative to the inbox (``dir/file`` inside
    a job folder). ``kind``: ``file``, ``dir``, ``link`` or ``other`` (fifo, socket, device)."""

    name: str
    kind: str
    size: int
    mtime_ns: int
    ino: int
    dev: int
    ctime_ns: int = 0

    @classmethod
    def from_stat(cls, name: str, st: os.stat_result) -> "Entry":
        mode = st.st_mode
        kind = (
            "link" if stat.S_ISLNK(mode) else "dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "other"
        )
        return cls(name, kind, st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev, st.st_ctime_ns)


@dataclass
class Candidate:
    """A possible job: the entries that belong together and what is wrong with them so far.

    ``kind``: ``flat`` (NAME.* files), ``folder`` (a job folder) or ``stray`` (a file that fits no
    pattern). ``roles`` maps ``mix``/``query``/``gt``/``params`` to entry names (relative to the
    inbox); ``order`` is the claim order, the primary entry first.
    """

    kind: str
    name: str
    entries: list[Entry] = field(default_factory=list)
    roles: dict[str, list[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.name)

    @property
    def signature(self) -> tuple:
        return tuple(sorted((e.name, e.kind, e.size, e.mtime_ns, e.ino) for e in self.entries))

    @property
    def arrived(self) -> float:
        """When the newest entry arrived (epoch s). The inode change time, not the mtime: copies
        that preserve mtimes (``cp -p``, ``rsync -t``) still set ctime to the time of arrival."""
        return max((max(e.mtime_ns, e.ctime_ns) for e in self.entries), default=0) / 1e9

    @property
    def complete(self) -> bool:
        return self.kind != "stray" and bool(self.roles.get("mix")) and bool(self.roles.get("query"))

    @property
    def order(self) -> list[str]:
        """Top-level inbox names to move, primary first (a folder is one name)."""
        if self.kind != "flat":
            return [self.name]
        names: list[str] = []
        for role in ("mix", "query", "gt", "params"):
            names.extend(sorted(self.roles.get(role, [])))
        names.extend(sorted(e.name for e in self.entries if e.name not in names))
        return names


def _ignored(name: str) -> bool:
    return name.endswith(TEMP_SUFFIXES)


def scan(inbox: Path) -> dict[tuple[str, str], Candidate]:
    """Group the inbox's entries into candidate jobs (no settling, no file content read)."""
    found: dict[tuple[str, str], Candidate] = {}
    try:
        it = os.scandir(inbox)
    except FileNotFoundError:
        return found
    inbox_dev = os.lstat(inbox).st_dev
    with it:
        for de in it:
            name = de.name
            try:
                st = de.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # vanished while listing
            entry = Entry.from_stat(name, st)
            if _ignored(name):
                continue
            if entry.kind == "dir":
                if name.startswith("."):
                    continue  # hidden folders (.Trash, .snapshot, copy-tool staging) are not jobs
                cand = _scan_folder(inbox, entry)
                found[cand.key] = cand
                continue
            m_audio = FLAT_AUDIO.match(name)
            m_side = None if m_audio else FLAT_SIDECAR.match(name)
            if m_audio is None and m_side is None:
                if name.startswith("."):
                    continue  # hidden scratch files of copy tools
                cand = found.setdefault(("stray", name), Candidate("stray", name))
                cand.entries.append(entry)
                cand.problems.extend(_entry_problems(entry, inbox_dev))
                continue
            job = (m_audio or m_side).group("name")
            role = m_audio.group("role").lower() if m_audio else "params"
            cand = found.setdefault(("flat", job), Candidate("flat", job))
            cand.entries.append(entry)
            cand.roles.setdefault(role, []).append(name)
            cand.problems.extend(_entry_problems(entry, inbox_dev))
    for cand in found.values():
        for role, names in cand.roles.items():
            if len(names) > 1:
                cand.problems.append(f"ambiguous {role}: {', '.join(sorted(display(n) for n in names))} (keep one)")
    return found


def _entry_problems(entry: Entry, inbox_dev: int) -> list[str]:
    try:
        entry.name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes (surrogate escapes): audio libraries cannot open it
        return [f"{display(entry.name)}: the file name is not valid UTF-8; rename it (e.g. convmv -f latin1 -t utf8)"]
    if entry.kind == "link":
        return [f"{display(entry.name)}: is a symbolic link; links are never followed (drop the file itself)"]
    if entry.kind == "other":
        return [f"{display(entry.name)}: not a regular file (fifo, socket or device)"]
    if entry.dev != inbox_dev:
        return [f"{display(entry.name)}: is on another filesystem than the inbox (a mount point?)"]
    return []


def _scan_folder(inbox: Path, top: Entry) -> Candidate:
    cand = Candidate("folder", top.name, entries=[top])
    cand.problems.extend(_entry_problems(top, os.lstat(inbox).st_dev))
    stack = [(top.name, 0)]
    while stack:
        rel, depth = stack.pop()
        try:
            it = os.scandir(inbox / rel)
        except OSError as e:
            cand.problems.append(f"{display(rel)}: cannot list the folder ({e.strerror})")
            continue
        with it:
            for de in it:
                try:
                    st = de.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                child = f"{rel}/{de.name}"
                entry = Entry.from_stat(child, st)
                cand.entries.append(entry)
                if len(cand.entries) > MAX_FOLDER_ENTRIES:
                    cand.problems.append(f"{display(top.name)}: more than {MAX_FOLDER_ENTRIES} entries in the job folder")
                    return cand
                cand.problems.extend(_entry_problems(entry, top.dev))
                if entry.kind == "dir":
                    if depth < 3:
                        stack.append((child, depth + 1))
                    else:
                        cand.problems.append(f"{display(child)}: job folder nested too deep")
                    continue
                if depth == 0 and not _ignored(de.name):
                    m = FOLDER_AUDIO.match(de.name)
                    if m:
                        cand.roles.setdefault(m.group("role").lower(), []).append(child)
                    elif FOLDER_SIDECAR.match(de.name):
                        cand.roles.setdefault("params", []).append(child)
    return cand


# ---------------------------------------------------------------------------------------------
# Settling
# ---------------------------------------------------------------------------------------------


class Settler:
    """Remembers when each candidate's signature (names, sizes, mtimes, inodes) last changed."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], tuple[tuple, float]] = {}

    def observe(self, candidates: dict[tuple[str, str], Candidate], now: float) -> None:
        """Record a scan taken at monotonic time ``now``; forget candidates that disappeared."""
        for key, cand in candidates.items():
            sig = cand.signature
            prev = self._seen.get(key)
            if prev is None or prev[0] != sig:
                self._seen[key] = (sig, now)
        for key in list(self._seen):
            if key not in candidates:
                del self._seen[key]

    def stable_for(self, key: tuple[str, str], now: float) -> float:
        prev = self._seen.get(key)
        return 0.0 if prev is None else now - prev[1]


@dataclass(frozen=True)
class Verdict:
    """``waiting`` (incomplete, not timed out), ``pending`` (complete but settling), ``ready``,
    or ``bad`` (claim it and fail it with ``reason``)."""

    status: str
    reason: str | None = None


ProbeFn = Callable[[Path], object]  # raises sourcesep.InputError for a bad file


def assess(
    cand: Candidate,
    inbox: Path,
    *,
    stable_s: float,
    settle_s: float,
    orphan_timeout_s: float,
    now_wall: float,
    probe: ProbeFn,
    input_error: type[Exception],
) -> Verdict:
    """Decide what to do with a candidate now.

    A complete candidate is ``ready`` once unchanged for ``settle_s`` and every audio header
    parses. A file whose header does not parse may still be arriving: it fails only after
    ``3 × settle_s`` without change. An incomplete one fails ``orphan_timeout_s`` after its newest
    file arrived (from the inode change time, so a restart does not reset the clock).
    """
    if stable_s < settle_s:
        return Verdict("pending" if cand.complete else "waiting")
    if cand.problems:
        return Verdict("bad", "; ".join(dict.fromkeys(cand.problems)))
    if not cand.complete:
        if now_wall - cand.arrived >= orphan_timeout_s:
            return Verdict("bad", _orphan_reason(cand, orphan_timeout_s))
        return Verdict("waiting")
    for role in AUDIO_ROLES:
        for rel in cand.roles.get(role, []):
            try:
                probe(inbox / rel)
            except input_error as e:
                if stable_s >= 3 * settle_s:
                    return Verdict("bad", str(e))
                return Verdict("pending")
    return Verdict("ready")


def _orphan_reason(cand: Candidate, timeout: float) -> str:
    waited = f"within orphan_timeout_s ({timeout:g} s)"
    if cand.kind == "stray":
        return (
            f"{display(cand.name)}: not part of the inbox protocol (expected NAME.mix.EXT + NAME.query.EXT "
            f"[+ NAME.gt.EXT, NAME.yaml] or a job folder NAME/ with mix.EXT and query.EXT); left alone for {timeout:g} s"
        )
    missing = [r for r in ("mix", "query") if not cand.roles.get(r)]
    if cand.kind == "folder":
        return f"job folder {display(cand.name)}: no {' and no '.join(f'{r}.EXT' for r in missing)} arrived {waited}"
    have = ", ".join(display(e.name) for e in cand.entries)
    want = " and ".join(f"{display(cand.name)}.{r}.EXT" for r in missing)
    return f"{have}: no partner {want} arrived {waited}"


# ---------------------------------------------------------------------------------------------
# Claiming and adoption
# ---------------------------------------------------------------------------------------------


@dataclass
class Claim:
    """A job this process owns: ``work/<id>/`` with ``inputs/``, ``claim.json`` and a held lock."""

    id: str
    name: str
    kind: str
    dir: Path
    lock_fd: int
    claimed_at: float
    dropped_at: float
    sources: list[str]

    @property
    def inputs(self) -> Path:
        return self.dir / "inputs"

    @property
    def job_log(self) -> Path:
        return self.dir / "job.log.jsonl"

    @property
    def marker(self) -> Path:
        return self.dir / "commit.json"

    def files(self) -> dict[str, list[Path]]:
        """Role → claimed input paths (``mix``, ``query``, ``gt``, ``params``), found by name."""
        roles: dict[str, list[Path]] = {}
        base = self.inputs
        folder = self.kind == "folder"
        pattern_audio, pattern_side = (FOLDER_AUDIO, FOLDER_SIDECAR) if folder else (FLAT_AUDIO, FLAT_SIDECAR)
        try:
            names = sorted(os.listdir(base))
        except OSError:
            return roles
        for n in names:
            m = pattern_audio.match(n)
            if m and (folder or m.group("name") == self.name):
                roles.setdefault(m.group("role").lower(), []).append(base / n)
            elif pattern_side.match(n) and (folder or n.rsplit(".", 1)[0] == self.name):
                roles.setdefault("params", []).append(base / n)
        return roles

    def release(self) -> None:
        """Give up ownership (the work folder stays for the next daemon to adopt)."""
        if self.lock_fd >= 0:
            os.close(self.lock_fd)
            self.lock_fd = -1

    def discard(self) -> None:
        """Delete the work folder (see :func:`delete_folder`), then release the lock."""
        delete_folder(self.dir)
        self.release()


def delete_folder(path: Path) -> None:
    """Delete a folder of ``work/`` so that a crash at any moment leaves either all of it or none
    of it under its name: it is first renamed to a hidden ``.trash-*`` name (one atomic step),
    then removed. A killed ``rmtree`` of the job folder itself could leave a job without its
    ``claim.json`` (never adopted, never cleaned) or without its ``commit.json`` (run twice).
    :func:`remove_stale_stages` deletes trash left by a crash."""
    trash = path.with_name(f"{TRASH_PREFIX}{path.name}-{secrets.token_hex(3)}")
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def _lock(path: Path, owner: str, create: bool) -> int | None:
    """Open and ``flock`` ``path`` without blocking; None when someone alive holds it."""
    flags = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW | (os.O_CREAT if create else 0)
    try:
        fd = os.open(path, flags, 0o640)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            return None
        raise
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    try:  # who holds it, for operators (the lock itself is what counts)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{owner}\n".encode(), 0)
    except OSError:
        pass
    return fd


def claim(cand: Candidate, inbox: Path, work: Path, owner: str) -> Claim | None:
    """Claim ``cand`` for this process, or return None when another claimer won the race."""
    job_id = new_job_id()
    stage = work / f"{STAGE_PREFIX}{job_id}"
    stage.mkdir(mode=0o750)
    fd = _lock(stage / LOCK_NAME, owner, create=True)
    if fd is None:  # cannot happen for a fresh private folder, but never proceed unlocked
        shutil.rmtree(stage, ignore_errors=True)
        return None
    now = time.time()
    sources = cand.order
    manifest = {
        "id": job_id,
        "name": cand.name,
        "kind": cand.kind,
        "sources": sources,
        "claimed_at": now,
        "dropped_at": cand.arrived,
        "owner": owner,
    }
    job_dir = work / job_id
    try:
        write_json_atomic(stage / CLAIM_NAME, manifest)
        os.rename(stage, job_dir)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        os.close(fd)
        raise
    c = Claim(job_id, cand.name, cand.kind, job_dir, fd, now, cand.arrived, sources)
    try:
        _move_sources(c, inbox, primary_required=True)
    except _LostRace:
        c.discard()
        return None
    except OSError:
        c.discard()  # the primary could not be moved: the job stays in the inbox
        raise
    return c


class _LostRace(Exception):
    pass


def _move_sources(c: Claim, inbox: Path, primary_required: bool) -> list[str]:
    """Rename the claim's inbox entries into ``inputs/`` (primary first); returns those moved."""
    moved: list[str] = []
    if c.kind == "folder":
        if c.inputs.exists():
            return moved
        try:
            os.rename(inbox / c.name, c.inputs)
        except FileNotFoundError:
            raise _LostRace() from None
        return [c.name]
    c.inputs.mkdir(mode=0o750, exist_ok=True)
    for i, name in enumerate(c.sources):
        dst = c.inputs / name
        if os.path.lexists(dst):
            continue
        try:
            os.rename(inbox / name, dst)
            moved.append(name)
        except FileNotFoundError:
            if i == 0 and primary_required:
                raise _LostRace() from None
        except OSError:
            if i == 0:
                raise
            # A partner that cannot be moved stays behind; validation reports it as missing.
    return moved


def adopt(job_dir: Path, inbox: Path, owner: str) -> Claim | None:
    """Take over a job folder in ``work/`` whose owner died; None if its owner is alive or the
    folder holds no claimed input (then it is removed: its job is still in the inbox)."""
    fd = _lock(job_dir / LOCK_NAME, owner, create=False)
    if fd is None:
        return None
    try:
        # The folder may have been committed and deleted between our open and our flock.
        if os.fstat(fd).st_ino != os.lstat(job_dir / LOCK_NAME).st_ino:
            os.close(fd)
            return None
        manifest = json.loads((job_dir / CLAIM_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        os.close(fd)
        return None
    c = Claim(
        id=str(manifest["id"]),
        name=manifest["name"],
        kind=manifest["kind"],
        dir=job_dir,
        lock_fd=fd,
        claimed_at=float(manifest.get("claimed_at") or time.time()),
        dropped_at=float(manifest.get("dropped_at") or 0.0),
        sources=list(manifest.get("sources") or []),
    )
    primary = c.inputs if c.kind == "folder" else c.inputs / c.sources[0] if c.sources else None
    if primary is None or not os.path.lexists(primary):
        c.discard()  # died before its primary rename: the job never left the inbox
        return None
    try:
        _move_sources(c, inbox, primary_required=False)  # finish a claim cut short by a crash
    except OSError:
        pass
    return c


def job_dirs(work: Path) -> list[Path]:
    """Job folders in ``work/`` (not staging folders), oldest id first."""
    try:
        names = sorted(n for n in os.listdir(work) if not n.startswith("."))
    except FileNotFoundError:
        return []
    return [work / n for n in names if (work / n / CLAIM_NAME).is_file() and not (work / n).is_symlink()]


def remove_stale_stages(work: Path, owner: str) -> int:
    """Delete staging folders of claims that died before their rename (no inputs in them) and
    the ``.trash-*`` folders of deletions cut short by a crash."""
    removed = 0
    try:
        names = [n for n in os.listdir(work) if n.startswith((STAGE_PREFIX, TRASH_PREFIX))]
    except FileNotFoundError:
        return 0
    for n in names:
        if n.startswith(TRASH_PREFIX):
            shutil.rmtree(work / n, ignore_errors=True)
            removed += 1
            continue
        fd = _lock(work / n / LOCK_NAME, owner, create=False)
        if fd is None:
            if not (work / n / LOCK_NAME).exists() and (work / n).is_dir():
                try:  # crashed before even creating the lock; only remove if old
                    if time.time() - (work / n).stat().st_mtime > 3600:
                        shutil.rmtree(work / n, ignore_errors=True)
                        removed += 1
                except OSError:
                    pass
            continue
        delete_folder(work / n)
        os.close(fd)
        removed += 1
    return removed
