"""The training loop's fast path: logs stay on the device between log points
(no host read per step), a NaN loss between reads is still caught with its
step and never reaches a checkpoint, batch order is drawn on the device, and
the optimisers use multi-tensor kernels."""

from __future__ import annotations

import pytest
import torch

from unsup.data.datasets import ImageDataset
from unsup.errors import UnsupError
from unsup.methods.base import config_from_dict
from unsup.registry import get_method
from unsup.run import RunDir
from unsup.train.loop import TrainContext, _batches, train_loop
from unsup.train.optim import make_optimizer

# the ways a tensor's value reaches Python (each waits for the device)
HOST_READS = {"item", "tolist", "__float__", "__int__", "__bool__", "__index__", "__format__", "__repr__", "cpu", "numpy"}


class Recorder(torch.Tensor):
    """A tensor that reports every host read of itself or of anything computed from it to ``on_read``."""

    on_read = staticmethod(lambda name: None)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in HOST_READS:
            cls.on_read(func.__name__)
        return super().__torch_function__(func, types, args, kwargs or {})


def counted_method(nan_at: int | None = None):
    """A small autoencoder whose logs (the loss and one extra) are ``Recorder`` tensors, and the list that
    gets the number of steps done at each host read; from step ``nan_at`` on the loss is NaN."""
    cls = get_method("denoising-autoencoder")
    m = cls(config_from_dict(cls.Config, {"batch_size": 8, "warmup": 0.0}), (1, 28, 28))
    original, steps, reads = m.training_loss, [0], []

    def training_loss(images):
        loss, _ = original(images)
        if nan_at is not None and steps[0] >= nan_at:
            loss = loss * float("nan")
        steps[0] += 1
        return loss.as_subclass(Recorder), {"scale": (loss.detach() * 2).as_subclass(Recorder)}

    m.training_loss = training_loss
    Recorder.on_read = lambda name: reads.append(steps[0])
    return m, reads


def data(n: int = 64) -> ImageDataset:
    g = torch.Generator().manual_seed(0)
    return ImageDataset("noise", torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8),
                        torch.arange(n) % 4, [str(c) for c in range(4)])


def test_logs_are_read_only_at_log_points_and_the_end():
    torch.manual_seed(0)
    m, reads = counted_method()
    out = train_loop(m, data(), str(23 * 8), TrainContext(quiet=True, log_every=5, checkpoint_every="1h"))
    # one read (all buffered steps at once) every 5 steps and one at the end, none in between
    assert reads == [5, 10, 15, 20, 23]
    assert out["step"] == 23 and isinstance(out["loss"], float) and out["scale"] == pytest.approx(2 * out["loss"])


def test_checkpoints_read_the_logs_before_they_are_taken_and_committed(tmp_path):
    torch.manual_seed(0)
    m, reads = counted_method()
    ctx = TrainContext(run=RunDir(tmp_path), quiet=True, log_every=5, checkpoint_every="48img", tensorboard=False)
    train_loop(m, data(), str(14 * 8), ctx)
    # log points 5, 10; checkpoints taken after steps 6 and 12 and committed after the next step; the end
    assert reads == [5, 6, 7, 10, 12, 13, 14]
    records = [r for r in RunDir(tmp_path).metrics() if "loss" in r]
    assert [r["step"] for r in records] == [5, 10] and all(type(r["loss"]) is float for r in records)


@pytest.mark.parametrize("nan_at", [8, 12])
def test_a_nan_between_reads_is_caught_and_never_checkpointed(tmp_path, nan_at):
    # 8: between the commit after step 7 and the log point at 10; 12: the step that would commit
    # the checkpoint taken after step 12, whose weights are still finite
    torch.manual_seed(0)
    m, _ = counted_method(nan_at)
    ctx = TrainContext(run=RunDir(tmp_path), quiet=True, log_every=5, checkpoint_every="48img", tensorboard=False)
    with pytest.raises(UnsupError, match=rf"^training diverged: loss=nan, scale=nan at step {nan_at} \({nan_at * 8} images seen\); "
                                         r"the last good checkpoint \(step 6\) is kept in .*--resume -o lr=") as e:
        train_loop(m, data(), str(20 * 8), ctx)
    assert "\n" not in str(e.value)
    kept = RunDir(tmp_path).load_checkpoint()
    assert kept["step"] == 6 and all(torch.isfinite(v).all() for v in kept["method"].values() if v.is_floating_point())
    assert all(torch.isfinite(torch.tensor(v)) for v in kept["logs"].values())


def test_float_logs_still_work():
    torch.manual_seed(0)
    cls = get_method("denoising-autoencoder")
    m = cls(config_from_dict(cls.Config, {"batch_size": 8}), (1, 28, 28))
    m.training_step = lambda images, optimizers, backward: {"loss": 0.5, "extra": 1.0}
    out = train_loop(m, data(), "40", TrainContext(quiet=True, log_every=2))
    assert out["loss"] == 0.5 and out["extra"] == 1.0
    m.training_step = lambda images, optimizers, backward: {"loss": float("inf")}
    with pytest.raises(UnsupError, match=r"^training diverged: loss=inf at step 0 "):
        train_loop(m, data(), "40", TrainContext(quiet=True, log_every=3))


def test_batch_order_is_drawn_on_the_device_per_seed_and_epoch():
    order = [torch.cat(list(_batches(20, 8, seed, epoch, "cpu"))) for seed, epoch in ((0, 0), (0, 0), (0, 1), (1, 0))]
    assert torch.equal(order[0], order[1]) and len(order[0]) == 16 and len(set(order[0].tolist())) == 16
    assert not torch.equal(order[0], order[2]) and not torch.equal(order[0], order[3])
    small = list(_batches(3, 8, 0, 0, "cpu"))  # a set smaller than a batch is repeated to fill it
    assert len(small) == 1 and torch.bincount(small[0], minlength=3).tolist() in ([3, 3, 2], [3, 2, 3], [2, 3, 3])
    if torch.cuda.is_available():
        gpu = list(_batches(20, 8, 0, 0, "cuda"))
        assert all(b.is_cuda for b in gpu) and torch.equal(torch.cat(gpu), torch.cat(list(_batches(20, 8, 0, 0, "cuda"))))


def test_optimisers_update_all_parameters_at_once():
    params = [torch.nn.Parameter(torch.randn(3, 3)), torch.nn.Parameter(torch.randn(3))]
    for name in ("adamw", "adam", "sgd"):
        opt = make_optimizer(name, params, 0.1, 0.01)
        assert all(g["fused"] for g in opt.param_groups), name  # one kernel on the CPU too
    mixed = [torch.nn.Parameter(torch.randn(3)), torch.nn.Parameter(torch.zeros(3, dtype=torch.int64), requires_grad=False)]
    assert all(g["foreach"] and not g.get("fused") for g in make_optimizer("sgd", mixed, 0.1, 0.0).param_groups)
    if torch.cuda.is_available():
        opt = make_optimizer("adamw", [torch.nn.Parameter(torch.randn(3, 3, device="cuda"))], 0.1, 0.01)
        assert all(g["fused"] for g in opt.param_groups)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_probe_on_the_device_matches_the_cpu():
    from unsup.evaluate.features import extract_features
    from unsup.evaluate.protocol import evaluate_features

    torch.manual_seed(0)
    enc = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())
    train, test = data(400), data(200)
    feats = extract_features(enc.cuda(), train.images, "cuda", keep_on_device=True)
    assert feats.is_cuda
    rows = {}
    for device in ("cpu", "cuda"):
        tf = extract_features(enc, train.images, device, keep_on_device=True)
        sf = extract_features(enc, test.images, device, keep_on_device=True)
        rows[device] = evaluate_features(tf, train.labels, sf, test.labels, 4, budgets=(10, "all"), seeds=2)
    for a, b in zip(rows["cpu"], rows["cuda"]):
        assert a["accuracy_mean"] == pytest.approx(b["accuracy_mean"], abs=0.03)

