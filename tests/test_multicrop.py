"""The papers' augmentations (saturation, hue, grayscale, solarisation,
per-view settings, multi-crop), the Sinkhorn-Knopp codes and the DINO loss
against their definitions, and SwAV and DINO training, saving and loading."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import unsup
from unsup.data import AugmentConfig, augment, load
from unsup.data.augment import color_jitter, gaussian_blur, luma, multi_crop, random_resized_crop, shift_hue, view_configs, views
from unsup.errors import UnsupError
from unsup.losses import dino_center, dino_loss, sinkhorn_knopp, swav_loss
from unsup.methods.base import config_from_dict
from unsup.methods.joint.common import spread
from unsup.registry import get_method

NO_CHANGE = AugmentConfig(crop_scale=(1.0, 1.0), flip=0.0, brightness=0.0, contrast=0.0, blur_prob=0.0)


def _same_image(n: int, c: int = 3, size: int = 12) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(1, c, size, size).expand(n, -1, -1, -1).contiguous()


# ------------------------------------------------------------ augmentations


@pytest.mark.parametrize("channels", [1, 3])
def test_default_config_draws_the_views_it_drew_before_the_new_operations(channels):
    # what could change the default views: a new operation that runs, or draws random numbers, while off. The
    # pipeline before them was crop -> brightness/contrast -> blur (noise off by default), from these building blocks.
    x = torch.rand(8, channels, 16, 16)
    cfg = AugmentConfig()
    torch.manual_seed(3)
    got = augment(x, cfg)
    torch.manual_seed(3)
    ref = random_resized_crop(x, cfg.crop_scale, cfg.crop_ratio, cfg.flip)
    ref = color_jitter(ref, cfg.brightness, cfg.contrast, cfg.jitter_prob)
    sigma = torch.rand(8) * (cfg.blur_sigma[1] - cfg.blur_sigma[0]) + cfg.blur_sigma[0]
    sigma = torch.where(torch.rand(8) < cfg.blur_prob, sigma, torch.full_like(sigma, 1e-3))
    ref = gaussian_blur(ref, sigma)
    torch.testing.assert_close(got, ref, rtol=0, atol=0)
    assert (cfg.saturation, cfg.hue, cfg.grayscale, cfg.solarize) == (0.0, 0.0, 0.0, 0.0)


def test_colour_operations_are_no_ops_on_one_channel():
    # saturation, hue and grayscale neither change a gray image nor draw random numbers
    x = torch.rand(6, 1, 10, 10)
    colour = AugmentConfig(saturation=0.8, hue=0.5, grayscale=1.0)
    torch.manual_seed(5)
    plain = augment(x)
    torch.manual_seed(5)
    torch.testing.assert_close(augment(x, colour), plain, rtol=0, atol=0)


@pytest.mark.parametrize("cfg", [
    AugmentConfig(saturation=0.8, jitter_prob=1.0),
    AugmentConfig(hue=0.5, jitter_prob=1.0),
    AugmentConfig(grayscale=0.5),
    AugmentConfig(solarize=0.5),
], ids=["saturation", "hue", "grayscale", "solarize"])
def test_each_new_operation_is_per_sample_in_range_and_keeps_the_shape(cfg):
    x = _same_image(32)
    base = dict(crop_scale=(1.0, 1.0), flip=0.0, brightness=0.0, contrast=0.0, blur_prob=0.0)
    v = augment(x, AugmentConfig(**{**cfg.__dict__, **base}))
    assert v.shape == x.shape and v.dtype == torch.float32
    assert float(v.min()) >= 0.0 and float(v.max()) <= 1.0
    changed = (v - x).flatten(1).abs().amax(1) > 1e-4
    if cfg.grayscale or cfg.solarize:  # with probability 0.5: some samples, not all
        assert 0 < int(changed.sum()) < 32
    else:  # a random factor or shift for every sample: all changed, each its own way
        assert bool(changed.all())
        assert (v[1:] - v[:1]).flatten(1).abs().amax(1).min() > 1e-4
    assert augment(torch.randint(0, 256, (4, 3, 9, 9), dtype=torch.uint8), cfg, out_size=7).shape == (4, 3, 7, 7)


def test_solarisation_inverts_exactly_the_pixels_at_or_above_the_threshold():
    x = torch.rand(4, 3, 8, 8)
    x[0, 0, 0, :3] = torch.tensor([0.5, 0.4999, 1.0])
    v = augment(x, AugmentConfig(**{**NO_CHANGE.__dict__, "solarize": 1.0}))
    torch.testing.assert_close(v, torch.where(x >= 0.5, 1 - x, x), rtol=0, atol=1e-6)
    assert v[0, 0, 0, :3].tolist() == pytest.approx([0.5, 0.4999, 0.0], abs=1e-6)
    low = augment(x, AugmentConfig(**{**NO_CHANGE.__dict__, "solarize": 1.0, "solarize_threshold": 0.9}))
    torch.testing.assert_close(low, torch.where(x >= 0.9, 1 - x, x), rtol=0, atol=1e-6)


def test_grayscale_gives_equal_channels_at_the_luma():
    x = torch.rand(3, 3, 6, 6)
    v = augment(x, AugmentConfig(**{**NO_CHANGE.__dict__, "grayscale": 1.0}))
    torch.testing.assert_close(v, (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:]).expand(-1, 3, -1, -1))


def test_hue_rotation_and_saturation_match_torchvision():
    tf = pytest.importorskip("torchvision.transforms.v2.functional")
    x = torch.rand(2, 3, 5, 5)
    for s in (0.0, 0.1, -0.35, 0.5):
        torch.testing.assert_close(shift_hue(x, torch.full((2,), s)), tf.adjust_hue(x, s), rtol=0, atol=1e-5)
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    torch.testing.assert_close(shift_hue(red, torch.tensor([1 / 3])), torch.tensor([0.0, 1.0, 0.0]).view(1, 3, 1, 1))
    # the gray reference of the saturation blend is torchvision's, to its 8-bit-rounded weights
    torch.testing.assert_close(luma(x), tf.rgb_to_grayscale(x), rtol=0, atol=2e-4)


def test_new_options_are_checked():
    with pytest.raises(UnsupError, match="hue must be in"):
        config_from_dict(AugmentConfig, {"hue": 0.7})
    with pytest.raises(UnsupError, match="solarize"):
        config_from_dict(AugmentConfig, {"solarize": 1.5})


def test_per_view_configs_are_byols_asymmetric_pair():
    base = AugmentConfig()
    a, b = view_configs(base, 2, blur_prob=(1.0, 0.1), solarize=(0.0, 0.2))
    assert (a.blur_prob, a.solarize, b.blur_prob, b.solarize) == (1.0, 0.0, 0.1, 0.2)
    assert a.crop_scale == b.crop_scale == base.crop_scale and base.blur_prob == 0.5  # the base is untouched
    with pytest.raises(ValueError, match="2 values for 3 views"):
        view_configs(base, 3, blur_prob=(1.0, 0.1))
    # each view follows its own config: the second view is solarised, the first is not
    x = torch.rand(4, 1, 8, 8)
    first, second = views(x, view_configs(NO_CHANGE, 2, solarize=(0.0, 1.0)))
    torch.testing.assert_close(first, x, rtol=0, atol=1e-5)
    torch.testing.assert_close(second, torch.where(x >= 0.5, 1 - x, x), rtol=0, atol=1e-5)


def test_multi_crop_gives_global_then_local_views_at_their_sizes():
    x = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    local = AugmentConfig(crop_scale=(0.05, 0.14))
    out = multi_crop(x, AugmentConfig(), local, n_global=2, n_local=4, local_size=12)
    assert [tuple(v.shape) for v in out] == [(5, 1, 28, 28)] * 2 + [(5, 1, 12, 12)] * 4
    assert all(float(v.min()) >= 0 and float(v.max()) <= 1 for v in out)
    # views of the same image differ (each crop its own parameters), also within one batched call
    assert (out[0] - out[1]).abs().amax() > 1e-3 and (out[2] - out[3]).abs().amax() > 1e-3
    # one config per global view, a default local size of 3/7 of the input, no locals
    out = multi_crop(x, view_configs(NO_CHANGE, 2, solarize=(0.0, 1.0)), local, n_local=1)
    assert len(out) == 3 and out[2].shape[-1] == 12
    torch.testing.assert_close(out[0], x.float() / 255, rtol=0, atol=1e-5)
    assert len(multi_crop(x, AugmentConfig(), n_global=3, n_local=0)) == 3


# ------------------------------------------------------------ losses


def test_sinkhorn_on_a_hand_checked_case():
    # symmetric scores: the initial exp(scores / eps) is already balanced over prototypes, so each sample's code
    # is its row of exp(scores / eps), normalised: [e, 1] / (e + 1) with eps = 1
    q = sinkhorn_knopp(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), epsilon=1.0, iterations=3)
    e = math.e
    torch.testing.assert_close(q, torch.tensor([[e, 1], [1, e]]) / (e + 1))


def test_sinkhorn_marginals_and_the_papers_algorithm():
    torch.manual_seed(0)
    scores = F.normalize(torch.randn(6, 8), dim=1) @ F.normalize(torch.randn(3, 8), dim=1).T  # B=6, K=3
    q = sinkhorn_knopp(scores, epsilon=0.05, iterations=3)
    torch.testing.assert_close(q.sum(1), torch.ones(6))  # each sample: a distribution over prototypes
    # the paper's algorithm, on the K x B matrix, written out
    ref = torch.exp(scores.T.double() / 0.05)
    ref /= ref.sum()
    for _ in range(3):
        ref /= ref.sum(1, keepdim=True) * 3
        ref /= ref.sum(0, keepdim=True) * 6
    torch.testing.assert_close(q, (ref * 6).T.float(), rtol=1e-4, atol=1e-6)
    # converged, it meets both marginals: every prototype gets B / K = 2 samples, even when all prefer one
    skewed = torch.tensor([[0.9, 0.1, 0.0]] * 6) + 0.01 * torch.arange(6.0)[:, None] * torch.tensor([0.0, 1.0, -1.0])
    q = sinkhorn_knopp(skewed, epsilon=0.05, iterations=500)
    torch.testing.assert_close(q.sum(0), torch.full((3,), 2.0), rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(q.sum(1), torch.ones(6))


def test_swav_loss_is_the_swapped_cross_entropy():
    torch.manual_seed(0)
    scores = [torch.randn(4, 3) for _ in range(3)]  # two global views, one local
    codes = [torch.softmax(torch.randn(4, 3), 1) for _ in range(2)]
    terms = [-(codes[i] * F.log_softmax(scores[v] / 0.1, 1)).sum(1).mean() for i in range(2) for v in range(3) if v != i]
    torch.testing.assert_close(swav_loss(scores, codes, 0.1), sum(terms) / 4)


def test_dino_loss_on_a_hand_computed_case():
    # K = 2, batch of 1: teacher t, centre c, student s; targets softmax((t - c) / 0.5), predictions softmax(s / 1)
    teacher = [torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])]
    center = torch.tensor([[0.5, 0.5]])
    student = [torch.tensor([[0.0, 0.0]]), torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 0.0]])]
    p = 1 / (1 + math.exp(-2))  # softmax of (0.5, -0.5) / 0.5 = (1, -1): the larger share
    t0, t1 = [p, 1 - p], [1 - p, p]
    log_uniform = [math.log(0.5)] * 2
    log_s1 = [2 - math.log(math.exp(2) + 1), -math.log(math.exp(2) + 1)]

    def ce(t, log_q):
        return -sum(a * b for a, b in zip(t, log_q))

    # pairs of different views: teacher 0 with student 1 and 2, teacher 1 with student 0 and 2
    expected = (ce(t0, log_s1) + ce(t0, log_uniform) + ce(t1, log_uniform) + ce(t1, log_uniform)) / 4
    got = dino_loss(student, teacher, center, student_temp=1.0, teacher_temp=0.5)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_dino_centre_update_is_the_ema_of_the_batch_mean():
    torch.manual_seed(0)
    c, t = torch.randn(1, 5), torch.randn(8, 5)
    torch.testing.assert_close(dino_center(c, t, 0.9), 0.9 * c + 0.1 * t.mean(0, keepdim=True))


# ------------------------------------------------------------ the methods

TINY = {
    "dino": {"out_dim": 64, "hidden_dim": 64, "bottleneck_dim": 32, "n_local": 2, "freeze_last_layer": 0.0},
    "swav": {"prototypes": 16, "proj_hidden": 64, "proj_dim": 32, "n_local": 2, "freeze_prototypes": 0.0},
}


@pytest.mark.parametrize("name,n_local", [("dino", 2), ("swav", 2), ("swav", 0)])
def test_method_trains_saves_and_loads(name, n_local, fm_small, tmp_path):
    opts = {"batch_size": 64, "n_local": n_local}  # 0: the two global views only (multi-crop off)
    run = unsup.pretrain(name, data=fm_small, budget="600img", out=tmp_path / name, options=opts, quiet=True,
                         figures=False, monitor=False)
    losses = [m["loss"] for m in unsup.run.RunDir(run).metrics() if "loss" in m]
    assert losses and all(math.isfinite(x) for x in losses)
    method = unsup.load_method(run)
    x = load(fm_small, "test").images[:128].float() / 255
    with torch.no_grad():
        feats = method.encoder.eval()(x)
    assert feats.shape == (128, method.encoder.out_dim)
    assert spread(feats) > 0.05  # not collapsed to one point


@pytest.mark.parametrize("name", ["dino", "swav"])
def test_loss_falls_on_a_fixed_batch(name, fm_small):
    # DINO's loss is the teacher targets' entropy plus the student's KL to them; from a random start the targets
    # are nearly one-hot for every image, and the centring then raises their entropy (what prevents collapse),
    # so the part the student learns, the KL, is what falls
    torch.manual_seed(0)
    cls = get_method(name)
    method = cls(config_from_dict(cls.Config, TINY[name]), (1, 28, 28))
    opt = torch.optim.AdamW(method.configure_optimizers(lambda p: p)[0], lr=1e-3)
    images = load(fm_small, "train").images[:32]
    losses = []
    for step in range(24):
        loss, logs = method.training_loss(images)
        opt.zero_grad()
        loss.backward()
        opt.step()
        method.after_step(step / 24)
        losses.append(logs["kl"] if name == "dino" else loss.item())
    assert sum(losses[-4:]) / 4 < 0.9 * sum(losses[:4]) / 4


def test_dino_teacher_follows_the_student_and_the_last_layer_starts_frozen():
    cls = get_method("dino")
    method = cls(config_from_dict(cls.Config, {**TINY["dino"], "freeze_last_layer": 0.5}), (1, 28, 28))
    images = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    method.training_loss(images)[0].backward()
    assert method.student_head.last_layer.weight.grad is None  # frozen in the first half of the budget
    students = {id(p) for g in method.configure_optimizers(lambda p: [{"params": p}])[0] for p in g["params"]}
    assert not students & {id(p) for p in [*method.encoder.parameters(), *method.teacher_head.parameters()]}
    assert all(p.grad is None for p in method.encoder.parameters())  # the teacher learns only by EMA
    with torch.no_grad():
        for p in method.student.parameters():
            p.add_(1.0)
    before = next(method.encoder.parameters()).clone()
    method.after_step(0.6)
    after = next(method.encoder.parameters())
    assert (after - before).abs().max() > 0  # moved towards the student
    method.training_loss(images)[0].backward()
    assert method.student_head.last_layer.weight.grad is not None


def test_swav_prototypes_stay_unit_vectors_and_the_queue_joins_sinkhorn():
    cls = get_method("swav")
    method = cls(config_from_dict(cls.Config, {**TINY["swav"], "queue_length": 16, "queue_start": 0.0}), (1, 28, 28))
    images = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    opt = torch.optim.SGD(method.configure_optimizers(lambda p: p)[0], lr=1.0)
    for _ in range(3):
        loss, _ = method.training_loss(images)
        opt.zero_grad()
        loss.backward()
        opt.step()
        method.after_step(0.5)
    torch.testing.assert_close(method.prototypes.weight.norm(dim=1), torch.ones(16))
    assert int(method.queued) == 24 and method.queue.abs().sum() > 0


DISTRIBUTED_SCRIPT = r'''
import torch, torch.distributed as dist
from unsup.train import distributed as d
from unsup.losses import dino_center, sinkhorn_knopp
d.init_from_env(torch.device("cpu"))
torch.manual_seed(0)
scores, teacher, center = torch.rand(8, 5), torch.randn(8, 5), torch.randn(1, 5)
half = slice(4 * d.rank(), 4 * d.rank() + 4)
codes = sinkhorn_knopp(scores[half], 0.05, 3)
every = [torch.zeros_like(codes) for _ in range(2)]
dist.all_gather(every, codes)
new_center = dino_center(center, teacher[half], 0.9)
rank = d.rank()
dist.destroy_process_group()  # the single-process references below
if rank == 0:
    print("CODES", float((torch.cat(every) - sinkhorn_knopp(scores, 0.05, 3)).abs().max()),
          "CENTER", float((new_center - dino_center(center, teacher, 0.9)).abs().max()))
'''


def test_sinkhorn_and_dino_centre_span_the_processes(tmp_path, torchrun):
    # two processes holding half a batch each get exactly what one process gets with the whole batch
    script = tmp_path / "split.py"
    script.write_text(DISTRIBUTED_SCRIPT)
    done = torchrun(script)
    _, codes, _, center = next(ln for ln in done.stdout.splitlines() if ln.startswith("CODES")).split()
    assert float(codes) < 1e-6 and float(center) < 1e-6


@pytest.mark.parametrize("name", ["dino", "swav"])
def test_local_crops_pass_through_a_vit(name):
    # a ViT takes the 12-px local crops of 28-px images: the multi-crop methods turn on its dynamic size
    cls = get_method(name)
    cfg = config_from_dict(cls.Config, {**TINY[name], "backbone": "vit-tiny", "backbone_options": {"depth": 1}})
    method = cls(cfg, (1, 28, 28))
    loss, _ = method.training_loss(torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8))
    loss.backward()
    assert math.isfinite(loss.item()) and method.cfg.backbone_options == {"depth": 1, "dynamic_size": True}
