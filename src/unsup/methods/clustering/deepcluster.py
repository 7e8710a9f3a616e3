"""DeepCluster: Caron, Bojanowski, Joulin & Douze, "Deep Clustering for
Unsupervised Learning of Visual Features", ECCV 2018.

Alternate: (1) features of every image from the current CNN (no
augmentation), PCA-reduced and whitened, L2-normalised, clustered by k-means
(``kmeans_core``, on the device, reduced over torchrun processes); (2) train
the CNN and a freshly re-initialised linear classifier on the cluster indices
as pseudo-labels, with the usual augmentations. The choices that matter (the
paper's section 3.3): empty clusters are re-filled by splitting a random
non-empty cluster (its centroid copied with a small perturbation, its points
re-assigned), and images are sampled uniformly over the pseudo-classes so a
giant cluster cannot take over; the classifier head is reset after every
clustering since the cluster indices are arbitrary.

Scaled to 28x28 and a small budget: the small convnet instead of AlexNet,
k = 100 clusters (10x the classes, as the paper's 10,000 for ImageNet's
1,000), PCA to 64 dimensions (paper: 256), SGD as in the paper (lr 0.05,
momentum 0.9, weight decay 1e-5). The paper re-clusters once per epoch;
``epoch_size`` > 0 makes an "epoch" a random subset of that many images, so
a CPU budget still sees several clusterings. No Sobel filter: the paper uses
it to remove colour, and Fashion-MNIST is grey already.

Departure, batch size 64 (paper: 256): what matters is the number of SGD
steps between two clusterings. The paper takes ~5,000 (an ImageNet epoch);
an "epoch" of 10k images at batch 256 is 39 steps, too few for the freshly
re-initialised classifier to learn the new pseudo-labels: the loss stayed
at chance (ln k), the trunk was trained through a random head, and the
probe fell far below the random convnet (measured: linear 71.3 vs 76.5 at
100 labels per class on a probe subset). At batch 64 (156 steps per
clustering) the pseudo-labels are fitted (pseudo-accuracy 40-60% within a
round) and the trunk learns (k-NN 73.6 vs 67.4 on the same subset).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...data.augment import AugmentConfig, augment, to_float
from ...errors import UnsupError
from ...registry import register
from ...train import distributed as dist
from ...train.optim import forget_state
from ..base import Method, MethodConfig
from .kmeans_core import assign, kmeans


def _augment_defaults() -> AugmentConfig:
    # the paper: random resized crops and horizontal flips (and Sobel filtering for colour)
    return AugmentConfig(crop_scale=(0.3, 1.0), brightness=0.0, contrast=0.0, jitter_prob=0.0, blur_prob=0.0)


@dataclass
class DeepClusterConfig(MethodConfig):
    optimizer: str = "sgd"
    batch_size: int = 64  # paper: 256; enough SGD steps per clustering at a small budget (docstring)
    lr: float = 0.05
    weight_decay: float = 1e-5
    momentum: float = 0.9
    warmup: float = 0.0
    num_clusters: int = 100
    pca_dim: int = 64
    kmeans_iterations: int = 20
    epoch_size: int = 0  # images clustered per "epoch"; 0 = the whole dataset (the paper)
    perturbation: float = 1e-4  # relative size of the nudge that splits a cluster into an empty one
    augment: AugmentConfig = dataclasses.field(default_factory=_augment_defaults)


def fill_empty_clusters(x: torch.Tensor, centroids: torch.Tensor, labels: torch.Tensor, g: torch.Generator,
                        eps: float) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Caron et al.'s rule: an empty cluster takes a random non-empty cluster's
    centroid plus a small perturbation (that centroid moves the other way) and
    the points are re-assigned; repeated until no cluster is empty.
    ``labels`` are the local points' labels; counts are summed over processes."""
    k = len(centroids)
    fixed = 0
    for _ in range(4 * k):
        counts = dist.all_reduce_sum(torch.bincount(labels, minlength=k))
        empty = (counts == 0).nonzero().flatten().tolist()
        if not empty:
            break
        for j in empty:
            probs = counts.double().cpu()
            m = int(torch.multinomial(probs / probs.sum(), 1, generator=g))  # a big cluster splits more often
            noise = eps * torch.randn(centroids.shape[1], generator=g).to(centroids)
            centroids[j] = centroids[m] * (1 + noise)
            centroids[m] = centroids[m] * (1 - noise)
            counts[m] = 0  # split each cluster at most once per round
            fixed += 1
        labels = assign(x, centroids, need_dist=False)[0]
    return centroids, labels, fixed


def uniform_over_clusters(labels: torch.Tensor, size: int, g: torch.Generator) -> torch.Tensor:
    """``size`` indices drawn uniformly over the non-empty pseudo-classes, then
    uniformly within each (with replacement, as the paper's sampler)."""
    k = int(labels.max()) + 1
    counts = torch.bincount(labels.cpu(), minlength=k).double()
    weights = (1.0 / counts.clamp_min(1))[labels.cpu()] * (counts[labels.cpu()] > 0)
    return torch.multinomial(weights, size, replacement=True, generator=g)


@register
class DeepCluster(Method):
    name = "deepcluster"
    family = "clustering"
    paper = "Caron et al. 2018, Deep Clustering for Unsupervised Learning of Visual Features"
    Config = DeepClusterConfig

    def __init__(self, cfg: DeepClusterConfig, shape):
        super().__init__(cfg, shape)
        if cfg.num_clusters < 2:
            raise UnsupError(f"deepcluster: num_clusters must be at least 2, got {cfg.num_clusters}")
        self.encoder = self.make_encoder()
        self.head = nn.Linear(self.encoder.out_dim, cfg.num_clusters)
        self._optimizers: list = []
        self._data = None
        self._images = self._labels = self._order = None
        self._cursor = 0
        self._round = 0

    def configure_optimizers(self, make):
        self._optimizers = super().configure_optimizers(make)
        return self._optimizers

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        was = self.encoder.training
        self.encoder.eval()
        out = torch.cat([self.encoder(to_float(images[i : i + 512])).float() for i in range(0, len(images), 512)])
        self.encoder.train(was)
        return out

    def pca_whiten(self, f: torch.Tensor) -> torch.Tensor:
        """PCA to ``pca_dim`` with whitening, then L2 normalisation (statistics summed over processes)."""
        n = dist.all_reduce_sum(torch.tensor([float(len(f))], device=f.device, dtype=torch.float64))
        mean = dist.all_reduce_sum(f.double().sum(0)) / n
        xc = f.double() - mean
        cov = dist.all_reduce_sum(xc.T @ xc) / n
        evals, evecs = torch.linalg.eigh(cov)
        d = min(self.cfg.pca_dim, f.shape[1])
        proj = evecs[:, -d:] / torch.sqrt(evals[-d:].clamp_min(0) + 1e-5)
        return F.normalize((xc @ proj).float(), dim=1)

    def check_training_set(self, data) -> None:
        cfg, n = self.cfg, len(data)
        per_epoch = min(n, cfg.epoch_size) if cfg.epoch_size > 0 else n
        if per_epoch < cfg.num_clusters:
            raise UnsupError(f"deepcluster: {cfg.num_clusters} clusters need at least that many images per epoch, got {per_epoch}; "
                             "lower -o num_clusters" + (" or raise -o epoch_size" if per_epoch < n else ""))

    def recluster(self, epoch: int) -> None:
        """Cluster the features of this epoch's images; new pseudo-labels, new sampling order, new head."""
        cfg = self.cfg
        data = self._data
        if data is None:
            raise UnsupError("deepcluster: no data to cluster; train it through unsup.pretrain")
        n = len(data.images)
        g = torch.Generator().manual_seed(10_007 * self._round + 17)
        subset = torch.randperm(n, generator=g)[: cfg.epoch_size] if 0 < cfg.epoch_size < n else torch.arange(n)
        if len(subset) < cfg.num_clusters:
            raise UnsupError(f"deepcluster: {cfg.num_clusters} clusters need at least that many images, got {len(subset)}; "
                             "lower -o num_clusters")
        dev = data.images.device
        mine = subset[dist.rank() :: dist.world_size()].to(dev)  # each process embeds its share
        x = self.pca_whiten(self.features(data.images[mine]))
        cent = kmeans(x, cfg.num_clusters, cfg.kmeans_iterations, None, seed=self._round, init="k-means++")
        labels = assign(x, cent, need_dist=False)[0]
        cent, labels, fixed = fill_empty_clusters(x, cent, labels, g, cfg.perturbation)
        full = torch.zeros(len(subset), dtype=torch.long, device=dev)
        full[dist.rank() :: dist.world_size()] = labels
        full = dist.all_reduce_sum(full)
        self._images = data.images[subset.to(dev)]
        self._labels = full
        self._order = uniform_over_clusters(full, len(subset), g).to(dev)
        self._cursor = 0
        self._round += 1
        self.head.reset_parameters()  # cluster indices are arbitrary: a new classifier each time
        forget_state(self._optimizers, self.head.parameters())
        sizes = torch.bincount(full, minlength=cfg.num_clusters)
        self.last_clustering = {"round": self._round, "epoch": epoch, "images": len(subset), "empty_filled": fixed,
                                "largest_cluster": int(sizes.max()), "smallest_cluster": int(sizes.min())}

    def on_epoch_start(self, data, epoch: int) -> None:
        self._data = data
        self.recluster(epoch)

    def training_step(self, images, optimizers, backward) -> dict[str, float]:
        local = len(images)  # the loop's batch only sets the size: DeepCluster samples its own
        world = local * dist.world_size()
        if self._order is None or self._cursor + world > len(self._order):
            self.recluster(-1)
        idx = self._order[self._cursor : self._cursor + world][dist.rank() * local : (dist.rank() + 1) * local]
        self._cursor += world
        x = augment(self._images[idx], self.cfg.augment)
        logits = self.head(self.encoder(x))
        loss = F.cross_entropy(logits.float(), self._labels[idx])
        backward(loss, optimizers[0])
        acc = float((logits.detach().argmax(1) == self._labels[idx]).float().mean())
        return {"loss": float(loss.detach()), "pseudo_acc": acc, "empty_filled": float(self.last_clustering["empty_filled"])}
