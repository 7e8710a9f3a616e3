"""What the joint-embedding methods share: their family, their figure (a
t-SNE of the encoder's features) and a collapse indicator for the logs."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ..base import Method


def spread(z: torch.Tensor) -> torch.Tensor:
    """The standard deviation over the batch of the L2-normalised embeddings,
    times sqrt(D): about 1 for embeddings spread over the sphere, 0 for a
    collapsed (constant) output; the collapse check of SimSiam's figure 2.
    A 0-d tensor: the loop reads logs back to the host only when it logs."""
    z = F.normalize(z.detach().float(), dim=1)
    return z.std(0).mean() * z.shape[1] ** 0.5


class JointMethod(Method):
    """A joint-embedding method: an encoder plus heads trained so that two
    views of an image agree; evaluated on the encoder's features (before the heads)."""

    family = "joint embedding"

    def figures(self, data, out_dir: Path) -> list[Path]:
        from ...evaluate.features import extract_features
        from ...report.figures import save_embedding_plot

        test = data.subset(torch.arange(min(2000, len(data))))
        if test.labels is None:
            return []
        feats = extract_features(self.encoder, test.images, next(self.parameters()).device)
        path = Path(out_dir) / "embedding.png"
        title = f"{type(self).__name__} features, t-SNE"
        save_embedding_plot(feats, test.labels.cpu(), data.classes, path, title=title)
        return [path]
