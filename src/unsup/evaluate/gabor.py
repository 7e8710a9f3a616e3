"""How Gabor-like dictionary atoms are: a least-squares fit of a 2-D Gabor
function to each atom and the share with R^2 >= 0.8 (Olshausen & Field's
claim: localized, oriented, bandpass). All atoms and several starting points
are fitted at once by a batched Levenberg-Marquardt in torch."""

from __future__ import annotations

import math

import torch
from torch.func import jacfwd, vmap


def gabor(q: torch.Tensor, yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
    """q = (amplitude, x0, y0, theta, frequency, phase, sigma_x, sigma_y, offset)."""
    amp, x0, y0, theta, freq, phase, sx, sy, off = q.unbind(-1)
    xr = (xx - x0) * torch.cos(theta) + (yy - y0) * torch.sin(theta)
    yr = -(xx - x0) * torch.sin(theta) + (yy - y0) * torch.cos(theta)
    env = torch.exp(-0.5 * (xr**2 / sx**2 + yr**2 / sy**2))
    return amp * env * torch.cos(2 * math.pi * freq * xr + phase) + off


def _inits(a: torch.Tensor) -> torch.Tensor:
    """Starting points (K, S, 9): frequency and orientation from the spectrum's
    peak, centre from the energy's centroid, two phases, two widths."""
    k, p, _ = a.shape
    power = torch.fft.fft2(a - a.mean((1, 2), keepdim=True)).abs() ** 2
    power[:, 0, 0] = 0
    idx = power.flatten(1).argmax(1)
    ky, kx = idx // p, idx % p
    fy = torch.where(ky <= p // 2, ky, ky - p).double() / p
    fx = torch.where(kx <= p // 2, kx, kx - p).double() / p
    freq, theta = torch.hypot(fx, fy).clamp_min(0.02), torch.atan2(fy, fx)
    w = a**2
    grid = torch.arange(p, dtype=a.dtype)
    cy = (w.sum(2) * grid).sum(1) / w.sum((1, 2))
    cx = (w.sum(1) * grid).sum(1) / w.sum((1, 2))
    amp = a.flatten(1).abs().max(1).values
    starts = []
    for phase in (0.0, math.pi / 2):  # the amplitude's sign covers pi and 3 pi / 2
        for s in (p / 6, p / 3):
            z = torch.zeros_like(amp)
            starts.append(torch.stack([amp, cx, cy, theta, freq, z + phase, z + s, z + s, z], 1))
    return torch.stack(starts, 1)


def gabor_r2(atoms: torch.Tensor, iterations: int = 100) -> torch.Tensor:
    """Best R^2 of a 2-D Gabor fit to each square atom of ``atoms`` (K, p, p).

    On one CPU thread: the fit is many small batched operations, which a
    second thread does not speed up and which slow down 25x when the other
    core is busy (2.3 s vs 58 s for 32 atoms on the shared 2-core CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _gabor_r2(atoms, iterations)
    finally:
        torch.set_num_threads(threads)


def _gabor_r2(atoms: torch.Tensor, iterations: int) -> torch.Tensor:
    a = atoms.detach().cpu().double()
    k, p, _ = a.shape
    yy, xx = torch.meshgrid(torch.arange(p, dtype=a.dtype), torch.arange(p, dtype=a.dtype), indexing="ij")
    q = _inits(a)
    s = q.shape[1]
    q = q.reshape(k * s, 9)
    target = a.repeat_interleave(s, 0).flatten(1)

    def residual(qq, t):
        return gabor(qq, yy, xx).flatten() - t

    cost = (vmap(residual)(q, target) ** 2).sum(1)
    lam = torch.full((len(q),), 1e-2, dtype=a.dtype)
    eye = torch.eye(9, dtype=a.dtype)
    for _ in range(iterations):
        r = vmap(residual)(q, target)
        jac = vmap(jacfwd(residual))(q, target)  # (M, p*p, 9)
        jtj = jac.transpose(1, 2) @ jac
        h = jtj + lam[:, None, None] * (torch.diagonal(jtj, dim1=1, dim2=2)[:, :, None] * eye + 1e-9 * eye)
        step = torch.linalg.solve(h, -(jac.transpose(1, 2) @ r[:, :, None]))[:, :, 0]
        new_q = q + step
        new_cost = (vmap(residual)(new_q, target) ** 2).sum(1)
        better = torch.isfinite(new_cost) & (new_cost < cost)
        q = torch.where(better[:, None], new_q, q)
        cost = torch.where(better, new_cost, cost)
        lam = torch.where(better, lam / 3, lam * 3).clamp(1e-9, 1e9)
    sst = ((a - a.mean((1, 2), keepdim=True)) ** 2).sum((1, 2)).repeat_interleave(s)
    r2 = 1 - cost / sst.clamp_min(1e-12)
    # the envelope's centre must sit on the atom (localized), frequencies below Nyquist
    ok = ((q[:, 1] >= -1) & (q[:, 1] <= p) & (q[:, 2] >= -1) & (q[:, 2] <= p) & (q[:, 4].abs() <= 0.5)
          & (torch.minimum(q[:, 6].abs(), q[:, 7].abs()) <= 2 * p))
    r2 = torch.where(ok & torch.isfinite(r2), r2, torch.zeros_like(r2))
    return r2.view(k, s).max(1).values.float()


def gabor_fit_share(atoms: torch.Tensor, threshold: float = 0.8) -> tuple[float, list[float]]:
    """(share of atoms with R^2 >= threshold, every atom's R^2) for atoms (K, p, p)."""
    r2 = gabor_r2(atoms)
    return float((r2 >= threshold).float().mean()), r2.tolist()
