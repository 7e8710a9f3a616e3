"""Direct-mapping methods: sparse coding (FISTA, unit-norm atoms, Gabor
scoring, natural images), the autoencoder family, greedy stacked
autoencoders, and their refusals of bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import unsup
from unsup.data import load
from unsup.errors import UnsupError
from unsup.evaluate.gabor import gabor, gabor_fit_share
from unsup.methods.direct.sparse_coding import SparseCoding, SparseCodingConfig, fista, sparse_objective
from unsup.run import RunDir, load_method


def test_fista_recovers_sparse_codes():
    g = torch.Generator().manual_seed(0)
    dictionary = F.normalize(torch.randn(64, 32, generator=g), dim=1)  # 64 atoms in 32 dims
    codes = torch.zeros(200, 64)
    for i in range(200):
        codes[i, torch.randperm(64, generator=g)[:3]] = 2 + torch.rand(3, generator=g)
    x = codes @ dictionary
    a = fista(x, dictionary, lam=0.05, steps=300)
    assert sparse_objective(x, dictionary, a, 0.05) < 0.1 * sparse_objective(x, dictionary, torch.zeros_like(a), 0.05)
    support = (a.abs() > 0.5).float()
    assert (support == (codes > 0).float()).float().mean() > 0.97


def test_gabor_score_separates_gabors_from_noise():
    p = 8
    yy, xx = torch.meshgrid(torch.arange(p, dtype=torch.float64), torch.arange(p, dtype=torch.float64), indexing="ij")
    g = torch.Generator().manual_seed(0)
    params = [[1.0, 3.5, 3.2, 0.7, 0.2, 0.3, 1.5, 2.5, 0.0], [2.0, 4, 4, 2.0, 0.12, 1.0, 2, 1.2, 0.1],
              [1.0, 2.5, 4.5, -1.0, 0.3, 2.0, 1.2, 1.8, 0.0]]
    gabors = torch.stack([gabor(torch.tensor(q, dtype=torch.float64), yy, xx) for q in params])
    gabors = gabors + 0.03 * torch.randn(gabors.shape, generator=g, dtype=torch.float64)
    share, r2 = gabor_fit_share(torch.cat([gabors, torch.randn(20, p, p, generator=g, dtype=torch.float64)]))
    assert min(r2[:3]) > 0.9 and max(r2[3:]) < 0.8
    assert share == pytest.approx(3 / 23)


def test_natural_images_loader():
    tr, te = load("natural-images", "train"), load("natural-images", "test")
    assert tr.images.dtype == torch.uint8 and tr.shape == (1, 32, 32) and len(tr) > 400 and len(te) > 100
    assert "camera" in tr.classes and tr.images.float().std() > 20
    noise = load("natural-noise", "train")
    assert noise.shape == tr.shape and len(noise) == len(tr)
    # same amplitude spectrum, different image
    a, b = tr.images[0, 0].double(), noise.images[0, 0].double()
    assert not torch.equal(a, b)
    sa, sb = torch.fft.fft2(a - a.mean()).abs(), torch.fft.fft2(b - b.mean()).abs()
    assert float((sa - sb).norm() / sa.norm()) < 0.2


def test_sparse_coding_learns_and_beats_random(fm_small, tmp_path):
    out = tmp_path / "sc"
    opts = {"steps": 30, "num_atoms": 32, "num_patches": 5000, "batch_size": 256, "fista_steps": 20}
    unsup.pretrain("sparse-coding", data=fm_small, budget="3000", out=out, quiet=True, options=opts, monitor=False)
    m = load_method(out)
    atoms = m.encoder.atoms
    torch.testing.assert_close(atoms.norm(dim=1), torch.ones(32), rtol=1e-4, atol=1e-4)  # unit-norm atoms
    # the learned dictionary codes held-out whitened patches far more cheaply than random unit-norm atoms
    rows = m.random_patches(load(fm_small, "test").images, 2000, seed=5)
    x = (rows - m.encoder.mean) @ m.encoder.whiten
    rand = m.random_encoder().atoms
    learned = sparse_objective(x, atoms, fista(x, atoms, 1.0, 50), 1.0)
    assert learned < 0.9 * sparse_objective(x, rand, fista(x, rand, 1.0, 50), 1.0)
    assert (RunDir(out).figures_dir / "atoms.png").is_file()
    res = unsup.probe_run(out, budgets=(10,), seeds=2, supervised=False)
    acc = {r["classifier"]: r["accuracy_mean"] for r in res["results"]}
    rnd = {r["classifier"]: r["accuracy_mean"] for r in res["references"]["random_encoder"]}
    assert acc["linear"] > rnd["linear"]


def test_sparse_coding_on_natural_images_probes_fashion_mnist():
    m = SparseCoding(SparseCodingConfig(), (1, 32, 32))
    train, test = m.probe_datasets("natural-images")
    assert train.name == "fashion-mnist" and test.shape == (1, 28, 28)
    f = m.encoder(torch.rand(2, 1, 28, 28))
    assert f.shape == (2, m.encoder.out_dim) and (f >= 0).all()


FAST = {"batch_size": 64}


@pytest.mark.parametrize("method", ["autoencoder", "sparse-autoencoder"])
def test_autoencoders_loss_goes_down(fm_small, tmp_path, method):
    out = tmp_path / method
    unsup.pretrain(method, data=fm_small, budget="3200", out=out, quiet=True, options=FAST, monitor=False)
    logs = [r for r in RunDir(out).metrics() if "loss" in r]
    assert logs[-1]["loss"] < 0.9 * logs[0]["loss"]
    if method == "sparse-autoencoder":
        # the KL penalty pulls the mean activation of the sigmoid code towards rho = 0.05
        assert logs[-1]["kl"] < logs[0]["kl"] and logs[-1]["mean_activation"] < logs[0]["mean_activation"]
        assert load_method(out).encoder.out_dim == 256
    assert (RunDir(out).figures_dir / "reconstructions.png").is_file()


def test_stacked_autoencoder_greedy_layers(fm_small, tmp_path):
    out = tmp_path / "sae"
    opts = {"hidden": [128, 64], "batch_size": 32}
    unsup.pretrain("stacked-autoencoder", data=fm_small, budget="3000", out=out, quiet=True, options=opts, monitor=False)
    logs = [r for r in RunDir(out).metrics() if "layer" in r]
    assert [r["layer"] for r in logs] == [1, 2]
    assert all(r["loss"] < r["loss_first"] for r in logs)  # each layer learns to reconstruct its input codes
    m = load_method(out)
    assert m.encoder.out_dim == 64 and m.encoder.truncated(1).out_dim == 128
    x = torch.rand(3, 1, 28, 28)
    assert m.encoder.truncated(1)(x).shape == (3, 128) and m.encoder(x).shape == (3, 64)
    # greedy: training layer 2 leaves layer 1 frozen and changes layer 2 only
    from unsup.train.budget import parse_budget
    from unsup.train.loop import TrainContext

    w1, w2 = m.encoder.layers[0].weight.detach().clone(), m.encoder.layers[1].weight.detach().clone()
    images = load(fm_small, "train").images[:500]
    m.train_layer(1, images, parse_budget("640"), TrainContext(quiet=True))
    assert torch.equal(w1, m.encoder.layers[0].weight) and not torch.equal(w2, m.encoder.layers[1].weight)


def test_bad_input(tmp_path):
    with pytest.raises(UnsupError, match="patch size 40 is larger than the 28x28 images"):
        SparseCoding(SparseCodingConfig(patch_size=40), (1, 28, 28))
    flat = tmp_path / "flat.npz"
    np.savez(flat, images=np.zeros((30, 28, 28), np.uint8))
    for method in ("sparse-coding", "stacked-autoencoder"):
        with pytest.raises(UnsupError, match="empty or constant"):
            unsup.pretrain(method, data=str(flat), budget="30", out=tmp_path / method, quiet=True, monitor=False)
    with pytest.raises(UnsupError, match="option hidden .* must be a whole number in"):
        unsup.pretrain("stacked-autoencoder", data=str(flat), budget="30", out=tmp_path / "h", options={"hidden": [0]})


def test_sparse_coding_family_metrics_score_its_atoms_as_gabors(tmp_path):
    out = tmp_path / "sc-natural"
    opts = {"steps": 40, "num_atoms": 32, "num_patches": 5000, "batch_size": 256, "fista_steps": 20}
    unsup.pretrain("sparse-coding", data="natural-images", budget="1k", out=out, quiet=True, options=opts, monitor=False,
                   figures=False)
    m = load_method(out)
    got = m.family_metrics("natural-images", "cpu")
    assert set(got) == {"gabor_share", "gabor_median_r2"} and all(np.isfinite(v) for v in got.values())
    assert 0 <= got["gabor_share"] <= 1 and got["gabor_median_r2"] <= 1
    # atoms learnt on natural images are Gabor-like; random unit-norm atoms are not
    rand_share, _ = gabor_fit_share(m.random_encoder().atoms.view(-1, 8, 8))
    assert got["gabor_share"] > rand_share + 0.2
