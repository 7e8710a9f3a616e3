"""Stereo scene options (perspective sizes) and Deep3D branch options (taps,
branch_hidden)."""

import pytest
import torch
from scipy.stats import spearmanr

from unsup.data.stereo import render_stereo, texture_bank
from unsup.errors import UnsupError
from unsup.methods.pretext.stereo import Stereo, StereoConfig

SHAPE = (1, 28, 28)


def _sizes_and_disparities(perspective: float, grounded: bool):
    """One white square per scene on a black background: its area in the
    right view and its disparity there."""
    torch.manual_seed(0)
    objects = torch.full((256, 1, 28, 28), 255, dtype=torch.uint8)
    _, right, disp = render_stereo(objects, texture_bank(), 48, 16, 1, plain=1.0, grounded=grounded, perspective=perspective)
    inside = right[:, 0] > 0.5
    area = inside.flatten(1).sum(1).float()
    d = torch.stack([disp[i, 0][inside[i]].median() if inside[i].any() else torch.tensor(float("nan")) for i in range(len(disp))])
    ok = torch.isfinite(d) & (area > 0)
    return area[ok].numpy(), d[ok].numpy()


@pytest.mark.parametrize("grounded", [True, False])
def test_perspective_makes_nearer_objects_bigger(grounded):
    area, d = _sizes_and_disparities(0.5, grounded)
    assert spearmanr(area, d)[0] > 0.4  # 0.73 grounded, 0.55 free (seed 0)
    area0, d0 = _sizes_and_disparities(0.0, grounded)
    assert abs(spearmanr(area0, d0)[0]) < 0.3  # without it, size says little about depth


def test_perspective_keeps_the_default_scenes_and_is_refused_out_of_range():
    objects = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    torch.manual_seed(3)
    a = render_stereo(objects, texture_bank(), 48, 16, 2, grounded=True)
    torch.manual_seed(3)
    b = render_stereo(objects, texture_bank(), 48, 16, 2, grounded=True, perspective=0.0)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    with pytest.raises(UnsupError, match="perspective"):
        Stereo(StereoConfig(perspective=1.0), SHAPE)


def test_taps_choose_which_stages_the_per_pixel_branches_read():
    torch.manual_seed(0)
    m = Stereo(StereoConfig(levels=8, taps=(1, 4), global_branch=False, branch_hidden=16), SHAPE)
    assert len(m.branches) == 2 and isinstance(m.branches[0], torch.nn.Sequential)
    loss, _ = m.training_loss(torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8))
    loss.backward()
    feats = m.encoder.net.features
    assert feats[0][0].weight.grad is not None and feats[0][0].weight.grad.abs().sum() > 0
    assert feats[6][0].weight.grad is None  # stage 3 is read by no branch: view synthesis does not train it
    # the top branch on stage 2: again nothing trains stage 3; on the last stage (default) it does
    for top_tap, trained in ((4, False), (7, True)):
        m = Stereo(StereoConfig(levels=8, taps=(1, 4), top_tap=top_tap), SHAPE)
        m.training_loss(torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8))[0].backward()
        assert (m.encoder.net.features[7][0].weight.grad is not None) == trained
    with pytest.raises(UnsupError, match="taps"):
        Stereo(StereoConfig(taps=(2,)), SHAPE)
    with pytest.raises(UnsupError, match="top_tap"):
        Stereo(StereoConfig(top_tap=3), SHAPE)
    with pytest.raises(UnsupError, match="branch_hidden"):
        Stereo(StereoConfig(branch_hidden=-1), SHAPE)
