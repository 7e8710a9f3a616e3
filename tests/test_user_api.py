"""The Python API on a user's own objects: a tensor of images, a torch
Dataset, a backbone nn.Module, features for scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import unsup
from unsup.errors import UnsupError


class TinyNet(nn.Module):
    """A user's backbone: any module with an integer out_dim."""

    def __init__(self, channels: int = 1):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out_dim = 16

    def forward(self, x):
        return self.body(x)


class PairDataset(torch.utils.data.Dataset):
    """torchvision-style items: a float (C, H, W) tensor in [0, 1] and an int label."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i].float() / 255, int(self.labels[i])


@pytest.fixture(scope="module")
def fm_tensors(fm_small):
    d = np.load(fm_small)
    return (torch.from_numpy(d["images"][:, None]), torch.from_numpy(d["labels"]).long(),
            torch.from_numpy(d["test_images"][:, None]), torch.from_numpy(d["test_labels"]).long())


def test_as_dataset_converts_tensors_arrays_and_datasets(fm_tensors):
    from unsup.user import as_dataset

    x, y, _, _ = fm_tensors
    a = as_dataset(x[:50], y[:50])
    b = as_dataset(x[:50].float() / 255)  # floats in [0, 1] are scaled back exactly
    c = as_dataset(PairDataset(x[:50], y[:50]))
    d = as_dataset(x[:50, 0].numpy())  # (N, H, W) array: one channel
    assert torch.equal(a.images, b.images) and torch.equal(a.images, c.images) and torch.equal(a.images, d.images)
    assert torch.equal(c.labels, y[:50]) and b.labels is None
    for bad, words in [(x[:5].float() * 2, "[0, 1]"), (torch.full((4, 1, 8, 8), float("nan")), "NaN"), (x[:5, 0, 0], "shape"),
                       ((x[:5], y[:4]), "labels"), ((x[:5], -y[:5] - 1), "0 or more"), ("not images".split(), "cannot use")]:
        with pytest.raises(UnsupError, match=words.replace("[", r"\[").replace("]", r"\]")):
            as_dataset(bad)


def test_pretrain_on_a_tensor_with_a_user_backbone_then_sklearn(fm_tensors, tmp_path):
    from sklearn.linear_model import LogisticRegression

    x, y, tx, ty = fm_tensors
    net = TinyNet()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    run = unsup.pretrain("rotation", data=x, budget="256", out=tmp_path / "run", backbone=net, quiet=True,
                         figures=False, monitor=False, options={"batch_size": 64}, tensorboard=False)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items()), "the user's module is not trained in place"
    with pytest.raises(UnsupError, match="backbone="):
        unsup.load_encoder(run)
    encoder = unsup.load_encoder(run, backbone=TinyNet())
    assert isinstance(encoder.net, TinyNet)
    trained = dict(encoder.net.state_dict())
    assert any(not torch.equal(trained[k], before[k]) for k in before), "pretraining changed no weight"
    f_train, f_test = unsup.features(encoder, x[:1000]), unsup.features(encoder, tx)
    assert f_train.shape == (1000, 16) and f_train.dtype == np.float32
    acc = LogisticRegression(max_iter=500).fit(f_train, y[:1000].numpy()).score(f_test, ty.numpy())
    assert acc > 0.3  # ten classes: chance is 0.1


def test_probe_run_on_user_sets_with_a_user_backbone(fm_tensors, tmp_path):
    x, y, tx, ty = fm_tensors
    run = unsup.pretrain("rotation", data=PairDataset(x, y), budget="256", out=tmp_path / "run", backbone=TinyNet(),
                         quiet=True, figures=False, monitor=False, options={"batch_size": 64}, tensorboard=False)
    with pytest.raises(UnsupError, match="train= and test="):
        unsup.probe_run(run, backbone=TinyNet())
    result = unsup.probe_run(run, budgets=(10,), seeds=1, train=(x, y), test=(tx, ty), backbone=TinyNet(), family_metrics=False)
    refs = result["references"]
    assert "supervised" not in refs and {"raw_pixels", "random_encoder"} <= set(refs)
    assert all(0.1 < r["accuracy_mean"] <= 1 for r in result["results"])
    # the random reference redraws the user's module: three different inits
    by_init = refs["random_encoder"][0]["accuracies_by_init"]
    assert len(by_init) == 3 and len({tuple(a) for a in by_init}) > 1


def test_backbone_refused_where_the_method_builds_its_own_encoder(fm_tensors, tmp_path):
    x, *_ = fm_tensors
    with pytest.raises(UnsupError, match="builds its own encoder"):
        unsup.pretrain("kmeans", data=x, budget="256", out=tmp_path / "km", backbone=TinyNet(), quiet=True)
    with pytest.raises(UnsupError, match="out_dim"):
        unsup.pretrain("rotation", data=x, budget="256", out=tmp_path / "r", backbone=nn.Linear(3, 3), quiet=True)
