"""A real three-node SLURM on loopback for the tests: munged, slurmctld and one slurmd per node
(n1, n2, n3), all as root on this host.

Each slurmd runs in its own mount namespace with a private tmpfs at `NODE_LOCAL`, so the three
nodes see three different disks at one path, as the nodes of a real cluster see their local
scratch; the host's own `NODE_LOCAL` stays an empty directory. Job steps inherit the namespace
of the slurmd that starts them (sbcast writes into it too).

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
NODES = ("n1", "n2", "n3")
NODE_LOCAL = Path("/tmp/hpcenv-nodelocal")  # noqa: S108 - each node has its own, private


@dataclass(frozen=True)
class Slurm:
    conf: Path
    root: Path
    partitions: tuple[str, ...] = ("debug", "gpu")
    nodes: tuple[str, ...] = NODES
    node_local: Path = NODE_LOCAL


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _conf(root: Path, host: str) -> str:
    # MinJobAge=5: `sbatch --wait` sleeps 2 s, then 8, then 32 between polls unless
    # MinJobAge/2 <= 2 (sbatch.c `_job_wait`); 5 keeps it polling every 2 s, and finished jobs
    # still stay listed longer than one poll. MessageTimeout=5: a client facing a controller
    # that does not answer gives up sooner.
    cpus = os.cpu_count() or 1
    nodes = "\n".join(
        f"NodeName={n} NodeHostname={host} NodeAddr=127.0.0.1 Port={_free_port()} "
        f"CPUs={cpus} RealMemory=1000 Gres=gpu:1 State=UNKNOWN"
        for n in NODES
    )
    all_nodes = ",".join(NODES)
    return f"""ClusterName=hpcenvtest
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={root}/munge.sock
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool/%n
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.%n.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.%n.log
SlurmctldPort={_free_port()}
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
MessageTimeout=5
SlurmdParameters=config_overrides
PropagateResourceLimits=NONE
GresTypes=gpu
{nodes}
PartitionName=debug Nodes={all_nodes} Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes={all_nodes} MaxTime=INFINITE State=UP
"""


def _gres_conf() -> str:
    # One GPU slot per node bound to /dev/null: SLURM schedules --gres=gpu:N and sets
    # CUDA_VISIBLE_DEVICES, so GPU job scripts are accepted and run on a machine without one.
    return "AutoDetect=off\n" + "".join(f"NodeName={n} Name=gpu File=/dev/null\n" for n in NODES)


def _terminate(pidfiles: list[Path]) -> None:
    """SIGTERM to each daemon at once, then wait until they are all gone (each takes ~2 s)."""
    pids = []
    for pidfile in pidfiles:
        try:
            pid = int(pidfile.read_text().split()[0])
            os.kill(pid, signal.SIGTERM)
            pids.append(pid)
        except (OSError, ValueError):
            continue
    deadline = time.monotonic() + 15
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except OSError:
                break
            time.sleep(0.05)


def _stop(root: Path) -> None:
    # the nodes first, while the controller still answers their goodbye
    _terminate([root / f"slurmd.{n}.pid" for n in NODES])
    _terminate([root / "slurmctld.pid", root / "munged.pid"])


def stop_slurmctld(cluster: Slurm) -> None:
    """Stop the controller only (the nodes keep running): SLURM then does not answer."""
    pid = int((cluster.root / "slurmctld.pid").read_text().split()[0])
    os.kill(pid, signal.SIGTERM)
    while True:
        try:
            os.kill(pid, 0)
        except OSError:
            return
        time.sleep(0.05)


class SlurmStartError(RuntimeError):
    pass


def _start_node(conf: Path, node: str, env: dict[str, str]) -> None:
    """slurmd for `node` in a mount namespace of its own with a tmpfs at NODE_LOCAL. slurmd
    daemonizes: the namespace lives on in the daemon (and the job steps it forks), and ends,
    tmpfs and all, when the daemon does."""
    mount = f"mount -t tmpfs -o size=256m,mode=1777 hpcenv-{node} {NODE_LOCAL}"
    subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            f'{mount} && exec slurmd -f "$0" -N "$1"',
            str(conf),
            node,
        ],
        check=True,
        capture_output=True,
        env=env,
    )


def start_slurm() -> Slurm:
    """Start munged, slurmctld and three slurmd (root) and wait for idle nodes; or raise."""
    root = Path(tempfile.mkdtemp(prefix="hpcenv-slurm-"))
    (root / "state").mkdir()
    for node in NODES:
        (root / "spool" / node).mkdir(parents=True)
    NODE_LOCAL.mkdir(mode=0o755, exist_ok=True)
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    host = socket.gethostname().split(".")[0]
    conf = root / "slurm.conf"
    conf.write_text(_conf(root, host))
    (root / "gres.conf").write_text(_gres_conf())  # read from beside slurm.conf
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
        for node in NODES:
            _start_node(conf, node, env)
    except subprocess.CalledProcessError as exc:
        stop_slurm(Slurm(conf, root))
        raise SlurmStartError(f"{exc.cmd[0]} failed to start: {exc.stderr!r}") from None
    deadline = time.monotonic() + 30
    while True:
        out = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%N %T"], capture_output=True, text=True, env=env
        ).stdout
        if sum(line.split()[1:] == ["idle"] for line in out.splitlines()) >= len(NODES):
            return Slurm(conf, root)
        if time.monotonic() > deadline:
            log = root / "slurmctld.log"
            tail = log.read_text()[-500:] if log.exists() else ""
            stop_slurm(Slurm(conf, root))
            raise SlurmStartError(f"the nodes never became idle: {out!r} {tail}")
        time.sleep(0.2)


def stop_slurm(cluster: Slurm) -> None:
    _stop(cluster.root)
    shutil.rmtree(cluster.root, ignore_errors=True)


def _need_slurm() -> None:
    need("SLURM", IS_ROOT, "starting slurmctld and slurmd needs root")
    for exe in ("munged", "slurmctld", "slurmd", "sbatch", "sinfo", "srun", "sbcast", "unshare"):
        need("SLURM", shutil.which(exe) is not None, f"{exe} is missing (Debian: {DEBS})")


@pytest.fixture(scope="module")
def slurm_down():
    """A cluster of its own whose slurmctld was stopped: every client command meets a real
    refusal (the nodes still run, as when only the controller host is down)."""
    _need_slurm()
    try:
        cluster = start_slurm()
    except SlurmStartError as exc:
        need("SLURM", False, str(exc))
    stop_slurmctld(cluster)
    yield cluster
    stop_slurm(cluster)


@pytest.fixture(scope="session")
def slurm_cluster():
    _need_slurm()
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
