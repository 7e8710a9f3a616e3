"""Video family: the moving-objects generator, users' video files, the
prediction metrics, the three methods (losses go down), PredNet's online mode,
and the pretrain -> probe flow."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unsup.data import ImageDataset, load
from unsup.data.video import MovingObjects, VideoDataset, check_length, load_video_path, moving, video_array
from unsup.errors import UnsupError
from unsup.evaluate.video import frame_mse, prediction_metrics, ssim
from unsup.registry import get_method


def _objects(n=40, size=14, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 1, size, size, dtype=torch.uint8)
    x[:, :, 3:-3, 3:-3] = torch.randint(100, 256, (n, 1, size - 6, size - 6), generator=g).to(torch.uint8)
    return ImageDataset("blocks", x, torch.arange(n) % 4, ["a", "b", "c", "d"])


def _small_video(frames=8, size=32, n=64, seed=0):
    return moving(_objects(), "train", n=n, seed=seed, frames=frames, size=size, speed=2.0)


def test_generator_is_deterministic_and_bounces_inside():
    a, b = load("moving-fashion-mnist", "test"), load("moving-fashion-mnist", "test")
    assert len(a) == 10_000 and a.frames == 20 and a.shape == (1, 64, 64) and a.labels is None
    assert a.object_labels.shape == (10_000, 2)
    x = a.images[torch.arange(5)]
    assert x.shape == (5, 20, 1, 64, 64) and x.dtype == torch.uint8
    assert torch.equal(x, b.images[torch.arange(5)])
    pos = a.images.positions(torch.arange(200), torch.arange(20))
    assert pos.min() >= 0 and pos.max() <= 64 - 28
    step = (pos[:, 1:] - pos[:, :-1]).float().norm(dim=-1)
    assert 3.0 < step.median() < 4.2  # Srivastava's speed, 3.6 px/frame


def test_two_objects_combine_by_pixelwise_max():
    objs = torch.zeros(2, 1, 4, 4, dtype=torch.uint8)
    objs[0] += 100
    objs[1] += 200
    mo = MovingObjects(objs, torch.tensor([[0, 1]]), torch.zeros(1, 2, 2), torch.zeros(1, 2), frames=1, size=8, speed=0)
    f = mo[torch.tensor([0])][0, 0, 0]
    assert f[:4, :4].eq(200).all() and f[4:].eq(0).all()  # both at the corner: the max wins


def test_video_arrays_and_public_moving_mnist_layout(tmp_path):
    x = np.random.default_rng(0).integers(0, 255, (20, 1000, 8, 8), dtype=np.uint8)
    np.save(tmp_path / "mm.npy", x)
    v = load_video_path(tmp_path / "mm.npy", "unlabeled")
    assert v.images.shape == (1000, 20, 1, 8, 8)
    assert torch.equal(v.images[3, 5, 0], torch.from_numpy(x[5, 3]))
    rgb = np.random.default_rng(1).random((6, 5, 16, 16, 3)).astype(np.float32)
    np.savez(tmp_path / "rgb.npz", videos=rgb, labels=np.arange(6))
    tr, te = load_video_path(tmp_path / "rgb.npz", "train"), load_video_path(tmp_path / "rgb.npz", "test")
    assert tr.images.shape[1:] == (5, 3, 16, 16) and len(tr) + len(te) == 6
    with pytest.raises(UnsupError, match="rank 4"):
        video_array(np.zeros((3, 8, 8)), "x.npy")
    with pytest.raises(UnsupError, match="frames"):
        load_video_path(tmp_path / "mm.npy", "train", min_frames=30)


def test_frame_folders_round_trip_and_mixed_sizes(tmp_path):
    from PIL import Image

    for s in range(3):
        d = tmp_path / "vid" / f"seq{s}"
        d.mkdir(parents=True)
        for t in range(4):
            Image.fromarray(np.full((16, 16), 10 * t + s, np.uint8)).save(d / f"{t:03d}.png")
    v = load_video_path(tmp_path / "vid", "unlabeled")
    assert v.images.shape == (3, 4, 1, 16, 16) and int(v.images[1, 2, 0, 0, 0]) == 21
    Image.fromarray(np.zeros((12, 16), np.uint8)).save(tmp_path / "vid" / "seq1" / "004.png")
    with pytest.raises(UnsupError, match="004.png.*differs"):
        load_video_path(tmp_path / "vid", "unlabeled")


def test_too_short_sequences_refused():
    v = _small_video(frames=5)
    with pytest.raises(UnsupError, match="5 frames.*needs at least 20"):
        check_length(v, 20, "video-lstm")
    m = get_method("video-lstm")(get_method("video-lstm").Config(context=4, future=4, hidden=32), (1, 32, 32))
    with pytest.raises(UnsupError, match="needs at least 8"):
        m.training_loss(v.images[torch.arange(2)])


def test_metrics_copy_last_and_ssim():
    x = torch.rand(2, 3, 1, 32, 32)
    assert frame_mse(x, x).abs().max() == 0 and torch.allclose(ssim(x, x), torch.ones(2, 3))
    assert torch.allclose(frame_mse(torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4)), torch.tensor([16.0]))
    v = _small_video(frames=8)
    r = prediction_metrics(lambda c, s: c[:, -1:].expand(-1, s, -1, -1, -1), v, context=4, future=4, limit=16)
    assert r["next_mse"] == pytest.approx(r["next_copy_mse"]) and r["next_copy_mse"] > 0
    assert r["ahead4_copy_mse"] > r["next_copy_mse"]  # the further ahead, the worse copying gets


def _train(name, steps, **opts):
    torch.manual_seed(0)
    cls = get_method(name)
    m = cls(cls.Config(**opts), (1, 32, 32))
    v = _small_video(frames=8)
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    losses = []
    for i in range(steps):
        loss, _ = m.training_loss(v.images[torch.arange(8 * i, 8 * i + 8) % len(v)])
        opt.zero_grad()
        loss.backward()
        opt.step()
        m.after_step(i / steps)
        losses.append(float(loss))
    return m, v, losses


def test_video_lstm_learns_and_predicts():
    m, v, losses = _train("video-lstm", 25, context=4, future=4, hidden=64)
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:3])
    m.eval()
    assert m.predict(v.images[torch.arange(2)][:, :4].float() / 255, 4).shape == (2, 4, 1, 32, 32)
    assert m.encoder(torch.rand(3, 1, 32, 32)).shape == (3, m.encoder.out_dim)


def test_prednet_learns_and_layer_weights():
    m, v, losses = _train("prednet", 20, stack=(4, 8), r_stack=(4, 4, 8), train_frames=6)
    assert np.mean(losses[-5:]) < 0.85 * np.mean(losses[:3])
    assert m.layer_weights == (1.0, 0.0, 0.0)
    assert get_method("prednet")(get_method("prednet").Config(stack=(4, 8), r_stack=(4, 4, 8), loss="Lall"), (1, 32, 32)).layer_weights == (1.0, 0.1, 0.1)
    assert m.encoder(torch.rand(3, 1, 32, 32)).shape == (3, 2 * (4 + 4 + 8))
    with pytest.raises(UnsupError, match="r_stack"):
        get_method("prednet")(get_method("prednet").Config(stack=(4, 8), r_stack=(4, 8)), (1, 32, 32))


def test_future_features_learns_with_momentum_target():
    m, _v, losses = _train("future-features", 25, ahead=2, hidden=64)
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:3])
    assert m.tau > m.cfg.momentum_base  # the EMA rate follows the schedule
    assert not any(p.requires_grad for p in m.target.parameters())


def test_prednet_online_learns_only_when_error_is_high():
    cls = get_method("prednet")
    torch.manual_seed(0)
    m = cls(cls.Config(stack=(4, 8), r_stack=(4, 4, 8)), (1, 32, 32))
    a = _small_video(frames=30, n=4, seed=1)
    bright = ImageDataset("bright", torch.full((8, 1, 14, 14), 255, dtype=torch.uint8), None)  # a new kind of object
    b = moving(bright, "train", n=4, seed=2, frames=20, size=32, speed=4.0)
    stream = [a.images[slice(0, 4)], b.images[slice(0, 4)]]
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    every = m.learn_online(iter(stream), opt, gated=False, window=2)
    assert sum(every["learned"]) == 50 - 1  # every frame with a full window behind it
    m2 = cls(cls.Config(stack=(4, 8), r_stack=(4, 4, 8)), (1, 32, 32))
    gated = m2.learn_online(iter(stream), torch.optim.Adam(m2.parameters(), 3e-3), gated=True, window=2, threshold=1.2)
    assert 0 < sum(gated["learned"]) < sum(every["learned"])
    assert sum(gated["learned"][30:]) > sum(gated["learned"][:30])  # the change switches learning on
    assert not any(gated["learned"][:20]) and len(gated["level"]) == 50  # no gated step while the level is being measured
    assert len(gated["error"]) == 50 and all(np.isfinite(gated["error"]))


def test_pretrain_then_probe_flow(fm_small, tmp_path):
    import unsup

    run = unsup.pretrain("prednet", data=f"moving:{fm_small}", budget="4", out=tmp_path / "run", quiet=True, monitor=False,
                         options={"batch_size": 2, "stack": [4, 8, 8], "r_stack": [4, 4, 8, 8], "train_frames": 3})
    assert (run / "figures" / "predictions.png").is_file()
    r = unsup.probe_run(run, budgets=(10,), seeds=1, references=False, supervised=False)
    assert r["dataset"].endswith("64x64") and r["encoder_dim"] == 2 * 24
    assert {row["classifier"] for row in r["results"]} >= {"knn", "linear"}


def test_video_method_refuses_image_data():
    with pytest.raises(UnsupError, match="learns from video"):
        get_method("prednet").training_data("cifar-not-a-video.bin")
    assert get_method("video-lstm").training_data("fashion-mnist") == "moving-fashion-mnist"
    assert isinstance(load("moving-digits", "test"), VideoDataset)


def test_lr_schedule_option_reaches_the_training_loop(tmp_path):
    from unsup.run import RunDir
    from unsup.train.loop import TrainContext, train_loop
    from unsup.train.optim import lr_factor

    assert lr_factor(0.5, 0.1, "constant") == 1.0 and lr_factor(0.05, 0.1, "constant") == pytest.approx(0.5)
    assert lr_factor(0.5, 0.1) < 1.0  # cosine stays the default
    with pytest.raises(UnsupError, match="schedule"):
        lr_factor(0.5, 0.1, "step")
    cls = get_method("video-lstm")
    assert cls.Config().schedule == "cosine" and get_method("prednet").Config().schedule == "cosine"  # the default
    v = _small_video(frames=8, n=16)
    last = {}
    for sched in ("cosine", "constant"):
        torch.manual_seed(0)
        m = cls(cls.Config(context=4, future=4, hidden=16, batch_size=4, warmup=0.25, schedule=sched), (1, 32, 32))
        run = RunDir(tmp_path / sched)
        run.path.mkdir(parents=True)
        train_loop(m, v, "32", TrainContext(run=run, quiet=True, log_every=1))
        last[sched] = [r["lr"] for r in run.metrics() if "lr" in r]
    assert len(last["constant"]) == 8 and last["constant"][2:] == [pytest.approx(1e-3)] * 6  # warm-up, then the base rate
    assert last["cosine"][-1] < 0.1e-3 and last["cosine"][:2] == pytest.approx(last["constant"][:2])
    m = cls(cls.Config(context=4, future=4, hidden=16, batch_size=4, schedule="linear"), (1, 32, 32))
    with pytest.raises(UnsupError, match="schedule 'linear'"):
        train_loop(m, v, "8", TrainContext(quiet=True))


def test_error_gate_hysteresis_frozen_level_and_plateau():
    from unsup.methods.video.prednet import ErrorGate

    rng = np.random.default_rng(0)
    familiar = list(60 + 3 * rng.standard_normal(60))
    # a change the learner can undo: the error jumps to 90 and comes back to 60 over 80 frames, then stays familiar
    learnt = [90 - 30 * min(1.0, i / 80) + 3 * rng.standard_normal() for i in range(200)]
    g = ErrorGate()
    on = [g.update(e) for e in familiar + learnt]
    levels = []
    assert not any(on[:60])  # the familiar stream never switches learning on
    assert g.switches[0][0] in range(63, 70) and g.switches[0][1] == "on"
    assert g.switches[1][1] == "recovered" and 60 + 55 <= g.switches[1][0] <= 60 + 95  # on until back within 1.1 x level
    t_on, t_off = g.switches[0][0], g.switches[1][0]
    assert all(on[t_on:t_off]) and not any(on[t_off:])
    # while on, the level is frozen at the familiar error, not dragged up by the new one
    g2 = ErrorGate()
    for e in (familiar + learnt)[: t_on + 30]:
        g2.update(e)
        levels.append(g2.level)
    assert levels[t_on + 29] == levels[t_on] and 57 < levels[t_on] < 65
    # an unlearnable change: learning stops after `patience` frames without progress, the new error becomes the level
    g3 = ErrorGate(patience=40)
    on3 = [g3.update(e) for e in familiar + list(90 + 3 * rng.standard_normal(200))]
    assert [s for _t, s in g3.switches] == ["on", "plateau"] and 85 < g3.level < 95
    assert sum(on3) < 60 and not any(on3[-100:])
    with pytest.raises(UnsupError, match="below the on threshold"):
        ErrorGate(threshold=1.2, off=1.3)


def test_family_metrics_against_copying_the_last_frame(fm_small, tmp_path):
    import unsup
    from unsup.run import load_method

    data = f"moving:{fm_small}"
    run = unsup.pretrain("prednet", data=data, budget="4", out=tmp_path / "p", quiet=True, monitor=False, figures=False,
                         options={"batch_size": 2, "stack": [4, 8, 8], "r_stack": [4, 4, 8, 8], "train_frames": 3})
    m = load_method(run, whole=True).eval()
    m.eval_sequences = 20
    got = m.family_metrics(data, "cpu")
    assert set(got) == {f"{w}_{k}" for w in ("next", "ahead10") for k in ("mse", "ssim", "copy_mse", "copy_ssim", "mse_vs_copy")}
    assert all(np.isfinite(v) for v in got.values())
    assert 0 < got["next_copy_mse"] < got["ahead10_copy_mse"]  # objects move: copying gets worse further ahead
    assert got["next_mse_vs_copy"] == pytest.approx(got["next_mse"] / got["next_copy_mse"])
    assert -1 <= got["next_ssim"] <= 1 and 0 < got["next_copy_ssim"] <= 1

    run = unsup.pretrain("future-features", data=data, budget="4", out=tmp_path / "f", quiet=True, monitor=False,
                         figures=False, options={"batch_size": 2, "hidden": 32})
    m = load_method(run, whole=True).eval()
    m.eval_sequences = 200
    got = m.family_metrics(data, "cpu")
    assert set(got) == {"future_retrieval_top1", "current_frame_top1"} and all(0 <= v <= 1 for v in got.values())
