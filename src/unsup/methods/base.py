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
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ..data.augment import AugmentConfig
from ..errors import UnsupError
from ..nets import Encoder, backbone_options, build_encoder

FAMILIES = ["direct mapping", "clustering", "generative", "pretext", "video", "joint embedding", "masked"]


@dataclass
class MethodConfig:
    """Shared training settings; each method's subclass sets its paper's values."""

    backbone: str = "small-convnet"
    backbone_options: dict = dataclasses.field(default_factory=dict)  # the backbone factory's arguments, e.g. {depth: 6}
    batch_size: int = 256
    optimizer: str = "adamw"  # adamw | sgd | lars
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    warmup: float = 0.05  # fraction of the budget spent warming up the learning rate
    schedule: str = "cosine"  # learning rate after the warm-up: "cosine" (decay to 0) or "constant"
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)


# What each option means, as a range its value must lie in. Names mean the same in
# every method, so one table serves all; an option not listed here gets the rule
# of its default's sign (see ``_default_range``). "[0, 1)" is 0 <= v < 1.
RANGES: dict[str, str] = {
    "batch_size": "[1, 65536]",
    "lr": "(0, 10]",
    "g_lr": "[0, 10]",  # 0 = lr
    "weight_decay": "[0, 1]",
    "momentum": "[0, 1)",
    "beta1": "[0, 1)",
    "warmup": "[0, 1)",
    "temperature": "(0, 100]",
    "momentum_base": "[0, 1]",
    "stat_decay": "[0, 1]",
    "ema_rate": "[0, 1)",
    "flip": "[0, 1]",
    "jitter_prob": "[0, 1]",
    "blur_prob": "[0, 1]",
    "dropout": "[0, 1)",
    "input_dropout": "[0, 1)",
    "plain_background": "[0, 1]",
    "sparsity_target": "[0, 1)",
    "crop_frac": "(0, 1]",
    "crop_min": "[0, 1]",
    "patch_frac": "(0, 1]",
    "tile_frac": "(0, 1]",
    "gap_frac": "[0, 1]",
    "jitter_frac": "[0, 1]",
    "brightness": "[0, 1]",
    "contrast": "[0, 1]",
    "crop_scale": "(0, 1]",
    "crop_ratio": "(0, 100]",
    "blur_sigma": "[0, 100]",
    "scale": "(0, 100]",
    "power": "(0, 100]",
    "multiply": "(0, 100]",
    "fm_layer": "[-100, 100]",  # an index: negative counts from the end
    "solarize": "[0, 1]",
    "grayscale": "[0, 1]",
    "mask_ratio": "[0, 1)",
    "student_temp": "(0, 100]",
    "teacher_temp": "(0, 100]",
    "local_scale": "(0, 1]",
    "target_scale": "(0, 1]",
    "context_scale": "(0, 1]",
    "queue_start": "[0, 1]",
    "n_local": "[0, 64]",  # 0: no local crops (multi-crop off)
}
# Text options with a fixed set of values.
CHOICES: dict[str, tuple[str, ...]] = {
    "optimizer": ("adamw", "adam", "sgd", "lars"),
    "schedule": ("cosine", "constant"),
    "corruption": ("none", "mask", "gaussian"),
    "z_prior": ("uniform", "gaussian"),
    "continuous_nll": ("fixed", "factored"),
    "d_norm": ("weight", "batch"),
    "arch": ("conv", "mlp"),
    "loss": ("L0", "Lall"),
    "distance": ("l2", "smooth-l1"),
}


def _parse_range(text: str) -> tuple[float, float, bool, bool]:
    """``"[0, 1)"`` -> (0.0, 1.0, True, False): bounds and whether each is included."""
    lo, hi = text[1:-1].split(",")
    return float(lo), float(hi), text[0] == "[", text[-1] == "]"


def _default_range(default) -> str | None:
    """A count with a positive default must be >= 1, an option with a default of 0
    must be >= 0 (0 turns it off); a negative default is an index: any value."""
    if isinstance(default, bool) or not isinstance(default, int | float):
        return None
    if isinstance(default, int) and default > 0:
        return "[1, inf]"
    return "[0, inf]" if default >= 0 else None


def _in_range(value: float, rule: str) -> bool:
    lo, hi, lo_in, hi_in = _parse_range(rule)
    return (value > lo or (lo_in and value == lo)) and (value < hi or (hi_in and value == hi))


def _number(where: str, kind: str, value, rule: str | None, example):
    """``value`` as a finite float or whole int within ``rule``; text such as ``5e-4``
    (which YAML reads as a string) is converted."""
    what = "a whole number" if kind == "int" else "a number"
    fix = f"{where} must be {what}" + (f" in {rule}" if rule else "") + f", e.g. {example!r}"
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise UnsupError(f"{fix}; got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UnsupError(f"{fix}; got {value!r}")
    if not math.isfinite(value):
        raise UnsupError(f"{fix}; got {value!r}")
    if kind == "int":
        if value != int(value):
            raise UnsupError(f"{fix}; got {value!r}")
        value = int(value)
    else:
        value = float(value)
    if rule and not _in_range(value, rule):
        raise UnsupError(f"{fix}; got {value!r}")
    return value


def _check_value(owner: str, key: str, kind: str, default, value, prefix: str = ""):
    """One option checked against its annotation (``kind``), its range and its
    choices, in the form the config keeps (tuples for lists)."""
    where = f"option {prefix}{key} of {owner}"
    rule = RANGES.get(key) or _default_range(default[0] if isinstance(default, tuple) and default else default)
    if kind in ("int", "float"):
        return _number(where, kind, value, rule, default)
    if kind == "bool":
        if not isinstance(value, bool):
            raise UnsupError(f"{where} must be true or false, got {value!r}")
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise UnsupError(f"{where} must be text, e.g. {default!r}; got {value!r}")
        if key in CHOICES and value not in CHOICES[key]:
            raise UnsupError(f"{where} must be one of {', '.join(CHOICES[key])}; got {value!r}")
        return value
    if kind.startswith("dict"):
        if not isinstance(value, dict):
            raise UnsupError(f"{where} must be a mapping, e.g. {key}={{name: value}}; got {value!r}")
        return value
    if kind.startswith("tuple"):
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list) or not value:
            raise UnsupError(f"{where} must be a list, e.g. {key}=[{', '.join(map(str, default))}]; got {value!r}")
        args = kind[len("tuple["):-1].split(",") if "[" in kind else []
        args = [a.strip() for a in args]
        if args and args[-1] != "...":
            if len(value) != len(args):
                raise UnsupError(f"{where} must be a list of {len(args)} numbers, e.g. {list(default)}; got {value!r}")
        elem = args[0] if args else ("float" if any(isinstance(d, float) for d in default) else "int")
        out = tuple(_number(f"{where} (each element)", elem, v, rule, default[0]) for v in value)
        if len(args) == 2 and args[1] != "..." and out[0] > out[1]:
            raise UnsupError(f"{where} is a range [low, high] with low <= high; got {value!r}")
        return out
    return value


def _annotation(field: dataclasses.Field) -> str:
    t = field.type
    return t if isinstance(t, str) else getattr(t, "__name__", str(t))


def config_from_dict(cls: type, values: dict[str, Any] | None, prefix: str = ""):
    """Build a config dataclass from user options, each checked before anything
    runs: unknown keys (with the valid ones), the type of its annotation, a finite
    value in the range of ``RANGES`` (or the rule of its default's sign), one of
    ``CHOICES``, a mapping of known keys for ``augment``; then the config's own
    ``validate()`` where it has one. ``prefix`` names a nested config (``augment.``)."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise UnsupError(f"options for {cls.__name__} must be a mapping of key: value, got {values!r}")
    values = dict(values)
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(map(str, values)) - set(names))
    if unknown:
        raise UnsupError(f"unknown option(s) {', '.join(prefix + u for u in unknown)} for {cls.__name__}; valid: {', '.join(sorted(names))}")
    defaults = cls()
    for key, value in values.items():
        kind = _annotation(names[key])
        if kind == "AugmentConfig":
            if isinstance(value, AugmentConfig):
                value = dataclasses.asdict(value)
            if not isinstance(value, dict):
                raise UnsupError(f"option {key} of {cls.__name__} must be a mapping, e.g. {key}={{flip: 0.5, noise_std: 0.1}}; "
                                 f"got {value!r}")
            values[key] = config_from_dict(AugmentConfig, value, f"{prefix}{key}.")
        else:
            values[key] = _check_value(cls.__name__, key, kind, getattr(defaults, key), value, prefix)
    cfg = cls(**values)
    if isinstance(cfg, MethodConfig):  # a misspelt backbone option is refused here, not when its entry starts
        backbone_options(cfg.backbone, cfg.backbone_options)
    if hasattr(cfg, "validate"):
        cfg.validate()
    return cfg


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
        from ..user import current_backbone

        c, h, _ = self.shape
        net = current_backbone()  # a user's own nn.Module (unsup.pretrain(..., backbone=))
        return Encoder(net, c, h) if net is not None else build_encoder(self.cfg.backbone, c, h, self.cfg.backbone_options)

    def random_encoder(self) -> nn.Module:
        """The reference: the same encoder with fresh random weights."""
        from ..user import redrawn

        with redrawn():
            return type(self)(self.cfg, self.shape).encoder

    # --- gradient methods ------------------------------------------------
    def training_loss(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss on a uint8 batch ``(B, C, H, W)`` already on the device."""
        raise NotImplementedError

    def configure_optimizers(self, make) -> list[torch.optim.Optimizer]:
        """``make(params)`` builds the configured optimiser."""
        return [make([p for p in self.parameters() if p.requires_grad])]

    def training_step(self, images: torch.Tensor, optimizers, backward) -> dict[str, float | torch.Tensor]:
        """One step; ``backward(loss, optimizer)`` does backward, gradient
        averaging across processes and the optimiser step. Logs are floats or
        0-d tensors; the loss stays a tensor on the device (reading it would
        wait for the device every step: the loop reads logs every few steps)."""
        loss, logs = self.training_loss(*images) if self.uses_labels else self.training_loss(images)
        backward(loss, optimizers[0])
        return {"loss": loss.detach(), **logs}

    def after_step(self, progress: float) -> None:
        """Called after each step with progress in [0, 1] (momentum encoders)."""

    def on_epoch_start(self, data, epoch: int) -> None:
        """Called before each pass over the data (DeepCluster re-clusters here)."""

    # --- non-gradient methods -------------------------------------------
    def fit(self, data, budget, ctx) -> None:
        raise NotImplementedError

    def check_training_set(self, data) -> None:
        """Raise ``UnsupError`` when the training set ``data`` (an ``ImageDataset``)
        cannot train this method's config: too few images, no labels or other
        classes where the method uses them. ``pretrain`` asks before anything is
        written or trained."""

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
        from ..data.datasets import check_pair

        train, test = load(data, "train"), load(data, "test")
        check_pair(train, test, data)
        return train, test

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
