import math

import pytest
import torch

from omniseg.errors import OmnisegError
from omniseg.models import (
    HeadSpec,
    create_model,
    foreground_probability,
    list_models,
    load_pretrained,
    save_pretrained,
)
from omniseg.models.heads import apply_dynamic_head
from tests.original_reference import grouped_head

FULL = ("omniseg", "omniseg-task", "multihead")
TINY = ("omniseg-tiny", "omniseg-task-tiny", "multihead-tiny")


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_parameter_counts_match_the_published_network():
    assert n_params(create_model("omniseg")) == 6_909_706
    assert n_params(create_model("omniseg-task")) == 5_956_822


def test_head_parameter_count_follows_the_spec():
    spec = HeadSpec()
    dims = [spec.in_channels, *spec.hidden, spec.out_channels]
    expected = sum(dims[i] * dims[i + 1] + dims[i + 1] for i in range(len(dims) - 1))
    assert spec.num_params == expected
    model = create_model("omniseg")
    assert model.controller_trilinear.linear.out_features == spec.num_params
    c = model.config
    assert model.controller_trilinear.linear.in_features == (
        c.widths[-1] * c.num_tasks * c.num_scales
    )


def test_registry_lists_required_models_and_rejects_unknown():
    assert set(FULL + TINY) <= set(list_models())
    with pytest.raises(OmnisegError, match="valid models: .*omniseg-tiny"):
        create_model("unet-9000")
    with pytest.raises(OmnisegError, match="unknown option"):
        create_model("omniseg-tiny", no_such_field=3)


@pytest.mark.parametrize("name", TINY)
def test_forward_shape_and_mixed_task_batch(name):
    model = create_model(name).eval()
    x = torch.rand(3, 3, 32, 48)
    out = model(x, torch.tensor([0, 3, 5]), torch.tensor([1, 0, 3]))
    assert out.shape == (3, 2, 32, 48)
    assert out.dtype == torch.float32


@pytest.mark.parametrize("size", [(30, 32), (32, 40), (17, 17)])
def test_bad_sizes_are_clear_value_errors(size):
    model = create_model("omniseg-tiny")
    with pytest.raises(ValueError, match=rf"{size[0]}x{size[1]}.*16"):
        model(torch.rand(1, 3, *size), [0], [0])


def test_bad_ids_and_channels_are_clear_errors():
    model = create_model("omniseg-tiny")
    with pytest.raises(ValueError, match="0..5"):
        model(torch.rand(1, 3, 32, 32), [6], [0])
    with pytest.raises(ValueError, match="one id per sample"):
        model(torch.rand(2, 3, 32, 32), [0], [0, 1, 2])
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        model(torch.rand(1, 4, 32, 32), [0], [0])


def test_batched_dynamic_head_equals_grouped_conv_reference():
    torch.manual_seed(1)
    features = torch.randn(5, 8, 12, 10)
    params = torch.randn(5, HeadSpec().num_params)
    ours = apply_dynamic_head(features, params[:, None], HeadSpec())[:, 0]
    ref = grouped_head(features, params)
    assert torch.allclose(ours, ref, atol=1e-5), (ours - ref).abs().max()


def test_output_depends_on_task_and_on_scale():
    model = create_model("omniseg-tiny").eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        base = model(x, [0], [1])
        assert not torch.allclose(base, model(x, [1], [1]))
        assert not torch.allclose(base, model(x, [0], [2]))


@pytest.mark.parametrize("name", ["omniseg-task-tiny", "multihead-tiny"])
def test_task_only_variants_ignore_scale(name):
    model = create_model(name).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        a = model(x, [0, 4], [0, 0])
        b = model(x, [0, 4], [3, 2])
        assert torch.equal(a, b)
        assert not torch.allclose(a, model(x, [1, 4], [0, 0]))


@pytest.mark.parametrize("name", ["omniseg-tiny", "omniseg-task-tiny"])
def test_gradients_reach_the_controller(name):
    model = create_model(name)
    out = model(torch.rand(2, 3, 32, 32), [0, 2], [1, 0])
    out[:, 1].mean().backward()
    grad = model.head_generator.linear.weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_shared_backbone_multitask_equals_separate_forwards():
    model = create_model("omniseg-tiny").eval()
    x = torch.rand(2, 3, 32, 32)
    tasks = [0, 1, 4]
    with torch.no_grad():
        shared = model.predict_tasks(x, tasks, 1)
        assert shared.shape == (2, 3, 2, 32, 32)
        for i, t in enumerate(tasks):
            separate = model(x, [t, t], [1, 1])
            assert torch.allclose(shared[:, i], separate, atol=1e-6)


def test_batched_equals_per_sample():
    model = create_model("omniseg-tiny").eval()
    x = torch.rand(3, 3, 32, 32)
    tasks, scales = [0, 2, 5], [1, 0, 3]
    with torch.no_grad():
        batched = model(x, tasks, scales)
        for i in range(3):
            single = model(x[i : i + 1], [tasks[i]], [scales[i]])
            assert torch.allclose(batched[i : i + 1], single, atol=1e-5)


@pytest.mark.parametrize("name", TINY)
def test_save_load_round_trip_is_bit_exact(tmp_path, name):
    model = create_model(name).eval()
    folder = save_pretrained(model, tmp_path / "m")
    loaded = load_pretrained(folder)
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x, [2], [0]), loaded(x, [2], [0]))
    assert loaded.config == model.config


def test_load_detects_corrupt_weights(tmp_path):
    folder = save_pretrained(create_model("omniseg-tiny"), tmp_path / "m")
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-10] ^= 0xFF
    (folder / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(OmnisegError, match="SHA-256"):
        load_pretrained(folder)
    with pytest.raises(OmnisegError, match="config.json"):
        load_pretrained(tmp_path / "nowhere")


def test_fp16_storage_loads_as_fp32(tmp_path):
    model = create_model("omniseg-tiny")
    folder = save_pretrained(model, tmp_path / "m", storage_dtype=torch.float16)
    loaded = load_pretrained(folder)
    w = next(loaded.parameters())
    assert w.dtype == torch.float32
    assert torch.allclose(w, next(model.parameters()), atol=1e-2)


def test_foreground_probability_is_softmax_and_matches_original_rule():
    logits = torch.randn(4, 2, 8, 8)
    prob = foreground_probability(logits)
    assert torch.allclose(prob, torch.softmax(logits, dim=1)[:, 1], atol=1e-6)
    assert torch.equal(prob > 0.5, logits[:, 1] > logits[:, 0])


def test_device_follows_input():
    model = create_model("omniseg-tiny").to(torch.float64)
    out = model(torch.rand(1, 3, 32, 32, dtype=torch.float64), [0], [0])
    assert out.dtype == torch.float64
    meta_model = create_model("omniseg-tiny").to("meta")
    out = meta_model(torch.empty(1, 3, 32, 32, device="meta"), [0], [0])
    assert out.device.type == "meta"


def test_channels_last_and_bf16_autocast_agree_with_fp32():
    model = create_model("omniseg-tiny").eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x, [0, 1], [1, 1])
        cl = model.to(memory_format=torch.channels_last)(
            x.to(memory_format=torch.channels_last), [0, 1], [1, 1]
        )
        assert torch.allclose(ref, cl, atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x, [0, 1], [1, 1]).float()
    assert math.isfinite(low.abs().max().item())
    assert torch.allclose(ref, low, atol=0.1 * ref.abs().max().item() + 0.05)


def test_head_init_gives_every_task_a_live_head():
    from omniseg.models.heads import split_head_params

    model = create_model("omniseg-tiny", head_init="head").eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        features, gap = model.encode(x)
        tasks = torch.arange(6).expand(2, -1)
        params = model.head_params(gap, tasks, torch.ones_like(tasks))
        (w1, b1), *_ = split_head_params(params, model.config.head)
        hidden = torch.einsum("ntoc,nchw->ntohw", w1, features) + b1[..., None, None]
    alive = (hidden > 0).float().mean(dim=(0, 3, 4))  # (task, unit)
    assert (alive > 0).all(), alive
    with pytest.raises(OmnisegError, match="head_init"):
        create_model("omniseg-tiny", head_init="zeros")


def test_original_init_is_still_available_and_differs():
    torch.manual_seed(0)
    original = create_model("omniseg-tiny", head_init="default")
    torch.manual_seed(0)
    ours = create_model("omniseg-tiny")
    assert ours.config.head_init == "head"
    bias_ours = ours.controller_trilinear.linear.bias
    bias_orig = original.controller_trilinear.linear.bias
    hidden = ours.config.head.num_weights  # first hidden bias sits right after all weights
    assert torch.all(bias_ours[hidden : hidden + 8] > 0)
    assert not torch.equal(bias_ours, bias_orig)
