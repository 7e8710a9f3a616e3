"""What every method is: a config dataclass with the paper's defaults, an
``encoder`` (float images in [0, 1] -> features), and either a loss for the
shared training loop or its own ``fit``.

Gradient methods implement ``training_loss``; the loop in ``unsup.train``
does optimisation, budget, schedule, checkpoints and monitoring. Methods with
several optimisers (GANs) override ``configure_optimizers`` and
``training_step``. Methods that learn without gradients (k-means, sparse
coding) set ``uses_gradients = False`` and implement ``fit``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ..data.augment import AugmentConfig
from ..errors import UnsupError
from ..nets import Encoder, build_encoder

FAMILIES = ["direct mapping", "clustering", "generative", "pretext", "video", "joint embedding", "masked"]


@dataclass
class MethodConfig:
    """Shared training settings; each method's subclass sets its paper's values."""

    backbone: str = "small-convnet"
    batch_size: int = 256
    optimizer: str = "adamw"  # adamw | sgd | lars
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    warmup: float = 0.05  # fraction of the budget spent warming up the learning rate
    schedule: str = "cosine"  # learning rate after the warm-up: "cosine" (decay to 0) or "constant"
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)


def _as_number(owner: str, key: str, kind, value):
    """A number option given as text or as an int is made the field's type:
    YAML reads ``5e-4`` (no dot) as a string, which reached the optimiser."""
    kind = kind if isinstance(kind, str) else getattr(kind, "__name__", "")
    if kind not in ("float", "int") or isinstance(value, bool):
        return value
    if kind == "float" and isinstance(value, int):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value) if kind == "float" else int(value)
        except ValueError:
            raise UnsupError(f"option {key}={value!r} for {owner} must be {'a number' if kind == 'float' else 'a whole number'}, "
                             f"e.g. {key}={'0.001' if kind == 'float' else '64'}") from None
    return value


def config_from_dict(cls: type, values: dict[str, Any] | None):
    """Build a config dataclass, refusing unknown keys with the list of valid ones."""
    values = dict(values or {})
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise UnsupError(f"unknown option(s) {', '.join(unknown)} for {cls.__name__}; valid: {', '.join(sorted(names))}")
    if isinstance(values.get("augment"), dict):
        values["augment"] = config_from_dict(AugmentConfig, values["augment"])
    for key, value in list(values.items()):
        if isinstance(value, list):
            values[key] = tuple(value)
        else:
            values[key] = _as_number(cls.__name__, key, names[key].type, value)
    if isinstance(values.get("augment"), AugmentConfig):
        aug = values["augment"]
        for f in dataclasses.fields(aug):
            v = getattr(aug, f.name)
            if isinstance(v, list):
                setattr(aug, f.name, tuple(v))
    return cls(**values)


class Method(nn.Module):
    name: ClassVar[str]
    family: ClassVar[str]
    paper: ClassVar[str]
    Config: ClassVar[type] = MethodConfig
    uses_gradients: ClassVar[bool] = True
    uses_labels: ClassVar[bool] = False  # semi-supervised methods get (images, labels)

    def __init__(self, cfg: MethodConfig, shape: tuple[int, int, int]):
        super().__init__()
        self.cfg = cfg
        self.shape = tuple(shape)  # (C, H, W) of the training images
        _c, h, w = self.shape
        if h != w:
            raise UnsupError(f"{self.name}: images must be square, got {h}x{w}; resize them first")

    # --- the encoder -----------------------------------------------------
    def make_encoder(self) -> Encoder:
        c, h, _ = self.shape
        return build_encoder(self.cfg.backbone, c, h)

    def random_encoder(self) -> nn.Module:
        """The reference: the same encoder with fresh random weights."""
        return type(self)(self.cfg, self.shape).encoder

    # --- gradient methods ------------------------------------------------
    def training_loss(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss on a uint8 batch ``(B, C, H, W)`` already on the device."""
        raise NotImplementedError

    def configure_optimizers(self, make) -> list[torch.optim.Optimizer]:
        """``make(params)`` builds the configured optimiser."""
        return [make([p for p in self.parameters() if p.requires_grad])]

    def training_step(self, images: torch.Tensor, optimizers, backward) -> dict[str, float]:
        """One step; ``backward(loss, optimizer)`` does backward, gradient
        averaging across processes and the optimiser step."""
        loss, logs = self.training_loss(*images) if self.uses_labels else self.training_loss(images)
        backward(loss, optimizers[0])
        return {"loss": float(loss.detach()), **logs}

    def after_step(self, progress: float) -> None:
        """Called after each step with progress in [0, 1] (momentum encoders)."""

    def on_epoch_start(self, data, epoch: int) -> None:
        """Called before each pass over the data (DeepCluster re-clusters here)."""

    # --- non-gradient methods -------------------------------------------
    def fit(self, data, budget, ctx) -> None:
        raise NotImplementedError

    @classmethod
    def training_data(cls, data: str) -> str:
        """The dataset this method pretrains on when asked for ``data``; video
        and stereo methods map an image dataset to their own (e.g.
        fashion-mnist -> moving-fashion-mnist)."""
        return data

    # --- evaluation data --------------------------------------------------
    def probe_datasets(self, data: str):
        """(train, test) labelled image sets the encoder is probed on; video
        methods override this to probe on still images."""
        from ..data import load

        return load(data, "train"), load(data, "test")

    # --- family-specific numbers -----------------------------------------
    def family_metrics(self, data: str, device) -> dict[str, float]:
        """Family-specific numbers of the trained method, computed on held-out
        data (e.g. the share of dictionary atoms that fit a Gabor, a GAN's
        sample quality, next-frame error against copying the last frame).
        ``data`` is the dataset name or path the run pretrained with; the
        whole method (heads, generators, decoders) is loaded and may be moved
        to ``device``. Keys are stable names a benchmark plan's floors can
        address; every value is a float. Methods without such numbers: {}."""
        return {}

    # --- pictures --------------------------------------------------------
    def figures(self, data, out_dir: Path) -> list[Path]:
        """Write the method's figure(s) as PNG; return their paths."""
        return []
