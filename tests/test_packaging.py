"""The wheel a user installs carries the catalogue and the bundled default model."""

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from omniseg.models.bundled import DEFAULT_MODEL_NAME, default_model_dir

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_contains_catalogue_and_bundled_weights(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("omniseg-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    prefix = f"omniseg/weights/{DEFAULT_MODEL_NAME}/"
    assert "omniseg/catalogue.json" in names
    assert prefix + "config.json" in names
    assert prefix + "model.safetensors" in names
    config = json.loads(zipfile.ZipFile(wheel).read(prefix + "config.json"))
    assert len(config["sha256"]) == 64
    encoders = "omniseg/weights/encoders/"
    assert {encoders + "efficientnet-lite0-imagenet.safetensors", encoders + "SOURCE.json",
            encoders + "NOTICE-efficientnet-lite0.txt"} <= names  # fmt: skip
    from omniseg.training.recipe import DEFAULT_RECIPE  # bare `train` needs them installed

    assert {f"omniseg/configs/{name}" for name in DEFAULT_RECIPE} <= names


def test_bundled_model_loads_offline_and_matches_its_checksum():
    from omniseg.models import load_pretrained
    from omniseg.models.pretrained import sha256_of

    folder = default_model_dir()
    assert folder is not None, "this build ships no default model"
    config = json.loads((folder / "config.json").read_text())
    assert sha256_of(folder / "model.safetensors") == config["sha256"]
    assert (folder / "model.safetensors").stat().st_size < 30 * 2**20
    model = load_pretrained(folder)
    assert model.config.architecture == "omniseg-lite0"
    assert next(model.parameters()).dtype.is_floating_point
