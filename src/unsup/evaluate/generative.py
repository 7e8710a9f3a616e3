"""Sample-quality numbers that need no download.

A small classifier that the project trains itself on the dataset's training
split (cached under the user cache), then:

- the **Fréchet classifier distance (FCD, own classifier)**: the Fréchet
  distance between Gaussians fitted to the classifier's penultimate features
  of generated and of real test images. It has the form of FID but *not* its
  Inception network, so its values are not comparable with published FIDs;
  compare methods here with each other and with the real-vs-real reference.
- the classifier's accuracy on samples of conditional models (is a sample
  drawn for class c classified as c?).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..data.augment import to_float
from ..data.fetch import cache_dir
from ..errors import UnsupError
from ..run import atomic_write

FCD_NAME = "Fréchet classifier distance (FCD, own classifier)"


class ReferenceClassifier(nn.Module):
    """conv(32)-pool-conv(64)-pool-fc(128)-fc(K): about 91% on Fashion-MNIST."""

    def __init__(self, channels: int, size: int, num_classes: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, 1, 1), nn.ReLU(True), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, 1, 1), nn.ReLU(True), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(64 * (size // 4) ** 2, 128), nn.ReLU(True),
        )
        self.head = nn.Linear(128, num_classes)

    def features(self, x01: torch.Tensor) -> torch.Tensor:
        return self.body(x01 * 2 - 1)

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x01))


def _cache_path(name: str) -> Path:
    root = Path(os.environ.get("UNSUP_CACHE") or cache_dir()) / "generative"
    return root / f"{Path(str(name)).name}-classifier.safetensors"


def reference_classifier(train, device="cpu", epochs: int = 3, seed: int = 0, use_cache: bool = True) -> ReferenceClassifier:
    """The classifier for ``train`` (an ImageDataset with labels), trained once and cached."""
    from safetensors.torch import load_file, save

    if train.labels is None:
        raise UnsupError(f"{train.name}: sample-quality numbers need a labelled training split to train the reference classifier")
    c, s, _ = train.shape
    model = ReferenceClassifier(c, s, train.num_classes)
    path = _cache_path(train.name)
    meta = path.with_suffix(".json")
    if use_cache and path.is_file() and meta.is_file():
        info = json.loads(meta.read_text())
        if info.get("shape") == list(train.shape) and info.get("n_train") == len(train):
            model.load_state_dict(load_file(str(path)))
            return model.to(device).eval()
    torch.manual_seed(seed)
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    images, labels = train.images.to(device), train.labels.to(device)
    steps = epochs * (len(train) // 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=max(1, steps))
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(train), generator=g).to(device)
        for i in range(0, len(perm) - 127, 128):
            idx = perm[i : i + 128]
            loss = F.cross_entropy(model(to_float(images[idx])), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    if use_cache:
        atomic_write(path, save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}))
        atomic_write(meta, json.dumps({"dataset": train.name, "shape": list(train.shape), "n_train": len(train), "epochs": epochs}))
    return model


@torch.no_grad()
def _apply(fn, images: torch.Tensor, device, batch: int = 1000) -> torch.Tensor:
    return torch.cat([fn(to_float(images[i : i + batch].to(device))).float().cpu() for i in range(0, len(images), batch)])


def classifier_features(clf: ReferenceClassifier, images: torch.Tensor) -> torch.Tensor:
    """Penultimate features for uint8 or [0, 1] float images."""
    return _apply(clf.features, images, next(clf.parameters()).device)


def classify(clf: ReferenceClassifier, images: torch.Tensor) -> torch.Tensor:
    return _apply(clf, images, next(clf.parameters()).device).argmax(1)


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^1/2) for feature rows, in float64."""
    if len(a) < 2 or len(b) < 2:
        raise UnsupError(f"the Fréchet distance needs at least 2 samples per side, got {len(a)} and {len(b)}")
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    sa, sb = torch.cov(a.T), torch.cov(b.T)
    # tr (S_a S_b)^1/2 = sum of sqrt eigenvalues of the symmetric S_a^1/2 S_b S_a^1/2
    w, v = torch.linalg.eigh(sa)
    root_a = (v * w.clamp(min=0).sqrt()) @ v.T
    m = root_a @ sb @ root_a
    tr_cross = torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0).sqrt().sum()
    return float(((mu_a - mu_b) ** 2).sum() + sa.trace() + sb.trace() - 2 * tr_cross)


def fcd(clf: ReferenceClassifier, generated: torch.Tensor, real: torch.Tensor) -> float:
    """Fréchet classifier distance (FCD, own classifier) between two image sets."""
    return frechet_distance(classifier_features(clf, generated), classifier_features(clf, real))


def conditional_accuracy(clf: ReferenceClassifier, generated: torch.Tensor, wanted: torch.Tensor) -> float:
    """Share of samples that the reference classifier assigns to the class they were drawn for."""
    return float((classify(clf, generated) == wanted.cpu()).float().mean())


def sample_fcd(method, clf: ReferenceClassifier, test, device="cpu", n: int = 5000) -> float:
    """FCD of ``n`` samples of a generative ``method`` (fixed seed) against the first ``n`` test images."""
    samples = method.to(device).eval().sample(n, device).cpu()
    return fcd(clf, samples, test.images[:n])


def generator_report(method, train, test, device="cpu", n: int = 5000) -> dict:
    """FCD of ``n`` samples against the test split, with the real-vs-real reference."""
    clf = reference_classifier(train, device)
    method = method.to(device).eval()
    real = test.images[:n]
    g = torch.Generator().manual_seed(0)
    held = train.images[torch.randperm(len(train), generator=g)[:n]]
    out = {"fcd_name": FCD_NAME, "fcd": sample_fcd(method, clf, test, device, n), "fcd_real_train_vs_test": fcd(clf, held, real),
           "classifier_test_accuracy": float((classify(clf, test.images) == test.labels.cpu()).float().mean()),
           "n_samples": n}
    if hasattr(method, "conditional_report"):
        out.update(method.conditional_report(clf, train, device))
    return out
