"""The EfficientNet-Lite0 Omni-Seg models: encoder, bundled ImageNet weights, forward contract."""

import json

import pytest
import torch

from omniseg.errors import OmnisegError
from omniseg.models import create_model, list_models, load_pretrained, save_pretrained
from omniseg.models.efficientnet_lite import EfficientNetLiteEncoder, SamePadConv
from omniseg.models.encoders import encoder_source, encoder_weights_path
from omniseg.models.pretrained import sha256_of

LITE = ("omniseg-lite0", "omniseg-lite0-task", "omniseg-lite1", "omniseg-lite0-tiny")


def test_lite_models_are_registered():
    assert set(LITE) <= set(list_models())


@pytest.mark.parametrize(
    ("name", "blocks", "low", "high"),
    [("efficientnet-lite0", 16, 2.9e6, 3.0e6), ("efficientnet-lite1", 21, 3.7e6, 3.85e6)],
)
def test_lite_encoders_give_the_documented_feature_pyramid(name, blocks, low, high):
    """Lite1 is Lite0 made deeper: same feature widths (one decoder fits both), 21 blocks."""
    encoder = EfficientNetLiteEncoder(name).eval()
    assert len(encoder.blocks) == blocks
    assert encoder.feature_channels == (16, 24, 40, 112, 320)
    with torch.no_grad():
        features = encoder(torch.rand(1, 3, 256, 256))
    sizes = [(f.shape[1], f.shape[2]) for f in features]
    assert sizes == [(16, 128), (24, 64), (40, 32), (112, 16), (320, 8)]
    n = sum(p.numel() for p in encoder.parameters())
    assert low < n < high  # Lite0: 2.96 M parameters without the classifier head


def test_same_padding_matches_tensorflow_rule():
    """TF "SAME" on an even input with stride 2: output = input / 2, extra pad bottom/right."""
    conv = SamePadConv(1, 1, 3, stride=2)
    assert conv.pad == (0, 1, 0, 1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 0, 0] = 1.0  # picks the top-left tap of each window
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    # No top/left padding: window (0,0) starts at pixel (0,0), as TensorFlow does.
    assert conv(x)[0, 0].tolist() == [[0.0, 2.0], [8.0, 10.0]]
    assert SamePadConv(1, 1, 5, stride=2).pad == (1, 2, 1, 2)
    # stride 1: symmetric k // 2, left to the convolution (no copy of the activation)
    same = SamePadConv(2, 3, 5, stride=1)
    assert same.pad == (0, 0, 0, 0) and same.padding == (2, 2)
    y = torch.rand(1, 2, 7, 9)
    with torch.no_grad():
        explicit = torch.nn.functional.conv2d(torch.nn.functional.pad(y, (2, 2, 2, 2)), same.weight)
        torch.testing.assert_close(same(y), explicit)


@pytest.mark.parametrize(("model", "encoder"), [("omniseg-lite0", "efficientnet-lite0"),
                                                 ("omniseg-lite1", "efficientnet-lite1")])  # fmt: skip
def test_bundled_imagenet_encoder_is_recorded_and_loads(model, encoder):
    path = encoder_weights_path(encoder, "imagenet")
    record = encoder_source(encoder, "imagenet")
    assert sha256_of(path) == record["safetensors_sha256"]
    assert record["license"] == "Apache-2.0"
    assert record["source_wheel"].startswith(encoder.replace("-", "_"))
    assert (path.parent / record["notice"]).read_text().startswith("Apache")
    pretrained = create_model(model)
    random_init = create_model(model, pretrained_encoder=False)
    a = pretrained.backbone.encoder.stem[0].weight
    b = random_init.backbone.encoder.stem[0].weight
    assert not torch.equal(a, b)
    # ImageNet statistics, not the fresh (0, 1) running stats of a random BatchNorm.
    assert pretrained.backbone.encoder.stem[1].running_var.std() > 0
    assert torch.all(random_init.backbone.encoder.stem[1].running_var == 1)
    assert pretrained.config.encoder_weights == "imagenet"
    assert random_init.config.encoder_weights == ""


def test_missing_or_replaced_encoder_weights_are_clear_errors(monkeypatch, tmp_path):
    import omniseg.models.encoders as encoders

    real = encoder_weights_path("efficientnet-lite0", "imagenet")
    missing = tmp_path / real.name
    monkeypatch.setattr(encoders, "encoder_weights_path", lambda *a: missing)
    with pytest.raises(OmnisegError, match="no bundled imagenet weights"):
        create_model("omniseg-lite0")
    missing.write_bytes(real.read_bytes()[:-8] + b"\0" * 8)  # same size, other bytes
    (tmp_path / encoders.SOURCE_NAME).write_bytes((real.parent / encoders.SOURCE_NAME).read_bytes())
    with pytest.raises(OmnisegError, match="SHA-256"):
        create_model("omniseg-lite0")
    assert create_model("omniseg-lite0", pretrained_encoder=False) is not None


def test_tiny_lite_forward_contract_and_shared_backbone_path():
    torch.manual_seed(0)
    model = create_model("omniseg-lite0-tiny").eval()
    assert model.config.size_divisor == 32
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        all_tasks = model.predict_tasks(x, [0, 1, 4], scale_id=1)
        for j, task in enumerate((0, 1, 4)):
            single = model(x, [task, task], [1, 1])
            torch.testing.assert_close(all_tasks[:, j], single, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="32"):
        model(torch.rand(1, 3, 48, 48), [0], [0])


def test_batched_equals_per_sample_in_eval_mode():
    torch.manual_seed(0)
    model = create_model("omniseg-lite0-tiny").eval()
    x = torch.rand(3, 3, 64, 64)
    tasks, scales = [0, 2, 5], [1, 0, 3]
    with torch.no_grad():
        batched = model(x, tasks, scales)
        single = torch.cat([model(x[i : i + 1], [tasks[i]], [scales[i]]) for i in range(3)])
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-5)


def test_input_is_rgb_in_unit_range_normalised_inside():
    model = create_model("omniseg-lite0-tiny").eval()
    seen = {}
    model.backbone.encoder.stem.register_forward_pre_hook(
        lambda m, args: seen.setdefault("x", args[0])
    )
    with torch.no_grad():
        model(torch.zeros(1, 3, 32, 32), [0], [1])
    assert torch.all(seen["x"] == -1.0)


def test_save_and_load_roundtrip_keeps_outputs(tmp_path):
    torch.manual_seed(0)
    model = create_model("omniseg-lite0-tiny").eval()
    folder = save_pretrained(model, tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    assert config["model"]["encoder"] == "efficientnet-lite-tiny"
    loaded = load_pretrained(folder)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x, [3], [0]), loaded(x, [3], [0]))


def test_frozen_norm_stats_keep_batchnorm_in_eval_mode_while_training():
    model = create_model("omniseg-lite0-tiny")
    bn = model.backbone.encoder.stem[1]
    before = bn.running_mean.clone()
    model.frozen_norm_stats = True
    model.train()
    assert model.training and not bn.training
    model(torch.rand(2, 3, 32, 32), [0, 1], [1, 1]).sum().backward()
    assert torch.equal(bn.running_mean, before)
    assert bn.weight.grad is not None  # the affine part still learns
    model.frozen_norm_stats = False
    model.train()
    assert bn.training
    model(torch.rand(2, 3, 32, 32), [0, 1], [1, 1])
    assert not torch.equal(bn.running_mean, before)


def test_config_rejects_unknown_encoder_and_wrong_widths():
    with pytest.raises(OmnisegError, match="unknown encoder"):
        create_model("omniseg-lite0-tiny", encoder="vgg11")
    with pytest.raises(OmnisegError, match="set widths to the encoder"):
        create_model("omniseg-lite0-tiny", widths=(8, 8, 16, 16, 64))
    with pytest.raises(OmnisegError, match="decoder_channels"):
        create_model("omniseg-lite0-tiny", decoder_channels=(16, 8))


def test_controller_feature_is_normalised_like_the_original():
    """GroupNorm + ReLU before pooling: non-negative, and the same for a stain-scaled image."""
    torch.manual_seed(0)
    model = create_model("omniseg-lite0-tiny").eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        _, gap = model.encode(x)
    assert gap.shape == (2, model.backbone.feature_width)
    assert torch.all(gap >= 0)
    with torch.no_grad():
        deepest = model.backbone.encoder((x - 0.5) / 0.5)[-1]
        manual = torch.relu(model.backbone.gap_norm[0](deepest)).mean(dim=(2, 3))
    torch.testing.assert_close(gap, manual)


def test_leaky_head_activation_roundtrips_and_keeps_gradient_through_dead_units(tmp_path):
    import dataclasses

    from omniseg.models import HeadSpec
    from omniseg.models.heads import apply_dynamic_head

    with pytest.raises(OmnisegError, match="unknown head activation"):
        HeadSpec(activation="gelu")
    spec = HeadSpec()
    leaky = dataclasses.replace(spec, activation="leaky_relu")
    features = torch.rand(1, 8, 4, 4)
    torch.manual_seed(0)
    params = torch.randn(1, 1, spec.num_params) * 0.3
    params[..., spec.num_weights : spec.num_weights + 8] = -5.0  # every first-layer unit dead
    params.requires_grad_(True)
    apply_dynamic_head(features, params, spec).sum().backward()
    relu_grad = params.grad[..., : 8 * 8].abs().sum()
    params.grad = None
    apply_dynamic_head(features, params, leaky).sum().backward()
    assert relu_grad == 0 and params.grad[..., : 8 * 8].abs().sum() > 0
    model = create_model("omniseg-lite0-tiny", head=dataclasses.replace(
        create_model("omniseg-lite0-tiny").config.head, activation="leaky_relu"))  # fmt: skip
    folder = save_pretrained(model, tmp_path / "m")
    assert load_pretrained(folder).config.head.activation == "leaky_relu"
    raw = json.loads((folder / "config.json").read_text())
    del raw["model"]["head"]["activation"]  # a folder saved before the option: relu
    from omniseg.models.config import ModelConfig

    assert ModelConfig.from_dict(raw["model"]).head.activation == "relu"


def test_a_config_asking_for_a_huge_network_fails_before_allocating_it(tmp_path):
    """widths [8, 8192, 8192] in a 3 KB config.json reached 7.85 GB before "weights do not fit"
    (issue 36 point 7): the shapes are compared with the safetensors header first."""
    import resource

    folder = save_pretrained(create_model("omniseg-tiny"), tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    config["model"]["widths"] = [8, 8192, 8192, 8192, 8192]
    (folder / "config.json").write_text(json.dumps(config))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(OmnisegError, match="does not fit config.json's omniseg-tiny"):
        load_pretrained(folder)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 500, grown_mb
