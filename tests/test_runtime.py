"""Precision and machine facts are decided at run time, per machine, never assumed."""

from __future__ import annotations

import pytest
import torch

from omniseg.errors import OmnisegError
from omniseg.runtime.cpu import CPU_FLAGS, cpu_capabilities
from omniseg.runtime.precision import resolve_precision

CPU = torch.device("cpu")


@pytest.mark.parametrize("native", [True, False])
def test_auto_picks_bf16_only_where_it_is_native(monkeypatch, native):
    monkeypatch.setattr("omniseg.runtime.precision.native_bf16", lambda device: native)
    assert resolve_precision("auto", CPU) == ("bf16" if native else "fp32")
    assert resolve_precision("auto", CPU, cpu_auto_bf16=False) == "fp32"  # training's rule
    assert resolve_precision("fp32", CPU) == "fp32"
    if native:
        assert resolve_precision("bf16", CPU) == "bf16"
    else:
        with pytest.raises(OmnisegError, match="emulated"):
            resolve_precision("bf16", CPU)
        with pytest.warns(UserWarning, match="emulated"):
            assert resolve_precision("bf16", CPU, allow_emulated=True) == "bf16"


def test_unknown_precision_names_the_choices():
    with pytest.raises(OmnisegError, match="fp32, bf16, auto"):
        resolve_precision("fp16", CPU)


def test_cpu_capabilities_report_every_flag_that_decides_kernels():
    caps = cpu_capabilities()
    assert set(CPU_FLAGS) <= set(caps) and all(isinstance(caps[f], bool) for f in CPU_FLAGS)
    assert caps["threads"] == torch.get_num_threads() and caps["model"]


def test_segment_records_the_precision_it_chose_and_why(tmp_path, monkeypatch):
    from omniseg.data.synthetic import synthetic_tissue, write_tiff
    from omniseg.inference import SegmentSettings, segment_slide
    from omniseg.models import InferenceSettings
    from omniseg.testing import PointwiseModel

    monkeypatch.setattr("omniseg.runtime.precision.native_bf16", lambda device: False)
    slide = write_tiff(tmp_path / "s.tif", synthetic_tissue(96, 128), 0.25)
    model = PointwiseModel(InferenceSettings(tile_size=64, tile_overlap=16))
    result = segment_slide(slide, tmp_path / "out", SegmentSettings(progress=False), model)
    runtime = result.summary["runtime"]
    assert runtime["precision_requested"] == "auto" and runtime["precision"] == "fp32"
    assert runtime["backend"] == "torch" and runtime["device"] == "cpu"
    assert set(CPU_FLAGS) <= set(runtime["cpu"])


def test_one_loader_names_the_bundled_model_and_auto_means_one_device(tmp_path, monkeypatch):
    from omniseg.models.bundled import default_model_dir
    from omniseg.runtime.device import default_device, resolve_device
    from omniseg.runtime.loading import load_model

    if default_model_dir() is None:
        pytest.skip("this build ships no bundled model")
    bundled, named = load_model(None, "cpu"), load_model("default", "cpu")
    assert bundled.folder == named.folder == default_model_dir()
    assert bundled.label == named.label == f"bundled:{default_model_dir().name}"
    assert len(bundled.sha256) == 64 and not bundled.model.training
    assert default_device() == resolve_device("auto").type
    monkeypatch.setattr("omniseg.runtime.precision.native_bf16", lambda device=None: False)
    with pytest.raises(OmnisegError, match="bf16"):
        load_model(None, "cpu", precision="bf16")  # refused before the weights load


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (dict(device="gpu"), "--device gpu: unknown device"),
        (dict(precision="fp8"), "--precision fp8: unknown"),
        (dict(backend="tensorrt"), "--backend tensorrt: unknown"),
        (dict(batch_size=0), "--batch-size must be >= 1"),
    ],
)
def test_run_options_are_checked_once_for_segment_and_evaluate(options, says, tmp_path):
    """One type (RunOptions) checks device, precision, backend and batch size: segment's
    settings and evaluate say the same line, before any model loads."""
    from omniseg.evaluation.evaluate import evaluate_path
    from omniseg.inference import SegmentSettings
    from omniseg.runtime.options import RunOptions

    with pytest.raises(OmnisegError, match=says):
        RunOptions(**options)
    with pytest.raises(OmnisegError, match=says):
        SegmentSettings(**options)
    patches = tmp_path / "p"
    (patches / "0_1_dt" / "he").mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (32, 32)).save(patches / "0_1_dt" / "he" / "a.png")
    Image.new("L", (32, 32)).save(patches / "0_1_dt" / "he" / "a_mask_x.png")
    with pytest.raises(OmnisegError, match=says):
        evaluate_path(patches, weights=tmp_path / "no-model", **options)
    assert RunOptions("cuda:1").device == "cuda:1"
