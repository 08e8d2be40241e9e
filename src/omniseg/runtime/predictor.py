"""The predictor: the ONE way an image batch becomes foreground probabilities.

``evaluate``, threshold tuning and the whole-slide ``segment`` all call it, so a patch gets the
same prediction whichever command ran: /255 scaling (no mean/std), reflect padding to the
network's size divisor and crop back, optional 8-fold dihedral test-time augmentation averaged
on foreground probabilities, under the run's precision.

:class:`Predictor` is the interface the pipeline needs; :class:`TorchPredictor` runs a torch
model. Other runtimes (ONNX Runtime, OpenVINO) implement the same two methods.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from omniseg.models import InferenceSettings, OmniSeg, foreground_probability
from omniseg.models.fusion import fold_batch_norms, weights_version
from omniseg.runtime.device import model_device
from omniseg.runtime.precision import autocast, resolve_precision

UINT8_MAX = 255.0
DIHEDRAL_ROTATIONS = 4  # rot90 by 0, 90, 180, 270 degrees, each with and without a flip


class SegmentModel(Protocol):
    """What the predictor and the slide pipeline need from a model (``OmniSeg``, or a test
    double such as :class:`omniseg.testing.PointwiseModel`): its inference settings, its
    config (``size_divisor``, ``in_channels``), the two forward passes, and nn.Module's
    ``parameters``/``eval``/``train``."""

    inference: InferenceSettings
    config: object
    training: bool

    def predict_tasks(self, x: Tensor, task_ids: Sequence[int], scale_id) -> Tensor:
        """(N, 3, H, W) -> (N, T, 2, H, W) logits, the backbone run once for all T tasks."""
        ...

    def __call__(self, x: Tensor, task_ids, scale_ids) -> Tensor:
        """(N, 3, H, W) -> (N, 2, H, W) logits, each image for its own task and scale."""
        ...

    def parameters(self) -> Iterator[torch.nn.Parameter]: ...

    def eval(self) -> SegmentModel: ...

    def train(self, mode: bool = True) -> SegmentModel: ...


@runtime_checkable
class Predictor(Protocol):
    """What ``segment`` and ``evaluate`` need from an inference backend."""

    backend: str  # "torch", "onnxruntime", ... (recorded in summary.json)
    device: torch.device
    precision: str

    def predict_tasks(
        self, images: Tensor, tasks: Sequence[int], scale_id: int, *, tta: bool
    ) -> Tensor:
        """(N, 3, H, W) in [0, 1] -> (N, len(tasks), H, W) float32; the backbone runs once."""
        ...

    def predict_probability(
        self,
        images: Tensor,
        task_ids: Tensor | Sequence[int] | int,
        scale_ids: Tensor | Sequence[int] | int,
        *,
        tta: bool,
    ) -> Tensor:
        """(N, 3, H, W) in [0, 1] -> (N, H, W) float32, each image for its own task and scale."""
        ...


def image_to_tensor(image: np.ndarray) -> Tensor:
    """HxWx3 uint8 RGB -> (3, H, W) float32 in [0, 1] (the network was trained on exactly this)."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got {arr.dtype} {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).float() / UINT8_MAX


def images_to_batch(images: Sequence[np.ndarray]) -> Tensor:
    """HxWx3 uint8 RGB images of one size -> (N, 3, H, W) float32 in [0, 1], equal to stacking
    ``image_to_tensor`` of each, but laid out channels-last as the images already are: one
    conversion pass instead of a permute, a stack and a layout copy per batch."""
    arrays = [np.asarray(image) for image in images]
    for arr in arrays:
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
            raise ValueError(f"expected HxWx3 uint8 RGB images, got {arr.dtype} {arr.shape}")
    stacked = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    return stacked.to(torch.float32, memory_format=torch.channels_last).div_(UINT8_MAX)


def reflect_pad(x: Tensor, bottom: int, right: int) -> Tensor:
    """Mirror-pad (N, C, H, W) at the bottom/right, mirroring again if the pad exceeds the image."""
    while bottom > 0 or right > 0:
        h, w = x.shape[-2:]
        step_b = min(bottom, h - 1)
        step_r = min(right, w - 1)
        if step_b == 0 and step_r == 0:  # a 1-px wide image cannot be mirrored
            return F.pad(x, (0, right, 0, bottom), mode="replicate")
        x = F.pad(x, (0, step_r, 0, step_b), mode="reflect")
        bottom, right = bottom - step_b, right - step_r
    return x


def dihedral_transforms(tta: bool) -> list[tuple[int, bool]]:
    """(rotations, flip) pairs: the identity only, or all 8 symmetries of the square."""
    if not tta:
        return [(0, False)]
    return [(k, flip) for flip in (False, True) for k in range(DIHEDRAL_ROTATIONS)]


def _dihedral(x: Tensor, k: int, flip: bool) -> Tensor:
    x = torch.flip(x, dims=(-1,)) if flip else x
    return torch.rot90(x, k, dims=(-2, -1)) if k else x


def _undo_dihedral(x: Tensor, k: int, flip: bool) -> Tensor:
    x = torch.rot90(x, -k, dims=(-2, -1)) if k else x
    return torch.flip(x, dims=(-1,)) if flip else x


@contextlib.contextmanager
def inference_mode_of(model: torch.nn.Module) -> Iterator[None]:
    """eval() + no_grad for the block, then the model's previous train/eval mode again."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


class PaddedPredictor:
    """What every backend shares: pad to the size divisor, run the dihedral TTA views, undo them,
    average foreground probabilities, crop back. A backend supplies the logits of a padded
    (N, 3, H, W) float32 batch: ``_task_logits`` (every image, the same T tasks, one backbone
    pass) -> (N, T, 2, H, W) and ``_sample_logits`` (each image its own task and scale) ->
    (N, 2, H, W)."""

    backend = "abstract"
    channels_last = False  # run the padded batch in the channels-last layout
    device: torch.device
    precision: str
    size_divisor: int
    in_channels: int = 3

    def _task_logits(self, x: Tensor, tasks: list[int], scale_ids: Tensor) -> Tensor:
        raise NotImplementedError

    def _sample_logits(self, x: Tensor, task_ids: Tensor, scale_ids: Tensor) -> Tensor:
        raise NotImplementedError

    def _context(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def predict_tasks(
        self, images: Tensor, tasks: Sequence[int], scale_id: int, *, tta: bool
    ) -> Tensor:
        scale_ids = torch.full((images.shape[0],), int(scale_id), dtype=torch.long)
        task_list = [int(t) for t in tasks]
        return self._run(images, lambda x: self._task_logits(x, task_list, scale_ids), tta)

    def predict_probability(
        self,
        images: Tensor,
        task_ids: Tensor | Sequence[int] | int,
        scale_ids: Tensor | Sequence[int] | int,
        *,
        tta: bool,
    ) -> Tensor:
        n = images.shape[0]
        tasks = torch.as_tensor(task_ids, dtype=torch.long).reshape(-1).expand(n)
        scales = torch.as_tensor(scale_ids, dtype=torch.long).reshape(-1).expand(n)
        logits = lambda x: self._sample_logits(x, tasks, scales)[:, None]  # noqa: E731
        return self._run(images, logits, tta)[:, 0]

    def _run(self, images: Tensor, logits: Callable[[Tensor], Tensor], tta: bool) -> Tensor:
        """Pad -> (each dihedral view: logits -> probability -> undo) -> mean -> crop."""
        if images.ndim != 4 or images.shape[1] != self.in_channels:
            raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}")
        if not images.is_floating_point():
            raise ValueError("expected float images in [0, 1]; convert uint8 with image_to_tensor")
        h, w = images.shape[-2:]
        x = images.to(device=self.device, dtype=torch.float32)
        x = reflect_pad(x, -h % self.size_divisor, -w % self.size_divisor)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        else:
            x = x.contiguous()
        transforms = dihedral_transforms(tta)
        total = None
        with self._context():
            for k, flip in transforms:
                prob = foreground_probability(logits(_dihedral(x, k, flip)))
                prob = _undo_dihedral(prob, k, flip)
                total = prob if total is None else total + prob
        return (total / len(transforms))[..., :h, :w].float().contiguous()


class TorchPredictor(PaddedPredictor):
    """A torch model on its own device. The input runs channels_last in every precision: the
    convolutions follow the input's layout (the weights' layout gives bitwise the same logits),
    and oneDNN's channels-last kernels are the fast ones in fp32 as in bf16 (the bundled model:
    ~1.2x more tiles/s on a 2-core AVX2 CPU, ``docs/performance.md``). It runs a copy of the
    model with the BatchNorms folded into their convolutions (``models/fusion.py``), rebuilt
    whenever the model's weights change (a predictor that validates during training stays
    current). ``allow_emulated`` lets tests run bf16 on CPUs without native kernels (slow; never
    the default)."""

    backend = "torch"
    channels_last = True

    def __init__(
        self, model: SegmentModel, precision: str = "fp32", *, allow_emulated: bool = False
    ) -> None:
        self.model = model
        self.device = model_device(model)
        self.precision = resolve_precision(precision, self.device, allow_emulated=allow_emulated)
        self.size_divisor = model.config.size_divisor
        self.in_channels = model.config.in_channels
        self._folded: SegmentModel | None = None
        self._folded_version: tuple | None = None

    def _context(self) -> contextlib.AbstractContextManager:
        stack = contextlib.ExitStack()
        stack.enter_context(inference_mode_of(self.model))
        stack.enter_context(autocast(self.device, self.precision))
        return stack

    def inference_model(self) -> SegmentModel:
        """The model with its BatchNorms folded, refolded when its weights changed."""
        version = weights_version(self.model)
        if self._folded is None or version != self._folded_version:
            self._folded = fold_batch_norms(self.model)
            self._folded_version = version
        return self._folded

    def _task_logits(self, x: Tensor, tasks: list[int], scale_ids: Tensor) -> Tensor:
        return self.inference_model().predict_tasks(x, tasks, scale_ids)

    def _sample_logits(self, x: Tensor, task_ids: Tensor, scale_ids: Tensor) -> Tensor:
        return self.inference_model()(x, task_ids, scale_ids)


def predict_probability(
    model: OmniSeg,
    images: Tensor,
    task_ids: Tensor | Sequence[int] | int,
    scale_ids: Tensor | Sequence[int] | int,
    *,
    tta: bool,
    precision: str = "fp32",
) -> Tensor:
    """(N, 3, H, W) float images in [0, 1] -> (N, H, W) float32 foreground probability, on the
    model's device, each image for its own task and scale. Any H, W."""
    return TorchPredictor(model, precision).predict_probability(
        images, task_ids, scale_ids, tta=tta
    )
