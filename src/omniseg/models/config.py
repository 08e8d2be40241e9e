"""Frozen configuration of the network and of how a trained model is meant to be run."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from omniseg.errors import OmnisegError

CONTROLLER_KINDS = ("scale", "task", "static")
HEAD_INITS = ("default", "head")
HEAD_ACTIVATIONS = ("relu", "leaky_relu")
HEAD_LEAK = 0.1
# "resunet": the original residual U-Net (stem/widths/blocks below). The others are EfficientNet-Lite
# stage tables (models/efficientnet_lite.py) under a U-Net decoder of ``decoder_channels``.
ENCODERS = ("resunet", "efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite-tiny")
ENCODER_WEIGHTS = ("", "imagenet")


@dataclass(frozen=True)
class HeadSpec:
    """Shape of the per-sample 1x1 head: in -> hidden... -> out, ReLU between layers.

    The controller emits all weights (layer by layer, row-major ``[out][in]``) followed by all
    biases, which is the original 162-vector layout (w1, w2, w3, b1, b2, b3).
    """

    in_channels: int = 8
    hidden: tuple[int, ...] = (8, 8)
    out_channels: int = 2
    # Between layers: "relu" (the original) or "leaky_relu" (slope HEAD_LEAK), which keeps a
    # gradient through hidden units that went negative, so a head that died can come back.
    activation: str = "relu"

    def __post_init__(self) -> None:
        if self.activation not in HEAD_ACTIVATIONS:
            raise OmnisegError(
                f"unknown head activation {self.activation!r}; valid: {', '.join(HEAD_ACTIVATIONS)}"
            )

    @property
    def layer_shapes(self) -> tuple[tuple[int, int], ...]:
        dims = (self.in_channels, *self.hidden, self.out_channels)
        return tuple((dims[i + 1], dims[i]) for i in range(len(dims) - 1))

    @property
    def num_weights(self) -> int:
        return sum(o * i for o, i in self.layer_shapes)

    @property
    def num_biases(self) -> int:
        return sum(o for o, _ in self.layer_shapes)

    @property
    def num_params(self) -> int:
        return self.num_weights + self.num_biases


@dataclass(frozen=True)
class ModelConfig:
    """Architecture hyper-parameters. The defaults are the published Omni-Seg network."""

    architecture: str = "omniseg"
    controller: str = (
        "scale"  # scale: W[task, scale]·f ; task: DoDNet task bias ; static: multihead
    )
    in_channels: int = 3
    stem_channels: int = 32
    widths: tuple[int, ...] = (32, 64, 128, 256, 256)
    blocks: tuple[int, ...] = (1, 2, 2, 2, 2)
    groups: int = 16
    head: HeadSpec = field(default_factory=HeadSpec)
    num_tasks: int = 6
    num_scales: int = 4
    # "head": generated heads start as sane MLPs with live ReLUs (heads.head_init_vector), our
    # fix for dead dynamic heads; "default": PyTorch's init, as the original. Only affects a
    # freshly built model, never loaded or converted weights.
    head_init: str = "head"
    encoder: str = "resunet"
    # U-Net decoder widths, deepest first, one per encoder feature (non-resunet encoders only).
    decoder_channels: tuple[int, ...] = ()
    # Start of a freshly built encoder: "" random, "imagenet" the bundled ImageNet weights
    # (models/encoders.py). Like head_init, never affects loaded weights.
    encoder_weights: str = ""

    def __post_init__(self) -> None:
        if self.encoder not in ENCODERS:
            raise OmnisegError(f"unknown encoder {self.encoder!r}; valid: {', '.join(ENCODERS)}")
        if self.encoder_weights not in ENCODER_WEIGHTS:
            raise OmnisegError(
                f"unknown encoder_weights {self.encoder_weights!r}; valid: '' (random), 'imagenet'"
            )
        if self.head_init not in HEAD_INITS:
            raise OmnisegError(
                f"unknown head_init {self.head_init!r}; valid: {', '.join(HEAD_INITS)}"
            )
        if self.controller not in CONTROLLER_KINDS:
            raise OmnisegError(
                f"unknown controller {self.controller!r}; valid: {', '.join(CONTROLLER_KINDS)}"
            )
        if self.encoder != "resunet":
            self._check_decoder()
            return
        if len(self.widths) != len(self.blocks) or len(self.widths) < 2:
            raise OmnisegError("widths and blocks must have the same length (>= 2)")
        if self.widths[-1] != self.widths[-2]:
            raise OmnisegError(
                "the bottleneck width must equal the last skip width (additive skip)"
            )
        for ch in (self.stem_channels, *self.widths):
            if ch % self.groups:
                raise OmnisegError(f"channel count {ch} is not divisible by groups={self.groups}")

    def _check_decoder(self) -> None:
        if len(self.decoder_channels) != len(self.widths):
            raise OmnisegError(
                f"encoder {self.encoder}: decoder_channels needs one width per encoder feature "
                f"({len(self.widths)}), got {list(self.decoder_channels)}"
            )
        for ch in self.decoder_channels:
            if ch % self.groups:
                raise OmnisegError(f"decoder width {ch} is not divisible by groups={self.groups}")

    @property
    def size_divisor(self) -> int:
        """Input H and W must be multiples of this: the encoder's total stride (one halving per
        stage after the first for the resunet; per feature map for the EfficientNet-Lite ones)."""
        if self.encoder == "resunet":
            return 2 ** (len(self.widths) - 1)
        return 2 ** len(self.widths)

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["widths"] = list(self.widths)
        out["blocks"] = list(self.blocks)
        out["decoder_channels"] = list(self.decoder_channels)
        out["head"] = {
            "in_channels": self.head.in_channels,
            "hidden": list(self.head.hidden),
            "out_channels": self.head.out_channels,
            "activation": self.head.activation,
        }
        return out

    @classmethod
    def from_dict(cls, raw: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise OmnisegError(f"unknown model config keys: {sorted(unknown)}")
        kw = dict(raw)
        if "widths" in kw:
            kw["widths"] = tuple(kw["widths"])
        for key in ("blocks", "decoder_channels"):
            if key in kw:
                kw[key] = tuple(kw[key])
        if isinstance(kw.get("head"), dict):
            h = kw["head"]
            kw["head"] = HeadSpec(
                h["in_channels"], tuple(h["hidden"]), h["out_channels"], h.get("activation", "relu")
            )
        return cls(**kw)


MIN_TILE, MAX_TILE = 16, 4096  # px; 4096² x 3 scales of activations is already many GB


@dataclass(frozen=True)
class InferenceSettings:
    """How a trained model should be run; saved beside the weights in config.json."""

    patch_size: int = 256  # training patch size (px at the task's native scale)
    tile_size: int = 512  # inference tile (px at the task's native scale)
    tile_overlap: int = 64  # px of context discarded at each inner tile edge
    thresholds: tuple[float, ...] = (0.5, 0.5, 0.5, 0.5, 0.5, 0.5)
    min_area_um2: tuple[float, ...] = (20.0, 20.0, 500.0, 300.0, 50.0, 5.0)
    tta: bool = False

    def __post_init__(self) -> None:
        """Refuse settings that would misbehave (``tile_size: 100000`` tried to allocate 30 GB)."""
        if not MIN_TILE <= self.tile_size <= MAX_TILE:
            raise OmnisegError(
                f"inference.tile_size={self.tile_size}: must lie in [{MIN_TILE}, {MAX_TILE}] px"
            )
        check_tile_overlap(self.tile_size, self.tile_overlap, "inference.tile_overlap")
        if not 0 < self.patch_size <= MAX_TILE:
            raise OmnisegError(
                f"inference.patch_size={self.patch_size}: must lie in (0, {MAX_TILE}]"
            )
        if any(not 0.0 <= t < 1.0 for t in self.thresholds):
            raise OmnisegError(f"inference.thresholds={list(self.thresholds)}: each in [0, 1)")
        if any(not a >= 0.0 for a in self.min_area_um2):
            raise OmnisegError(f"inference.min_area_um2={list(self.min_area_um2)}: each >= 0")

    def to_dict(self) -> dict:
        return {
            "patch_size": self.patch_size,
            "tile_size": self.tile_size,
            "tile_overlap": self.tile_overlap,
            "thresholds": list(self.thresholds),
            "min_area_um2": list(self.min_area_um2),
            "tta": self.tta,
        }

    @classmethod
    def from_dict(cls, raw: dict) -> InferenceSettings:
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:  # a typo ("tile_sise") must not silently run with the default
            raise OmnisegError(f"unknown inference settings keys: {sorted(unknown)}")
        kw = dict(raw)
        for key in ("thresholds", "min_area_um2"):
            if key in kw:
                kw[key] = tuple(float(v) for v in kw[key])
        return cls(**kw)


def check_tile_overlap(tile: int, overlap: int, what: str = "tile_overlap") -> None:
    """The one tiling rule: each tile keeps a core of ``tile - 2 x overlap`` > 0 px."""
    if tile <= 0 or not 0 <= 2 * overlap < tile:
        named = f"{what} {overlap}" if what.startswith("--") else f"{what}={overlap}"
        raise OmnisegError(
            f"{named}: need 0 <= 2 x overlap < tile ({tile} px); give a smaller "
            "--tile-overlap or a larger --tile-size (or fix the model's config.json "
            "'inference' section)"
        )
