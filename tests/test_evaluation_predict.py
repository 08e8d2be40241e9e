"""The single preprocessing/prediction path: scaling, padding, TTA, batching, modes."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from omniseg.data import PatchRecord
from omniseg.errors import OmnisegError
from omniseg.evaluation.predict import predict_record
from omniseg.models import InferenceSettings, create_model, foreground_probability
from omniseg.runtime import TorchPredictor, image_to_tensor, predict_probability, resolve_device
from omniseg.runtime.predictor import dihedral_transforms, reflect_pad

DIVISOR = 16


class SymmetricConvModel(nn.Module):
    """A 3x3 conv whose kernel is invariant under flips and 90° rotations: D4-equivariant."""

    def __init__(self) -> None:
        super().__init__()
        self.config = SimpleNamespace(size_divisor=DIVISOR, in_channels=3)
        self.inference = InferenceSettings()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)
        with torch.no_grad():
            w = torch.randn(2, 3, 3, 3)
            w = sum(torch.rot90(w, k, (-2, -1)) for k in range(4))
            self.conv.weight.copy_(0.1 * (w + torch.flip(w, (-1,))))

    def forward(self, x, task_ids, scale_ids):
        return self.conv(x)


class PositionModel(SymmetricConvModel):
    """Adds a left-to-right ramp to the foreground logit: NOT equivariant."""

    def forward(self, x, task_ids, scale_ids):
        out = super().forward(x, task_ids, scale_ids)
        ramp = torch.linspace(-3, 3, x.shape[-1], device=x.device)
        return torch.stack([out[:, 0], out[:, 1] + ramp], dim=1)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return create_model("omniseg-tiny").eval()


def test_image_to_tensor_scales_by_255_without_normalisation():
    img = np.zeros((5, 7, 3), np.uint8)
    img[1, 2] = (255, 0, 51)
    t = image_to_tensor(img)
    assert t.shape == (3, 5, 7) and t.dtype == torch.float32
    assert t[:, 1, 2].tolist() == pytest.approx([1.0, 0.0, 0.2])
    assert float(t.sum()) == pytest.approx(1.2)
    with pytest.raises(ValueError, match="uint8"):
        image_to_tensor(img.astype(np.float32))


def test_reflect_pad_mirrors_and_handles_tiny_images():
    x = torch.arange(4.0).view(1, 1, 1, 4)
    assert reflect_pad(x, 0, 2)[0, 0, 0].tolist() == [0, 1, 2, 3, 2, 1]
    long = reflect_pad(x, 0, 9)  # pad larger than the image: mirrored repeatedly
    assert long.shape[-1] == 13 and set(long.flatten().tolist()) <= {0, 1, 2, 3}
    single = reflect_pad(torch.ones(1, 1, 1, 1), 15, 15)
    assert single.shape[-2:] == (16, 16)


def test_eight_distinct_dihedral_transforms():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    from omniseg.runtime.predictor import _dihedral, _undo_dihedral

    outputs = {tuple(_dihedral(x, k, f).flatten().tolist()) for k, f in dihedral_transforms(True)}
    assert len(outputs) == 8
    for k, f in dihedral_transforms(True):
        assert torch.equal(_undo_dihedral(_dihedral(x, k, f), k, f), x)
    assert dihedral_transforms(False) == [(0, False)]


def test_tta_of_an_equivariant_model_equals_plain_prediction():
    torch.manual_seed(1)
    model = SymmetricConvModel()
    x = torch.rand(2, 3, 32, 48)
    plain = predict_probability(model, x, [0, 1], [1, 1], tta=False)
    tta = predict_probability(model, x, [0, 1], [1, 1], tta=True)
    assert torch.allclose(plain, tta, atol=1e-5)
    expected = foreground_probability(model(x, 0, 0))
    assert torch.allclose(plain, expected, atol=1e-6)


def test_tta_makes_any_model_equivariant():
    """Averaging over the group, correctly inverted, commutes with every flip/rotation."""
    from omniseg.runtime.predictor import _dihedral

    torch.manual_seed(2)
    model = PositionModel()
    x = torch.rand(1, 3, 32, 32)
    plain = predict_probability(model, x, 0, 0, tta=False)
    tta = predict_probability(model, x, 0, 0, tta=True)
    assert (plain - tta).abs().max() > 1e-2  # the ramp matters without TTA
    for k, flip in dihedral_transforms(True):
        moved = predict_probability(model, _dihedral(x, k, flip), 0, 0, tta=True)
        assert torch.allclose(moved, _dihedral(tta, k, flip), atol=1e-5)
    plain_moved = predict_probability(model, _dihedral(x, 1, False), 0, 0, tta=False)
    assert not torch.allclose(plain_moved, _dihedral(plain, 1, False), atol=1e-3)


def test_batched_equals_per_sample_and_crops_back(tiny):
    x = torch.rand(3, 3, 40, 36)  # not a multiple of the divisor: padded then cropped
    tasks, scales = [0, 3, 5], [1, 0, 3]
    batched = predict_probability(tiny, x, tasks, scales, tta=False)
    assert batched.shape == (3, 40, 36) and batched.dtype == torch.float32
    assert float(batched.min()) >= 0.0 and float(batched.max()) <= 1.0
    single = torch.cat(
        [
            predict_probability(tiny, x[i : i + 1], [tasks[i]], [scales[i]], tta=False)
            for i in range(len(tasks))
        ]
    )
    assert torch.allclose(batched, single, atol=1e-5)


def test_task_id_changes_the_prediction(tiny):
    x = torch.rand(1, 3, 32, 32)
    a = predict_probability(tiny, x, 0, 1, tta=False)
    b = predict_probability(tiny, x, 4, 1, tta=False)
    assert (a - b).abs().max() > 1e-4


def test_training_mode_is_restored_and_no_grad(tiny):
    tiny.train()
    try:
        out = predict_probability(tiny, torch.rand(1, 3, 16, 16), 0, 0, tta=False)
        assert tiny.training and not out.requires_grad
    finally:
        tiny.eval()
    predict_probability(tiny, torch.rand(1, 3, 16, 16), 0, 0, tta=False)
    assert not tiny.training


def test_precision_is_validated(tiny, monkeypatch):
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(OmnisegError, match="precision"):
        predict_probability(tiny, x, 0, 0, tta=False, precision="fp8")
    import omniseg.runtime.precision as precision

    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    with pytest.raises(OmnisegError, match="bf16"):
        predict_probability(tiny, x, 0, 0, tta=False, precision="bf16")


def test_bf16_is_close_to_fp32(tiny):
    """The bf16 path (autocast + channels_last) runs here even without native kernels
    (emulated, slow but fine for a tiny model), so an AVX2 CI covers what AVX-512 users run."""
    x = torch.rand(1, 3, 32, 32)
    fp32 = predict_probability(tiny, x, 0, 0, tta=False)
    bf16 = TorchPredictor(tiny, "bf16", allow_emulated=True).predict_probability(x, 0, 0, tta=False)
    assert bf16.dtype == torch.float32
    assert (fp32 - bf16).abs().max() < 0.05


def test_predict_record_reads_rgba_and_matches_tensor_path(tiny, tmp_path):
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (24, 20, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "im.png")
    Image.fromarray(np.zeros((24, 20), np.uint8)).save(tmp_path / "im_mask_x.png")
    record = PatchRecord(tmp_path / "im.png", tmp_path / "im_mask_x.png", 2, 0, "pas")
    prob = predict_record(tiny, record, tta=False)
    assert prob.shape == (24, 20) and prob.dtype == np.float32
    x = image_to_tensor(rgba[..., :3])[None]
    expected = predict_probability(tiny, x, 2, 0, tta=False)[0].numpy()
    np.testing.assert_allclose(prob, expected, atol=1e-6)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(OmnisegError, match="--device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(OmnisegError, match="CUDA is not available"):
            resolve_device("cuda")


def test_integer_images_are_refused(tiny):
    with pytest.raises(ValueError, match="image_to_tensor"):
        predict_probability(tiny, torch.zeros(1, 3, 16, 16, dtype=torch.uint8), 0, 0, tta=False)


@pytest.mark.gpu
def test_cuda_prediction_matches_cpu():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    torch.manual_seed(3)
    model = create_model("omniseg-tiny").eval()
    x = torch.rand(2, 3, 48, 40)
    cpu = predict_probability(model, x, [0, 5], [1, 3], tta=True)
    gpu = predict_probability(model.to("cuda"), x, [0, 5], [1, 3], tta=True)
    assert gpu.device.type == "cuda"
    assert (gpu.cpu() - cpu).abs().max() < 1e-3  # TF32 convolutions on the GPU
    bf16 = predict_probability(model, x, [0, 5], [1, 3], tta=False, precision="bf16")
    assert bf16.device.type == "cuda" and bf16.dtype == torch.float32 and bf16.shape == (2, 48, 40)


def test_batch_of_images_equals_stacked_tensors_and_is_channels_last():
    from omniseg.runtime.predictor import image_to_tensor, images_to_batch

    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (40, 56, 3), dtype=np.uint8) for _ in range(3)]
    batch = images_to_batch(images)
    assert torch.equal(batch, torch.stack([image_to_tensor(i) for i in images]))
    assert batch.dtype == torch.float32 and batch.shape == (3, 3, 40, 56)
    assert batch.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="uint8"):
        images_to_batch([images[0].astype(np.float32)])
