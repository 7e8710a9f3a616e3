"""Sparse coding: Olshausen & Field, "Emergence of simple-cell receptive field
properties by learning a sparse code for natural images", Nature 1996.

Learn an overcomplete dictionary D (unit-norm atoms) on whitened patches by
alternating (1) sparse inference, min_a 1/2 |x - D a|^2 + lambda |a|_1, solved
by FISTA for a whole batch of patches at once on the device, and (2) a
dictionary step: projected gradient on the running code statistics
(sum a a^T, sum x a^T, as in Mairal et al. 2009's online dictionary learning),
then every atom renormalised to unit length; unused atoms are re-seeded from
patches. The choices that matter: whitening (O&F whiten the images; here ZCA
on contrast-normalised patches, as for ``kmeans``) and the L1 penalty.

Scaled to 28x28 images: 8x8 patches (O&F: 16x16 on 512x512 photographs), 128
atoms (2x overcomplete). Train on ``--data natural-images`` (the photographs
of scikit-image) for the paper's result, or on the dataset at hand. As an
encoder (Coates & Ng 2011's soft-threshold encoding): dense whitened patches
-> D^T x, split into max(0, D^T x - alpha) and max(0, -D^T x - alpha),
summed over the four image quadrants (8K features). Probing a dictionary
learned on natural images uses Fashion-MNIST.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import UnsupError
from ...registry import register
from ..base import Method, MethodConfig
from ..clustering.kmeans import KMeans, PatchTriangleEncoder


@dataclass
class SparseCodingConfig(MethodConfig):
    batch_size: int = 1024  # patches per dictionary step
    patch_size: int = 8
    num_atoms: int = 128
    sparsity: float = 1.0  # lambda of the L1 penalty, on whitened patches (about 5 of 128 atoms active)
    fista_steps: int = 60
    steps: int = 500  # dictionary steps (a seconds budget may stop earlier)
    num_patches: int = 200_000
    stat_decay: float = 0.98  # forgetting factor of the running code statistics
    encode_alpha: float = 0.25  # soft-threshold of the encoder
    norm_eps: float = 10.0
    zca_eps: float = 1.0  # stronger than k-means: damps the noisiest high frequencies, as O&F's low-pass


def fista(x: torch.Tensor, dictionary: torch.Tensor, lam: float, steps: int) -> torch.Tensor:
    """Sparse codes (B, K) of rows x (B, d) for atoms as rows of ``dictionary`` (K, d)."""
    gram = dictionary @ dictionary.T
    lip = float(torch.linalg.eigvalsh(gram.double())[-1]) + 1e-6
    xd = x @ dictionary.T
    a = y = torch.zeros_like(xd)
    t = 1.0
    for _ in range(steps):
        z = y - (y @ gram - xd) / lip
        a_new = torch.sign(z) * (z.abs() - lam / lip).clamp_min(0)
        t_new = (1 + (1 + 4 * t * t) ** 0.5) / 2
        y = a_new + ((t - 1) / t_new) * (a_new - a)
        a, t = a_new, t_new
    return a


def sparse_objective(x, dictionary, codes, lam) -> float:
    return float((0.5 * ((x - codes @ dictionary) ** 2).sum(1) + lam * codes.abs().sum(1)).mean())


class SoftThresholdEncoder(nn.Module):
    """Dense whitened patches -> rectified soft-threshold codes -> quadrant sum pooling."""

    whitened_patches = PatchTriangleEncoder.whitened_patches

    def __init__(self, in_channels: int, patch_size: int, num_atoms: int, norm_eps: float, alpha: float):
        super().__init__()
        d = in_channels * patch_size * patch_size
        self.patch_size, self.norm_eps, self.in_channels, self.alpha = patch_size, norm_eps, in_channels, alpha
        self.register_buffer("mean", torch.zeros(d))
        self.register_buffer("whiten", torch.eye(d))
        self.register_buffer("atoms", F.normalize(torch.randn(num_atoms, d), dim=1))
        self.out_dim = 8 * num_atoms
        self.chunk = 16  # images per pass: bounds the (patches x atoms) code matrix

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self._features(x[i : i + self.chunk]) for i in range(0, len(x), self.chunk)])

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        rows, oh, ow = self.whitened_patches(x)
        z = rows @ self.atoms.T
        f = torch.cat([(z - self.alpha).relu_(), (-z - self.alpha).relu_()], 1).view(b, oh, ow, -1)
        hh, hw = oh // 2, ow // 2
        quads = [f[:, :hh, :hw], f[:, :hh, hw:], f[:, hh:, :hw], f[:, hh:, hw:]]
        return torch.cat([q.sum((1, 2)) for q in quads], 1)


@register
class SparseCoding(Method):
    name = "sparse-coding"
    family = "direct mapping"
    paper = "Olshausen & Field 1996, Emergence of simple-cell receptive field properties by learning a sparse code"
    Config = SparseCodingConfig
    uses_gradients = False

    random_patches = KMeans.random_patches
    fit_whitening = KMeans.fit_whitening

    def __init__(self, cfg: SparseCodingConfig, shape):
        super().__init__(cfg, shape)
        c, h, w = self.shape
        if cfg.patch_size > h:
            raise UnsupError(f"sparse-coding: patch size {cfg.patch_size} is larger than the {h}x{w} images; "
                             f"choose -o patch_size<={h}")
        self.encoder = SoftThresholdEncoder(c, cfg.patch_size, cfg.num_atoms, cfg.norm_eps, cfg.encode_alpha)

    def fit(self, data, budget, ctx) -> None:
        """Patches and whitening (seeded), then ``steps`` dictionary updates, with a checkpoint whenever
        ``ctx.checkpoint_every`` has passed (an image interval counts patches), after the last step and
        on SIGTERM/SIGINT; a resumed fit continues from the checkpoint with the uninterrupted result."""
        from ...train import distributed as dist
        from ...train.loop import Interval, Stopped, StopSignals

        cfg = self.cfg
        start = time.perf_counter()
        images = data.images
        if len(images) == 0 or bool((images == images[:1]).all()):
            raise UnsupError("sparse-coding: the image set is empty or constant; nothing to learn")
        if budget.kind == "images":
            images = images[: int(min(len(images), budget.value))]
        rows = self.random_patches(images, cfg.num_patches // dist.world_size(), ctx.seed + dist.rank())
        white = self.fit_whitening(rows)
        dev = white.device
        g = torch.Generator().manual_seed(ctx.seed)
        k, d = cfg.num_atoms, white.shape[1]
        atoms = F.normalize(white[torch.randperm(len(white), generator=g)[:k].to(dev)] + 1e-3, dim=1)
        stat_a = torch.zeros(k, k, device=dev)
        stat_b = torch.zeros(k, d, device=dev)
        first = 1
        state = ctx.resume_state()
        if state is not None and "sparse_coding" in state:
            saved = state["sparse_coding"]
            atoms, stat_a, stat_b = saved["atoms"].to(dev), saved["stat_a"].to(dev), saved["stat_b"].to(dev)
            g.set_state(saved["rng"])
            first = int(state["step"]) + 1
            start -= state["seconds"]  # the seconds of the attempts before count too
        interval = Interval(ctx.checkpoint_interval(), (first - 1) * cfg.batch_size, time.perf_counter() - start)

        def checkpoint(step: int) -> None:
            seconds = time.perf_counter() - start
            self.encoder.atoms.copy_(atoms)
            ctx.save_state({"method": self.state_dict(), "step": step, "images_seen": len(images), "seconds": seconds,
                            "sparse_coding": {"atoms": atoms, "stat_a": stat_a, "stat_b": stat_b, "rng": g.get_state()}},
                           {"atoms": atoms}, {"stat_a": stat_a, "stat_b": stat_b}, "start again with --overwrite")
            interval.mark(step * cfg.batch_size, seconds)

        bar = ctx.progress_bar(cfg.steps, "step")
        bar.update(first - 1)
        step = first - 1
        with StopSignals() as stop:
            for step in range(first, cfg.steps + 1):
                x = white[torch.randint(0, len(white), (cfg.batch_size,), generator=g).to(dev)]
                codes = fista(x, atoms, cfg.sparsity, cfg.fista_steps)
                # running statistics, summed over processes so every copy of D stays the same
                aa = dist.all_reduce_sum(codes.T @ codes) / (cfg.batch_size * dist.world_size())
                bb = dist.all_reduce_sum(codes.T @ x) / (cfg.batch_size * dist.world_size())
                stat_a.mul_(cfg.stat_decay).add_(aa)
                stat_b.mul_(cfg.stat_decay).add_(bb)
                lip = float(torch.linalg.eigvalsh(stat_a.double())[-1]) + 1e-8
                for _ in range(3):  # projected gradient on 1/2 tr(D^T D A) - tr(D^T B), unit-norm atoms
                    atoms = F.normalize(atoms - (stat_a @ atoms - stat_b) / lip, dim=1)
                dead = torch.diagonal(stat_a) < 1e-6 * float(torch.diagonal(stat_a).mean() + 1e-12)
                if step % 50 == 0 and dead.any():  # re-seed atoms nobody uses
                    fresh = white[torch.randint(0, len(white), (int(dead.sum()),), generator=g).to(dev)]
                    atoms[dead] = F.normalize(dist.broadcast(fresh), dim=1)
                bar.update(1)
                if step % 10 == 0 or step == cfg.steps:
                    obj = sparse_objective(x, atoms, codes, cfg.sparsity)
                    ctx.log({"step": step, "seconds": round(time.perf_counter() - start, 2), "loss": obj,
                             "active": float((codes != 0).float().sum(1).mean())})
                if stop.name:
                    checkpoint(step)
                    raise Stopped(f"stopped by {stop.name} at sparse-coding step {step}; checkpoint written"
                                  f"{f' in {ctx.run.path}' if ctx.run is not None else ''}, continue with --resume")
                if budget.kind == "seconds" and time.perf_counter() - start >= budget.value:
                    break
                if interval.due(step * cfg.batch_size, time.perf_counter() - start) and step < cfg.steps:
                    checkpoint(step)
        checkpoint(step)
        bar.close()
        self.encoder.atoms.copy_(atoms)
        seconds = time.perf_counter() - start
        ctx.log({"step": step, "images_seen": len(images), "seconds": round(seconds, 2), "patches": cfg.num_patches})
        if ctx.monitor is not None:
            ctx.monitor(self.encoder, step, len(images), seconds, ctx)

    def random_encoder(self) -> nn.Module:
        """Random unit-norm atoms with the learned whitening."""
        cfg = self.cfg
        enc = SoftThresholdEncoder(self.shape[0], cfg.patch_size, cfg.num_atoms, cfg.norm_eps, cfg.encode_alpha)
        enc.load_state_dict(self.encoder.state_dict())
        enc.atoms.copy_(F.normalize(torch.randn(enc.atoms.shape), dim=1))  # the caller's seed
        return enc

    def probe_datasets(self, data: str):
        from ...data import load

        if data in ("natural-images", "natural-noise"):  # tiles labelled by photograph: probe on the real task
            data = "fashion-mnist"
        return load(data, "train"), load(data, "test")

    def atom_images(self) -> torch.Tensor:
        c, p = self.shape[0], self.cfg.patch_size
        return self.encoder.atoms.detach().cpu().view(-1, c, p, p)

    def family_metrics(self, data: str, device) -> dict[str, float]:
        """How Gabor-like the dictionary is (Olshausen & Field's claim): the
        share of atoms (first channel) that a 2-D Gabor fits with R^2 >= 0.8,
        and the median R^2 (``unsup.evaluate.gabor``). The atoms are the
        trained model itself, so ``data`` is not read; on the CPU."""
        from ...evaluate.gabor import gabor_fit_share

        share, r2 = gabor_fit_share(self.atom_images()[:, 0])
        return {"gabor_share": share, "gabor_median_r2": float(torch.tensor(r2).median())}

    def figures(self, data, out_dir: Path) -> list[Path]:
        from ...report.figures import save_image_grid

        atoms = self.atom_images()
        m = atoms.flatten(1).abs().max(1).values.view(-1, 1, 1, 1) + 1e-8
        path = Path(out_dir) / "atoms.png"
        save_image_grid(0.5 + 0.5 * atoms / m, path, nrow=16, title="sparse-coding atoms (whitened space)")
        return [path]
