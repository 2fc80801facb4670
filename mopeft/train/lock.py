"""One training job per unit folder, enforced with a lock file.

When the Snakemake controller dies on SLURM, its running ``train`` jobs go on. ``snakemake --unlock``
and a rerun then submit a second job for the same unit; without a lock it would resume from the
orphan's in-progress ``train_state.pt`` while the orphan still writes it: two jobs on one folder.

``mopeft train`` therefore holds an exclusive ``flock`` on ``<out>/.train.lock`` for the whole
training. A second ``mopeft train`` on that folder fails at once (it does not wait: on SLURM a
waiting job would hold a GPU for nothing), naming the holder as recorded in the file: SLURM job id,
host and pid, and how to stop it. The kernel releases the lock when the holder dies, however it
dies (SIGKILL included; on NFS, the server drops a crashed node's locks when its lease expires), so
a leftover lock file never blocks a rerun. The file is left in place on purpose: unlinking it would
let two processes lock two different files of the same name.

Shared file systems: on Linux NFS (v4, or v3 with lockd) ``flock`` is emulated with a POSIX lock on
the whole file and is seen by every node; Lustre needs the ``flock`` mount option (``localflock``
locks per node only); with ``nolock`` NFS mounts locks are node-local. Where the file system refuses
locks, training goes on with a warning: the lock is a guard, not a requirement.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mopeft.errors import UserError

log = logging.getLogger(__name__)

LOCK_NAME = ".train.lock"

# flock's answers where the file system does not implement locks (Lustre without -o flock, ...).
_UNSUPPORTED = {errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL}


class UnitBusy(UserError, ValueError):
    """Another process holds the unit's lock; the message names it and how to stop it."""


def holder_record() -> dict[str, Any]:
    """Who holds the lock: what another job needs to find and stop this one."""
    return {
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def describe(holder: dict[str, Any] | None) -> str:
    """The holder in words, with the command that stops it."""
    if not holder:
        return "another process (it has not recorded itself yet)"
    where = f"pid {holder.get('pid')} on host {holder.get('host')}"
    since = f", since {holder['started']}" if holder.get("started") else ""
    job = holder.get("slurm_job_id")
    if job:
        return f"SLURM job {job} ({where}{since}); stop it with `scancel {job}` or let it finish"
    return f"{where}{since}; stop it with `kill {holder.get('pid')}` on {holder.get('host')} or let it finish"


def _read_holder(f: Any) -> dict[str, Any] | None:
    try:
        f.seek(0)
        holder = json.loads(f.read() or "null")
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


@contextlib.contextmanager
def unit_lock(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold the exclusive lock of ``folder`` (created if needed) for the block; raise
    :class:`UnitBusy` at once if another process holds it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    # "a+": opening must not truncate the holder's record before we know we hold the lock.
    with open(path, "a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UnitBusy(
                f"{folder}: another training of this unit is running: {describe(_read_holder(f))}; "
                f"then rerun (lock file {path})"
            ) from None
        except OSError as exc:
            if exc.errno not in _UNSUPPORTED:
                raise
            log.warning(
                "%s: cannot lock (%s): this file system does not support flock (Lustre without the "
                "`flock` mount option? NFS mounted with `nolock`?); make sure no other job trains this unit",
                path,
                exc.strerror,
            )
            yield path
            return
        f.seek(0)
        f.truncate()
        f.write(json.dumps(holder_record(), sort_keys=True) + "\n")
        f.flush()
        try:
            yield path
        finally:
            with contextlib.suppress(OSError):
                f.seek(0)
                f.truncate()  # released: no stale record to mislead a reader
                f.flush()
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
