"""Atomic result folders: everything is written into ``ROOT/.tmp-<job id>/``, flushed to disk and
renamed to ``ROOT/NAME/`` in one step (ROOT is the outbox or the failed folder).

A crash can leave a ``.tmp-*`` folder (deleted when the job is resumed) but never a partial
``NAME/``. Before the rename the destination name is recorded in the job's ``commit.json`` marker,
so a daemon that dies right after the rename finds the committed folder on restart instead of
running the job again. A name already present gets a ``-2``, ``-3``… suffix: nothing is
overwritten (renaming a folder onto a non-empty one fails, which makes the check atomic).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any

RESERVED = {"_reports"}
TMP_PREFIX = ".tmp-"
_MAX_NAME_BYTES = 200  # leaves room for ".tmp-" and "-NN" under NAME_MAX (255)


def write_json_atomic(path: Path, obj: Any, fsync: bool = True) -> None:
    """Write JSON to ``path`` via a temporary file and ``rename`` (readers never see half a file)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    data = json.dumps(obj, indent=1, ensure_ascii=True, default=str, allow_nan=False).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise


def remove_stale_json_tmp(path: Path, pid: int) -> list[str]:
    """Delete the temporary files :func:`write_json_atomic` left next to ``path`` when a process
    was killed mid-write (``.NAME.tmp-PID``), except this process's own."""
    removed = []
    prefix, mine = f".{path.name}.tmp-", f".{path.name}.tmp-{pid}"
    try:
        names = [n for n in os.listdir(path.parent) if n.startswith(prefix) and n != mine]
    except FileNotFoundError:
        return removed
    for n in names:
        _unlink(path.parent / n)
        removed.append(n)
    return removed


def _unlink(p: Path) -> None:
    try:
        os.unlink(p)
    except FileNotFoundError:
        pass


def folder_name(name: str) -> str:
    """The result folder name for a job name: never hidden, never ``..``, never reserved, and
    short enough for any filesystem. Spaces, unicode and shell metacharacters are kept as is."""
    out = name.replace("/", "_").replace("\0", "_")
    stripped = out.lstrip(".")
    out = "_" * (len(out) - len(stripped)) + stripped if stripped != out else out
    out = out or "_"
    if out in RESERVED:
        out += "_job"
    raw = out.encode("utf-8", "surrogateescape")
    if len(raw) > _MAX_NAME_BYTES:
        out = raw[:_MAX_NAME_BYTES].decode("utf-8", "ignore").rstrip(".") or "_"
    return out


def tmp_dir(root: Path, job_id: str) -> Path:
    return root / f"{TMP_PREFIX}{job_id}"


def fresh_tmp(root: Path, job_id: str) -> Path:
    """An empty ``ROOT/.tmp-<job id>/`` (a leftover from an interrupted attempt is removed)."""
    tmp = tmp_dir(root, job_id)
    remove_tree(tmp)
    tmp.mkdir(mode=0o750)
    return tmp


def remove_tree(path: Path) -> None:
    """Delete a folder we own; links inside are removed, never followed."""
    if path.is_symlink():
        _unlink(path)
        return
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass


def place_inputs(src: Path, dst: Path) -> list[str]:
    """Put the job's inputs under ``dst`` without copying twice and without following links.

    Regular files are hard-linked (copied only when ``src`` and ``dst`` are on different
    filesystems), links are recreated as links, folders are recreated; fifos, sockets and
    devices are skipped and named in the returned notes.
    """
    notes: list[str] = []
    dst.mkdir(mode=0o750, exist_ok=True)
    for entry in sorted(os.scandir(src), key=lambda e: e.name):
        s, d = Path(entry.path), dst / entry.name
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            notes += place_inputs(s, d)
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(s), d)
        elif stat.S_ISREG(st.st_mode):
            try:
                os.link(s, d, follow_symlinks=False)
            except OSError as e:
                if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                    raise
                shutil.copy2(s, d, follow_symlinks=False)
        else:
            notes.append(f"{entry.name}: not a regular file; not copied")
    return notes


def apply_umask(path: Path, umask: int, skip: tuple[str, ...] = ("inputs",)) -> None:
    """Give every file and folder under ``path`` the mode the umask promises (files
    ``0666 & ~umask``, folders ``0777 & ~umask``), whatever the writer chose: the core writes
    audio through ``mkstemp`` (always 0600) and renames it. Top-level names in ``skip`` (the
    user's inputs, which keep their own modes) and links are left alone."""
    file_mode, dir_mode = 0o666 & ~umask, 0o777 & ~umask
    for entry in os.scandir(path):
        if entry.name in skip:
            continue
        _chmod_tree(Path(entry.path), file_mode, dir_mode)
    os.chmod(path, dir_mode)


def _chmod_tree(p: Path, file_mode: int, dir_mode: int) -> None:
    st = os.lstat(p)
    if stat.S_ISLNK(st.st_mode):
        return
    if stat.S_ISDIR(st.st_mode):
        for entry in os.scandir(p):
            _chmod_tree(Path(entry.path), file_mode, dir_mode)
        os.chmod(p, dir_mode)
    elif stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) != file_mode:
        os.chmod(p, file_mode)


def fsync_tree(path: Path) -> None:
    """Flush every regular file and folder under ``path`` (so a power cut cannot commit holes)."""
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            p = os.path.join(dirpath, f)
            if os.path.islink(p):
                continue
            fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories
    finally:
        os.close(fd)


def commit(tmp: Path, root: Path, name: str, marker: Path, job_id: str) -> Path:
    """Rename the finished ``tmp`` folder to ``ROOT/NAME`` (or ``NAME-2``, …); returns the path.

    ``marker`` (the job's ``commit.json``) records each destination before its rename is tried.
    """
    fsync_tree(tmp)
    base = folder_name(name)
    for n in range(1, 100_000):
        dest = root / (base if n == 1 else f"{base}-{n}")
        if os.path.lexists(dest):
            continue
        write_json_atomic(marker, {"job_id": job_id, "root": str(root), "dest": dest.name})
        try:
            os.rename(tmp, dest)
        except OSError as e:
            if e.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                continue  # taken since our check: try the next suffix
            raise
        fsync_dir(root)
        return dest
    raise OSError(errno.EEXIST, f"no free result folder name for {name!r} in {root}")


def committed_folder(marker: Path, job_id: str) -> Path | None:
    """The folder a previous run of this job committed, if the rename happened (checked by the
    job id inside its event.json or error.json)."""
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    dest = Path(info.get("root", "")) / str(info.get("dest", ""))
    if info.get("job_id") != job_id or not info.get("dest") or not dest.is_dir() or dest.is_symlink():
        return None
    for fname in ("event.json", "error.json"):
        try:
            doc = json.loads((dest / fname).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        job = doc.get("job") if isinstance(doc.get("job"), dict) else doc
        if job.get("id") == job_id or job.get("job_id") == job_id:
            return dest
    return None


def missing_outputs(folder: Path) -> list[str]:
    """Names that ``event.json`` lists under ``outputs`` but that are missing (for checks)."""
    try:
        ev = json.loads((folder / "event.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ["event.json"]
    return [f for f in (ev.get("outputs") or {}).values() if not (folder / f).exists()]
