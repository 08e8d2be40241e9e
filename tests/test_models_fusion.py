"""BatchNorm folding: the folded copy computes what the model computes, and never goes stale."""

from __future__ import annotations

import torch
from torch import nn

from omniseg.models import create_model
from omniseg.models.fusion import fold_batch_norms, foldable_pairs
from omniseg.runtime import TorchPredictor
from omniseg.testing import PointwiseModel


def _model_with_real_statistics(seed: int = 0):
    """The tiny lite model with BatchNorm statistics and affines far from identity."""
    torch.manual_seed(seed)
    model = create_model("omniseg-lite0-tiny").eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return model


def test_folded_copy_matches_the_model_and_leaves_it_untouched():
    model = _model_with_real_statistics()
    norms = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert norms > 0 and len(foldable_pairs(model)) == norms
    state = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batch_norms(model)
    assert folded is not model
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(
            folded.predict_tasks(x, [0, 3], 1), model.predict_tasks(x, [0, 3], 1),
            atol=1e-4, rtol=1e-4,
        )  # fmt: skip
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == norms
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_model_without_batchnorm_is_not_copied():
    model = PointwiseModel()
    assert fold_batch_norms(model) is model


def test_predictor_refolds_when_the_weights_change():
    model = _model_with_real_statistics()
    predictor = TorchPredictor(model)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    before = predictor.predict_tasks(x, [1], 1, tta=False)
    assert predictor.inference_model() is predictor.inference_model()  # cached while unchanged
    with torch.no_grad():
        model.backbone.encoder.stem[1].running_mean.add_(0.3)  # as a statistics update would
    after = predictor.predict_tasks(x, [1], 1, tta=False)
    fresh = TorchPredictor(model).predict_tasks(x, [1], 1, tta=False)
    torch.testing.assert_close(after, fresh)
    assert (after - before).abs().max() > 1e-3
