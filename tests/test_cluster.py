"""`wsimito detect` on a real Dask distributed cluster of separate processes, and the dask-jobqueue settings."""

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "wsimito/data/CMU-1-Small-Region.svs"


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def wsimito(*args, **kwargs):
    return subprocess.run(["wsimito", *map(str, args)], capture_output=True, text=True, **kwargs)


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    """`dask scheduler` and two single-threaded `dask worker` processes, started elsewhere than the tests run."""
    root = tmp_path_factory.mktemp("dask")
    scheduler_file = root / "scheduler.json"
    logs = open(root / "dask.log", "w")
    common = dict(cwd=root, stdout=logs, stderr=subprocess.STDOUT, start_new_session=True)
    processes = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                   "--port", "0", "--dashboard-address", ":0", "--scheduler-file", scheduler_file],
                                  **common)]
    try:
        deadline = time.time() + 60
        while not scheduler_file.exists() and time.time() < deadline:
            time.sleep(0.1)
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file", scheduler_file, "--nworkers",
             "2", "--nthreads", "1", "--no-dashboard", "--local-directory", root / "workers"], **common))
        address = json.loads(scheduler_file.read_text())["address"]
        from distributed import Client

        with Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
        yield address
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in reversed(processes):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        logs.close()


def test_detect_on_a_distributed_cluster_equals_a_local_run(dask_cluster, busy_model, tmp_path):
    from wsimito.synth import write_fields

    slides = write_fields(tmp_path / "fields", n=3, size=512, mpp=0.5, seed=9)
    local = wsimito("detect", *slides, "-o", tmp_path / "local", "--model", busy_model, "--quiet")
    assert local.returncode == 0, local.stderr
    remote = wsimito("detect", *slides, "-o", tmp_path / "remote", "--model", busy_model,
                     "--scheduler", dask_cluster)
    assert remote.returncode == 0, remote.stderr
    assert "device cpu" in remote.stderr and "slide 3/3 done" in remote.stderr
    expected = read_csv(tmp_path / "local/detections.csv")
    assert len(expected) > 0
    assert read_csv(tmp_path / "remote/detections.csv") == expected
    drop = lambda rows: [{k: v for k, v in r.items() if k != "runtime_s"} for r in rows]  # noqa: E731
    assert drop(read_csv(tmp_path / "remote/counts.csv")) == drop(read_csv(tmp_path / "local/counts.csv"))
    for name in ("field_000.zarr", "field_001.geojson", "field_002.overlay.png"):
        assert (tmp_path / "remote" / name).exists()

    from distributed import Client

    from wsimito.cluster import model_loads

    with Client(dask_cluster, timeout=30) as client:
        loads = client.run(model_loads)
    assert sorted(loads.values()) in ([1, 1], [0, 1]), f"each worker loads the model once: {loads}"


def test_cuda_without_gpu_workers_is_a_one_line_error(dask_cluster, busy_model, tmp_path):
    result = wsimito("detect", SAMPLE, "-o", tmp_path, "--model", busy_model, "--scheduler", dask_cluster,
                     "--device", "cuda")
    assert result.returncode == 1
    assert "no worker declares a GPU resource" in result.stderr and "Traceback" not in result.stderr
    result = wsimito("detect", SAMPLE, "-o", tmp_path, "--scheduler", "tcp://127.0.0.1:9", "--model", busy_model,
                     env={**os.environ, "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "1s"})
    assert result.returncode == 1 and "cannot reach a Dask scheduler" in result.stderr


def test_slurm_cluster_jobs_ask_for_gpus_and_declare_them(tmp_path):
    """The job script dask-jobqueue would submit for the `cluster` config section (nothing is submitted)."""
    from dask_jobqueue import SLURMCluster

    from wsimito.cluster import slurm_cluster_options
    from wsimito.config import load_config

    config = load_config(None, {"cluster.queue": "gpu", "cluster.cores": 6, "cluster.memory": "20GB",
                                "cluster.job_directives": "--constraint=a100 --qos=long",
                                "cluster.prologue": "module load cuda; source venv/bin/activate",
                                "cluster.log_directory": str(tmp_path)})
    options, device, resources = slurm_cluster_options(config.cluster, "auto")
    assert device == "cuda" and resources == {"GPU": 1}
    with SLURMCluster(**options) as cluster:
        script = cluster.job_script()
    for expected in ("#SBATCH -p gpu", "#SBATCH --cpus-per-task=6", "#SBATCH --gres=gpu:1",
                     "#SBATCH --constraint=a100", "#SBATCH --qos=long", "module load cuda", "--resources GPU=1",
                     "--nthreads 6", sys.executable):
        assert expected in script, f"{expected!r} not in\n{script}"
    options, device, resources = slurm_cluster_options(config.cluster, "cpu")
    assert device == "cpu" and resources is None and not any("gres" in d for d in options["job_extra_directives"])
