"""Run a cohort: in this process, on a LocalCluster of N worker processes, or on an existing
Dask cluster (``--scheduler ADDRESS`` or a scheduler file from dask-jobqueue / dask-mpi).

Re-running the same command resumes: every slide goes through ``segment_slide`` with
``--resume`` semantics, so a finished slide is recognised by its completed outputs (its
summary.json, written last) and kept, and an unfinished one continues from its finished tiles.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from tqdm import tqdm

from omniseg.catalogue import catalogue_of
from omniseg.errors import OmnisegError
from omniseg.inference.cohort.listing import SlideJob
from omniseg.inference.cohort.table import FAILED, CohortTable, slide_row
from omniseg.inference.cohort.worker import (
    PLUGIN_NAME,
    ModelSpec,
    WorkerState,
    cores,
    load_state,
    run_job,
)
from omniseg.inference.outputs import object_names
from omniseg.inference.pipeline import build_predictor
from omniseg.inference.results import result_dir
from omniseg.inference.settings import SegmentSettings

log = logging.getLogger(__name__)
# Dask's nanny sets MALLOC_TRIM_THRESHOLD_=65536 in every worker, which made torch page-fault
# its activations on every batch (-39 % tiles/s; ../shared/docs/dependencies.md, trap T5).
NANNY_ENV_KEY = "distributed.nanny.pre-spawn-environ"
CONNECT_TIMEOUT_S = 30
KILLED = "its worker process died {n} times while running it (out of memory?); run fewer workers"


@dataclass(frozen=True)
class ClusterSettings:
    """Where a cohort runs: workers = a LocalCluster; scheduler = an existing cluster."""

    workers: int | None = None
    scheduler: str | None = None  # tcp://host:8786, or a scheduler JSON file
    fail_fast: bool = False

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise OmnisegError(f"--workers must be >= 1, got {self.workers}")
        if self.workers is not None and self.scheduler is not None:
            raise OmnisegError("give either --workers (a local cluster) or --scheduler, not both")

    @property
    def distributed(self) -> bool:
        return self.workers is not None or self.scheduler is not None


@dataclass
class CohortResult:
    rows: list[dict]
    table: Path
    wall_s: float
    dashboard: str | None = None

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.rows if r["status"] == FAILED]


def run_cohort(
    jobs: Sequence[SlideJob],
    out: str | Path,
    settings: SegmentSettings,
    spec: ModelSpec,
    cluster: ClusterSettings = ClusterSettings(),
    *,
    progress: bool = True,
    on_dashboard: Callable[[str], None] | None = None,
    loaded: tuple | None = None,
) -> CohortResult:
    """Segment every slide; failures are rows of cohort.csv (``fail_fast`` stops at the first).

    ``loaded``: (model, ModelSource) the caller already loaded from ``spec``, used in this
    process instead of loading it again (Dask workers always load their own)."""
    # absolute paths: a remote worker resolves relative ones against its own working folder
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    jobs = [replace(j, path=j.path.resolve(), roi=j.roi.resolve() if j.roi else None) for j in jobs]
    roi = Path(settings.roi).resolve() if settings.roi is not None else None
    settings = replace(settings, resume=not settings.overwrite, progress=False, roi=roi)
    spec = replace(spec, weights=Path(spec.weights).resolve() if spec.weights else None)
    if loaded is None:
        local = load_state(spec, settings, threads=cores(), name="local")  # fails here, once
    else:
        model, source = loaded
        local = WorkerState(
            model, source, build_predictor(model, settings, source), cores(), "local"
        )
    taken: set[str] = set()
    folders = []
    for job in jobs:
        folders.append(result_dir(out, job.path, taken))
        taken.add(folders[-1].name)
    names = list(object_names(catalogue_of(local.model)).values())
    table = CohortTable(out, [j.path for j in jobs], names)
    bar = tqdm(total=len(jobs), desc="cohort", unit="slide", disable=not progress)
    started = time.perf_counter()
    dashboard = None
    try:
        with bar:
            if cluster.distributed:
                del local  # the workers load their own copy
                dashboard = _run_on_dask(jobs, folders, out, settings, spec, cluster, table, bar,
                                         on_dashboard)  # fmt: skip
            else:
                _run_here(local, jobs, folders, out, settings, cluster, table, bar)
    finally:
        table.close()  # the rows a throttled rewrite held back, also on Ctrl-C
    wall = time.perf_counter() - started
    extra = {"wall_s": round(wall, 2), "workers": cluster.workers, "scheduler": cluster.scheduler}
    table.write_summary(extra)
    return CohortResult(list(table.rows.values()), table.path, wall, dashboard)


def _run_here(state: WorkerState, jobs, folders, out, settings, cluster, table, bar) -> None:
    for job, folder in zip(jobs, folders, strict=True):
        row = run_job(state, job, out, folder, settings)
        _record(table, bar, row)
        if cluster.fail_fast and row["status"] == FAILED:
            break


def _record(table: CohortTable, bar, row: dict, running: int | None = None) -> None:
    table.update(row)
    counts = table.counts()
    postfix = {"done": counts["done"] + counts["kept"], "failed": counts["failed"]}
    if running is not None:
        postfix["running"] = running
    bar.set_postfix(postfix)
    bar.update(1)


def _run_on_dask(jobs, folders, out, settings, spec, cluster, table, bar, on_dashboard):
    try:
        import dask
        from distributed import Client, LocalCluster, as_completed
        from distributed.scheduler import KilledWorker

        from omniseg.inference.cohort.dask_plugin import ModelPlugin
    except ImportError as exc:
        raise OmnisegError(
            f"--workers / --scheduler run on Dask, which is not installed ({exc}); install it "
            "with: pip install 'omniseg[cluster]'"
        ) from exc
    from omniseg.inference.cohort.worker import segment_job

    env = {k: "1" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    with dask.config.set({NANNY_ENV_KEY: env}):
        local = None
        if cluster.workers is not None:
            local = LocalCluster(
                n_workers=cluster.workers, threads_per_worker=1, processes=True,
                dashboard_address=":0", silence_logs=logging.ERROR,
            )  # fmt: skip
            client = Client(local)
        else:
            client = _connect(Client, cluster.scheduler)
    run_id = uuid.uuid4().hex[:8]  # keys and plugin of this run only (a shared cluster)
    plugin_name = f"{PLUGIN_NAME}-{run_id}"
    try:
        if on_dashboard is not None:
            on_dashboard(client.dashboard_link)
        client.register_plugin(ModelPlugin(spec, settings, _slots_by_host(client), plugin_name))
        futures = {
            client.submit(
                segment_job,
                plugin_name,
                job,
                str(out),
                str(folder),
                settings,
                key=f"omniseg-{run_id}-slide-{i}-{folder.name}",
                pure=False,
            ): job
            for i, (job, folder) in enumerate(zip(jobs, folders, strict=True))
        }
        allowed = dask.config.get("distributed.scheduler.allowed-failures")
        for future in as_completed(futures):
            job = futures[future]
            try:
                row = future.result()
            except KilledWorker:
                row = slide_row(
                    job.path, FAILED, error=f"{job.path}: {KILLED.format(n=allowed + 1)}"
                )
            except Exception as exc:  # lost connection, a worker without the plugin, ...
                error = f"{job.path}: the cluster could not run it: {type(exc).__name__}: {exc}"
                row = slide_row(job.path, FAILED, error=error)
            running = sum(len(keys) for keys in client.processing().values())
            _record(table, bar, row, running)
            if cluster.fail_fast and row["status"] == FAILED:
                client.cancel(list(futures))
                break
        return client.dashboard_link
    finally:
        with contextlib.suppress(Exception):  # the model must not stay loaded on the workers
            client.unregister_worker_plugin(plugin_name)
        client.close()
        if local is not None:
            local.close()


def _connect(client_type, scheduler: str):
    """A client of an existing cluster: a scheduler file (as dask-jobqueue or dask-mpi write)
    or an address; one clear error when neither works."""
    try:
        if scheduler.endswith(".json") or Path(scheduler).is_file():
            if not Path(scheduler).is_file():
                raise OmnisegError(f"{scheduler}: scheduler file not found; check --scheduler")
            return client_type(scheduler_file=scheduler, timeout=CONNECT_TIMEOUT_S)
        return client_type(scheduler, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, ValueError) as exc:
        raise OmnisegError(
            f"--scheduler {scheduler}: cannot reach the Dask scheduler ({exc}); check the address "
            "and that the cluster is running"
        ) from exc


def _slots_by_host(client) -> dict[str, int]:
    """Task slots (worker threads) per host: each worker divides its host's cores by them,
    so N workers never oversubscribe a machine."""
    try:
        info = client.scheduler_info(n_workers=-1)
    except TypeError:  # distributed before the n_workers argument
        info = client.scheduler_info()
    per_host: dict[str, int] = {}
    for worker in info["workers"].values():
        per_host[worker["host"]] = per_host.get(worker["host"], 0) + worker.get("nthreads", 1)
    return per_host
