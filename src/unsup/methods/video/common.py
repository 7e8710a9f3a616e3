"""What the video methods share: the data they pretrain on (an image set maps
to its moving version), the stills they are probed on, the frame-size checks
and the prediction figure."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ...data import video
from ...data.augment import to_float
from ...errors import UnsupError
from ..base import Method, MethodConfig


@dataclass
class VideoConfig(MethodConfig):
    backbone: str = "frame-convnet"
    batch_size: int = 16  # sequences per step (20 frames each)
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup: float = 0.02


class VideoMethod(Method):
    """Base of the video family: batches are uint8 sequences ``(B, T, C, H, W)``."""

    family = "video"

    def __init__(self, cfg, shape):
        super().__init__(cfg, shape)
        if shape[1] % 8:
            raise UnsupError(f"{self.name}: frames of {shape[1]}x{shape[2]} must have a size divisible by 8 (e.g. 64x64)")

    @classmethod
    def training_data(cls, data: str) -> str:
        name = video.video_name(data)
        if name is None:
            raise UnsupError(f"{cls.name} learns from video: give --data {' or '.join(video.OBJECT_SOURCES)} "
                             "(or fashion-mnist/digits), moving:<image set name or .npz>, an .npy/.npz video array "
                             f"or a folder of frame folders; got {data!r}")
        return name

    def probe_datasets(self, data: str):
        """Labelled stills placed on the frame canvas: the moving set's own
        objects, Fashion-MNIST for users' videos."""
        name = type(self).training_data(data)
        c, h, _w = self.shape
        return (video.still_source(name, "train", h, c), video.still_source(name, "test", h, c))

    def sequences(self, images: torch.Tensor, needed: int) -> torch.Tensor:
        """uint8 (B, T, C, H, W) -> float in [0, 1], checking the length."""
        if images.ndim != 5:
            raise UnsupError(f"{self.name} trains on video batches (B, T, C, H, W); got shape {tuple(images.shape)}; "
                             "give it a video dataset (e.g. --data moving-fashion-mnist)")
        video.check_length(images, needed, self.name)
        return to_float(images)

    def predict(self, context: torch.Tensor, steps: int) -> torch.Tensor:
        """Future frames (B, steps, C, H, W) in [0, 1] from given frames (B, Tc, C, H, W)."""
        raise NotImplementedError

    eval_sequences = 200  # held-out sequences scored by family_metrics (the first ones of the fixed test set)

    def family_metrics(self, data: str, device) -> dict[str, float]:
        """Frame prediction on the first ``eval_sequences`` sequences of the
        fixed held-out test set of ``data``'s video (``unsup.evaluate.video``):
        ``cfg.context`` frames given, ``cfg.future`` predicted (10 and 10 by
        default; fewer if the sequences are shorter). MSE (squared error
        summed over the frame) and SSIM of the next frame (``next_*``) and of
        the last predicted one (``ahead10_*``, ``ahead<future>_*`` in
        general), the same for copying the last given frame (``*_copy_*``),
        and the MSE as a share of copy-last's (``*_mse_vs_copy``: below 1
        beats copying). 15-30 s for PredNet on the 2-core CPU."""
        from ...evaluate.video import prediction_metrics

        test = video.load(type(self).training_data(data), "test")
        context = min(self.cfg.context, test.frames // 2)
        future = min(self.cfg.future, test.frames - context)
        was = self.training
        self.to(device).eval()
        m = prediction_metrics(self.predict, test, context, future, limit=self.eval_sequences, device=device)
        self.train(was)
        out = {k: float(v) for k, v in m.items() if k.startswith(("next_", f"ahead{future}_"))}
        for when in ("next", f"ahead{future}"):
            out[f"{when}_mse_vs_copy"] = out[f"{when}_mse"] / max(out[f"{when}_copy_mse"], 1e-12)
        return out

    def video_test(self, data):
        """The fixed test sequences for ``data`` (what ``figures`` gets from the flow)."""
        if isinstance(data, video.VideoDataset):
            return data
        return video.load(type(self).training_data(data.name), "test")

    @torch.no_grad()
    def prediction_figure(self, data, out_dir: Path, context: int, future: int, rows: int = 4) -> list[Path]:
        from ...report.figures import save_image_grid

        was = self.training
        self.eval()
        dev = next(self.parameters()).device
        seqs = to_float(self.video_test(data).images[slice(0, rows)].to(dev))
        given, true = seqs[:, :context], seqs[:, context : context + future]
        pred = self.predict(given, future).float().clamp(0, 1)
        self.train(was)
        if context >= future:
            shown_given = given[:, -future:]
        else:
            shown_given = torch.cat([given, given.new_zeros(len(given), future - context, *given.shape[2:])], 1)
        shown = [shown_given, true, pred]
        grid = torch.stack(shown, 1).reshape(-1, *seqs.shape[2:])  # per sequence: given / true / predicted rows
        path = Path(out_dir) / "predictions.png"
        save_image_grid(grid.cpu(), path, nrow=future,
                        title=f"{self.name}: per sequence, rows = last given frames / true future / predicted future")
        return [path]
