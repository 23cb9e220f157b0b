"""The sbatch scripts in slurm/ and `merge-reports` on a real SLURM: a private single-node cluster per session.

The cluster is real Debian SLURM (slurmctld + slurmd + munge, installed by .ci/install-slurm.sh) with its own
config, state, ports and munge socket under a temporary folder, so it never meets a system SLURM or a
colleague's test cluster. There is no GPU here: jobs are submitted with --gres=none, as slurm/README.md shows.
Missing SLURM programs fail the tests (CI installs them); they are never skipped.
"""

import csv
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "wsimito/data/CMU-1-Small-Region.svs"
PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "sinfo")


def _program(name):
    found = shutil.which(name) or (f"/usr/sbin/{name}" if os.access(f"/usr/sbin/{name}", os.X_OK) else None)
    if not found:
        pytest.fail(f"SLURM program {name} not found: run .ci/install-slurm.sh (Debian packages slurmctld, slurmd, "
                    "munge, slurm-client)", pytrace=False)
    return found


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _memory_mb():
    with open("/proc/meminfo") as fh:
        total_kb = int(next(line for line in fh if line.startswith("MemTotal")).split()[1])
    return int(total_kb / 1024 * 0.8)


class PrivateSlurm:
    """munged + slurmctld + slurmd for this host only, everything under ``root``; ``env`` points clients at it."""

    def __init__(self, root: Path):
        self.root = root
        self.processes = []
        self.host = socket.gethostname()
        self.conf = root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        for name in ("SLURM_JOB_ID", "SLURM_JOBID", "SLURM_ARRAY_JOB_ID"):  # tests run inside a SLURM job
            self.env.pop(name, None)

    def start(self):
        paths = {name: _program(name) for name in PROGRAMS}
        if os.geteuid() != 0:
            pytest.fail("the SLURM tests start slurmd, which must run as root (as CI does)", pytrace=False)
        root = self.root
        for folder in ("state", "spool", "log"):
            (root / folder).mkdir()
        key = root / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        socket_path = root / "munge.socket"
        self._spawn("munged", [paths["munged"], "-F", "-f", f"--socket={socket_path}", f"--key-file={key}",
                               f"--log-file={root / 'log/munged.log'}", f"--pid-file={root / 'munged.pid'}",
                               f"--seed-file={root / 'munged.seed'}"])
        self._wait(lambda: socket_path.exists(), "munged to create its socket", 10)
        controller_port, node_port = _free_ports(2)
        self.conf.write_text(f"""\
ClusterName=wsimitotest
SlurmctldHost={self.host}(127.0.0.1)
SlurmctldPort={controller_port}
SlurmdPort={node_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={socket_path}
StateSaveLocation={root / 'state'}
SlurmdSpoolDir={root / 'spool'}
SlurmctldPidFile={root / 'slurmctld.pid'}
SlurmdPidFile={root / 'slurmd.pid'}
SlurmctldLogFile={root / 'log/slurmctld.log'}
SlurmdLogFile={root / 'log/slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
DependencyParameters=kill_invalid_depend
ReturnToService=2
MinJobAge=3600
NodeName={self.host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory={_memory_mb()} State=UNKNOWN
PartitionName=test Nodes={self.host} Default=YES MaxTime=INFINITE State=UP
""")
        self._spawn("slurmctld", [paths["slurmctld"], "-D", "-i"])
        self._wait(lambda: self.run("sinfo", "-h", "-o", "%T", check=False).returncode == 0,
                   "slurmctld to answer", 30)
        self._spawn("slurmd", [paths["slurmd"], "-D", "-N", self.host])
        self._wait(lambda: self.run("sinfo", "-h", "-o", "%T", check=False).stdout.strip() == "idle",
                   "the node to be idle", 60)
        return self

    def _spawn(self, name, argv):
        log = open(self.root / f"log/{name}.out", "w")
        self.processes.append((name, subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                                      start_new_session=True)))

    def _wait(self, ready, what, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            for name, process in self.processes:
                if process.poll() is not None:
                    pytest.fail(f"{name} exited with {process.returncode} while waiting for {what}:\n{self.logs()}",
                                pytrace=False)
            if ready():
                return
            time.sleep(0.2)
        pytest.fail(f"SLURM did not start: timed out waiting for {what}:\n{self.logs()}", pytrace=False)

    def logs(self, lines=15):
        text = []
        for path in sorted((self.root / "log").iterdir()):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            text.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(text)

    def run(self, *args, check=True, **kwargs):
        result = subprocess.run([_program(args[0]), *map(str, args[1:])], capture_output=True, text=True,
                                env=self.env, **kwargs)
        if check and result.returncode:
            pytest.fail(f"{' '.join(map(str, args))} failed: {result.stderr}\n{self.logs()}", pytrace=False)
        return result

    def sbatch(self, *args, cwd):
        return self.run("sbatch", "--parsable", *args, cwd=cwd).stdout.strip().split(";")[0]

    def wait_job(self, job, timeout=300):
        """Wait until a job (and all its array tasks) left the queue; its final state, e.g. COMPLETED."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not self.run("squeue", "-h", "-j", job, check=False).stdout.strip():
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"job {job} still queued after {timeout} s:\n"
                        f"{self.run('squeue', check=False).stdout}\n{self.logs()}", pytrace=False)
        shown = self.run("scontrol", "-o", "show", "job", job).stdout
        return sorted({field.split("=", 1)[1] for line in shown.splitlines() for field in line.split()
                       if field.startswith("JobState=")})

    def stop(self):
        for _, process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
        for _, process in reversed(self.processes):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    cluster = PrivateSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def without_runtime(rows):
    return [{k: v for k, v in row.items() if k != "runtime_s"} for row in rows]


def wsimito(*args, **kwargs):
    return subprocess.run(["wsimito", *map(str, args)], capture_output=True, text=True, **kwargs)


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    from wsimito.synth import write_fields

    fields = write_fields(tmp_path_factory.mktemp("fields"), n=3, size=512, mpp=0.5, seed=5)
    return [*fields, SAMPLE]


@pytest.fixture(scope="module")
def local_run(slides, busy_model, tmp_path_factory):
    """One plain local `wsimito detect` over the slides: what every distributed run must reproduce."""
    out = tmp_path_factory.mktemp("local")
    local = wsimito("detect", *slides, "-o", out, "--model", busy_model, "--quiet")
    assert local.returncode == 0, local.stderr
    counts = read_csv(out / "counts.csv")
    assert sum(int(row["mitoses"]) for row in counts) > 0, "a test model that finds nothing proves little"
    return counts, read_csv(out / "detections.csv")


def test_array_then_merge_equals_one_local_run(slurm, slides, busy_model, local_run, tmp_path):
    listing = tmp_path / "slides.txt"
    listing.write_text("".join(f"{path}\n" for path in slides))
    out = tmp_path / "array"
    array = slurm.sbatch("--array=0-2", "--gres=none", "--cpus-per-task=1", "--output", tmp_path / "task-%a.log",
                         REPO / "slurm/detect-array.sbatch", out, *slides, "--model", busy_model, "--quiet",
                         cwd=tmp_path)
    merge = slurm.sbatch(f"--dependency=afterok:{array}", "--output", tmp_path / "merge.log",
                         REPO / "slurm/merge.sbatch", out, "--expect", listing, cwd=tmp_path)
    states = slurm.wait_job(merge)
    logs = "\n".join(f"--- {p.name}\n{p.read_text()}" for p in sorted(tmp_path.glob("*.log")))
    assert states == ["COMPLETED"], f"merge job {states}\n{logs}\n{slurm.logs()}"
    assert slurm.wait_job(array) == ["COMPLETED"], logs
    assert sorted(p.name for p in tmp_path.glob("task-*.log")) == ["task-0.log", "task-1.log", "task-2.log"]
    shards = [read_csv(out / f"counts.shard-{i}-of-3.csv") for i in range(3)]
    assert sorted(len(rows) for rows in shards) != [0, 0, len(slides)], "the split should spread the slides"
    counts, detections = local_run
    assert without_runtime(read_csv(out / "counts.csv")) == without_runtime(counts)
    assert read_csv(out / "detections.csv") == detections
    assert not list(out.glob(".*.lock")) and not list(out.glob("*partial*"))


def test_detect_on_dask_workers_started_as_slurm_jobs(slurm, slides, busy_model, local_run, tmp_path):
    config = tmp_path / "site.yaml"
    config.write_text(f"""\
cluster:
  jobs: 2
  cores: 1
  memory: 1GB
  gpus: 0
  walltime: "00:15:00"
  log_directory: {tmp_path / "worker-logs"}
  start_timeout_s: 120
""")
    fields = slides[:-1]
    result = wsimito("detect", *fields, "-o", tmp_path / "out", "--model", busy_model, "--cluster", "slurm",
                     "--config", config, env=slurm.env, timeout=300)
    logs = "\n".join(p.read_text() for p in (tmp_path / "worker-logs").glob("*"))
    assert result.returncode == 0, f"{result.stderr}\n{logs}"
    assert "device cpu" in result.stderr
    counts, detections = local_run
    names = {Path(f).stem for f in fields}
    assert without_runtime(read_csv(tmp_path / "out/counts.csv")) == without_runtime(
        [r for r in counts if r["slide"] in names])
    assert read_csv(tmp_path / "out/detections.csv") == [d for d in detections if d["slide"] in names]
    assert list((tmp_path / "worker-logs").glob("*")), "the workers ran as SLURM jobs with their own logs"
    deadline = time.time() + 30
    while slurm.run("squeue", "-h").stdout.strip() and time.time() < deadline:
        time.sleep(0.5)
    assert not slurm.run("squeue", "-h").stdout.strip(), "the worker jobs end with the run"


def test_a_failed_task_stops_the_afterok_merge(slurm, tmp_path):
    broken = tmp_path / "broken.svs"
    broken.write_bytes(b"not a slide")
    array = slurm.sbatch("--array=0-1", "--gres=none", "--cpus-per-task=1", "--output", tmp_path / "task-%a.log",
                         REPO / "slurm/detect-array.sbatch", tmp_path / "out", broken, "--quiet", cwd=tmp_path)
    merge = slurm.sbatch(f"--dependency=afterok:{array}", "--output", tmp_path / "merge.log",
                         REPO / "slurm/merge.sbatch", tmp_path / "out", cwd=tmp_path)
    assert slurm.wait_job(merge) == ["CANCELLED"]
    assert "FAILED" in slurm.wait_job(array)
    assert not (tmp_path / "out/counts.csv").exists()


def test_scripts_refuse_to_run_outside_an_array(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    result = subprocess.run(["bash", REPO / "slurm/detect-array.sbatch", tmp_path, SAMPLE], capture_output=True,
                            text=True, env=env)
    assert result.returncode == 2 and "--array" in result.stderr
    result = subprocess.run(["bash", REPO / "slurm/train.sbatch", tmp_path], capture_output=True, text=True, env=env)
    assert result.returncode == 2 and "SEG_DATA" in result.stderr
    for script in ("detect-array.sbatch", "merge.sbatch", "train.sbatch"):
        assert subprocess.run(["bash", "-n", REPO / "slurm" / script]).returncode == 0
