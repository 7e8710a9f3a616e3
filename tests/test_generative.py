"""Generative family: the nets, the adversarial steps, divergence detection,
the sample-quality metrics, the semi-supervised and conditional pieces."""

from __future__ import annotations

import math

import pytest
import torch

from unsup.data import load
from unsup.errors import UnsupError
from unsup.evaluate.generative import fcd, frechet_distance, reference_classifier
from unsup.registry import get_method
from unsup.run import load_method
from unsup.train.loop import TrainContext, train_loop

TINY = {"g_width": 8, "d_width": 8, "batch_size": 32}
GANS = ["dcgan", "improved-gan", "infogan", "bigan", "text-to-image-gan"]


def make(name: str, shape=(1, 28, 28), **options):
    cls = get_method(name)
    opts = {**TINY, **options}
    if name == "bigan":
        opts["e_width"] = 8
    return cls(cls.Config(**opts), shape)


@pytest.fixture(scope="module")
def fm(fm_small):
    return load(fm_small, "train"), load(fm_small, "test")


def test_frechet_distance_matches_closed_form():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4000, 3, generator=g)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    # N(0, I) vs N(mu, 4I): |mu|^2 + tr(I + 4I - 2*2I) = |mu|^2 + 3
    b = torch.randn(4000, 3, generator=g) * 2 + torch.tensor([1.0, 2.0, 0.0])
    assert frechet_distance(a, b) == pytest.approx(5.0 + 3.0, rel=0.08)
    with pytest.raises(UnsupError, match="at least 2 samples"):
        frechet_distance(a[:1], b)


def test_hungarian_accuracy_ignores_code_names():
    from unsup.methods.generative.infogan import hungarian_accuracy

    labels = torch.arange(10).repeat(20)
    perm = torch.randperm(10)
    assert hungarian_accuracy(perm[labels], labels) == 1.0
    noisy = perm[labels].clone()
    noisy[:50] = 0
    assert 0.7 < hungarian_accuracy(noisy, labels) < 1.0


@pytest.mark.parametrize("name", GANS)
def test_every_gan_trains_and_draws(name, fm, tmp_path):
    train, test = fm
    torch.manual_seed(0)
    m = make(name)
    out = train_loop(m, train, "320", TrainContext(quiet=True))
    assert out["step"] == 10 and math.isfinite(out["d_loss"]) and math.isfinite(out["g_loss"])
    x = torch.rand(5, 1, 28, 28)
    assert m.encoder(x).shape == (5, m.encoder.out_dim)
    s = m.sample(6)
    assert s.shape == (6, 1, 28, 28) and 0 <= float(s.min()) and float(s.max()) <= 1
    paths = m.figures(test, tmp_path)
    assert {"samples.png", "interpolation.png"} <= {p.name for p in paths}
    assert all(p.is_file() and p.stat().st_size > 100 for p in paths)


def test_dcgan_encoder_pools_every_layer_to_4x4():
    m = make("dcgan", d_width=8)
    assert m.encoder.out_dim == (8 + 16 + 32) * 16
    m32 = make("dcgan", shape=(3, 32, 32))
    assert m32.sample(2).shape == (2, 3, 32, 32) and m32.encoder(torch.rand(2, 3, 32, 32)).shape[1] == m32.encoder.out_dim
    with pytest.raises(UnsupError, match="divisible by 4"):
        make("dcgan", shape=(1, 30, 30))


def test_discriminator_collapse_stops_training_with_a_clear_error(fm):
    train, _ = fm
    m = make("dcgan", collapse_loss=1e9, collapse_steps=3)  # every step counts as collapsed
    with pytest.raises(UnsupError, match=r"training diverged.*d_loss_below"):
        train_loop(m, train, "640", TrainContext(quiet=True))


def test_pretrain_roundtrip_and_fcd_separates_real_from_noise(fm_small, tmp_path):
    import unsup

    train, test = load(fm_small, "train"), load(fm_small, "test")
    torch.manual_seed(0)
    run = unsup.pretrain("dcgan", data=fm_small, budget="320", out=tmp_path / "run", quiet=True, monitor=False,
                         options={"g_width": 8, "d_width": 8})
    assert (run / "figures" / "arithmetic.png").is_file()
    m = load_method(run, whole=True).eval()
    enc = unsup.load_encoder(run)
    x = test.images[:8].float() / 255
    assert torch.allclose(enc(x), m.encoder(x), atol=1e-5)
    clf = reference_classifier(train, epochs=2)
    assert float((clf(test.images.float() / 255).argmax(1) == test.labels).float().mean()) > 0.7
    untrained = make("dcgan").eval()
    real_vs_real = fcd(clf, train.images[:800], test.images[:800])
    assert real_vs_real < 0.2 * fcd(clf, untrained.sample(800), test.images[:800])


def test_improved_gan_learns_from_its_labelled_subset(fm):
    train, test = fm
    torch.manual_seed(0)
    m = make("improved-gan", labels_per_class=20, seed=1, d_width=16, g_width=16, batch_size=64)
    train_loop(m, train, "6400", TrainContext(quiet=True))
    assert len(m._lab_y) == 200 and torch.equal(torch.bincount(m._lab_y), torch.full((10,), 20))
    assert m.test_error(test) < 0.5  # chance is 0.9


def test_improved_gan_has_the_papers_discriminator_and_k_plus_1_loss():
    from unsup.methods.generative.improved_gan import unsupervised_loss

    m = make("improved-gan")
    assert not any(isinstance(x, torch.nn.modules.batchnorm._BatchNorm) for x in m.disc.modules())
    assert sum(hasattr(x, "parametrizations") for x in m.disc.modules()) == 4  # 3 convs + the head, weight-normalised
    assert any(isinstance(x, torch.nn.modules.batchnorm._BatchNorm) for x in make("improved-gan", d_norm="batch").disc.modules())
    with pytest.raises(UnsupError, match="d_norm"):
        make("improved-gan", d_norm="layer")
    real, fake = torch.randn(6, 10), torch.randn(6, 10)
    z_r, z_f = real.exp().sum(1), fake.exp().sum(1)  # D = Z / (Z + 1)
    want = -(z_r / (z_r + 1)).log().mean() - (1 - z_f / (z_f + 1)).log().mean()
    assert float(unsupervised_loss(real, fake)) == pytest.approx(float(want), rel=1e-5)


def test_improved_gan_mlp_is_the_papers_mnist_model(fm):
    from unsup.methods.generative.improved_gan import PAPER_MNIST, WNLinear

    train, _ = fm
    m = make("improved-gan", **PAPER_MNIST)
    x = torch.rand(7, 1, 28, 28) * 2 - 1
    logits, feats = m.disc(x)
    assert logits.shape == (7, 10) and [f.shape[1] for f in feats] == [1000, 500, 250, 250, 250]
    assert m.encoder(torch.rand(7, 1, 28, 28)).shape == (7, m.encoder.out_dim) == (7, 2250)
    wn = [x for x in m.disc.modules() if isinstance(x, WNLinear)]
    assert [w.g.requires_grad for w in wn] == [False] * 5 + [True]  # hidden scales fixed by the data init; the head's trained
    z = m.sample_latent(500, "cpu")
    assert z.shape == (500, 100) and 0 <= float(z.min()) and float(z.max()) <= 1  # the paper's uniform noise
    img = m.gen(z).detach()
    assert img.shape == (500, 1, 28, 28) and -1 <= float(img.min()) and float(img.max()) <= 1
    # the data-dependent init: pre-activations of the init batch get zero mean and unit std
    lin, xs = WNLinear(20, 8, train_scale=False), torch.randn(300, 20) * 3 + 1
    lin.data_init(xs)
    t = lin(xs).detach()
    assert torch.allclose(t.mean(0), torch.zeros(8), atol=1e-4) and torch.allclose(t.std(0, unbiased=False), torch.ones(8), atol=1e-4)
    assert not bool(m.initialised) and float(m.disc.trunk.layers[0].b.abs().sum()) == 0
    m.on_epoch_start(train, 0)  # draws the labelled subset and initialises D on 500 training images
    assert bool(m.initialised) and float(m.disc.trunk.layers[0].b.abs().sum()) > 0
    w0 = wn[0]
    # a resumed model keeps its weights: no second init
    m2 = make("improved-gan", **PAPER_MNIST)
    m2.load_state_dict(m.state_dict())
    m2.on_epoch_start(train, 0)
    assert torch.equal(m2.disc.trunk.layers[0].b, w0.b)
    with pytest.raises(UnsupError, match="arch"):
        make("improved-gan", arch="resnet")
    with pytest.raises(UnsupError, match="ema_rate"):
        make("improved-gan", arch="mlp", ema_rate=1.0)


def test_improved_gan_mlp_learns_and_averages_its_discriminator(fm, tmp_path):
    from unsup.methods.generative.improved_gan import PAPER_MNIST

    train, test = fm
    torch.manual_seed(0)
    m = make("improved-gan", **{**PAPER_MNIST, "ema_rate": 0.05}, labels_per_class=20, seed=1)
    out = train_loop(m, train, "6000", TrainContext(quiet=True))
    assert out["step"] == 60 and int(m.ema_steps) == 60
    assert m.test_error(test) < 0.5  # chance is 0.9
    avg, live = m.test_disc(), m.disc
    assert avg is not live and not torch.allclose(avg.head.b, live.head.b)
    m.cfg.ema_rate = 0.0  # the live D predicts then
    assert m.test_disc() is live and m.test_error(test) < 0.5
    s = m.sample(6)
    assert s.shape == (6, 1, 28, 28) and 0 <= float(s.min()) and float(s.max()) <= 1
    assert {p.name for p in m.figures(test, tmp_path)} == {"samples.png", "interpolation.png"}


def test_semi_supervised_and_conditional_gans_refuse_bad_data(fm):
    train, _ = fm
    unlabeled = type(train)(train.name, train.images, None, [])
    for name in ("improved-gan", "text-to-image-gan"):
        with pytest.raises(UnsupError, match="label"):
            make(name).on_epoch_start(unlabeled, 0)
        with pytest.raises(UnsupError, match="num_classes=10"):
            make(name, num_classes=5).on_epoch_start(train, 0)


def test_infogan_q_recovers_the_categorical_code(fm):
    train, test = fm
    torch.manual_seed(0)
    m = make("infogan", d_width=16, g_width=16)
    out = train_loop(m, train, "4800", TrainContext(quiet=True))
    assert out["q_code_acc"] > 0.5  # chance 0.1  # Q reads the code of generated images: the mutual-information term works
    assert 0.1 <= m.code_accuracy(test.images, test.labels) <= 1.0


def test_infogan_factored_continuous_code():
    torch.manual_seed(0)
    m = make("infogan", continuous_nll="factored")
    assert m.q[-1].out_features == 10 + 2 * 2  # categorical logits, then mean and log-std of each continuous code
    latent = m.sample_latent(16, "cpu")
    loss, _ = m.info_loss(m.disc(m.gen(latent))[1], latent)
    assert math.isfinite(loss.item()) and loss.requires_grad
    with pytest.raises(UnsupError, match="continuous_nll"):
        make("infogan", continuous_nll="laplace")
    with pytest.raises(UnsupError, match="z_prior"):
        make("infogan", z_prior="laplace")


def test_infogan_official_prior_and_nets():
    torch.manual_seed(0)
    m = make("infogan")
    latent = m.sample_latent(2000, "cpu")
    z, onehot, cont = latent[:, :62], latent[:, 62:72], latent[:, 72:]
    assert z.abs().max() <= 1 and z.min() < -0.9 and z.max() > 0.9 and abs(float(z.mean())) < 0.05  # U[-1, 1]
    assert (onehot.sum(1) == 1).all() and cont.abs().max() <= 1
    seeded = [m.sample_latent(4, "cpu", torch.Generator().manual_seed(5)) for _ in range(2)]
    assert torch.equal(*seeded)
    # D: conv trunk -> shared fc 1024 BN LeakyReLU -> logit; Q: fc 128 BN LeakyReLU -> codes, both on the shared layer
    fc = m.disc.shared[1]
    assert fc.out_features == 1024 and m.disc.head.in_features == 1024 and m.q[0].in_features == 1024
    assert isinstance(m.q[1], torch.nn.BatchNorm1d) and m.q[-1].out_features == 10 + 2
    # old model (fifth session) still reachable: Q without batch norm on the last conv layer
    old = make("infogan", z_prior="gaussian", d_hidden=0, q_bn=False, fc_leak=0.2, continuous_weight=0.1)
    assert old.q[0].in_features == old.disc.head.in_features == 4 * 8 * 4 * 4
    assert not any(isinstance(x, torch.nn.BatchNorm1d) for x in old.q)


def test_infogan_q_batch_norm_keeps_real_statistics():
    torch.manual_seed(0)
    m = make("infogan")
    real = torch.rand(32, 1, 28, 28) * 2 - 1
    bn = m.q[1]
    before = bn.running_mean.clone()
    with torch.no_grad():
        m._latent = m.sample_latent(32, "cpu")
        m._fake = m.gen(m._latent)
        m.g_step_loss(real, None)  # generated batch only: running statistics untouched
    assert torch.equal(bn.running_mean, before)
    with torch.no_grad():
        m.d_step_loss(real, None)  # the real batch moves them
        h = m.disc.features(real)  # train mode: batch statistics, as in the step
        expected = 0.9 * before + 0.1 * m.q[0](h).mean(0)
    assert torch.allclose(bn.running_mean, expected, atol=1e-5)


def test_text_descriptions_and_matching_attributes(fm):
    from unsup.methods.generative.text_to_image_gan import TextToImageGAN, tokenize

    train, _ = fm
    assert TextToImageGAN.description("Ankle boot", True, True) == "a small dark ankle boot"
    a, b = tokenize("a small dark ankle boot", 6, 512), tokenize("a large dark ankle boot", 6, 512)
    assert a[0] == 0 and a[1] == b[1] and a[2] != b[2] and a[3:] == b[3:]  # left padding; only 'small' differs
    m = make("text-to-image-gan")
    m.on_epoch_start(train.subset(torch.arange(1000)), 0)
    x = train.images[:1000].float() / 255
    small, dark = m.attributes(x, train.labels[:1000])
    assert 0.3 < float(small.float().mean()) < 0.7 and 0.3 < float(dark.float().mean()) < 0.7  # medians split classes
    assert len({tuple(r) for r in m.desc_tokens.tolist()}) == 40


def test_family_metrics_of_every_gan(fm, fm_small):
    """Each GAN's family numbers on the held-out split of the data it trained on; the reference classifier
    is trained once (on the small set) and shared through the cache."""
    train, test = fm
    want = {"dcgan": {"fcd"}, "bigan": {"fcd"}, "infogan": {"fcd", "code_accuracy"},
            "text-to-image-gan": {"fcd", "named_class_accuracy", "size_word_holds", "brightness_word_holds"},
            "improved-gan": {"test_accuracy"}}
    for name in GANS:
        torch.manual_seed(0)
        m = make(name)
        train_loop(m, train, "96", TrainContext(quiet=True))
        m.fcd_samples = 500
        got = m.family_metrics(fm_small, "cpu")
        assert set(got) == want[name] and all(math.isfinite(v) for v in got.values()), (name, got)
        assert all(0 <= v <= 1 for k, v in got.items() if k != "fcd")
        if name == "improved-gan":
            assert got["test_accuracy"] == pytest.approx(1 - m.test_error(test))
        else:  # three steps of training: samples far from the test images, real training images close to them
            clf = reference_classifier(train)
            assert got["fcd"] > 5 * fcd(clf, train.images[:1000], test.images)
