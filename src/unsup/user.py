"""A user's own objects on unsup's flow: images given as a tensor, an array or
a ``torch.utils.data.Dataset`` become an ``ImageDataset``; a backbone given as
an ``nn.Module`` becomes every method's encoder network.

Pixels follow the file readers' conversion rule (``readers.to_uint8``):
uint8 as it is, floats in [0, 1] (torchvision's ``ToTensor`` range) scaled by
255 and rounded, NaN or infinite values refused; ``(N, H, W)`` is one channel;
``(N, H, W, C)`` with C in (1, 3) and an uint8 dtype (numpy / PIL layout) is
moved to channels first. A Dataset's items may be an image or an
``(image, label)`` pair, each image a tensor, an array or a PIL image.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy

import numpy as np
import torch
from torch import nn

from .data.datasets import ImageDataset
from .data.readers import to_uint8
from .errors import UnsupError

_BACKBONE: contextvars.ContextVar[nn.Module | None] = contextvars.ContextVar("unsup_user_backbone", default=None)
_REDRAW: contextvars.ContextVar[bool] = contextvars.ContextVar("unsup_user_backbone_redraw", default=False)


def _as_uint8(images, name: str) -> torch.Tensor:
    x = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim == 4 and x.dtype == np.uint8 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if x.ndim != 4:
        raise UnsupError(f"{name}: images must be (N, C, H, W) or (N, H, W), got shape {tuple(x.shape)}")
    return torch.from_numpy(np.ascontiguousarray(to_uint8(name, x)))


def _as_labels(labels, n: int, name: str) -> torch.Tensor | None:
    if labels is None:
        return None
    y = torch.as_tensor(np.asarray(labels)) if not isinstance(labels, torch.Tensor) else labels.detach().cpu()
    if y.ndim != 1 or len(y) != n:
        raise UnsupError(f"{name}: {tuple(y.shape)} labels for {n} images; give one integer label per image")
    if y.is_floating_point() and not torch.equal(y, y.round()):
        raise UnsupError(f"{name}: labels must be whole numbers, got fractional values")
    y = y.long()
    if len(y) and int(y.min()) < 0:
        raise UnsupError(f"{name}: labels must be 0 or more, found {int(y.min())}")
    return y


def _from_torch_dataset(ds, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Every item of a map-style Dataset, stacked; labels when items are pairs."""
    try:
        n = len(ds)
    except TypeError:
        raise UnsupError(f"{name}: the Dataset has no length; unsup needs a map-style Dataset (with __len__)") from None
    if n == 0:
        raise UnsupError(f"{name}: the Dataset is empty")
    images, labels = [], []
    for i in range(n):
        item = ds[i]
        pair = isinstance(item, (tuple, list))
        img = item[0] if pair else item
        if not isinstance(img, (torch.Tensor, np.ndarray)):
            img = np.asarray(img)  # a PIL image: (H, W) or (H, W, C) uint8
            img = img[None] if img.ndim == 2 else img.transpose(2, 0, 1)
        img = torch.as_tensor(img)
        images.append(img[None] if img.ndim == 2 else img)
        if pair and len(item) > 1:
            labels.append(int(item[1]))
    shapes = {tuple(x.shape) for x in images}
    if len(shapes) > 1:
        raise UnsupError(f"{name}: the Dataset's images differ in shape ({', '.join(map(str, sorted(shapes)[:3]))}); "
                         "add a Resize and CenterCrop transform so every image has one size")
    return torch.stack(images), (torch.tensor(labels) if len(labels) == n else None)


def as_dataset(data, labels=None, name: str | None = None) -> ImageDataset:
    """An ``ImageDataset`` from a tensor or array of images (with optional
    ``labels``), an ``(images, labels)`` pair, a map-style
    ``torch.utils.data.Dataset``, or an ImageDataset."""
    if isinstance(data, ImageDataset):
        return data
    if isinstance(data, tuple) and len(data) == 2 and labels is None:
        data, labels = data
    if isinstance(data, (torch.Tensor, np.ndarray)):
        name = name or "tensor"
        images = _as_uint8(data, name)
    elif isinstance(data, torch.utils.data.Dataset):
        name = name or type(data).__name__
        raw, found = _from_torch_dataset(data, name)
        images, labels = _as_uint8(raw, name), labels if labels is not None else found
    else:
        raise UnsupError(f"cannot use {type(data).__name__} as images; give a dataset name or path, a tensor (N, C, H, W), "
                         "or a torch Dataset")
    return ImageDataset(name, images, _as_labels(labels, len(images), name))


def describe(data) -> str:
    """What a run's config records for data given as an object: kind and shape."""
    return f"<in-memory {data.name}: {len(data)} images of {'x'.join(map(str, data.shape))}>"


@contextlib.contextmanager
def user_backbone(module: nn.Module | None):
    """Inside the block, methods build their encoder network from ``module``
    (a copy each time, so the user's module keeps its initial weights)."""
    if module is not None and not isinstance(module, nn.Module):
        raise UnsupError(f"backbone must be an nn.Module, got {type(module).__name__}")
    if module is not None and not isinstance(getattr(module, "out_dim", None), int):
        raise UnsupError(f"backbone {type(module).__name__} needs an integer attribute out_dim (its feature size)")
    token = _BACKBONE.set(module)
    try:
        yield
    finally:
        _BACKBONE.reset(token)


@contextlib.contextmanager
def redrawn():
    """Inside the block, ``current_backbone`` draws the parameters again: the
    random-encoder reference of a user's backbone."""
    token = _REDRAW.set(True)
    try:
        yield
    finally:
        _REDRAW.reset(token)


def current_backbone() -> nn.Module | None:
    """A copy of the backbone given to ``user_backbone`` (None outside one);
    inside ``redrawn``, with its parameters drawn again (``reset_parameters``
    under torch's global seed)."""
    module = _BACKBONE.get()
    if module is None:
        return None
    net = copy.deepcopy(module)
    if _REDRAW.get():
        for m in net.modules():
            if callable(getattr(m, "reset_parameters", None)):
                m.reset_parameters()
    return net
