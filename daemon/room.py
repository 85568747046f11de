"""Is there room to write? Full disks, quotas and file size limits, seen from the daemon.

A full outbox must make a job wait, never fail it. But the writers do not always say why a write
failed: libsndfile reports ENOSPC, EDQUOT and EFBIG alike as "System error.", and ``statvfs``
shows free space when a quota or a file size limit is what stops the write. So the daemon asks
the filesystem directly (a scratch write) and compares its own file size limit
(``RLIMIT_FSIZE``, systemd's ``LimitFSIZE=``) with the size of the files a job writes.
"""

from __future__ import annotations

import errno
import os
import resource
import threading
from pathlib import Path

RESOURCE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
MIN_PROBE_BYTES = 256 * 1024
PROBE_PREFIX = ".room-probe-"


def is_resource_error(exc: BaseException) -> bool:
    """An ``OSError`` that means "no room": disk full, quota exceeded, file size limit."""
    return isinstance(exc, OSError) and exc.errno in RESOURCE_ERRNOS


def no_room(folder: str | Path, probe_bytes: int = MIN_PROBE_BYTES) -> str | None:
    """Why ``folder`` cannot take ``probe_bytes`` more (the ``strerror``), or None when it can.

    A scratch file of ``probe_bytes`` is written and flushed in ``folder``, then removed.
    """
    scratch = Path(folder) / f"{PROBE_PREFIX}{os.getpid()}-{threading.get_ident()}"
    block = b"\0" * 65536
    try:
        fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    except OSError as e:
        return e.strerror if e.errno in RESOURCE_ERRNOS else None
    try:
        left = probe_bytes
        while left > 0:
            left -= os.write(fd, block[: min(left, len(block))])
        os.fsync(fd)  # some filesystems (NFS, XFS delayed allocation) report ENOSPC only here
    except OSError as e:
        return e.strerror if e.errno in RESOURCE_ERRNOS else None
    finally:
        os.close(fd)
        try:
            os.unlink(scratch)
        except OSError:
            pass
    return None


def file_size_limit() -> int | None:
    """This process's soft ``RLIMIT_FSIZE`` in bytes, or None when unlimited."""
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if soft == resource.RLIM_INFINITY else int(soft)


def why_no_room(folder: str | Path, probe_bytes: int = MIN_PROBE_BYTES, file_bytes: int = 0) -> str | None:
    """Why a job's results (largest file ``file_bytes``) cannot be written into ``folder``, or None."""
    limit = file_size_limit()
    if limit is not None and file_bytes > limit:
        return (f"{os.strerror(errno.EFBIG)}: the file size limit (RLIMIT_FSIZE / LimitFSIZE=, {limit} bytes) "
                f"is below the size of a result file ({file_bytes} bytes)")
    return no_room(folder, max(probe_bytes, MIN_PROBE_BYTES))


def room_probe_bytes(out_dir: str | Path) -> int:
    """How much to probe after a failed write into ``out_dir``: more than its largest (cut
    short) file, at least :data:`MIN_PROBE_BYTES`."""
    largest = 0
    for dirpath, _dirs, files in os.walk(out_dir):
        for f in files:
            try:
                largest = max(largest, os.lstat(os.path.join(dirpath, f)).st_size)
            except OSError:
                pass
    return max(MIN_PROBE_BYTES, largest + 65536)


def remove_stale_probes(folder: str | Path) -> int:
    """Delete scratch files of probes cut short by a crash (at start-up)."""
    n = 0
    try:
        names = [x for x in os.listdir(folder) if x.startswith(PROBE_PREFIX)]
    except FileNotFoundError:
        return 0
    for x in names:
        try:
            os.unlink(Path(folder) / x)
            n += 1
        except OSError:
            pass
    return n
