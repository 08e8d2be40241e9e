"""ONNX Runtime backend: the model exported once to ONNX (backbone + controller + dynamic head,
dynamic batch, size and task count), cached beside the model, run by ONNX Runtime's CPU kernels.

Measured on a 2-core AVX2 CPU with the bundled model (``docs/performance.md``): in ``segment``
the 40x stage of a 6000² slide took 32.9 s (ONNX Runtime) and 26.1 s (OpenVINO) against 33.5 s
in torch fp32. The exported graph is the same maths: over the 88 shared patches the largest
probability difference from torch was 1.3e-3 and every task's mean Dice was identical to 4
decimals (``scripts/backend_parity.py``).
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from omniseg.atomic import atomic_path
from omniseg.errors import OmnisegError
from omniseg.models import OmniSeg
from omniseg.models.heads import apply_dynamic_head
from omniseg.models.pretrained import sha256_of
from omniseg.runtime.predictor import PaddedPredictor

OPSET = 17
EXPORT_SIDE = 64  # px of the example input; every axis but the channels is dynamic
CACHE_DIR_NAME = ".onnx-cache"
INPUTS = ("images", "task_ids", "scale_ids")


def require_onnxruntime():
    try:
        import onnx  # noqa: F401 - the exporter needs it
        import onnxruntime
    except ImportError as exc:
        raise OmnisegError(
            "--backend onnxruntime needs the onnxruntime package; install it with "
            "pip install 'omniseg[onnx]' (or use --backend torch)"
        ) from exc
    return onnxruntime


class _ExportGraph(nn.Module):
    """(images, task_ids (N, T), scale_ids (N, T)) -> (N, T, 2, H, W) logits."""

    def __init__(self, model: OmniSeg) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor, task_ids: Tensor, scale_ids: Tensor) -> Tensor:
        features, gap = self.model.encode(images)
        params = self.model.head_params(gap, task_ids, scale_ids)
        return apply_dynamic_head(features, params.to(features.dtype), self.model.config.head)


def export_onnx(model: OmniSeg, path: str | os.PathLike) -> Path:
    """Write ``model`` as one ONNX graph (fp32, opset 17), atomically."""
    require_onnxruntime()
    graph = _ExportGraph(model.float().eval().to(memory_format=torch.contiguous_format)).cpu()
    side = max(EXPORT_SIDE, model.config.size_divisor)
    example = (
        torch.rand(1, model.config.in_channels, side, side),
        torch.zeros(1, 1, dtype=torch.long),
        torch.zeros(1, 1, dtype=torch.long),
    )
    dynamic = {
        "images": {0: "n", 2: "h", 3: "w"},
        "task_ids": {0: "n", 1: "t"},
        "scale_ids": {0: "n", 1: "t"},
        "logits": {0: "n", 1: "t", 3: "h", 4: "w"},
    }
    with atomic_path(path) as temp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            graph, example, str(temp), dynamo=False, opset_version=OPSET, input_names=list(INPUTS),
            output_names=["logits"], dynamic_axes=dynamic,
        )  # fmt: skip
    return Path(path)


def cached_onnx(model: OmniSeg, model_dir: Path | None, sha256: str | None) -> Path:
    """The model's ONNX file, exported once and reused: beside the model folder when it is
    writable (``.onnx-cache/``), else in the user's cache; keyed by the weights' SHA-256 and the
    torch and ONNX Runtime versions, so new weights or runtimes export again."""
    ort = require_onnxruntime()
    digest = sha256 or weights_digest(model)  # never one shared key for unverified models
    key = f"{digest[:16]}-torch{torch.__version__}-ort{ort.__version__}.onnx"
    export = functools.partial(export_onnx, model)
    return cached_file(key, cache_dirs(model_dir), export, f"the ONNX export of {model_dir}")


def cached_file(name: str, folders: Sequence[Path], build: Callable[[Path], Path], what: str):
    """``name`` from the first of ``folders`` that has it with the SHA-256 recorded when it was
    built (a file replaced under the same name is built again), else built by ``build(path)``
    into the first writable one (an installed package's folder is read-only)."""
    for folder in folders:
        path = folder / name
        if path.is_file() and _recorded_sha256(path) == sha256_of(path):
            return path
        try:
            folder.mkdir(parents=True, exist_ok=True)
            built = build(path)
            with atomic_path(_sha_path(built)) as tmp:
                Path(tmp).write_text(sha256_of(built) + "\n", encoding="utf-8")
            return built
        except OSError:
            continue  # read-only: try the next place
    raise OmnisegError(f"no writable place to cache {what}")


def _sha_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _recorded_sha256(path: Path) -> str | None:
    try:
        return _sha_path(path).read_text(encoding="utf-8").strip()
    except OSError:
        return None


def weights_digest(model: OmniSeg) -> str:
    """SHA-256 over the model's parameters and buffers (names, shapes, dtypes, values)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        value = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tuple(value.shape)}:{value.dtype};".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cache_dirs(model_dir: Path | None) -> list[Path]:
    """Beside the model, the user's cache, and last a per-user temp folder that only the user
    may write (a shared, world-writable one let anyone plant a graph)."""
    user = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "omniseg" / "onnx"
    places = [model_dir / CACHE_DIR_NAME] if model_dir is not None else []
    private = _private_temp(Path(tempfile.gettempdir()) / f"omniseg-onnx-{os.getuid()}")
    return [*places, user, *([private] if private else [])]


def _private_temp(folder: Path) -> Path | None:
    """``folder`` made 0700 and owned by this user, or None when it is someone else's."""
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        info = folder.lstat()
    except OSError:
        return None
    if folder.is_symlink() or info.st_uid != os.getuid() or info.st_mode & 0o077:
        return None
    return folder


class _GraphPredictor(PaddedPredictor):
    """A runtime that runs the exported graph on the CPU in fp32: feeds it numpy arrays and
    maps both predictor calls onto its (images, task_ids, scale_ids) inputs."""

    def __init__(
        self,
        model: OmniSeg,
        onnx_path: str | os.PathLike,
        threads: int = 0,
        *,
        backend: str | None = None,
        precision: str = "fp32",
    ) -> None:
        self.device = torch.device("cpu")
        self.backend = backend or self.backend
        self.precision = precision
        self.size_divisor = model.config.size_divisor
        self.in_channels = model.config.in_channels
        self._load(str(onnx_path), threads or torch.get_num_threads())

    def _load(self, onnx_path: str, threads: int) -> None:
        """Open the graph in this runtime, on ``threads`` CPU threads."""
        raise NotImplementedError

    def _infer(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def _run_graph(self, x: Tensor, task_ids: Tensor, scale_ids: Tensor) -> Tensor:
        feed = {
            "images": np.ascontiguousarray(x.numpy(), dtype=np.float32),
            "task_ids": task_ids.numpy().astype(np.int64),
            "scale_ids": scale_ids.numpy().astype(np.int64),
        }
        return torch.from_numpy(np.asarray(self._infer(feed)))

    def _task_logits(self, x: Tensor, tasks: list[int], scale_ids: Tensor) -> Tensor:
        task_ids = torch.as_tensor(tasks, dtype=torch.long).expand(x.shape[0], -1)
        return self._run_graph(x, task_ids, scale_ids[:, None].expand_as(task_ids))

    def _sample_logits(self, x: Tensor, task_ids: Tensor, scale_ids: Tensor) -> Tensor:
        return self._run_graph(x, task_ids[:, None], scale_ids[:, None])[:, 0]


class OnnxPredictor(_GraphPredictor):
    """ONNX Runtime on the CPU (fp32). Same padding, TTA and crop as the torch predictor."""

    backend = "onnxruntime"

    def _load(self, onnx_path: str, threads: int) -> None:
        ort = require_onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])

    def _infer(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, feed)[0]


def require_openvino():
    try:
        import openvino
    except ImportError as exc:
        raise OmnisegError(
            "--backend openvino needs the openvino package; install it with "
            "pip install 'omniseg[openvino]' (or use --backend torch)"
        ) from exc
    return openvino


class OpenVinoPredictor(_GraphPredictor):
    """OpenVINO on the CPU (fp32), compiled from the same cached ONNX export."""

    backend = "openvino"

    def _load(self, onnx_path: str, threads: int) -> None:
        ov = require_openvino()
        core = ov.Core()
        config = {
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32",  # never a silent bf16/f16 on capable CPUs
        }
        self.compiled = core.compile_model(core.read_model(onnx_path), "CPU", config)
        self.request = self.compiled.create_infer_request()

    def _infer(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        return self.request.infer(feed)[self.compiled.output(0)]
