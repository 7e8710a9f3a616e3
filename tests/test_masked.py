"""Backbone factories (small convnet, ResNet-18, ViT-tiny) and the masked
methods (mae, ijepa): shapes, options, masking, losses, EMA, the run
round trip and the ViT export. ViTs here are 2 blocks deep to stay fast."""

from __future__ import annotations

import json
from unittest import mock

import numpy as np
import pytest
import torch

import unsup
from unsup.errors import UnsupError
from unsup.export import export_encoder, sidecar
from unsup.methods.base import config_from_dict
from unsup.methods.masked.common import patchify, unpatchify
from unsup.methods.masked.ijepa import sample_masks
from unsup.methods.masked.mae import masked_patch_loss, random_masking
from unsup.nets import BACKBONES, backbone_options, build_encoder
from unsup.nets.vit import patch_size_for
from unsup.registry import get_method

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")

SHALLOW = {"depth": 2}
SHAPE = (1, 28, 28)


def make(name: str, **options):
    cls = get_method(name)
    opts = {"backbone_options": {**cls.Config().backbone_options, **SHALLOW}, **options}
    return cls(config_from_dict(cls.Config, opts), SHAPE)


@pytest.fixture(scope="module")
def batch(fm_small) -> torch.Tensor:
    """16 real training images, uint8 (16, 1, 28, 28)."""
    return torch.from_numpy(np.load(fm_small)["images"][:16, None].copy())


# --- backbones ----------------------------------------------------------------
@pytest.mark.parametrize("name", ["small-convnet", "resnet18", "vit-tiny"])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [28, 32])
def test_factories_give_pooled_and_unpooled_features(name, channels, size):
    enc = build_encoder(name, channels, size, {"depth": 1} if name == "vit-tiny" else None)
    x = torch.rand(2, channels, size, size)
    with torch.no_grad():
        pooled, unpooled = enc(x), enc.forward_features(x)
    assert pooled.shape == (2, enc.out_dim)
    if name == "vit-tiny":
        assert enc.out_dim == 192 and unpooled.shape == (2, 1 + (size // 4) ** 2, 192)  # class token + 4x4 patches
    else:
        assert unpooled.ndim == 4 and unpooled.shape[:2] == (2, enc.out_dim)


def test_every_backbone_is_in_the_one_table_and_builds():
    assert set(BACKBONES) == {"small-convnet", "single-layer", "resnet18", "vit-tiny", "frame-convnet", "prednet"}
    assert build_encoder("frame-convnet", 1, 64).forward_features(torch.rand(2, 1, 64, 64)).shape == (2, 64, 8, 8)
    assert build_encoder("prednet", 1, 32)(torch.rand(2, 1, 32, 32)).shape[0] == 2


def test_backbone_options_are_checked_and_defaults_dropped():
    assert backbone_options("vit-tiny", {"depth": 12, "pool": "avg"}) == {"pool": "avg"}
    assert backbone_options("small-convnet", {"width": 32}) == {}
    with pytest.raises(UnsupError, match="unknown backbone option.*heads.*valid: patch_size, depth"):
        build_encoder("vit-tiny", 1, 28, {"heads": 4})
    with pytest.raises(UnsupError, match="unknown backbone option.*valid: none"):
        build_encoder("resnet18", 1, 28, {"width": 2})
    with pytest.raises(UnsupError, match="backbone_options must be a mapping"):
        build_encoder("vit-tiny", 1, 28, "depth=2")
    with pytest.raises(UnsupError, match="pool must be 'token'"):
        build_encoder("vit-tiny", 1, 28, {"pool": "max"})
    assert build_encoder("small-convnet", 1, 28, {"width": 8}).out_dim == 64


def test_small_convnet_grid_read_out_keeps_the_regions_apart():
    enc = build_encoder("small-convnet", 1, 28, {"width": 8, "pool_grid": 3})
    assert enc.out_dim == 64 * 9
    x = torch.zeros(2, 1, 28, 28)
    x[1, :, :9, :9] = 1.0  # a change in the top-left corner only
    with torch.no_grad():
        f = enc.eval()(x).view(2, 64, 3, 3)
    changed = (f[0] - f[1]).abs().amax(0)
    assert changed[0, 0] > 10 * changed[2, 2]  # the far corner's region barely moves (receptive fields overlap a little)
    for bad in (0, 1.5, "3"):
        with pytest.raises(UnsupError, match="pool_grid must be a whole number >= 1"):
            build_encoder("small-convnet", 1, 28, {"pool_grid": bad})


def test_small_convnet_out_channels_widen_only_the_last_conv():
    enc = build_encoder("small-convnet", 1, 28, {"width": 8, "pool_grid": 2, "out_channels": 24})
    assert enc.out_dim == 24 * 4
    assert enc.forward_features(torch.rand(2, 1, 28, 28)).shape == (2, 24, 7, 7)
    convs = [m.out_channels for m in enc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs == [8, 8, 16, 16, 32, 24]  # the stages before it keep their widths
    for bad in (0, 2.5, True):
        with pytest.raises(UnsupError, match="out_channels must be a whole number >= 1"):
            build_encoder("small-convnet", 1, 28, {"out_channels": bad})


def test_grid_means_are_adaptive_average_pooling():
    from unsup.nets import GridMeans

    for (h, w, g) in [(7, 7, 3), (28, 28, 3), (14, 14, 4), (5, 9, 3), (2, 2, 3)]:  # uneven, overlapping, tiny maps
        for layout in (torch.contiguous_format, torch.channels_last):
            x = torch.randn(3, 4, h, w).contiguous(memory_format=layout).requires_grad_()
            want = torch.nn.AdaptiveAvgPool2d(g)(x)
            got = GridMeans(g)(x)
            assert got.shape == want.shape == (3, 4, g, g)
            assert torch.allclose(got, want, atol=1e-6)
            weights = torch.randn_like(want)
            (grad_want,) = torch.autograd.grad((want * weights).sum(), x)
            (grad_got,) = torch.autograd.grad((got * weights).sum(), x)
            assert torch.allclose(grad_got, grad_want, atol=1e-6)


def test_grid_maxes_are_adaptive_max_pooling():
    from unsup.nets import GridMaxes

    for (h, w, g) in [(7, 7, 3), (14, 14, 4), (5, 9, 3), (2, 2, 3), (7, 7, 1)]:
        x = torch.randn(3, 4, h, w).contiguous(memory_format=torch.channels_last).requires_grad_()
        want = torch.nn.AdaptiveMaxPool2d(g)(x)
        with mock.patch("torch.onnx.is_in_onnx_export", return_value=True):  # the slices an export traces
            got = GridMaxes(g)(x)
        assert got.shape == want.shape == (3, 4, g, g)
        assert torch.equal(got, want)
        weights = torch.randn_like(want)
        (grad_want,) = torch.autograd.grad((want * weights).sum(), x)
        (grad_got,) = torch.autograd.grad((got * weights).sum(), x)
        assert torch.allclose(grad_got, grad_want, atol=1e-6)


def test_small_convnet_mean_max_read_out_keeps_the_means_and_adds_the_maxima():
    torch.manual_seed(0)
    mean = build_encoder("small-convnet", 1, 28, {"width": 8, "pool_grid": 3, "read_out": "every-conv"})
    torch.manual_seed(0)
    both = build_encoder("small-convnet", 1, 28, {"width": 8, "pool_grid": 3, "read_out": "every-conv",
                                                   "grid_statistics": "mean-max"})
    assert both.out_dim == 2 * mean.out_dim
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        f, g = both.eval()(x), mean.eval()(x)
    # per conv: its means (as the mean read-out has them), then its maxima, which bound the means from above
    last_mean, last_max = f[:, -2 * 64 * 9:-64 * 9], f[:, -64 * 9:]
    assert torch.equal(last_mean, g[:, -64 * 9:])
    assert (last_max >= last_mean - 1e-6).all() and (last_max > last_mean + 1e-3).any()
    assert repr(both) != repr(mean)  # keys a random-encoder reference of its own
    with pytest.raises(UnsupError, match="grid_statistics must be one of mean, mean-max"):
        build_encoder("small-convnet", 1, 28, {"grid_statistics": "max"})


def test_small_convnet_every_conv_read_out_adds_the_earlier_layers():
    torch.manual_seed(0)
    last = build_encoder("small-convnet", 1, 28, {"width": 8, "pool_grid": 3})
    torch.manual_seed(0)
    every = build_encoder("small-convnet", 1, 28, {"width": 8, "pool_grid": 3, "read_out": "every-conv"})
    assert every.out_dim == (8 + 8 + 16 + 16 + 32 + 64) * 9
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        f, g = every.eval()(x), last.eval()(x)
    assert f.shape == (2, every.out_dim)
    assert torch.equal(f[:, -64 * 9:], g)  # the same weights: the last conv's part is the default read-out
    assert f[:, :8 * 9].abs().sum() > 0  # the first conv's regions are there too
    assert every.forward_features(x).shape == (2, 64, 7, 7)  # the spatial map stays the last conv's
    assert repr(every) != repr(last)  # keys a random-encoder reference of its own
    with pytest.raises(UnsupError, match="read_out must be one of last, every-conv"):
        build_encoder("small-convnet", 1, 28, {"read_out": "all"})


def test_single_layer_net_reads_out_a_grid_of_its_filters():
    enc = build_encoder("single-layer", 1, 28, {"filters": 16, "patch_size": 6, "pool_grid": 2})
    assert enc.out_dim == 16 * 4
    x = torch.rand(3, 1, 28, 28)
    assert enc.forward_features(x).shape == (3, 16, 23, 23)  # every 6x6 patch at stride 1
    with torch.no_grad():
        pooled = enc.eval()(x).view(3, 16, 2, 2)
        top_left = enc.forward_features(x)[:, :, :12, :12].mean((2, 3))  # adaptive pooling's first region of 23
    assert torch.allclose(pooled[:, :, 0, 0], top_left, atol=1e-6)
    for key, bad in (("filters", 0), ("patch_size", 2.0), ("pool_grid", True)):
        with pytest.raises(UnsupError, match=f"{key} must be a whole number >= 1"):
            build_encoder("single-layer", 1, 28, {key: bad})
    with pytest.raises(UnsupError, match="patch_size 40 is larger than the 28x28 images"):
        build_encoder("single-layer", 1, 28, {"patch_size": 40})


def test_supervised_key_is_unchanged_by_default_options():
    """Default options leave the key as it was, so the shipped references still match."""
    from unsup.data import load
    from unsup.evaluate.protocol import supervised_key

    train, test = load("fashion-mnist", "train"), load("fashion-mnist", "test")
    keys = [supervised_key(train, test, "small-convnet", 10, 0, backbone_options=o) for o in (None, {}, {"width": 32})]
    assert keys[0] == keys[1] == keys[2] and "backbone_options" not in keys[0]
    assert list(keys[0]) == ["kind", "dataset", "train", "test", "labels", "backbone", "labels_per_class", "seed", "settings"]
    key = supervised_key(train, test, "vit-tiny", 10, 0, backbone_options={"depth": 6, "pool": "token"})
    assert key["backbone_options"] == {"depth": 6}


def test_vit_is_timms_vit_split_for_masking():
    enc = build_encoder("vit-tiny", 1, 28, {"depth": 2, "pool": "avg"})
    vit, x = enc.net, torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(vit.encode(vit.patch_tokens(enc.normalise(x))), enc.forward_features(x), atol=1e-6)
    assert vit.cls_token is None and enc.forward_features(x).shape == (3, 49, 192)
    assert not vit.pos_embed.requires_grad  # fixed sine-cosine positions
    assert [patch_size_for(s) for s in (28, 32, 64, 96, 224)] == [4, 4, 8, 8, 16]
    dyn = build_encoder("vit-tiny", 1, 28, {"depth": 1, "dynamic_size": True})  # multi-crop's small crops too
    with torch.no_grad():
        assert dyn(torch.rand(2, 1, 12, 12)).shape == (2, 192) and dyn.forward_features(torch.rand(2, 1, 12, 12)).shape == (2, 10, 192)
        vit, x = dyn.net, torch.rand(2, 1, 28, 28)
        assert torch.allclose(vit.encode(vit.patch_tokens(dyn.normalise(x))), dyn.forward_features(x), atol=1e-5)
    with pytest.raises(UnsupError, match="patch_size"):
        patch_size_for(13)


# --- MAE ----------------------------------------------------------------------
def test_mae_masking_keeps_a_quarter_of_each_image_at_random():
    for tokens, kept in ((64, 16), (49, 12)):  # 49 * 0.25 rounds down, as the paper's int()
        keep, hidden = random_masking(6, tokens, 0.75)
        assert keep.shape == (6, kept) and hidden.shape == (6, tokens - kept)
        both = torch.cat([keep, hidden], 1).sort(1).values
        assert torch.equal(both, torch.arange(tokens).expand(6, -1))  # a partition of every image's tokens
        assert len({tuple(k.tolist()) for k in keep}) > 1  # each image its own mask


def test_mae_loss_sees_only_hidden_patches_normalised_per_patch():
    patches = torch.rand(2, 49, 16)
    keep, hidden = random_masking(2, 49, 0.75)
    pred = torch.randn(2, hidden.shape[1], 16)
    loss = masked_patch_loss(pred, patches, hidden)
    other = patches.clone()
    other.scatter_(1, keep[..., None].expand(-1, -1, 16), torch.rand(2, keep.shape[1], 16))  # new visible pixels
    assert torch.equal(masked_patch_loss(pred, other, hidden), loss)
    h0 = int(hidden[0, 0])
    other[0, h0] = 3 * other[0, h0] + 1  # a brighter, higher-contrast hidden patch: the same normalised target
    assert torch.allclose(masked_patch_loss(pred, other, hidden), loss, atol=1e-5)
    other[0, h0] = torch.rand(16)
    assert not torch.allclose(masked_patch_loss(pred, other, hidden), loss)


def test_patches_are_row_major_like_the_vit_tokens():
    x = torch.rand(2, 3, 28, 28)
    p = patchify(x, 4)
    assert p.shape == (2, 49, 48) and torch.equal(unpatchify(p, 4, 3), x)
    assert torch.equal(p[:, 8], x[:, :, 4:8, 4:8].permute(0, 2, 3, 1).flatten(1))  # row 1, column 1 of the 7x7 grid


def test_mae_predictions_do_not_see_the_hidden_pixels(batch):
    mae = make("mae").eval()
    x = batch[:4].float() / 255
    torch.manual_seed(3)
    pred, patches, hidden = mae.reconstruct(x)
    changed = patches.scatter(1, hidden[..., None].expand(-1, -1, 16), torch.rand(4, hidden.shape[1], 16))
    x2 = unpatchify(changed, 4, 1)
    torch.manual_seed(3)  # the same masks
    pred2, patches2, hidden2 = mae.reconstruct(x2)
    assert torch.equal(hidden2, hidden) and not torch.equal(patches2, patches)
    assert torch.allclose(pred2, pred, atol=1e-6)
    torch.manual_seed(3)
    pred3, _, _ = mae.reconstruct(1 - x)  # the visible pixels do matter
    assert not torch.allclose(pred3, pred, atol=1e-3)


# --- I-JEPA -------------------------------------------------------------------
def test_ijepa_context_excludes_every_target_block():
    """Per image: 4 filled rectangles of the batch's one size, a context that shares no token with them, the same
    counts in every image; the blocks sit at different places in different images (the paper's collator)."""
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        ctx, tgt = sample_masks(7, 16, 4, (0.15, 0.2), (0.75, 1.5), (0.85, 1.0), 4, g)
        assert ctx.shape[0] == 16 and tgt.shape[:2] == (16, 4) and 6 <= tgt.shape[2] <= 12  # 2x3 .. 3x4 patches
        assert ctx.shape[1] >= 4 and int(ctx.max()) < 49 and int(tgt.max()) < 49
        for c, t in zip(ctx, tgt):
            assert len(set(c.tolist())) == len(c) and not set(c.tolist()) & set(t.flatten().tolist())
        rows, cols = tgt // 7, tgt % 7  # each target is a filled rectangle
        sizes = (rows.amax(2) - rows.amin(2) + 1) * (cols.amax(2) - cols.amin(2) + 1)
        assert torch.equal(sizes, torch.full((16, 4), tgt.shape[2]))
        assert len({tuple(t.flatten().tolist()) for t in tgt}) > 1 and len({tuple(c.tolist()) for c in ctx}) > 1
    with pytest.raises(UnsupError, match="fewer than 60 context tokens"):
        sample_masks(7, 16, 4, (0.15, 0.2), (0.75, 1.5), (0.85, 1.0), 60, g)


def test_ijepa_target_encoder_is_a_frozen_moving_average():
    ij = make("ijepa")
    assert all(not p.requires_grad for p in ij.encoder.parameters())
    with torch.no_grad():
        for p in ij.context_encoder.parameters():
            p.add_(1.0)
    w = ij.encoder.net.blocks[0].attn.qkv.weight
    before = w.clone()
    ij.after_step(1.0)  # momentum 1: unchanged
    assert torch.equal(w, before)
    ij.after_step(0.0)  # momentum 0.996: 0.4% of the way to the context encoder
    assert torch.allclose(w - before, torch.full_like(w, 0.004), atol=1e-5)


def test_ijepa_distance_is_the_papers_l2_or_its_codes_smooth_l1(batch):
    """The same weights and masks give mean squared error (the paper) or smooth L1 (the released code); the
    two differ on the same prediction, and an unknown distance is refused in one line."""
    losses = {}
    for distance in ("l2", "smooth-l1"):
        torch.manual_seed(0)
        ij = make("ijepa", distance=distance)
        torch.manual_seed(1)
        losses[distance] = float(ij.training_loss(batch)[0].detach())
    # layer-normalised targets: errors near 1 per element, where smooth L1 (0.5 e^2 below 1) is about half of e^2
    assert 0.3 < losses["smooth-l1"] / losses["l2"] < 0.7, losses
    with pytest.raises(UnsupError, match="distance .* must be one of l2, smooth-l1"):
        make("ijepa", distance="l1")


def test_ijepa_features_beat_a_random_vit(fm_small, tmp_path):
    # a narrow 2-block ViT on 12,800 images (400 steps, about 45 s of one core): the
    # target encoder's neighbourhoods already carry more of the classes than those
    # of the same ViT with random weights (about +4 points)
    from unsup.data import load
    from unsup.evaluate.features import extract_features
    from unsup.evaluate.knn import knn_accuracy

    opts = {"batch_size": 32, "backbone_options": {"depth": 2, "embed_dim": 96}, "predictor_width": 48, "predictor_depth": 2}
    run = unsup.pretrain("ijepa", data=fm_small, budget="12800img", out=tmp_path / "ijepa", options=opts, quiet=True,
                         monitor=False, figures=False, device="cpu")
    method = unsup.load_method(run)
    train, test = load(fm_small, "train"), load(fm_small, "test")

    def knn(encoder):
        encoder.eval()
        return knn_accuracy(extract_features(encoder, train.images), train.labels, extract_features(encoder, test.images),
                            test.labels, train.num_classes)

    random = [knn(method.random_encoder()) for _ in range(2)]
    assert knn(method.encoder) > max(random) + 0.015, random


@pytest.mark.parametrize("name", ["mae", "ijepa"])
def test_loss_decreases_on_a_fixed_batch(batch, name):
    method = make(name)
    opt = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], 1e-3)
    losses = []
    for step in range(10):
        torch.manual_seed(0)  # the same views and masks every step
        loss, _ = method.training_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        method.after_step(step / 10)
        losses.append(float(loss.detach()))
    assert all(np.isfinite(losses)) and np.mean(losses[-2:]) < 0.95 * losses[0], losses


def test_masked_methods_need_a_vit():
    with pytest.raises(UnsupError, match="mae masks patch tokens, so it needs a ViT: backbone=vit-tiny"):
        make("mae", backbone="small-convnet", backbone_options={})


# --- runs and export ------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(fm_small, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("masked-runs")
    out = {}
    for name in ("mae", "ijepa"):
        opts = {"batch_size": 32, "backbone_options": {**get_method(name).Config().backbone_options, **SHALLOW}}
        out[name] = unsup.pretrain(name, data=fm_small, budget="64img", out=root / name, options=opts, quiet=True,
                                   monitor=False, device="cpu")
    return out


def test_runs_save_and_load_the_trained_encoder(runs, batch):
    for name, run in runs.items():
        assert get_method(name).family == "masked"
        desc = json.loads((run / "encoder.json").read_text())
        assert desc["backbone"] == "vit-tiny" and desc["backbone_options"]["depth"] == 2 and desc["out_dim"] == 192
        enc = unsup.load_encoder(run)
        trained = torch.load(run / "checkpoint.pt", weights_only=True)["method"]  # the method as training left it
        state = enc.state_dict()
        assert all(torch.equal(state[k[len("encoder."):]], v) for k, v in trained.items() if k.startswith("encoder."))
        with torch.no_grad():
            f = enc(batch.float() / 255)
        assert f.shape == (16, 192) and torch.isfinite(f).all()
    assert (runs["mae"] / "figures" / "reconstructions.png").is_file() and (runs["ijepa"] / "figures" / "masks.png").is_file()


def test_ijepa_run_resumes_with_its_target_encoder(runs, fm_small, tmp_path):
    import shutil

    run = shutil.copytree(runs["ijepa"], tmp_path / "ijepa")
    opts = {"batch_size": 32, "backbone_options": {"pool": "avg", **SHALLOW}}
    unsup.pretrain("ijepa", data=fm_small, budget="96img", out=run, options=opts, resume=True, quiet=True,
                   figures=False, monitor=False, device="cpu")
    done = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    assert done["event"] == "done" and done["images_seen"] == 96


@pytest.mark.parametrize("name", ["mae", "ijepa"])
def test_vit_export_round_trip(runs, batch, tmp_path, name):
    import onnxruntime as ort
    import timm
    from safetensors.torch import load_file

    run = runs[name]
    x, x_odd = batch[:8].float() / 255, batch[8:11].float() / 255
    enc = unsup.load_encoder(run)
    with torch.no_grad():
        want, want_odd = enc(x), enc(x_odd)

    ts = torch.jit.load(str(export_encoder(run, "torchscript", tmp_path / "vit.pt")))
    onnx_path = export_encoder(run, "onnx", tmp_path / "vit.onnx")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        for xb, wb in ((x, want), (x_odd, want_odd)):
            assert (ts(xb) - wb).abs().max() <= 1e-4
            assert (torch.from_numpy(session.run(None, {"images": xb.numpy()})[0]) - wb).abs().max() <= 1e-4

    out = export_encoder(run, "timm", tmp_path / "vit.safetensors")
    meta = json.loads(sidecar(out).read_text())
    pool = "token" if name == "mae" else "avg"
    # the documented model, written out here rather than taken from the export
    model = timm.create_model("vit_tiny_patch16_224", img_size=28, patch_size=4, in_chans=1, num_classes=0,
                              global_pool=pool, class_token=pool == "token", fc_norm=False, depth=2)
    model.load_state_dict(load_file(str(out)), strict=True)
    model.eval()
    mean, std = (torch.tensor(meta["normalisation"][k]).view(1, -1, 1, 1) for k in ("mean", "std"))
    with torch.no_grad():
        assert (model((x - mean) / std) - want).abs().max() <= 1e-4
    assert any("vit_tiny_patch16_224" in line and f"global_pool={pool!r}" in line for line in meta["build"])
    with pytest.raises(UnsupError, match="vit-tiny backbone is timm's VisionTransformer.*--format timm"):
        export_encoder(run, "torchvision", tmp_path / "tv.safetensors")
