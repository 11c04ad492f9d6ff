"""A real single-node SLURM on loopback for the tests: munged, slurmctld, slurmd (as root).

State, spool, logs, the munge key and socket live in a fresh directory under /tmp (short
paths: a unix socket path must stay under 108 bytes). The daemons are stopped by PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import IS_ROOT, need

DEBS = "slurm-wlm munge"


@dataclass(frozen=True)
class Slurm:
    conf: Path
    root: Path
    partitions: tuple[str, ...] = ("debug", "gpu")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _conf(root: Path, host: str) -> str:
    # MinJobAge=5: `sbatch --wait` sleeps 2 s, then 8, then 32 between polls unless
    # MinJobAge/2 <= 2 (sbatch.c `_job_wait`); 5 keeps it polling every 2 s, and finished jobs
    # still stay listed longer than one poll.
    cpus = os.cpu_count() or 1
    return f"""ClusterName=hpcenvtest
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={root}/munge.sock
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
InactiveLimit=0
MinJobAge=5
KillWait=5
Waittime=0
SlurmdParameters=config_overrides
PropagateResourceLimits=NONE
GresTypes=gpu
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=1000 Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes={host} MaxTime=INFINITE State=UP
"""


def _gres_conf(host: str) -> str:
    # One GPU slot bound to /dev/null: SLURM schedules --gres=gpu:N and sets
    # CUDA_VISIBLE_DEVICES, so GPU job scripts are accepted and run on a machine without one.
    return f"AutoDetect=off\nNodeName={host} Name=gpu File=/dev/null\n"


def _stop(root: Path) -> None:
    for name in ("slurmd", "slurmctld", "munged"):
        try:
            pid = int((root / f"{name}.pid").read_text().split()[0])
            os.kill(pid, signal.SIGTERM)
        except (OSError, ValueError):
            continue
    time.sleep(0.5)


class SlurmStartError(RuntimeError):
    pass


def start_slurm() -> Slurm:
    """Start munged, slurmctld and slurmd (root) and wait for an idle node; or raise."""
    root = Path(tempfile.mkdtemp(prefix="hpcenv-slurm-"))
    (root / "state").mkdir()
    (root / "spool").mkdir()
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    host = socket.gethostname().split(".")[0]
    conf = root / "slurm.conf"
    conf.write_text(_conf(root, host))
    (root / "gres.conf").write_text(_gres_conf(host))  # read from beside slurm.conf
    env = {**os.environ, "SLURM_CONF": str(conf)}
    try:
        subprocess.run(
            [
                "munged",
                "--force",
                f"--socket={root}/munge.sock",
                f"--key-file={key}",
                f"--log-file={root}/munged.log",
                f"--pid-file={root}/munged.pid",
                f"--seed-file={root}/munged.seed",
            ],
            check=True,
            capture_output=True,
        )
        subprocess.run(["slurmctld", "-f", str(conf)], check=True, capture_output=True, env=env)
        subprocess.run(["slurmd", "-f", str(conf)], check=True, capture_output=True, env=env)
    except subprocess.CalledProcessError as exc:
        stop_slurm(Slurm(conf, root))
        raise SlurmStartError(f"{exc.cmd[0]} failed to start: {exc.stderr!r}") from None
    deadline = time.monotonic() + 30
    while True:
        out = subprocess.run(
            ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env=env
        ).stdout
        if "idle" in out:
            return Slurm(conf, root)
        if time.monotonic() > deadline:
            log = root / "slurmctld.log"
            tail = log.read_text()[-500:] if log.exists() else ""
            stop_slurm(Slurm(conf, root))
            raise SlurmStartError(f"the node never became idle: {out!r} {tail}")
        time.sleep(0.3)


def stop_slurm(cluster: Slurm) -> None:
    _stop(cluster.root)
    shutil.rmtree(cluster.root, ignore_errors=True)


@pytest.fixture(scope="session")
def slurm_cluster():
    need("SLURM", IS_ROOT, "starting slurmctld and slurmd needs root")
    for exe in ("munged", "slurmctld", "slurmd", "sbatch", "sinfo", "srun"):
        need("SLURM", shutil.which(exe) is not None, f"{exe} is missing (Debian: {DEBS})")
    try:
        cluster = start_slurm()
    except SlurmStartError as exc:
        need("SLURM", False, str(exc))
    old_conf = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    yield cluster
    stop_slurm(cluster)
    if old_conf is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = old_conf
