"""What the multi-crop methods (SwAV, DINO) share: their local crops, smaller
than the images, must pass through the same backbone as the global ones."""

from __future__ import annotations

import dataclasses
import inspect

from ...nets import BACKBONES


def accept_local_crops(cfg):
    """``cfg`` with the backbone option that lets it take the smaller local
    crops turned on where the backbone has one (a ViT's ``dynamic_size``:
    position embeddings interpolated to the crop's patch grid); convnets with
    global pooling take any size already. A user's explicit choice is kept."""
    factory = BACKBONES.get(cfg.backbone)
    if not cfg.n_local or factory is None or "dynamic_size" not in inspect.signature(factory).parameters:
        return cfg
    if "dynamic_size" in cfg.backbone_options:
        return cfg
    return dataclasses.replace(cfg, backbone_options={**cfg.backbone_options, "dynamic_size": True})
