import json
import subprocess
import sys

import pytest

from omniseg import __version__
from omniseg.catalogue import parse_tasks, scale_for_mpp, scales, tissue, tissues
from omniseg.cli.main import main
from omniseg.errors import OmnisegError


def test_catalogue_ids_names_and_scales():
    assert [t.name for t in tissues()] == ["dt", "pt", "capsule", "tuft", "vessel", "ptc"]
    assert [t.magnification for t in tissues()] == [10, 10, 5, 5, 10, 40]
    for s in scales():
        assert s.mpp == pytest.approx(0.25 * 2 ** (3 - s.id))
    assert [t.label_value for t in tissues()] == [1, 2, 3, 4, 5, 6]
    assert len({t.color for t in tissues()}) == 6


def test_task_parsing_and_lookup_errors():
    assert [t.id for t in parse_tasks("ptc,dt, 2")] == [0, 2, 5]
    assert len(parse_tasks(None)) == 6
    with pytest.raises(OmnisegError, match="valid: 0=dt"):
        tissue("glomerulus")
    assert scale_for_mpp(0.26).id == 3 and scale_for_mpp(0.9).id == 1


def test_version_and_help(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"omniseg {__version__}"
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("info", "convert-checkpoint"):
        assert command in out


def test_info_json_lists_models_and_tissues(capsys):
    assert main(["info", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["models"]["omniseg"] == 6_909_706
    assert data["models"]["omniseg-task"] == 5_956_822
    assert [t["name"] for t in data["tissues"]][5] == "ptc"
    assert data["tissues"][5]["mpp"] == 0.25
    assert data["device"] in ("cpu", "cuda", "mps")
    from omniseg.models.bundled import DEFAULT_MODEL_NAME, default_model_dir
    from omniseg.models.pretrained import sha256_of

    bundled = data["bundled_model"]
    assert bundled["name"] == DEFAULT_MODEL_NAME
    assert bundled["sha256"] == sha256_of(default_model_dir() / "model.safetensors")


def test_info_human_readable(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "peritubular" in out and "omniseg-task" in out
    assert "bundled model: omniseg-kidney-" in out and "--weights default" in out


def test_default_names_the_bundled_model_in_export_onnx(tmp_path):
    pytest.importorskip("onnx")
    assert main(["export-onnx", "default", str(tmp_path / "m.onnx")]) == 0
    assert (tmp_path / "m.onnx").stat().st_size > 1_000_000


def test_console_script_errors_are_one_line_without_traceback(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "omniseg",
            "convert-checkpoint",
            str(tmp_path / "nope.pth"),
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "nope.pth" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("document", ["README.md", "docs/model-card.md"])
def test_documented_parameter_counts_match_the_code(document):
    """Every "`name` ... (N parameters)" figure in the docs is what count_parameters says."""
    import re
    from pathlib import Path

    from omniseg.models import count_parameters, create_model, list_models

    text = (Path(__file__).resolve().parents[1] / document).read_text(encoding="utf-8")
    found = 0
    for line in text.splitlines():
        names = [n for n in list_models() if f"`{n}`" in line]
        counts = re.findall(r"\(([\d,]{7,}) parameters", line)
        if len(names) >= 1 and counts:
            name = max(names, key=len)
            expected = count_parameters(create_model(name, pretrained_encoder=False))
            assert int(counts[0].replace(",", "")) == expected, (document, name, line)
            found += 1
    assert found >= 1, f"{document}: no documented parameter count found"


def test_tasks_accept_the_names_a_pathologist_types():
    from omniseg.catalogue import default_catalogue

    cat = default_catalogue()
    names = lambda spec: [t.name for t in cat.parse_tasks(spec)]  # noqa: E731
    assert names("glomerulus") == ["capsule", "tuft"]
    assert names("Glomerulus,dt") == ["dt", "capsule", "tuft"]
    assert names("bowman") == ["capsule"] and names("arteries") == ["vessel"]
    with pytest.raises(Exception, match="unknown tissue 'kidney'"):
        cat.parse_tasks("kidney")


def test_export_onnx_never_replaces_a_file_unasked(tmp_path, capsys):
    """It overwrote any file, a model's own model.safetensors included (issue 36 point 6)."""
    from omniseg.models import create_model, save_pretrained

    folder = save_pretrained(create_model("omniseg-tiny"), tmp_path / "m")
    weights = folder / "model.safetensors"
    before = weights.read_bytes()
    assert main(["export-onnx", str(folder), str(weights)]) == 2
    assert ".onnx" in capsys.readouterr().err and weights.read_bytes() == before
    existing = tmp_path / "old.onnx"
    existing.write_bytes(b"keep")
    assert main(["export-onnx", str(folder), str(existing)]) == 2
    assert "--overwrite" in capsys.readouterr().err and existing.read_bytes() == b"keep"
    pytest.importorskip("onnx")
    assert main(["export-onnx", str(folder), str(existing), "--overwrite"]) == 0
    assert existing.read_bytes() != b"keep"
