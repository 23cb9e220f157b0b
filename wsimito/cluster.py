"""``wsimito detect`` on a Dask distributed cluster: an existing one (``--scheduler``) or SLURM jobs (``--cluster``).

The slide is the unit of work on a cluster, not the tile. A slide task reads its slide where it lies (shared
storage), runs its tiles in the worker's own threads exactly as a local run does, and writes the slide's Zarr,
GeoJSON and overlay into the shared output folder; only the counts row and the detection table (kilobytes)
travel back. A tile graph would ship every tile's pixels and probabilities through the scheduler instead.
The driver (the ``wsimito detect`` process) only collects rows and writes counts.csv and detections.csv.

Each worker process loads the model once and keeps it (``_cached_model``); the model's hash, computed by the
driver, is checked against the files the worker sees, so a worker never uses another model than the one the
tables name. Slide locks (wsimito.locks) still apply: a task the scheduler reruns after losing its worker may
meet the first attempt's lock, and waits for it or takes it over.

GPUs are a Dask worker resource: GPU workers are started with ``--resources GPU=1`` (``--cluster slurm`` does
this from the ``cluster`` config section), and with device cuda every slide task asks for ``GPU=1``, so each
GPU runs one slide at a time and CPU-only workers get none.
"""

from __future__ import annotations

import os
import shlex
import sys
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path

from wsimito.errors import WsimitoError
from wsimito.pipeline import DetectSettings, SlideResult, process_slide, slide_id

_MODELS: dict = {}
_MODEL_LOADS: dict = {}
_MODELS_GUARD = threading.Lock()


# -- on the workers ---------------------------------------------------------------------------------------------

def _cached_model(model_path: str, sha256: str, device: str):
    """The model of this worker process, loaded on first use; refuses a bundle whose hash differs."""
    from wsimito.bundle import MitosisModel, bundle_sha256

    key = (model_path, sha256, device)
    with _MODELS_GUARD:
        if key not in _MODELS:
            found = bundle_sha256(model_path)
            if found != sha256:
                raise WsimitoError(f"{model_path}: the model on this worker ({found[:12]}) is not the one the driver "
                                   f"hashed ({sha256[:12]}); is the folder shared and unchanged?")
            _MODELS[key] = MitosisModel.load(model_path, device)
            _MODEL_LOADS[key] = _MODEL_LOADS.get(key, 0) + 1
        return _MODELS[key]


def model_loads() -> int:
    """How many times this process loaded a model (a check that workers cache it: one per model and device)."""
    with _MODELS_GUARD:
        return sum(_MODEL_LOADS.values())


def detect_on_worker(path: str, recorded_path: str, out: str, model_path: str, settings: DetectSettings) -> SlideResult:
    """One slide task: the worker's cached model, the slide under its lock, the result back to the driver."""
    model = _cached_model(model_path, settings.model_sha256, settings.device)
    return process_slide(path, Path(out), model, settings, block=True, recorded_path=recorded_path)


# -- on the driver ----------------------------------------------------------------------------------------------

class ClusterRunner:
    """Runs slides as tasks on a Dask client; a ``runner`` for ``wsimito.pipeline.run_batch``."""

    def __init__(self, client, model_path, resources: dict | None = None):
        self.client = client
        self.model_path = os.path.abspath(model_path)
        self.resources = resources or None

    def __call__(self, jobs, out, settings: DetectSettings, on_note=None):
        from distributed import as_completed

        out = os.path.abspath(out)
        batch = uuid.uuid4().hex[:8]
        futures = {}
        for index, path in jobs:
            future = self.client.submit(
                detect_on_worker, os.path.abspath(path), str(path), out, self.model_path, settings,
                key=f"wsimito-detect-{slide_id(path)}-{batch}", pure=False, resources=self.resources,
            )
            futures[future] = (index, path)
        for future in as_completed(futures):
            index, path = futures.pop(future)
            try:
                result = future.result()
            except Exception as exc:  # the task itself failed (model load, lost workers): the slide's error row
                message = str(exc) if isinstance(exc, WsimitoError) else f"{path}: {type(exc).__name__}: {exc}"
                result = SlideResult.failed(path, message, settings.threshold, settings.model_sha256)
            yield index, result


def connect(address: str):
    """A client of the scheduler at ``address`` (tcp://HOST:PORT or a scheduler JSON file).

    It gives up after Dask's ``distributed.comm.timeouts.connect`` (30 s unless configured, e.g. with the
    environment variable DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT=5s).
    """
    from distributed import Client

    try:
        if address.endswith(".json") and Path(address).exists():
            return Client(scheduler_file=address)
        return Client(address)
    except (OSError, TimeoutError) as exc:
        raise WsimitoError(f"{address}: cannot reach a Dask scheduler there ({exc})") from None


def device_for_workers(client, choice: str, address: str, timeout_s: float = 60.0) -> tuple[str, dict | None]:
    """(device, task resources) on an existing cluster: cuda where workers declare a GPU resource."""
    try:
        client.wait_for_workers(1, timeout=timeout_s)
    except TimeoutError:
        raise WsimitoError(f"{address}: no Dask worker connected within {timeout_s:.0f} s") from None
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    gpus = sum(1 for w in workers if (w.get("resources") or {}).get("GPU", 0) >= 1)
    if choice == "auto":
        choice = "cuda" if gpus else "cpu"
    if choice == "cuda" and not gpus:
        raise WsimitoError(f"{address}: --device cuda, but no worker declares a GPU resource; start GPU workers "
                           "with `dask worker ADDRESS --resources GPU=1`")
    return choice, ({"GPU": 1} if choice == "cuda" else None)


def slurm_cluster_options(section, device_choice: str) -> tuple[dict, str, dict | None]:
    """(SLURMCluster keyword arguments, device, task resources) for the ``cluster`` config section.

    One worker process per job, so the model is loaded once per job; with GPUs every job asks for ``--gres``
    and its worker declares the Dask resource ``GPU``. Device auto means cuda when the section asks for GPUs.
    """
    device = device_choice if device_choice != "auto" else ("cuda" if section.gpus > 0 else "cpu")
    if device == "cuda" and section.gpus < 1:
        raise WsimitoError("--device cuda with --cluster slurm needs cluster.gpus >= 1 in the config")
    gpus = section.gpus if device == "cuda" else 0
    directives = shlex.split(section.job_directives)
    if gpus:
        directives.append(f"--gres={section.gres or f'gpu:{gpus}'}")
    options = dict(
        cores=section.cores, memory=section.memory, processes=1, queue=section.queue or None,
        account=section.account or None, walltime=section.walltime, job_name="wsimito-worker",
        job_extra_directives=directives,
        job_script_prologue=[line.strip() for line in section.prologue.split(";") if line.strip()],
        worker_extra_args=["--resources", f"GPU={gpus}"] if gpus else [],
        interface=section.interface or None, python=section.python or sys.executable,
        log_directory=section.log_directory or None, local_directory=section.local_directory or None,
        scheduler_options={"dashboard_address": ":0"},
    )
    return options, device, ({"GPU": 1} if gpus else None)


def slurm_cluster(section, device_choice: str):
    """A dask-jobqueue SLURMCluster of ``section.jobs`` worker jobs: (cluster, device, task resources)."""
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        raise WsimitoError("--cluster slurm needs dask-jobqueue (pip install dask-jobqueue)") from None
    options, device, resources = slurm_cluster_options(section, device_choice)
    cluster = SLURMCluster(**options)
    cluster.scale(jobs=section.jobs)
    return cluster, device, resources


@contextmanager
def cluster_runner(model_path, config, device_choice: str, scheduler: str | None = None, cluster: str | None = None):
    """Yields (runner, device) for ``run_batch``; closes the client, and the SLURM worker jobs it started."""
    from distributed import Client

    started = None
    if scheduler:
        client = connect(scheduler)
        try:
            device, resources = device_for_workers(client, device_choice, scheduler)
        except BaseException:
            client.close()
            raise
    elif cluster == "slurm":
        section = getattr(config, "cluster", None)
        if section is None:
            raise WsimitoError("--cluster slurm: this wsimito's config has no 'cluster' section")
        started, device, resources = slurm_cluster(section, device_choice)
        client = Client(started)
        try:
            client.wait_for_workers(1, timeout=section.start_timeout_s)
        except TimeoutError:
            client.close()
            started.close()
            raise WsimitoError(f"--cluster slurm: no worker job started within {section.start_timeout_s:.0f} s "
                               f"(see squeue, and the job logs in {section.log_directory or 'the submit folder'})"
                               ) from None
    else:
        raise WsimitoError(f"unknown cluster kind {cluster!r} (known: slurm)")
    try:
        yield ClusterRunner(client, model_path, resources), device
    finally:
        client.close()
        if started is not None:
            started.close()
