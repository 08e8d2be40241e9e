"""The Dask worker plugin (imported only when a cohort runs on Dask: dask is optional)."""

from __future__ import annotations

import torch
from distributed import WorkerPlugin

from omniseg.inference.cohort.worker import STATE, ModelSpec, cores, load_state
from omniseg.inference.settings import SegmentSettings


class ModelPlugin(WorkerPlugin):
    """Dask worker plugin: load the model once per worker process."""

    def __init__(
        self, spec: ModelSpec, settings: SegmentSettings, slots_by_host: dict, name: str
    ) -> None:
        self.spec, self.settings, self.slots_by_host = spec, settings, slots_by_host
        self.name = name  # one per cohort run: two runs on one cluster keep their own models

    def setup(self, worker) -> None:
        host = worker.address.rsplit(":", 1)[0].split("//")[-1]
        threads = max(1, cores() // self.slots_by_host.get(host, 1))
        index = worker.name if isinstance(worker.name, int) else 0
        torch.set_num_threads(threads)
        STATE[self.name] = load_state(self.spec, self.settings, threads, str(worker.name), index)

    def teardown(self, worker) -> None:
        STATE.pop(self.name, None)
