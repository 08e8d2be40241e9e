"""Which convolutions can run in int8: mean foreground Dice per task on the shared patches for
several ONNX Runtime static-quantization recipes of the bundled model, against fp32.

Each recipe is calibrated (MinMax) on 6 training patches per task, then scored on all 88
patches with the model's thresholds. This is how ``runtime/int8.py`` chose its recipe
(decoder convolutions only, per-channel 7-bit weights).

    .venv/bin/python scripts/int8_recipes.py [--json OUT.json] [RECIPE ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "kidney-patches" / "manifest.csv"
PER_TASK = 6


def recipes(convs: list[str], decoder: list[str]) -> dict[str, dict]:
    from onnxruntime.quantization import QuantType

    encoder = [c for c in convs if c not in decoder]
    return {
        "all-u8u8": {"weight_type": QuantType.QUInt8},
        "all-s8-reduce-range": {"reduce_range": True},
        "all-but-stem-and-last-s8": {
            "nodes_to_exclude": [c for c in convs if "stem" in c or "decoder.4" in c]
        },
        "all-but-depthwise-s8-reduce-range": {
            "reduce_range": True,
            "nodes_to_exclude": [c for c in convs if "depthwise" in c or "stem" in c],
        },
        "encoder-only-u8u8": {"weight_type": QuantType.QUInt8, "nodes_to_exclude": decoder},
        "decoder-only-s8": {"nodes_to_exclude": encoder},
        "decoder-only-s8-reduce-range (shipped)": {
            "reduce_range": True,
            "nodes_to_exclude": encoder,
        },
    }


def main() -> None:
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from omniseg.catalogue import tissue
    from omniseg.data import discover_patches, load_pair
    from omniseg.evaluation.int8_calibration import pick_calibration_records
    from omniseg.models import load_pretrained
    from omniseg.models.bundled import default_model_dir
    from omniseg.runtime import image_to_tensor
    from omniseg.runtime.int8 import quantized_nodes
    from omniseg.runtime.onnx_backend import export_onnx
    from omniseg.scoring.metrics import score_pair

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="recipes to run (default: all)")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    model = load_pretrained(default_model_dir())
    records = discover_patches(args.data)
    pairs = [(r, *load_pair(r)) for r in records]
    data = [(r, image_to_tensor(image)[None].numpy(), mask) for r, image, mask in pairs]
    inputs = {r.image: x for r, x, _ in data}
    tasks = len({r.task_id for r in records})
    calibration = pick_calibration_records(records, PER_TASK * tasks)

    class Reader:
        def __init__(self) -> None:
            self.items = iter(calibration)

        def get_next(self):
            r = next(self.items, None)
            if r is None:
                return None
            ids = {"task_ids": np.array([[r.task_id]]), "scale_ids": np.array([[r.scale_id]])}
            return {"images": inputs[r.image], **ids}

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2

    def mean_dice(path: Path) -> dict[str, float]:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        dice = defaultdict(list)
        for r, x, mask in data:
            feed = {"images": x, "task_ids": np.array([[r.task_id]]),
                    "scale_ids": np.array([[r.scale_id]])}  # fmt: skip
            logits = session.run(None, feed)[0][0, 0]
            prob = 1 / (1 + np.exp(logits[0] - logits[1]))
            score = score_pair(prob > model.inference.thresholds[r.task_id], mask > 0)["dice"]
            if score is not None:
                dice[tissue(r.task_id).name].append(score)
        return {t: round(float(np.mean(v)), 4) for t, v in dice.items()}

    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(model, Path(tmp) / "fp32.onnx")
        convs = [n.name for n in onnx.load(str(fp32)).graph.node if n.op_type == "Conv"]
        table = recipes(convs, quantized_nodes(fp32))  # the shipped rule: not the encoder
        out = {"patches": len(records), "calibration_patches": len(calibration)}
        out["fp32"] = base = mean_dice(fp32)
        out["recipes"] = {}
        for name in args.names or list(table):
            kw = {
                "quant_format": QuantFormat.QDQ, "op_types_to_quantize": ["Conv"],
                "per_channel": True, "activation_type": QuantType.QUInt8,
                "weight_type": QuantType.QInt8, "calibrate_method": CalibrationMethod.MinMax,
                **table[name],
            }  # fmt: skip
            path = Path(tmp) / "int8.onnx"
            clock = time.perf_counter()
            quantize_static(str(fp32), str(path), Reader(), **kw)
            dice = mean_dice(path)
            gap = max(abs(dice[t] - base[t]) for t in dice)
            out["recipes"][name] = {"mean_fg_dice": dice, "largest_gap_vs_fp32": round(gap, 4),
                                    "seconds": round(time.perf_counter() - clock, 1)}  # fmt: skip
            print(name, out["recipes"][name], flush=True)
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
