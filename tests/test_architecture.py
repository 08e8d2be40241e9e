"""The walls of the house: one predictor for segment and evaluate, one-way layers, settings
checked wherever they are built."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

import omniseg
from omniseg.catalogue import tissue
from omniseg.errors import OmnisegError
from omniseg.inference import SegmentSettings, segment_slide
from omniseg.models import InferenceSettings, create_model
from omniseg.runtime import TorchPredictor, image_to_tensor

PACKAGE = Path(omniseg.__file__).parent
CODE_STEP = 1 / 255  # segment stores probabilities as 8-bit codes between stages


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


# The layers of docs/architecture.md, bottom first. A package may import the packages of the
# layers below its own, never its own layer's others nor anything above: the next arrow that
# runs back up fails here. Every top-level package and module of src/omniseg needs a row.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors",),
    ("atomic", "locks", "catalogue", "threads"),
    ("io", "models", "export"),
    ("data",),
    ("runtime", "testing"),
    ("scoring", "inference"),
    ("training", "viewer"),
    ("evaluation",),
    ("system",),
    ("cli",),
    ("__main__",),
)
LAYER_OF = {name: level for level, names in enumerate(LAYERS) for name in names}


def _package_imports() -> dict[str, set[tuple[str, str]]]:
    """{top-level package or module: {(imported package, importing file)}} of src/omniseg,
    function-level imports included."""
    found: dict[str, set[tuple[str, str]]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.name == "__init__.py" and len(rel.parts) == 1:
            continue  # the package's face (its version)
        owner = rel.parts[0].removesuffix(".py")
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] == "omniseg" and len(parts) > 1 and parts[1] != owner:
                found.setdefault(owner, set()).add((parts[1], str(rel)))
    return found


def test_every_import_between_packages_runs_down_the_layer_table():
    edges = _package_imports()
    tops = {p.name.removesuffix(".py") for p in PACKAGE.iterdir() if p.suffix == ".py" or
            (p.is_dir() and (p / "__init__.py").exists())} - {"__init__"}  # fmt: skip
    assert tops <= set(LAYER_OF), f"no layer for {sorted(tops - set(LAYER_OF))}"
    offenders = sorted(
        f"{where} imports omniseg.{target} (layer {LAYER_OF[owner]} -> {LAYER_OF[target]})"
        for owner, pairs in edges.items()
        for target, where in pairs
        if LAYER_OF[target] >= LAYER_OF[owner]
    )
    assert not offenders, "\n".join(offenders)


def test_the_layer_table_catches_a_back_arrow(tmp_path, monkeypatch):
    """The check above can fail: an io module importing inference is reported."""
    fake = tmp_path / "omniseg"
    (fake / "io").mkdir(parents=True)
    (fake / "inference").mkdir()
    for folder in (fake / "io", fake / "inference"):
        (folder / "__init__.py").write_text("")
    (fake / "io" / "bad.py").write_text("from omniseg.inference.tiling import Tile\n")
    monkeypatch.setattr(f"{__name__}.PACKAGE", fake)
    with pytest.raises(AssertionError, match="io/bad.py imports omniseg.inference"):
        test_every_import_between_packages_runs_down_the_layer_table()


def _tissue_like(rng: np.random.Generator, size: int) -> np.ndarray:
    """Pink/purple stained texture (found as tissue by the thumbnail detector)."""
    base = np.array([205, 120, 175], dtype=float)
    blobs = rng.normal(0, 1, (size // 8, size // 8, 3)).repeat(8, 0).repeat(8, 1)
    image = base + 30 * blobs + rng.normal(0, 8, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("tta", [False, True])
def test_segment_predicts_what_evaluate_predicts(tmp_path, monkeypatch, precision, tta):
    """A patch segmented alone (post-processing off) is the evaluate mask: every pixel whose
    probability is more than one 8-bit code step from the threshold gets the same label."""
    if precision == "bf16":  # run the bf16 path even where it is emulated (slow, tiny model)
        monkeypatch.setattr("omniseg.runtime.precision.native_bf16", lambda device: True)
    torch.manual_seed(0)
    task = tissue("dt")
    model = create_model("omniseg-tiny")
    image = _tissue_like(np.random.default_rng(3), 96)
    x = image_to_tensor(image)[None]
    prob = (
        TorchPredictor(model, precision)
        .predict_probability(x, [task.id], [task.scale_id], tta=tta)[0]
        .numpy()
    )
    cut = float(np.median(prob))  # a threshold that splits the patch in two
    thresholds = tuple(cut if t == task.id else 0.5 for t in range(6))
    model.inference = dataclasses.replace(
        model.inference, tta=tta, tile_size=128, tile_overlap=16, thresholds=thresholds,
        min_area_um2=(0.0,) * 6,
    )  # fmt: skip
    slide = tmp_path / "patch.tif"
    tifffile.imwrite(slide, image)
    settings = SegmentSettings(
        tasks=(task.id,), mpp=task.mpp, reader_threads=0, tissue_margin_um=None, precision=precision,
        progress=False,
    )  # fmt: skip
    result = segment_slide(slide, tmp_path / "out", settings, model)
    labels = tifffile.imread(result.out_dir / "labels.ome.tif", level=0).reshape(image.shape[:2])
    segmented = labels == task.label_value
    evaluated = prob > cut
    clear = np.abs(prob - cut) > CODE_STEP
    assert clear.sum() > 2000 and evaluated[clear].any() and not evaluated[clear].all()
    assert np.array_equal(segmented[clear], evaluated[clear])
    assert result.summary["parameters"]["precision"] == precision


def test_configs_are_checked_however_they_are_built():
    from omniseg.training import TrainConfig
    from omniseg.training.config import DataConfig

    with pytest.raises(OmnisegError, match="batch_size"):
        TrainConfig(data=DataConfig(batch_size=0))  # a Python caller, no CLI in between
    with pytest.raises(OmnisegError, match="tile_sise"):
        InferenceSettings.from_dict({"tile_sise": 256})  # a typo is not silently the default
    with pytest.raises(OmnisegError, match="precision"):
        SegmentSettings(precision="fp16")


def test_cli_passes_only_the_options_a_user_gave():
    from omniseg.cli.options import given

    assert given(device=None, batch_size=8, precision=None) == {"batch_size": 8}
    defaults = SegmentSettings()
    assert SegmentSettings(**given(device=None, reader_threads=None)) == defaults


def test_a_model_carries_its_own_colours_and_scales_but_not_other_class_names(tmp_path):
    """A model's catalogue is the kidney's six classes (the merge rule and the glomerulus check
    are their anatomy): a recoloured model with PTC at 20x is segmented with its colours and
    scales, and a renamed one is refused at load with a message that says what may change."""
    import json

    from omniseg.catalogue import catalogue_from_dict, default_catalogue
    from omniseg.cli.main import main
    from omniseg.data.synthetic import synthetic_tissue, write_tiff
    from omniseg.models import load_pretrained, save_pretrained

    raw = default_catalogue().to_dict()
    for row in raw["tissues"]:
        row["color"] = [1, 2, 3]
    raw["tissues"][5]["scale_id"] = 2  # ptc at 20x
    model = create_model("omniseg-tiny")
    model.catalogue = catalogue_from_dict(raw)
    save_pretrained(model, tmp_path / "m")
    assert load_pretrained(tmp_path / "m").catalogue == model.catalogue
    write_tiff(tmp_path / "s.tif", synthetic_tissue(160, 224), 0.25)
    args = ["segment", str(tmp_path / "s.tif"), "-o", str(tmp_path / "out"), "--weights",
            str(tmp_path / "m"), "--tasks", "dt,ptc", "--quiet"]  # fmt: skip
    assert main(args) == 0
    summary = json.loads((tmp_path / "out/s/summary.json").read_text())
    assert {s["magnification"]: s["tasks"] for s in summary["scales"]} == {10: ["dt"], 20: ["ptc"]}
    renamed = json.loads(json.dumps(raw))
    renamed["tissues"][2]["name"] = "my-capsule"
    with pytest.raises(OmnisegError, match="not the kidney's.*not rename"):
        catalogue_from_dict(renamed)
    config = json.loads((tmp_path / "m/config.json").read_text())
    config["catalogue"] = renamed
    (tmp_path / "m/config.json").write_text(json.dumps(config))
    with pytest.raises(OmnisegError, match="not the kidney's"):
        load_pretrained(tmp_path / "m", verify=False)


def test_a_catalogue_that_does_not_fit_the_model_is_refused(tmp_path):
    import json

    from omniseg.models import load_pretrained, save_pretrained

    save_pretrained(create_model("omniseg-tiny"), tmp_path / "m")
    config = json.loads((tmp_path / "m/config.json").read_text())
    config["catalogue"]["tissues"] = config["catalogue"]["tissues"][:5]
    (tmp_path / "m/config.json").write_text(json.dumps(config))
    with pytest.raises(OmnisegError, match=r"config.json.*not the kidney's"):
        load_pretrained(tmp_path / "m")


def test_the_defaults_the_cli_shows_are_the_library_defaults():
    """The CLI passes None for an option not given; --help displays the dataclass default."""
    import typing

    from omniseg.cli import options

    defaults = SegmentSettings()
    shown = {
        name: typing.get_args(getattr(options, alias))[1].show_default
        for name, alias in (("device", "DeviceOption"), ("batch_size", "BatchOption"),
                            ("reader_threads", "ReaderThreadsOption"), ("backend", "BackendOption"))
    }  # fmt: skip
    assert shown == {k: str(getattr(defaults, k)) for k in shown}
    precision = typing.get_args(options.PrecisionOption)[1].show_default
    assert precision.startswith(f"{defaults.precision} (segment")
    assert defaults.tissue_margin_um == 25.0  # shown as 25 by `segment --help`


def test_several_slides_share_one_predictor(tmp_path, monkeypatch):
    """An ONNX Runtime session or compiled OpenVINO model is built once per run, not per slide."""
    import omniseg.inference.pipeline as pipeline
    from omniseg.data.synthetic import synthetic_tissue, write_tiff
    from omniseg.inference import segment_slides
    from omniseg.testing import PointwiseModel

    built = []
    real = pipeline.build_predictor
    monkeypatch.setattr(pipeline, "build_predictor", lambda *a: built.append(1) or real(*a))
    slides = [write_tiff(tmp_path / f"s{i}.tif", synthetic_tissue(64, 80, seed=i), 0.25)
              for i in range(2)]  # fmt: skip
    model = PointwiseModel(InferenceSettings(tile_size=64, tile_overlap=16))
    results = segment_slides(slides, tmp_path / "out", SegmentSettings(progress=False), model)
    assert all(r.ok for r in results) and len(built) == 1


def test_the_defaults_extract_shows_are_the_extract_defaults():
    """``extract --help`` shows literal defaults; they must be ExtractSettings' own."""
    import typing

    from omniseg.cli import extract_cmd
    from omniseg.data.extract import ExtractSettings

    defaults = ExtractSettings()
    aliases = {"regions_class": "RegionsClassArg", "patch": "PatchArg", "per_class": "PerClassArg",
               "negatives": "NegativesArg", "stain": "StainArg", "val_fraction": "ValFractionArg",
               "seed": "SeedArg", "workers": "WorkersArg"}  # fmt: skip
    shown = {
        k: typing.get_args(getattr(extract_cmd, a))[1].show_default for k, a in aliases.items()
    }
    assert shown == {k: str(getattr(defaults, k)) for k in aliases}
