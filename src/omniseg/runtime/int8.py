"""int8 inference: the ONNX export with its decoder convolutions statically quantized (QDQ),
from activation ranges calibrated on real labelled patches and kept beside the weights.

Why only the decoder: on the bundled model and the 88 shared patches, quantizing every
convolution cost up to 0.03 mean foreground Dice (the EfficientNet encoder's depthwise
convolutions are the sensitive part), while the decoder alone stayed within 0.003 of fp32.
The decoder holds two thirds of the multiply-adds at 512². Weights are int8 per channel with
7-bit range (``reduce_range``): AVX2 CPUs without VNNI multiply u8 x s8 pairs into saturating
int16 sums, and the reduced range keeps those exact, so every CPU gets the same answer.

The calibration table (``int8-calibration.json``) is small, readable and shipped with the
bundled model; ``omniseg calibrate MODEL_DIR --data PATCHES`` writes one for any model folder.
The quantized graph is built from it once and cached with the fp32 export.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from omniseg.atomic import atomic_path
from omniseg.errors import OmnisegError
from omniseg.runtime.onnx_backend import (
    cache_dirs,
    cached_file,
    cached_onnx,
    export_onnx,
    require_onnxruntime,
)
from omniseg.runtime.predictor import image_to_tensor, reflect_pad

CALIBRATION_NAME = "int8-calibration.json"
FORMAT = "omniseg-int8-calibration"
FORMAT_VERSION = 1
# Conv nodes kept fp32: the encoders (EfficientNet-Lite0 backbones, and the original ResNet's
# stem and layers). Everything after them (decoder, fusion, pre-classifier) is quantized.
ENCODER_SCOPES = ("/backbone/encoder/", "/conv1/", "/layer")
QUANTIZED_OP_TYPES = ("Conv",)


def quantized_nodes(onnx_path: str | os.PathLike) -> list[str]:
    """Names of the Conv nodes the int8 graph quantizes: every one outside the encoder."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return [
        node.name
        for node in graph.node
        if node.op_type in QUANTIZED_OP_TYPES
        and not any(node.name.startswith(scope) for scope in ENCODER_SCOPES)
    ]


def _quantize(fp32: Path, out: Path, nodes: list[str], cache: Path, reader=None) -> None:
    """ONNX Runtime's static QDQ quantization of ``nodes``; ranges from ``reader`` (written to
    ``cache``) or, without one, read from ``cache``."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    root = logging.getLogger()
    was, root.disabled = root.disabled, True  # ORT logs pre-processing advice on the root logger
    try:
        quantize_static(
            str(fp32), str(out), reader, quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(QUANTIZED_OP_TYPES), nodes_to_quantize=nodes,
            per_channel=True, reduce_range=True, activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
            calibration_cache_path=str(cache),
        )  # fmt: skip
    finally:
        root.disabled = was


class _PatchReader:
    """ONNX Runtime calibration reader: one patch at a time, padded to the size divisor."""

    def __init__(self, samples: Iterable[tuple[np.ndarray, int, int]], divisor: int) -> None:
        self._samples = iter(samples)
        self._divisor = divisor

    def get_next(self) -> dict[str, np.ndarray] | None:
        sample = next(self._samples, None)
        if sample is None:
            return None
        image, task_id, scale_id = sample
        x = image_to_tensor(image)[None]
        x = reflect_pad(x, -x.shape[-2] % self._divisor, -x.shape[-1] % self._divisor)
        ids = {"task_ids": np.array([[task_id]]), "scale_ids": np.array([[scale_id]])}
        return {"images": x.numpy(), **ids}


def calibrate(
    model,
    samples: Sequence[tuple[np.ndarray, int, int]],
    out_path: str | os.PathLike,
    *,
    weights_sha256: str | None = None,
    source: str = "",
) -> dict:
    """Run ``samples`` (HxWx3 uint8 image, task id, scale id) through the fp32 export, record
    every quantized tensor's range, and write the table atomically. Returns the table."""
    ort = require_onnxruntime()
    if not samples:
        raise OmnisegError(f"{source or 'calibration'}: no patches to calibrate on")
    from onnxruntime.quantization.calibrate import load_tensors_data

    with tempfile.TemporaryDirectory(prefix="omniseg-int8-") as tmp:
        fp32 = export_onnx(model, Path(tmp) / "model.onnx")
        nodes = quantized_nodes(fp32)
        cache = Path(tmp) / "ranges.json"
        reader = _PatchReader(samples, model.config.size_divisor)
        _quantize(fp32, Path(tmp) / "int8.onnx", nodes, cache, reader)
        ranges = load_tensors_data(cache).data
    tasks = sorted({int(task) for _, task, _ in samples})
    table = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "method": "minmax",
        "weights_sha256": weights_sha256,
        "patches": len(samples),
        "tasks": tasks,
        "source": source,
        "onnxruntime": ort.__version__,
        "torch": torch.__version__,
        "nodes": nodes,
        "ranges": {name: _range(d.range_value) for name, d in sorted(ranges.items())},
    }
    with atomic_path(out_path) as temp:
        temp.write_text(json.dumps(table, indent=1) + "\n", encoding="utf-8")
    return table


def _range(value: tuple) -> list[float]:
    """(lowest, highest) as two floats; ONNX Runtime may hold each as a 1-element array."""
    low, high = (np.asarray(v, dtype=np.float32).reshape(-1) for v in value)
    if low.size != 1 or high.size != 1:
        raise OmnisegError(f"unexpected per-channel activation range of shape {low.shape}")
    return [float(low[0]), float(high[0])]


def read_calibration(model_dir: Path | None, sha256: str | None) -> tuple[dict, str]:
    """(table, SHA-256 of its file) for ``model_dir``; one clear error when absent or stale."""
    path = Path(model_dir or ".") / CALIBRATION_NAME
    how = "make one with: omniseg calibrate MODEL_DIR --data PATCHES (or use an fp32 backend)"
    if model_dir is None or not path.is_file():
        raise OmnisegError(f"{path}: no int8 calibration for this model; {how}")
    raw = path.read_bytes()
    try:
        table = json.loads(raw)
        ok = table.get("format") == FORMAT and isinstance(table.get("ranges"), dict)
    except (ValueError, AttributeError):
        ok = False
    if not ok:
        raise OmnisegError(f"{path}: not an omniseg int8 calibration table; {how}")
    recorded = table.get("weights_sha256")
    if recorded and sha256 and recorded != sha256:
        raise OmnisegError(f"{path}: calibrated for other weights ({recorded[:12]}); {how}")
    return table, hashlib.sha256(raw).hexdigest()


def build_int8(fp32: Path, table: dict, out: Path, where: Path) -> Path:
    """The quantized graph of ``fp32`` from ``table``'s ranges, written atomically to ``out``."""
    from onnxruntime.quantization.calibrate import (
        CalibrationMethod,
        TensorsData,
        save_tensors_data,
    )

    nodes = list(table.get("nodes") or [])
    missing = sorted(set(nodes) - set(quantized_nodes(fp32)))
    ranges = table["ranges"]
    if missing or not nodes:
        raise OmnisegError(
            f"{where}: the int8 calibration names layers this export does not have "
            f"({', '.join(missing[:3]) or 'none listed'}); recalibrate with omniseg calibrate"
        )
    data = TensorsData(
        CalibrationMethod.MinMax,
        {k: (np.float32(lo), np.float32(hi)) for k, (lo, hi) in ranges.items()},
    )
    with tempfile.TemporaryDirectory(prefix="omniseg-int8-") as tmp, atomic_path(out) as temp:
        cache = Path(tmp) / "ranges.json"
        save_tensors_data(data, cache)
        try:
            _quantize(fp32, temp, nodes, cache)
        except (KeyError, ValueError) as exc:
            raise OmnisegError(
                f"{where}: the int8 calibration does not fit this export ({exc}); "
                "recalibrate with omniseg calibrate"
            ) from exc
    return out


def cached_int8(model, model_dir: Path | None, sha256: str | None) -> Path:
    """The model's int8 graph, built once from its calibration table and cached beside the fp32
    export, keyed by that export and the table's SHA-256."""
    table, table_sha = read_calibration(model_dir, sha256)
    fp32 = cached_onnx(model, model_dir, sha256)
    name = f"{fp32.stem}-int8-{table_sha[:12]}.onnx"

    def build(path: Path) -> Path:
        return build_int8(fp32, table, path, model_dir / CALIBRATION_NAME)

    folders = [fp32.parent, *cache_dirs(model_dir)]
    return cached_file(name, folders, build, f"the int8 graph of {model_dir}")
