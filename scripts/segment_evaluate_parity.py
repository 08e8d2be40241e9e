"""segment vs evaluate on every shared patch: Dice of each patch segmented alone at its
own scale, with and without the tissue/glass gates, against evaluate's Dice. Prints one row per
patch and the largest and mean gaps; writes /tmp/parity.json.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/segment_evaluate_parity.py
"""

import json
import pathlib
import tempfile

import numpy as np
import tifffile

from omniseg.catalogue import tissue
from omniseg.data import discover_patches, read_mask
from omniseg.evaluation.predict import predict_record
from omniseg.inference import SegmentSettings, segment_slide
from omniseg.inference.loading import load_segment_model
from omniseg.scoring.metrics import dice

model, _ = load_segment_model(None, device="cpu")
recs = discover_patches(
    str(pathlib.Path(__file__).resolve().parents[2] / "shared/data/kidney-patches/manifest.csv")
)
tmp = pathlib.Path(tempfile.mkdtemp())
rows = []
for i, r in enumerate(recs):
    t = tissue(r.task_id)
    truth = read_mask(r.mask) > 0
    ev = dice(predict_record(model, r, tta=False) > 0.5, truth)
    out = {}
    for gate, margin in (("gated", 25.0), ("ungated", None)):
        s = SegmentSettings(
            progress=False, tasks=(t.id,), mpp=t.mpp, reader_threads=0, tissue_margin_um=margin
        )
        res = segment_slide(r.image, tmp / f"{gate}{i}", s, model)
        lab = tifffile.imread(res.out_dir / "labels.ome.tif", level=0)
        out[gate] = dice(lab.reshape(lab.shape[-2:]) == t.label_value, truth)
    rows.append((str(r.image.relative_to(r.image.parents[2])), ev, out["gated"], out["ungated"]))
    print(rows[-1], flush=True)
pathlib.Path("/tmp/parity.json").write_text(json.dumps(rows))
g = [abs(a - b) for _, a, b, _ in rows]
u = [abs(a - c) for _, a, _, c in rows]
print("max gap gated", max(g), "ungated", max(u), "mean", np.mean(g), np.mean(u))
