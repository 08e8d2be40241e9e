"""Head health: dead and live heads are told apart, padding is not counted, maths is consistent."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from omniseg.data import discover_patches, read_mask
from omniseg.evaluation.head_health import head_health
from omniseg.models import HeadSpec, create_model
from omniseg.models.heads import apply_dynamic_head, head_preactivations, split_head_params
from tests._training_synth import make_patch_set


@pytest.fixture
def records(tmp_path):
    # 30 px patches: not a multiple of the network's size divisor, so padding must be cropped
    make_patch_set(tmp_path / "p", size=30, per_task=2, tasks=((0, 1), (2, 0)))
    return discover_patches(tmp_path / "p")


def _set_static_heads(model, hidden_bias: float, fg_bias: float):
    """Multi-head model: every head gets zero weights, the given hidden biases, and output
    biases (0, fg_bias), so each hidden unit is constant and the prediction is known."""
    with torch.no_grad():
        for row in model.heads.params:
            layers = split_head_params(row, model.config.head)
            for i, (weight, bias) in enumerate(layers):
                weight.zero_()
                last = i == len(layers) - 1
                bias.fill_(hidden_bias) if not last else bias.copy_(torch.tensor([0.0, fg_bias]))


def test_dead_heads_are_reported_dead(records):
    model = create_model("multihead-tiny")
    _set_static_heads(model, hidden_bias=-1.0, fg_bias=-3.0)
    rows = head_health(model, records)
    assert [r.task for r in rows] == ["dt", "capsule"]
    for row in rows:
        assert row.images == 2 and row.pixels == 2 * 30 * 30
        assert row.dead == row.units == tuple(model.config.head.hidden)
        assert row.active_fraction == (0.0,) * len(row.units)
        assert row.predicted_foreground == 0.0
    masks = [read_mask(r.mask) for r in records if r.task_id == 0]
    assert rows[0].true_foreground == pytest.approx(sum(m.sum() for m in masks) / (2 * 30 * 30))
    assert 0.0 < rows[0].true_foreground < 1.0


def test_live_heads_are_reported_live(records):
    model = create_model("multihead-tiny")
    _set_static_heads(model, hidden_bias=1.0, fg_bias=3.0)
    for row in head_health(model, records):
        assert row.dead == (0,) * len(row.units)
        assert row.active_fraction == pytest.approx((1.0,) * len(row.units))
        assert row.predicted_foreground == 1.0


def test_one_dead_unit_among_live_ones(records):
    model = create_model("multihead-tiny")
    _set_static_heads(model, hidden_bias=1.0, fg_bias=0.0)
    with torch.no_grad():
        for row in model.heads.params:
            _, bias = split_head_params(row, model.config.head)[0]
            bias[0] = -1.0  # first unit of the first hidden layer never fires
    for row in head_health(model, records):
        assert row.dead[0] == 1 and sum(row.dead[1:]) == 0
        assert row.active_fraction[0] == pytest.approx(1.0 - 1.0 / row.units[0])


@pytest.mark.parametrize("name", ["omniseg-tiny", "multihead-tiny"])
def test_head_preactivations_end_in_the_head_output(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        features, gap = model.encode(x)
        params = model.head_params(gap, torch.tensor([[0, 3], [1, 5]]), torch.tensor([[1, 0]] * 2))
        *hidden, logits = head_preactivations(features, params, model.config.head)
        out = apply_dynamic_head(features, params, model.config.head)
    spec = model.config.head
    assert [h.shape[2] for h in hidden] == list(spec.hidden)
    assert torch.equal(logits.reshape(out.shape), out)
    weight, bias = split_head_params(params, spec)[-1]
    manual = torch.einsum("ntoc,ntcp->ntop", weight, F.relu(hidden[-1])) + bias[..., None]
    assert torch.allclose(manual.reshape(out.shape), out, atol=1e-5)
    no_hidden = HeadSpec(spec.in_channels, (), spec.out_channels)
    only = head_preactivations(features, torch.randn(2, 1, no_hidden.num_params), no_hidden)
    assert len(only) == 1 and only[0].shape == (2, 1, spec.out_channels, 32 * 32)


def test_activity_counts_only_the_image_not_its_padding(tmp_path):
    """A trained-like head on a non-square image that needs padding: the counts equal a manual
    count on the cropped features (a wrong crop offset or swapped H/W would change them)."""
    make_patch_set(tmp_path / "p", size=30, per_task=1, tasks=((0, 1),))
    (record,) = discover_patches(tmp_path / "p")
    image = np.asarray(Image.open(record.image))[:, :20]  # 30 high, 20 wide
    Image.fromarray(image).save(record.image)
    mask = np.asarray(Image.open(record.mask))[:, :20]
    Image.fromarray(mask).save(record.mask)
    torch.manual_seed(1)
    model = create_model("omniseg-tiny").eval()
    (row,) = head_health(model, [record])
    d = model.config.size_divisor
    tensor = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 255.0
    x = F.pad(tensor, (0, -20 % d, 0, -30 % d), mode="reflect")
    with torch.no_grad():
        features, gap = model.encode(x)
        params = model.head_params(gap, torch.tensor([[0]]), torch.tensor([[1]]))
        *hidden, logits = head_preactivations(features, params, model.config.head)
    grid = [z[0, 0].reshape(z.shape[2], *x.shape[-2:])[:, :30, :20] for z in (*hidden, logits)]
    assert row.pixels == 600
    for layer, z in enumerate(grid[:-1]):
        active = (z > 0).flatten(1)
        assert row.dead[layer] == int((~active.any(dim=1)).sum())
        assert row.active_fraction[layer] == pytest.approx(float(active.float().mean()))
    fg = torch.sigmoid(grid[-1][1] - grid[-1][0]) > model.inference.thresholds[0]
    assert row.predicted_foreground == pytest.approx(float(fg.float().mean()))
    assert row.true_foreground == pytest.approx(float((mask >= 128).mean()))
