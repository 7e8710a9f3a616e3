"""Pretext tasks: the task generators are right (geometry, targets), bad
geometry is refused with the sizes, a task is learnt above chance, and the
stereo renderer / selection layer / motorcycle pair agree with each other."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import unsup
from unsup.data import load
from unsup.data.stereo import check_pair, motorcycle_pair, render_stereo, right_grid_disparity, texture_bank
from unsup.errors import UnsupError
from unsup.methods.pretext.context import Context, ContextConfig
from unsup.methods.pretext.cooccurrence import Cooccurrence, CooccurrenceConfig
from unsup.methods.pretext.exemplar import Exemplar, ExemplarConfig
from unsup.methods.pretext.jigsaw import Jigsaw, JigsawConfig, hamming_permutations
from unsup.methods.pretext.patches import gather_patches
from unsup.methods.pretext.rotation import Rotation, RotationConfig, rotate
from unsup.methods.pretext.stereo import Stereo, StereoConfig, select, shifted_stack

SHAPE = (1, 28, 28)


@pytest.fixture(scope="module")
def fm(fm_small):
    return load(fm_small, "train")


def test_hamming_permutations_are_distinct_and_far_apart():
    p = hamming_permutations(100)
    assert p.shape == (100, 9)
    assert len({tuple(r.tolist()) for r in p}) == 100
    assert (p.sort(1).values == torch.arange(9)).all()  # each row a permutation
    d = (p[:, None] != p[None]).sum(-1).float()
    greedy = d.sum() / (100 * 99)
    g = torch.Generator().manual_seed(1)
    r = torch.stack([torch.randperm(9, generator=g) for _ in range(100)])
    rand = (r[:, None] != r[None]).sum(-1).float().sum() / (100 * 99)
    assert greedy > rand  # the greedy choice spreads the set out
    assert torch.equal(p, hamming_permutations(100))  # deterministic


def test_gather_patches_matches_slicing():
    x = torch.arange(2 * 3 * 10 * 10, dtype=torch.float32).view(2, 3, 10, 10)
    top, left = torch.tensor([[0, 4], [2, 5]]), torch.tensor([[1, 3], [6, 0]])
    p = gather_patches(x, top, left, 4)
    assert p.shape == (2, 2, 3, 4, 4)
    for b in range(2):
        for k in range(2):
            t, l_ = int(top[b, k]), int(left[b, k])
            assert torch.equal(p[b, k], x[b, :, t : t + 4, l_ : l_ + 4])


def test_jigsaw_tiles_and_targets(fm):
    torch.manual_seed(0)
    exact = Jigsaw(JigsawConfig(tile_frac=1.0, crop_frac=1.0, normalise_tiles=False), SHAPE)
    x = fm.images[:4]
    tiles = exact.tiles(x)  # no gaps, no jitter: the tiles reassemble the resized image
    c = exact.cell
    board = tiles.view(4, 3, 3, 1, c, c).permute(0, 3, 1, 4, 2, 5).reshape(4, 1, 3 * c, 3 * c)
    resized = torch.nn.functional.interpolate(x.float() / 255, size=(exact.size, exact.size), mode="bilinear", align_corners=False)
    assert torch.allclose(board, resized[..., : 3 * c, : 3 * c], atol=0.05)
    m = Jigsaw(JigsawConfig(permutations=10), SHAPE)
    shuffled, target = m.make_task(x)
    assert shuffled.shape == (4, 9, 1, m.tile, m.tile) and m.tile < m.cell  # gaps
    assert target.max() < 10
    # per-tile normalisation: each tile has mean 0.5 after it
    assert torch.allclose(shuffled.mean((2, 3, 4)), torch.full((4, 9), 0.5), atol=1e-4)
    # the encoder still takes whole images at probe time
    assert m.encoder(x.float() / 255).shape == (4, m.encoder.out_dim)


def test_bad_geometry_is_refused_with_sizes():
    with pytest.raises(UnsupError, match=r"48x48"):
        Context(ContextConfig(patch_frac=0.4), SHAPE)
    with pytest.raises(UnsupError, match=r"tile"):
        Jigsaw(JigsawConfig(size=20), SHAPE)
    with pytest.raises(UnsupError, match="permutations"):
        Jigsaw(JigsawConfig(permutations=0), SHAPE)
    with pytest.raises(UnsupError, match="surrogate"):
        Exemplar(ExemplarConfig(surrogate_classes=50), SHAPE).choose_seeds(torch.zeros(10, 1, 28, 28, dtype=torch.uint8))
    with pytest.raises(UnsupError, match=r"\(1, 1, 20, 30\).*\(1, 1, 20, 31\)"):
        check_pair(torch.zeros(1, 1, 20, 30), torch.zeros(1, 1, 20, 31))
    with pytest.raises(UnsupError, match="levels"):
        Stereo(StereoConfig(levels=40, scene_size=48), SHAPE)


def test_context_and_cooccurrence_pairs(fm):
    m = Context(ContextConfig(normalise_patches=False, jitter_frac=0.0), SHAPE)
    which = torch.arange(8)
    pairs, target = m.pairs(fm.images[:8], which)
    assert torch.equal(target, which) and pairs.shape == (8, 2, 1, m.geo.patch, m.geo.patch)
    a, b, _ = m.geo.sample(8, "cpu", which)
    from unsup.methods.pretext.patches import NEIGHBOURS

    assert torch.equal((b - a) // m.geo.step, NEIGHBOURS)  # the neighbour is where the label says
    assert m.geo.gap > 0
    co = Cooccurrence(CooccurrenceConfig(), SHAPE)
    inputs, target = co.make_task(fm.images[:64])
    assert inputs.shape[:2] == (64, 2) and set(target.tolist()) == {0, 1}


def test_free_pair_layout_moves_the_pair_over_the_whole_image():
    from unsup.methods.pretext.patches import NEIGHBOURS, PairGeometry

    torch.manual_seed(0)
    pinned = PairGeometry("t", 48, 0.23, 0.5, 0.0)
    free = PairGeometry("t", 48, 0.23, 0.5, 0.0, free=True)
    which = torch.arange(8).repeat(500)
    a, _, _ = pinned.sample(len(which), "cpu", which)
    assert a.min() == pinned.step and a.max() == pinned.step + 48 - pinned.span  # pinned: the centre cell only
    a, b, w = free.sample(len(which), "cpu", which)
    assert torch.equal(w, which) and torch.equal((b - a) // free.step, NEIGHBOURS[which])  # still the labelled neighbour
    p = free.patch
    for corner in (a, b):  # both patches inside the image, and they reach its edges
        assert corner.min() == 0 and corner.max() == 48 - p
    jit = PairGeometry("t", 48, 0.23, 0.5, 0.2, free=True)
    a, b, _ = jit.sample(4000, "cpu")
    assert min(a.min(), b.min()) >= 0 and max(a.max(), b.max()) <= 48 - jit.patch
    assert ((a - b).abs().max(1).values >= jit.patch).all()  # the jittered patches never overlap
    with pytest.raises(UnsupError, match="a pair of"):
        PairGeometry("t", 48, 0.45, 0.5, 0.0, free=True)
    ctx = Context(ContextConfig(), SHAPE)  # the default, as Doersch samples: the first patch is not always the centre
    a, _, _ = ctx.geo.sample(2000, "cpu")
    assert a.min() <= 2 and a.max() >= 48 - ctx.geo.patch - 2
    co = Cooccurrence(CooccurrenceConfig(free_layout=True, patch_frac=0.3), SHAPE)  # too big for a 3x3 layout, fits a pair
    assert co.make_task(torch.zeros(4, 1, 28, 28, dtype=torch.uint8))[0].shape == (4, 2, 1, co.geo.patch, co.geo.patch)


def test_rotation_task():
    x = torch.arange(2 * 16, dtype=torch.float32).view(2, 1, 4, 4)
    out = rotate(x.repeat(4, 1, 1, 1), torch.arange(4).repeat_interleave(2))
    for k in range(4):
        assert torch.equal(out[2 * k : 2 * k + 2], x.rot90(k, (2, 3)))
    m = Rotation(RotationConfig(flip=0.0), SHAPE)
    inputs, target = m.make_task(torch.randint(0, 255, (3, 1, 28, 28), dtype=torch.uint8))
    assert inputs.shape == (12, 1, 28, 28) and target.tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3


def test_exemplar_seeds_follow_the_gradient():
    imgs = torch.zeros(40, 1, 28, 28, dtype=torch.uint8)
    imgs[:, :, :, 14:] = (torch.rand(40, 1, 28, 14) * 255).to(torch.uint8)  # texture on the right half only
    m = Exemplar(ExemplarConfig(surrogate_classes=40, patch_frac=0.34), SHAPE)
    m.choose_seeds(imgs)
    assert m.seeds.shape == (40, 1, 10, 10)
    assert (m.seeds.float().std((1, 2, 3)) > 20).float().mean() > 0.9  # seeds from the textured half
    inputs, target = m.make_task(imgs[:16])
    assert inputs.shape == (16, 1, 10, 10) and target.max() < 40 and 0 <= inputs.min() and inputs.max() <= 1


def test_context_task_is_learnt_above_chance(fm):
    torch.manual_seed(0)
    m = Context(ContextConfig(), SHAPE)
    opt = torch.optim.AdamW(m.parameters(), lr=2e-3)
    train = fm.images[:2000]
    losses = []
    for _step in range(50):
        loss, _ = m.training_loss(train[torch.randint(0, len(train), (64,))])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 0.2
    acc = m.pretext_accuracy(fm.images[2000:2512])
    assert acc > 0.17  # chance is 1/8; 512 held-out samples put 0.17 three standard errors above it


def test_stereo_rendering_and_selection(fm):
    torch.manual_seed(0)
    left, right, disp = render_stereo(fm.images[:16], texture_bank(), 48, 16, 2)
    assert left.shape == right.shape == disp.shape == (16, 1, 48, 48)
    assert disp.min() >= 0 and disp.max() <= 15
    # the selection layer with the true disparity (one-hot) reconstructs the right view much better than no shift
    onehot = torch.nn.functional.one_hot(disp[:, 0].round().long(), 16).permute(0, 3, 1, 2).float()
    assert (select(left, onehot) - right).abs().mean() < 0.5 * (left - right).abs().mean()
    assert torch.equal(shifted_stack(left, 3)[:, 2, ..., :-2], left[..., 2:])


def test_stereo_plain_background_is_black_and_refused_out_of_range(fm):
    objects = fm.images[:16]
    torch.manual_seed(0)
    left, _, disp = render_stereo(objects, texture_bank(), 48, 16, 2, plain=1.0)
    torch.manual_seed(0)
    tex_left = render_stereo(objects, texture_bank(), 48, 16, 2, plain=0.0)[0]
    background = left == 0
    assert background.float().mean() > 0.3  # black wherever no object stands
    assert (tex_left == 0).float().mean() < 0.05  # textured scenes are not
    assert disp.min() >= 0 and disp.max() <= 15
    with pytest.raises(UnsupError, match="plain_background"):
        Stereo(StereoConfig(plain_background=1.5), SHAPE)


def test_motorcycle_pair_and_right_grid():
    left, right, disp = motorcycle_pair(4)
    assert left.shape == right.shape == disp.shape == (1, 1, 125, 185)
    ok = torch.isfinite(disp)
    assert ok.float().mean() > 0.8 and 1 < disp[ok].min() and disp[ok].max() < 16
    d = torch.full((1, 1, 1, 10), 2.0)
    r = right_grid_disparity(d)
    assert torch.isnan(r[..., 8:]).all() and (r[..., :8] == 2).all()  # a pixel at x is seen at x - 2


def test_stereo_pretrain_cli_path_works(tmp_path):
    run = unsup.pretrain("stereo", data="fashion-mnist", budget="64", out=tmp_path / "s", quiet=True, monitor=False,
                         options={"batch_size": 32})
    assert (run / "encoder.safetensors").is_file() and (run / "figures" / "stereo_motorcycle.png").is_file()
    enc = unsup.load_encoder(run)
    assert enc(torch.rand(2, 1, 28, 28)).shape == (2, enc.out_dim)
    m = Stereo(StereoConfig(), SHAPE)
    metrics, pred, exp_disp = m.motorcycle()
    assert set(metrics) >= {"l1_prediction", "l1_no_shift", "l1_best_global_shift", "spearman"}
    assert metrics["l1_best_global_shift"] < metrics["l1_no_shift"]
    assert pred.shape == (1, 1, 125, 185) and exp_disp.shape == (1, 1, 125, 185)


@pytest.mark.parametrize("cls", [Jigsaw, Cooccurrence, Exemplar, Rotation])
def test_each_task_gives_a_finite_loss_and_gradients(cls, fm):
    cfg = cls.Config()
    if cls is Exemplar:
        cfg.surrogate_classes = 100
    m = cls(cfg, SHAPE)
    if cls is Exemplar:
        with pytest.raises(UnsupError, match="choose_seeds"):
            m.training_loss(fm.images[:8])
        m.on_epoch_start(fm, 0)
    loss, logs = m.training_loss(fm.images[:8])
    loss.backward()
    assert torch.isfinite(loss) and 0 <= logs["pretext_acc"] <= 1
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.encoder.parameters())


def test_patch_tasks_keep_whole_image_batchnorm_statistics(fm):
    from unsup.methods.pretext.task import stats_frozen

    m = Context(ContextConfig(), SHAPE)
    bn = m.encoder.net.features[0][1]
    before = bn.running_mean.clone()
    with stats_frozen(m.encoder):
        m.logits(m.make_task(fm.images[:16])[0])
    assert torch.equal(bn.running_mean, before)  # the patch pass records nothing
    assert bn.momentum == 0.1  # and the momentum is restored
    m.training_loss(fm.images[:16])
    assert not torch.equal(bn.running_mean, before)  # the whole-image pass did
    scaled = Jigsaw(JigsawConfig(probe_at_working_scale=True), SHAPE)
    assert scaled.encoder(torch.rand(2, 1, 28, 28)).shape == (2, scaled.encoder.out_dim)
    assert scaled.encoder.net.working == 72  # jigsaw works on 72x72 images (24-pixel cells)


def test_patch_task_accuracy_reads_patches_with_their_own_statistics(fm):
    """Whole-image running statistics must not be applied to patches when the
    pretext accuracy is measured: make them absurd and the head's inputs must not move."""
    torch.manual_seed(0)
    m = Context(ContextConfig(), SHAPE)
    seen = []
    m.head.register_forward_hook(lambda mod, inp, out: seen.append(out.detach().clone()))
    torch.manual_seed(1)
    m.pretext_accuracy(fm.images[:64])
    for mod in m.encoder.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.fill_(50.0)
            mod.running_var.fill_(1e-4)
    torch.manual_seed(1)
    m.pretext_accuracy(fm.images[:64])
    assert len(seen) == 2 and torch.allclose(seen[0], seen[1])
    assert m.training  # the mode is restored
    bn = m.encoder.net.features[0][1]
    assert float(bn.running_mean[0]) == 50.0 and bn.momentum == 0.1  # nothing recorded, momentum restored


def test_stereo_top_branch_sees_where_a_pixel_lies():
    """Deep3D's top (fully connected) branch: on a featureless frame the
    convolutional taps give every interior pixel the same disparity, the top
    branch lets it depend on the row (e.g. 'the ground at the bottom is near')."""
    flat = torch.full((1, 1, 96, 96), 0.5)
    torch.manual_seed(0)
    conv_only = Stereo(StereoConfig(levels=8, global_branch=False), SHAPE).eval()
    torch.manual_seed(0)
    deep3d = Stereo(StereoConfig(levels=8), SHAPE).eval()
    with torch.no_grad():
        torch.nn.init.normal_(deep3d.top[-1].weight, std=1.0)
        p_conv, p_top = conv_only.disparity_probs(flat), deep3d.disparity_probs(flat)
    interior = (slice(None), slice(None), slice(36, 60), slice(36, 60))
    assert torch.allclose(p_conv[interior], p_conv[..., 48:49, 48:49].expand_as(p_conv[interior]), atol=1e-5)
    assert (p_top[..., 40, 48] - p_top[..., 56, 48]).abs().max() > 1e-3
    with pytest.raises(UnsupError, match="global_grid"):
        Stereo(StereoConfig(global_grid=0), SHAPE)


def test_exemplar_surrogate_classes_are_learnt_with_the_default_small_batches(fm):
    torch.manual_seed(0)
    m = Exemplar(ExemplarConfig(surrogate_classes=20), SHAPE)
    assert m.cfg.batch_size == 64
    m.choose_seeds(fm.images[:500])
    opt = torch.optim.AdamW(m.parameters(), lr=2e-3)
    for _step in range(40):
        loss, _ = m.training_loss(fm.images[: m.cfg.batch_size])  # the images are ignored: views of the seeds
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.manual_seed(1)
    acc = sum(m.pretext_accuracy() for _ in range(4)) / 4  # 4 x 20 fresh transformed views
    assert acc > 0.25  # chance is 1/20


def test_per_patch_fc_reads_the_unpooled_map(fm):
    """jigsaw's tile_fc / cooccurrence's patch_fc: a fully connected layer on each
    patch's spatial map (before global pooling); the probed encoder is unchanged."""
    from unsup.methods.pretext.patches import spatial_map

    torch.manual_seed(0)
    m = Jigsaw(JigsawConfig(permutations=10, tile_fc=16), SHAPE)
    x = fm.images[:4]
    tiles, target = m.make_task(x)
    flat = tiles.flatten(0, 1)
    m.encoder.eval()
    fmap = spatial_map(m.encoder, flat)
    assert fmap.shape[:2] == (36, m.encoder.out_dim) and fmap.shape[2] > 1  # spatial, not pooled
    assert torch.allclose(fmap.mean((2, 3)), m.encoder(flat), atol=1e-5)  # the map the pooled feature averages
    m.train()
    logits = m.logits(tiles)
    assert logits.shape == (4, 10) and m.head[0].in_features == 9 * 16
    torch.nn.functional.cross_entropy(logits, target).backward()
    assert m.encoder.net.features[0][0].weight.grad.abs().sum() > 0  # the encoder learns through the fc
    assert m.encoder(x.float() / 255).shape == (4, m.encoder.out_dim)  # probed as before: whole images, pooled
    co = Cooccurrence(CooccurrenceConfig(patch_fc=8), SHAPE)
    assert co.logits(co.make_task(x)[0]).shape == (4, 2) and co.head[0].in_features == 16
    # off by default: the pooled features go to the head
    assert Jigsaw(JigsawConfig(permutations=10), SHAPE).tile_fc is None
    with pytest.raises(UnsupError, match="tile_fc"):
        Jigsaw(JigsawConfig(tile_fc=-1), SHAPE)
    with pytest.raises(UnsupError, match="patch_fc"):
        Cooccurrence(CooccurrenceConfig(patch_fc=-1), SHAPE)


def test_crop_resize_random_scale():
    """crop_min > 0: each image's crop side is drawn in [crop_min, crop_frac]; 0: one fixed side."""
    from unsup.methods.pretext.patches import crop_resize

    torch.manual_seed(0)
    ramp = torch.linspace(0, 1, 64).expand(64, 1, 64, 64).contiguous()  # value = horizontal position
    span = lambda out: out[:, 0, 0, -1] - out[:, 0, 0, 0]  # noqa: E731  (about the crop side)
    fixed = span(crop_resize(ramp, 32, 0.8))
    assert torch.allclose(fixed, fixed[0].expand(64), atol=1e-4) and abs(float(fixed[0]) - 0.8) < 0.05
    varied = span(crop_resize(ramp, 32, 0.9, crop_min=0.4))
    assert varied.min() > 0.35 and varied.max() < 0.95 and varied.max() - varied.min() > 0.3
    with pytest.raises(UnsupError, match="crop_min"):
        Jigsaw(JigsawConfig(crop_min=0.95), SHAPE)


def test_stereo_grounded_objects_stand_on_the_plane(fm):
    """grounded=True: an object's disparity is the plane's at its foot row (within a pixel), so over the
    background drawn at the same place it rises at most by the plane's slope over the object's height;
    free objects (the default) stand anywhere in front, often far nearer."""
    objects = fm.images[:64]
    def lift(grounded):
        torch.manual_seed(0)  # the same draws with blank objects give the bare background
        bare = render_stereo(torch.zeros_like(objects), texture_bank(), 48, 16, 2, grounded=grounded)[2]
        torch.manual_seed(0)
        disp = render_stereo(objects, texture_bank(), 48, 16, 2, grounded=grounded)[2]
        return disp - bare
    bound = 0.4 * 15 * (1.3 * 28 / 48) + 1  # the steepest slope over the tallest object, plus the pixel
    grounded, free = lift(True), lift(False)
    assert grounded.min() > -0.2 and grounded.max() <= bound
    assert free.max() > bound + 2


def test_family_metrics_pretext_accuracy_and_the_motorcycle_pair(fm, fm_small, tmp_path):
    from unsup.train.loop import TrainContext, train_loop

    torch.manual_seed(0)
    m = Rotation(RotationConfig(batch_size=64), SHAPE)
    train_loop(m, fm, "1600", TrainContext(quiet=True))
    got = m.family_metrics(fm_small, "cpu")
    assert set(got) == {"pretext_accuracy", "pretext_chance"} and got["pretext_chance"] == 0.25
    assert got["pretext_accuracy"] > 0.4  # 25 steps learn the rotation well above chance (0.67)
    state = torch.get_rng_state()
    assert m.family_metrics(fm_small, "cpu") == got and torch.equal(torch.get_rng_state(), state)  # seeded, state kept

    run = unsup.pretrain("stereo", data="fashion-mnist", budget="64", out=tmp_path / "s", quiet=True, monitor=False,
                         options={"batch_size": 32}, figures=False)
    from unsup.run import load_method

    st = load_method(run, whole=True).eval().family_metrics("fashion-mnist", "cpu")
    assert set(st) == {"motorcycle_l1", "motorcycle_l1_no_shift", "motorcycle_l1_best_shift", "motorcycle_l1_vs_best_shift",
                       "motorcycle_rho"} and all(np.isfinite(v) for v in st.values())
    assert st["motorcycle_l1_best_shift"] < st["motorcycle_l1_no_shift"] and -1 <= st["motorcycle_rho"] <= 1
    assert st["motorcycle_l1_vs_best_shift"] == pytest.approx(st["motorcycle_l1"] / st["motorcycle_l1_best_shift"])
