"""The ONNX Runtime backend predicts what torch predicts, exports once, and says what it needs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omniseg.errors import OmnisegError
from omniseg.models import InferenceSettings, create_model, save_pretrained
from omniseg.runtime import TorchPredictor
from omniseg.runtime.backends import make_predictor

pytest.importorskip("onnxruntime")  # a dev dependency; the [onnx] extra for users
TOLERANCE = 1e-4  # probability; measured ~1e-6 on the tiny models


@pytest.fixture(scope="module", params=["omniseg-tiny", "omniseg-lite0-tiny"])
def model_dir(request, tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("m") / request.param
    save_pretrained(create_model(request.param), folder)
    return folder


GRAPH_BACKENDS = ["onnxruntime"] + (
    ["openvino"] if __import__("importlib").util.find_spec("openvino") else []
)


def _predictors(model_dir, backend="onnxruntime"):
    from omniseg.models import load_pretrained
    from omniseg.models.pretrained import WEIGHTS_NAME, sha256_of

    model = load_pretrained(model_dir)
    sha = sha256_of(model_dir / WEIGHTS_NAME)
    onnx = make_predictor(model, backend, "fp32", model_dir=model_dir, sha256=sha)
    return model, TorchPredictor(model, "fp32"), onnx


@pytest.mark.parametrize("backend", GRAPH_BACKENDS)
@pytest.mark.parametrize("tta", [False, True])
def test_graph_backends_agree_with_torch_for_any_batch_size_and_tasks(model_dir, tta, backend):
    _, torch_pred, onnx_pred = _predictors(model_dir, backend)
    assert onnx_pred.backend == backend and onnx_pred.precision == "fp32"
    x = torch.rand(3, 3, 70, 52)  # padded to the size divisor and cropped back
    for tasks, scale in (([0, 1, 4], 1), ([5], 3), ([2, 3], 0)):
        ours = onnx_pred.predict_tasks(x, tasks, scale, tta=tta)
        ref = torch_pred.predict_tasks(x, tasks, scale, tta=tta)
        assert ours.shape == ref.shape == (3, len(tasks), 70, 52)
        assert float((ours - ref).abs().max()) < TOLERANCE
    ours = onnx_pred.predict_probability(x[:2], [0, 5], [1, 3], tta=tta)
    ref = torch_pred.predict_probability(x[:2], [0, 5], [1, 3], tta=tta)
    assert float((ours - ref).abs().max()) < TOLERANCE


def test_the_export_is_cached_beside_the_model_and_reused(model_dir):
    _predictors(model_dir)
    (cached,) = (model_dir / ".onnx-cache").glob("*.onnx")
    stamp = cached.stat().st_mtime_ns
    _predictors(model_dir)
    assert sorted(p.name for p in (model_dir / ".onnx-cache").iterdir()) == [
        cached.name, cached.name + ".sha256"]  # fmt: skip
    assert cached.stat().st_mtime_ns == stamp  # not exported again
    from omniseg.models.pretrained import WEIGHTS_NAME, sha256_of

    assert cached.name.startswith(sha256_of(model_dir / WEIGHTS_NAME)[:16])  # keyed by weights
    assert f"ort{__import__('onnxruntime').__version__}" in cached.name  # and by runtime


def test_a_graph_replaced_in_the_cache_is_never_run(tmp_path):
    """Another model's graph copied over the cached one was run, and summary.json named the
    verified weights (issue 36 point 4): the cache checks the SHA-256 it recorded."""
    from omniseg.runtime.onnx_backend import export_onnx

    torch.manual_seed(0)
    ours, other = tmp_path / "ours", tmp_path / "other"
    save_pretrained(create_model("omniseg-tiny"), ours)
    save_pretrained(create_model("omniseg-tiny"), other)
    _, torch_pred, _ = _predictors(ours)
    (cached,) = (ours / ".onnx-cache").glob("*.onnx")
    from omniseg.models import load_pretrained

    export_onnx(load_pretrained(other), cached)  # planted under our file name
    _, _, onnx_pred = _predictors(ours)
    x = torch.rand(1, 3, 64, 64)
    ours_out = onnx_pred.predict_tasks(x, [0], 1, tta=False)
    assert (
        float((ours_out - torch_pred.predict_tasks(x, [0], 1, tta=False)).abs().max()) < TOLERANCE
    )


def test_segment_with_onnxruntime_gives_the_torch_labels(tmp_path):
    from omniseg.data.synthetic import synthetic_tissue, write_tiff
    from omniseg.inference import ModelSource, SegmentSettings, segment_slide
    from omniseg.models import load_pretrained
    from omniseg.models.pretrained import WEIGHTS_NAME, sha256_of

    torch.manual_seed(0)
    save_pretrained(create_model("omniseg-tiny"), tmp_path / "m")
    model = load_pretrained(tmp_path / "m")
    model.inference = InferenceSettings(tile_size=64, tile_overlap=16)
    source = ModelSource(str(tmp_path / "m"), sha256_of(tmp_path / "m" / WEIGHTS_NAME))
    slide = write_tiff(tmp_path / "s.tif", synthetic_tissue(120, 150), 0.5)
    labels = {}
    for backend in ("torch", *GRAPH_BACKENDS):
        # fp32 on every backend (auto is bf16 for torch on CPUs with AVX512-BF16/AMX)
        settings = SegmentSettings(progress=False, backend=backend, tissue_margin_um=None,
                                   precision="fp32")  # fmt: skip
        result = segment_slide(slide, tmp_path / backend, settings, model, model_source=source)
        assert result.summary["runtime"]["backend"] == backend
        import tifffile

        labels[backend] = tifffile.imread(result.out_dir / "labels.ome.tif", level=0)
    for backend in GRAPH_BACKENDS:
        agree = float(np.mean(labels["torch"] == labels[backend]))
        assert agree > 0.999, (backend, agree)  # only pixels within ~1e-5 of a cut may differ


def test_onnxruntime_refuses_bf16_and_unknown_backends(model_dir):
    from omniseg.models import load_pretrained

    model = load_pretrained(model_dir)
    with pytest.raises(OmnisegError, match="fp32 only"):
        make_predictor(model, "onnxruntime", "bf16", model_dir=model_dir)
    with pytest.raises(OmnisegError, match="valid: auto, torch, onnxruntime, openvino"):
        make_predictor(model, "tensorrt")


def test_a_missing_onnxruntime_is_one_clear_line(monkeypatch, tmp_path, capsys):
    import sys

    from omniseg.cli.main import main

    save_pretrained(create_model("omniseg-tiny"), tmp_path / "m")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert main(["export-onnx", str(tmp_path / "m"), str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install 'omniseg[onnx]'" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "m.onnx").exists()


def test_export_onnx_writes_a_graph_onnxruntime_runs(model_dir, tmp_path):
    import onnxruntime

    from omniseg.cli.main import main

    assert main(["export-onnx", str(model_dir), str(tmp_path / "m.onnx")]) == 0
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"))
    feed = {
        "images": np.random.default_rng(0).random((2, 3, 64, 96), dtype=np.float32),
        "task_ids": np.array([[0, 1], [0, 1]], dtype=np.int64),
        "scale_ids": np.ones((2, 2), dtype=np.int64),
    }
    (logits,) = session.run(None, feed)
    assert logits.shape == (2, 2, 2, 64, 96)


def test_models_without_a_recorded_hash_never_share_an_export(tmp_path, monkeypatch):
    """No SHA-256 (a Python caller without a model folder): the key comes from the weights."""
    from omniseg.runtime.onnx_backend import cached_onnx

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    torch.manual_seed(0)
    first, second = create_model("omniseg-tiny"), create_model("omniseg-tiny")
    a, b = cached_onnx(first, None, None), cached_onnx(second, None, None)
    assert a != b and a.parent == b.parent == tmp_path / "cache" / "omniseg" / "onnx"
    assert cached_onnx(first, None, None) == a  # the same weights reuse their export
