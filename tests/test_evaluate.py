"""The evaluation protocol: k-NN, linear probe with cross-validated L2, the
row format, and the cached supervised reference."""

from __future__ import annotations

import json

import pytest
import torch

from unsup.data import load
from unsup.errors import UnsupError
from unsup.evaluate import evaluate_features, linear, supervised
from unsup.evaluate.knn import knn_accuracy
from unsup.evaluate.linear import DEFAULT_L2, L2_GRID, choose_l2, linear_probe_accuracy
from unsup.evaluate.protocol import reference_cache, supervised_rows


def blobs(n_per_class: int, classes: int = 4, dim: int = 16, spread: float = 0.3, seed: int = 0):
    """Gaussian blobs around fixed class centres; ``seed`` draws the points."""
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(123)) * 2
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(classes).repeat_interleave(n_per_class)
    return centres[y] + spread * torch.randn(len(y), dim, generator=g), y


def test_knn_on_separable_and_shuffled_labels():
    x, y = blobs(50)
    xt, yt = blobs(20, seed=1)
    assert knn_accuracy(x, y, xt, yt, 4) > 0.95
    shuffled = y[torch.randperm(len(y))]
    assert knn_accuracy(x, shuffled, xt, yt, 4) < 0.6


def test_linear_probe_separable_and_cv_inside_labelled_set():
    x, y = blobs(30, spread=0.5)
    xt, yt = blobs(30, spread=0.5, seed=1)
    acc, l2 = linear_probe_accuracy(x, y, xt, yt, 4)
    assert acc > 0.95 and l2 in L2_GRID
    # one image per class: no fold can hold a class out, so the default is used
    one = torch.tensor([0, 30, 60, 90])
    assert choose_l2(x[one], y[one], 4) == DEFAULT_L2


def test_cv_prefers_strong_regularisation_for_noisy_high_dim_features():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(2).repeat_interleave(10)
    x = torch.randn(20, 500, generator=g)
    x[:, 0] += (y * 2 - 1) * 1.5  # one informative dimension among 500 noisy ones
    assert choose_l2(x, y, 2) >= 1e-2


def test_rows_have_the_protocol_schema():
    x, y = blobs(120, classes=3)
    xt, yt = blobs(30, classes=3, seed=1)
    rows = evaluate_features(x, y, xt, yt, 3, budgets=(1, 10, "all"), seeds=2)
    assert [(r["labels_per_class"], r["classifier"]) for r in rows] == [
        (1, "linear"), (1, "knn"), (10, "linear"), (10, "knn"), ("all", "linear"), ("all", "knn")]
    for r in rows:
        assert set(r) >= {"labels_per_class", "classifier", "accuracy_mean", "accuracy_std", "seeds"}
        assert 0 <= r["accuracy_mean"] <= 1 and r["accuracy_std"] >= 0
        assert r["seeds"] == ([0] if r["labels_per_class"] == "all" else [0, 1])
    assert rows[-2]["accuracy_mean"] > 0.9
    # the label draws probed side by side (two threads) give the rows of one after another
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one_by_one = evaluate_features(x, y, xt, yt, 3, budgets=(1, 10, "all"), seeds=2)
        torch.set_num_threads(2)
        assert evaluate_features(x, y, xt, yt, 3, budgets=(1, 10, "all"), seeds=2) == one_by_one
    finally:
        torch.set_num_threads(threads)


def test_supervised_reference_learns_is_cached_and_runs_in_parallel_workers(fm_small, monkeypatch):
    train, test = load(fm_small, "train"), load(fm_small, "test")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # two workers even where the tests run single-threaded
    rows = supervised_rows(train, test, (10,), 2, "small-convnet", max_steps=60)
    assert rows[0]["classifier"] == "supervised" and rows[0]["seeds"] == [0, 1]
    assert min(rows[0]["accuracies"]) > 0.25  # 100 labelled images, far above chance (0.1)
    files = sorted(reference_cache().glob("supervised-*.json"))
    assert len(files) == 2  # each worker trained its own run and cached it
    for f in files:  # a cached run is read back, not trained again
        cached = json.loads(f.read_text())
        cached["rows"]["accuracy"] = 0.123
        f.write_text(json.dumps(cached))
    again = supervised_rows(train, test, (10,), 2, "small-convnet", max_steps=60)
    assert again[0]["accuracies"] == [0.123, 0.123] and again[0]["source"] == "cache"


def test_supervised_length_is_chosen_without_the_test_split(fm_small):
    """Poisoned test labels change the score, never the chosen length."""
    train, test = load(fm_small, "train"), load(fm_small, "test")
    narrow = {"backbone_options": {"width": 8}}  # how the length is chosen does not depend on the width: 10x faster
    clean = supervised.supervised_reference(train, test, 25, 0, max_steps=80, **narrow)  # a hold-out of 5 per class
    poisoned = type(test)(test.name, test.images, (test.labels + 1) % 10, test.classes)
    bad = supervised.supervised_reference(train, poisoned, 25, 0, max_steps=80, **narrow)
    assert clean["length"] == "chosen on the hold-out" and clean["refit_on_all_labels"]
    assert (bad["steps"], bad["drops_at"], bad["history"]) == (clean["steps"], clean["drops_at"], clean["history"])
    assert bad["accuracy"] < clean["accuracy"] - 0.2
    # one label per class: no hold-out exists, so the fixed length is used
    one = supervised.supervised_reference(train, test, 1, 0, max_steps=20, **narrow)
    assert one["length"].startswith("fixed") and one["steps"] == 20
    # a hold-out of 2 per class under a recipe that asks for 5: the fixed length, no hold-out readings
    recipe = supervised.Recipe(min_holdout_per_class=5, fixed_steps=15)
    few = supervised.supervised_reference(train, test, 10, 0, max_steps=80, recipe=recipe, **narrow)
    assert few["length"] == "fixed (a hold-out under 5 images per class)" and few["steps"] == 15 and "history" not in few
    # 10 labels per class hold out 2 of each: too few to stop on, so the default is the fixed length there too
    ten = supervised.supervised_reference(train, test, 10, 0, max_steps=30, **narrow)
    assert ten["length"] == "fixed (a hold-out under 5 images per class)" and ten["steps"] == 30
    per_class = lambda n: torch.arange(10).repeat_interleave(n)  # noqa: E731
    assert [supervised.recipe_for(per_class(n)) for n in (1, 10, 22, 23, 100, 1001)] == [
        supervised.SMALL_SET_RECIPE] * 3 + [supervised.DEFAULT_RECIPE] * 2 + [supervised.LARGE_SET_RECIPE]
    # the setting enters the cache key only when it is not the default, so keys made before it stay valid
    assert "min_holdout_per_class" not in supervised.DEFAULT_RECIPE.settings()
    assert recipe.settings()["min_holdout_per_class"] == 5



def test_a_cosine_recipe_decays_to_zero_and_the_vit_gets_its_own_large_set_recipe(fm_small):
    train, test = load(fm_small, "train"), load(fm_small, "test")
    recipe = supervised.Recipe(schedule="cosine", batch_size=32, warmup_steps=5)
    run = supervised.supervised_reference(train, test, 25, 0, max_steps=40, recipe=recipe, backbone_options={"width": 8})
    rates = [h["lr"] for h in run["history"]]
    # read at every pass (25 steps) and at the last step, where the rate has decayed to 0; no rate drops
    assert [h["step"] for h in run["history"]] == [25, 40] and rates[0] > 0 and rates[-1] == 0.0
    assert run["drops_at"] == [] and run["schedule_steps"] == 40 and run["refit_on_all_labels"]
    assert run["accuracy"] > 0.25  # 250 labelled images: far above chance (0.1)
    # the added settings enter a key only when they are not the default, so keys made before them stay valid
    assert not {"batch_size", "schedule"} & set(supervised.LARGE_SET_RECIPE.settings())
    assert recipe.settings()["schedule"] == "cosine" and recipe.settings()["batch_size"] == 32
    with pytest.raises(UnsupError, match="unknown supervised schedule 'cosin'"):
        supervised.Recipe(schedule="cosin")
    many = torch.arange(10).repeat_interleave(1001)
    assert supervised.recipe_for(many, "vit-tiny") == supervised.VIT_LARGE_SET_RECIPE
    assert supervised.recipe_for(many) == supervised.LARGE_SET_RECIPE
    assert supervised.recipe_for(torch.arange(10).repeat_interleave(100), "vit-tiny") == supervised.DEFAULT_RECIPE

def test_large_labelled_sets_search_l2_on_a_subset_and_rescale(monkeypatch):

    monkeypatch.setattr(linear, "CV_SUBSET", 200)
    x, y = blobs(100, spread=0.5)  # 400 labelled images, over the (patched) subset size
    seen = []
    real = linear._folds
    monkeypatch.setattr(linear, "_folds", lambda yy, seed: seen.append(len(yy)) or real(yy, seed))
    l2 = linear.choose_l2(x, y, 4)
    assert seen == [200]  # the grid search saw the subset only
    assert any(abs(l2 - g * 200 / 400) < 1e-12 for g in L2_GRID)


def test_row_space_fit_equals_the_full_fit_when_features_outnumber_labels(monkeypatch):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(3).repeat_interleave(8)
    x = torch.randn(24, 300, generator=g)
    x[:, :3] += torch.nn.functional.one_hot(y, 3) * 2.0
    xt = torch.randn(50, 300, generator=g)
    rx, rxt = linear.row_space(x, xt)
    assert rx.shape == (24, 24) and rxt.shape == (50, 24)
    w, b = linear.fit_logistic(x, y, 3, 1e-2)
    rw, rb = linear.fit_logistic(rx, y, 3, 1e-2)
    assert torch.allclose(xt @ w + b, rxt @ rw + rb, atol=1e-2)  # float32 convergence tolerance
    # the whole probe (CV included) gives the same answer with and without the reduction
    yt = torch.randint(0, 3, (50,), generator=g)
    reduced = linear.linear_probe_accuracy(x, y, xt, yt, 3)
    monkeypatch.setattr(linear, "row_space", lambda a, b: (a, b))
    assert linear.linear_probe_accuracy(x, y, xt, yt, 3) == reduced


def test_logistic_fit_reaches_the_autograd_optimum_and_warm_starts():
    """The written-out gradient is the autograd one: the fit's objective has zero
    gradient under autograd, and a warm start lands on the same optimum."""
    x, y = blobs(30, spread=2.0)
    for l2 in (1e-3, 1e-1):
        w, b = linear.fit_logistic(x, y, 4, l2)
        w, b = w.clone().requires_grad_(True), b.clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(x @ w + b, y) + l2 * (w * w).sum()
        gw, gb = torch.autograd.grad(loss, (w, b))
        assert gw.abs().max() < 1e-3 and gb.abs().max() < 1e-3
        warm = linear.fit_logistic(x, y, 4, l2, init=linear.fit_logistic(x, y, 4, 10 * l2))
        assert torch.allclose(warm[0], w.detach(), atol=1e-2)


@pytest.mark.parametrize("backbone", ["small-convnet", "resnet18"])  # Sequential pairs; ResNet blocks (traced)
def test_features_fold_batchnorm_without_changing_them(fm_small, backbone):
    from unsup.evaluate.features import extract_features, fold_batchnorm
    from unsup.nets import build_encoder

    torch.manual_seed(0)
    enc = build_encoder(backbone, 1, 28)
    for m in enc.modules():  # non-trivial running statistics, as after training
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    images = load(fm_small, "test").images[:64]
    folded = fold_batchnorm(enc)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in enc.modules())  # the encoder itself is untouched
    with torch.no_grad():
        expected = enc.eval()(images.float() / 255)
    assert torch.allclose(extract_features(enc, images, batch_size=16), expected, atol=1e-4)
