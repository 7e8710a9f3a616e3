"""Video prediction numbers, as the Moving MNIST literature reports them.

Per-frame MSE is the squared error summed over the frame's pixels (values in
[0, 1]), averaged over sequences; SSIM (Wang et al. 2004, 11x11 Gaussian
window, sigma 1.5) is averaged over frames. Both are given for the next frame
(the first predicted) and for 10 frames ahead (the last of the 10 predicted),
for the method and for the obvious baseline: copy the last given frame.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..data.augment import to_float
from ..data.video import check_length


def frame_mse(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """(..., C, H, W) -> (...): squared error summed over each frame's pixels."""
    return (pred.float() - true.float()).pow(2).sum((-3, -2, -1))


def _gaussian(size: int = 11, sigma: float = 1.5, device=None) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-x.pow(2) / (2 * sigma**2))
    return g / g.sum()


def ssim(pred: torch.Tensor, true: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Mean SSIM per frame: (..., C, H, W) -> (...)."""
    lead = pred.shape[:-3]
    c, h, w = pred.shape[-3:]
    x, y = pred.float().reshape(-1, 1, h, w), true.float().reshape(-1, 1, h, w)
    g = _gaussian(device=x.device)
    k = (g[:, None] * g[None, :])[None, None]

    def blur(z):
        return F.conv2d(z, k)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return s.mean((1, 2, 3)).reshape(*lead, c).mean(-1)


@torch.no_grad()
def prediction_metrics(predict: Callable[[torch.Tensor, int], torch.Tensor], data, context: int = 10, future: int = 10,
                       batch_size: int = 100, limit: int | None = None, device="cpu") -> dict:
    """``predict(context_frames float (B, Tc, C, H, W), steps) -> (B, steps, C, H, W)`` in [0, 1],
    scored on ``data`` (a VideoDataset) against copying the last given frame."""
    check_length(data, context + future, f"prediction of {future} frames from {context}")
    sums = {k: torch.zeros(future, dtype=torch.float64) for k in ("mse", "ssim", "copy_mse", "copy_ssim")}
    n = 0
    for batch in data.batches(batch_size, limit):
        x = to_float(batch.to(device))
        given, true = x[:, :context], x[:, context : context + future]
        pred = predict(given, future).float().clamp(0, 1)
        copy = given[:, -1:].expand_as(true)
        sums["mse"] += frame_mse(pred, true).sum(0).double().cpu()
        sums["ssim"] += ssim(pred, true).sum(0).double().cpu()
        sums["copy_mse"] += frame_mse(copy, true).sum(0).double().cpu()
        sums["copy_ssim"] += ssim(copy, true).sum(0).double().cpu()
        n += len(x)
    per = {k: (v / n).tolist() for k, v in sums.items()}
    out = {"sequences": n, "context": context, "future": future, "per_frame": per}
    for k, v in per.items():
        out[f"next_{k}"] = v[0]
        out[f"ahead{future}_{k}"] = v[-1]
        out[f"mean_{k}"] = sum(v) / len(v)
    return out
