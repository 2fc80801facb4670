"""A throw-away single-node SLURM cluster for the integration test (tests/test_slurm.py).

Why a real cluster: the SLURM profile (profiles/slurm/config.yaml) is only meaningful if sbatch
accepts what the executor plugin makes of it (partitions, --gpus, -t per attempt) and the
plugin can follow the jobs to completion. Debian's slurm-wlm runs fine as root in a container,
so the test starts slurmctld + slurmd against a config in a temporary folder and stops them
again, by PID.

Design choices (each one the fix for what the alternative did on this harness):

* Everything lives under one root folder; commands find the cluster through ``SLURM_CONF``,
  which is only put into the environment of the subprocesses that need it (``self.env``).
  A ``SLURM_CONF`` left in ``os.environ`` pointing to a stopped controller would make every
  later ``snakemake`` call ~10 s slower (the plugin runs ``scontrol`` at import).
* Fake GPUs are character devices (``mknod c 1 3``, i.e. /dev/null): with regular files slurmd
  complains and does not set ``CUDA_VISIBLE_DEVICES``; with ``Count=`` only, the node drains.
* The node advertises more CPUs than the machine has (``SlurmdParameters=config_overrides``),
  like a GPU node would, so the profile's ``cpus_per_task: 8`` for training is schedulable on a
  2-core CI machine instead of pending forever.
* No accounting (no slurmdbd): the plugin must poll with ``squeue`` and finished jobs must stay
  visible to it, hence ``MinJobAge=3600``.
* ``KillWait=5`` so that a job past its time limit is gone (state TIMEOUT) quickly.
* Free TCP ports are picked per cluster, so a stray daemon on 6817/6818 cannot interfere.
* ``bin/srun`` shim: snakemake-executor-plugin-slurm-jobstep (0.6.1) removes every ``SLURM_*``
  variable, ``SLURM_CONF`` included, before the ``srun`` that runs the rule inside the job, so
  that srun cannot find a config outside /etc/slurm ("Could not establish a configuration
  source"). The shim restores it from ``MOPEFT_TEST_SLURM_CONF``. A real cluster keeps its
  config in /etc/slurm (or is configless) and needs none of this; sites that rely on
  ``SLURM_CONF`` need the same workaround (README, cluster section).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

SLURM_BINARIES = ("slurmctld", "slurmd", "sbatch", "srun", "squeue", "sinfo", "scontrol", "scancel")
MUNGE_BINARIES = ("munged", "munge")
MUNGE_RUN = Path("/run/munge")


class ClusterUnavailable(RuntimeError):
    """The machine cannot host the test cluster (no binaries, not root, no mknod); a skip reason."""


class ClusterError(RuntimeError):
    """The daemons were started but the cluster did not come up: a real failure, with log tails."""


def unavailable_reason() -> str | None:
    """Why no local cluster can be started here, or None. Cheap: no daemon is touched."""
    missing = [b for b in SLURM_BINARIES + MUNGE_BINARIES if shutil.which(b) is None]
    if missing:
        return (
            f"SLURM/munge not installed (missing {', '.join(missing)}); "
            "run scripts/install_slurm.sh as root (Debian slurm-wlm + munge)"
        )
    if os.geteuid() != 0:
        return "the local SLURM test cluster runs slurmd/slurmctld as root; not root here"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes (it just has not been reaped by its parent).
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _stop_pid(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM, wait, then SIGKILL: only this PID, never by process name."""
    if not _alive(pid):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _tail(path: Path, lines: int = 15) -> str:
    if not path.exists():
        return f"({path} missing)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class SlurmCluster:
    """Context manager: ``with SlurmCluster(tmp) as c: subprocess.run([...], env=c.env)``.

    ``partitions`` all contain the single node; the first is the default partition. The test
    uses ``cpu`` and ``gpu`` so that the profile's two partition settings are both exercised.
    """

    root: Path
    gpus: int = 4
    cpus: int = 32
    gpu_type: str = "fake"
    partitions: tuple[str, ...] = ("cpu", "gpu")
    start_timeout: float = 60.0
    host: str = field(default_factory=lambda: socket.gethostname().split(".")[0])
    _pids: dict[str, int] = field(default_factory=dict, init=False, repr=False)

    # ------------------------------------------------------------------ paths / environment
    @property
    def conf(self) -> Path:
        return self.root / "etc" / "slurm.conf"

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def env(self) -> dict[str, str]:
        """os.environ + SLURM_CONF (+ the srun shim first on PATH): pass this to every
        subprocess that talks to the cluster."""
        return {
            **os.environ,
            "SLURM_CONF": str(self.conf),
            "MOPEFT_TEST_SLURM_CONF": str(self.conf),
            "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def run(self, *args: str, check: bool = True, timeout: float = 30.0) -> str:
        """Run a SLURM client command against this cluster and return its stdout."""
        proc = subprocess.run(
            list(args), env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            raise ClusterError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout

    # ------------------------------------------------------------------ configuration
    def _real_memory_mb(self) -> int:
        out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout
        for token in out.split():
            if token.startswith("RealMemory="):
                return int(int(token.split("=", 1)[1]) * 0.9)
        return 4000

    def write_config(self) -> None:
        """slurm.conf + gres.conf + fake GPU device nodes under ``root``."""
        for sub in ("etc", "state", "spool", "log", "run", "dev", "bin"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        srun = self.bin / "srun"
        srun.write_text(
            "#!/bin/sh\n"
            "# tests/slurm_cluster.py: the slurm-jobstep plugin drops SLURM_CONF before srun\n"
            'export SLURM_CONF="${MOPEFT_TEST_SLURM_CONF:-$SLURM_CONF}"\n'
            f'exec {shutil.which("srun") or "/usr/bin/srun"} "$@"\n'
        )
        srun.chmod(0o755)
        for i in range(self.gpus):
            dev = self.root / "dev" / f"fakegpu{i}"
            if not dev.exists():
                try:
                    os.mknod(dev, 0o666 | 0o020000, os.makedev(1, 3))  # S_IFCHR, like /dev/null
                except PermissionError as exc:
                    raise ClusterUnavailable(f"cannot mknod fake GPU devices here ({exc})") from exc
        r = self.root
        node = f"NodeName={self.host} NodeAddr=127.0.0.1"
        parts = "\n".join(
            f"PartitionName={p} Nodes={self.host} Default={'YES' if i == 0 else 'NO'} "
            "MaxTime=INFINITE State=UP"
            for i, p in enumerate(self.partitions)
        )
        self.conf.write_text(
            f"""# written by tests/slurm_cluster.py
ClusterName=mopefttest
SlurmctldHost={self.host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/run/slurmctld.pid
SlurmdPidFile={r}/run/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=3600
DefMemPerNode=1000
KillWait=5
OverTimeLimit=0
MpiDefault=none
SwitchType=switch/none
GresTypes=gpu
{node} CPUs={self.cpus} RealMemory={self._real_memory_mb()} Gres=gpu:{self.gpu_type}:{self.gpus} State=UNKNOWN
{parts}
"""
        )
        (self.root / "etc" / "gres.conf").write_text(
            "AutoDetect=off\n"
            f"NodeName={self.host} Name=gpu Type={self.gpu_type} "
            f"File={r}/dev/fakegpu[0-{self.gpus - 1}]\n"
        )

    # ------------------------------------------------------------------ daemons
    def _munge_ok(self) -> bool:
        try:
            return subprocess.run(["munge", "-n"], capture_output=True, timeout=10).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def _start_munged(self) -> None:
        """Reuse a running munged (it may serve others); start one, and own it, otherwise."""
        if self._munge_ok():
            return
        MUNGE_RUN.mkdir(parents=True, exist_ok=True)
        shutil.chown(MUNGE_RUN, "munge", "munge")
        subprocess.run(["runuser", "-u", "munge", "--", shutil.which("munged") or "munged"], check=True)
        deadline = time.monotonic() + 10
        while not self._munge_ok():
            if time.monotonic() > deadline:
                raise ClusterError("munged did not start (munge -n keeps failing)")
            time.sleep(0.2)
        pidfile = MUNGE_RUN / "munged.pid"
        if pidfile.exists():
            self._pids["munged"] = int(pidfile.read_text().split()[0])

    def _start_daemon(self, name: str) -> None:
        pidfile = self.root / "run" / f"{name}.pid"
        proc = subprocess.run(
            [shutil.which(name) or name, "-f", str(self.conf)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if proc.returncode != 0:
            raise ClusterError(f"{name} failed to start: {proc.stderr.strip()}\n{self._logs()}")
        deadline = time.monotonic() + 10
        while not pidfile.exists() or not pidfile.read_text().strip():
            if time.monotonic() > deadline:
                raise ClusterError(f"{name} wrote no pid file\n{self._logs()}")
            time.sleep(0.1)
        self._pids[name] = int(pidfile.read_text().split()[0])

    def _logs(self) -> str:
        logdir = self.root / "log"
        return "\n".join(f"--- {n}.log\n{_tail(logdir / f'{n}.log')}" for n in ("slurmctld", "slurmd"))

    def start(self) -> SlurmCluster:
        reason = unavailable_reason()
        if reason:
            raise ClusterUnavailable(reason)
        self.write_config()
        try:
            self._start_munged()
            self._start_daemon("slurmctld")
            self._start_daemon("slurmd")
            self.wait_idle()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_idle(self) -> None:
        """Block until the node is idle (slurmd registered its CPUs and GPUs with slurmctld)."""
        deadline = time.monotonic() + self.start_timeout
        state = ""
        while time.monotonic() < deadline:
            state = self.run("sinfo", "-h", "-N", "-o", "%T", check=False, timeout=15).strip()
            if state and all(s == "idle" for s in state.split()):
                return
            time.sleep(0.5)
        raise ClusterError(
            f"node not idle after {self.start_timeout:.0f} s (state {state!r})\n{self._logs()}"
        )

    def stop(self) -> None:
        """Cancel what is left, then stop the daemons this object started, by PID."""
        if "slurmctld" in self._pids and _alive(self._pids["slurmctld"]):
            try:
                self.run("scancel", "--user", pwd.getpwuid(os.getuid()).pw_name, check=False, timeout=15)
                deadline = time.monotonic() + 15
                while (
                    time.monotonic() < deadline
                    and self.run(
                        "squeue", "-h", "-t", "RUNNING,COMPLETING,PENDING", check=False, timeout=15
                    ).strip()
                ):
                    time.sleep(0.5)
            except (subprocess.TimeoutExpired, OSError):
                pass
        for name in ("slurmd", "slurmctld", "munged"):
            pid = self._pids.pop(name, None)
            if pid is not None:
                _stop_pid(pid)

    def __enter__(self) -> SlurmCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
