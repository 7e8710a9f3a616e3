"""The joint-embedding building blocks and methods: every loss against a
hand-computed case and a float64 gradient check, the losses' distributed
gathering against the single-process formula, the EMA helper, parameter groups
and LARS, and each method (BYOL, SimSiam, Barlow Twins, VICReg, MoCo v2/v3)
lowering its loss on a fixed batch and going through pretrain, save and load
with features that are not collapsed."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import unsup
from unsup import losses
from unsup.methods.base import config_from_dict
from unsup.registry import get_method
from unsup.train.ema import cosine_momentum, ema_update, momentum_copy
from unsup.train.optim import LARS, decay_groups, forget_state, make_optimizer, set_lr

# --- losses: values on hand-computed cases --------------------------------


def t(rows):
    return torch.tensor(rows, dtype=torch.float64)


def test_nt_xent_hand_case():
    # two orthogonal images, identical views, temperature 1: each view sees its partner at cos 1 and two
    # other views at cos 0, so every term is log(e + 2) - 1
    z = t([[1, 0], [0, 1]])
    assert losses.nt_xent(z, z, 1.0).item() == pytest.approx(math.log(math.e + 2) - 1, rel=1e-12)


def test_info_nce_hand_cases():
    # with a queue: logits [q.k+, q.queue] = [1, 0, -1]
    value = losses.info_nce(t([[1, 0]]), t([[2, 0]]), 1.0, queue=t([[0, 1], [-1, 0]]))
    assert value.item() == pytest.approx(math.log(math.e + 1 + 1 / math.e) - 1, rel=1e-12)
    # in-batch negatives (MoCo v3): logits [[2, 0], [0, 2]] at temperature 0.5
    value = losses.info_nce(t([[1, 0], [0, 1]]), t([[1, 0], [0, 3]]), 0.5)
    assert value.item() == pytest.approx(math.log(math.exp(2) + 1) - 2, rel=1e-12)


def test_negative_cosine_hand_case():
    value = losses.negative_cosine(t([[1, 0], [0, 2]]), t([[1, 1], [0, -1]]))
    assert value.item() == pytest.approx(-(1 / math.sqrt(2) - 1) / 2, rel=1e-12)


def test_barlow_twins_hand_case():
    # standardised columns are +-1; C = [[1, -1], [1, -1]]: on-diagonal (0 + 4), off-diagonal 1 + 1
    z1, z2 = t([[1, 1], [-1, -1]]), t([[1, -1], [-1, 1]])
    assert losses.barlow_twins(z1, z2, lambd=0.1, eps=0.0).item() == pytest.approx(4 + 0.1 * 2, rel=1e-12)
    # the standardisation makes it invariant to a shift and scale per dimension
    assert losses.barlow_twins(3 * z1 + 1, z2 - 2, lambd=0.1, eps=0.0).item() == pytest.approx(4.2, rel=1e-12)


def test_vicreg_hand_cases():
    # invariance: diffs (0, 0), (-2, 0) -> 4 / 4; variance: z1 has std (sqrt 2, 0) -> hinge (0, 1), z2 std (0, 0)
    # -> (1, 1): (0.5 + 1) / 2; covariance: z1's only off-diagonal is 0, z2 is constant
    z1, z2 = t([[1, 0], [-1, 0]]), t([[1, 0], [1, 0]])
    inv, var, cov = losses.vicreg_terms(z1, z2, eps=0.0)
    assert (inv.item(), var.item(), cov.item()) == pytest.approx((1.0, 0.75, 0.0), abs=1e-12)
    assert losses.vicreg(z1, z2, eps=0.0).item() == pytest.approx(25 * 1 + 25 * 0.75, rel=1e-12)
    # perfectly correlated dimensions: cov = [[2, 2], [2, 2]], off-diagonal 2 * 2^2 / D=2 per branch
    z = t([[1, 1], [-1, -1]])
    inv, var, cov = losses.vicreg_terms(z, z, eps=0.0)
    assert (inv.item(), var.item(), cov.item()) == pytest.approx((0.0, 0.0, 8.0), abs=1e-12)


# --- losses: gradients ------------------------------------------------------

GRADCHECKS = {
    "nt_xent": lambda a, b: losses.nt_xent(a, b, 0.5),
    "info_nce_queue": lambda a, b: losses.info_nce(a, b, 0.2, queue=F.normalize(torch.randn(7, 4, dtype=torch.float64,
                                                                                    generator=torch.Generator().manual_seed(1)), dim=1)),
    "info_nce_batch": lambda a, b: losses.info_nce(a, b, 0.2),
    "negative_cosine": losses.negative_cosine,
    "barlow_twins": lambda a, b: losses.barlow_twins(a, b, 5e-3),
    "vicreg": losses.vicreg,
}


@pytest.mark.parametrize("name", sorted(GRADCHECKS))
def test_loss_gradients(name):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5, 4, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(5, 4, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(GRADCHECKS[name], (a, b))


def test_losses_compute_in_float32_from_half_precision():
    z1, z2 = torch.randn(8, 4).bfloat16(), torch.randn(8, 4).bfloat16()
    for fn in (lambda: losses.nt_xent(z1, z2, 0.5), lambda: losses.barlow_twins(z1, z2), lambda: losses.vicreg(z1, z2),
               lambda: losses.info_nce(z1, z2, 0.2, queue=torch.randn(5, 4)), lambda: losses.negative_cosine(z1, z2)):
        assert fn().dtype == torch.float32


DIST_SCRIPT = r'''
import torch
from unsup import losses
from unsup.train import distributed as d
g = torch.Generator().manual_seed(0)
full = [torch.randn(8, 6, dtype=torch.float64, generator=g) for _ in range(2)]
queue = torch.nn.functional.normalize(torch.randn(5, 6, dtype=torch.float64, generator=g), dim=1)
fns = {"nt_xent": lambda a, b: losses.nt_xent(a, b, 0.5), "info_nce": lambda a, b: losses.info_nce(a, b, 0.2),
       "info_nce_queue": lambda a, b: losses.info_nce(a, b, 0.2, queue=queue),
       "barlow_twins": lambda a, b: losses.barlow_twins(a, b), "vicreg": lambda a, b: losses.vicreg(a, b)}
refs = {}
for name, fn in fns.items():  # the whole batch in one process, before the process group exists
    ref_in = [x.clone().requires_grad_(True) for x in full]
    value = fn(*ref_in)
    value.backward()
    refs[name] = (float(value), [x.grad for x in ref_in])
d.init_from_env(torch.device("cpu"))
r, w = d.rank(), d.world_size()
for name, fn in fns.items():
    local = [x[r * 4:(r + 1) * 4].clone().requires_grad_(True) for x in full]
    value = fn(*local)
    value.backward()
    mean_value = float(d.all_reduce_sum(value.detach().clone())) / w  # the loop reports each process's loss; their mean
    # the loop averages parameter gradients over processes, hence the division by w
    ref_value, ref_grads = refs[name]
    grad_err = max(float((l.grad / w - g[r * 4:(r + 1) * 4]).abs().max()) for l, g in zip(local, ref_grads))
    if r == 0:
        print(name, abs(mean_value - ref_value), grad_err)
'''


def test_losses_gather_across_processes(tmp_path, torchrun):
    """Under torchrun, each loss on two halves of a batch equals (in value and
    averaged gradient) the single-process loss on the whole batch."""
    script = tmp_path / "dist_losses.py"
    script.write_text(DIST_SCRIPT)
    done = torchrun(script)
    rows = {line.split()[0]: tuple(map(float, line.split()[1:])) for line in done.stdout.splitlines() if line.strip()}
    assert set(rows) == {"nt_xent", "info_nce", "info_nce_queue", "barlow_twins", "vicreg"}, done.stdout
    for name, (value_err, grad_err) in rows.items():
        assert value_err < 1e-10 and grad_err < 1e-10, (name, value_err, grad_err)


# --- the EMA helper ---------------------------------------------------------


def test_cosine_momentum_endpoints():
    assert cosine_momentum(0.996, 0.0) == pytest.approx(0.996)
    assert cosine_momentum(0.996, 0.5) == pytest.approx(0.998)
    assert cosine_momentum(0.996, 1.0) == pytest.approx(1.0)
    assert cosine_momentum(0.996, 2.0) == pytest.approx(1.0)  # clamped


def test_ema_update_is_the_formula():
    online = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    target = momentum_copy(online)
    assert not any(p.requires_grad for p in target.parameters())
    with torch.no_grad():
        for p in online.parameters():
            p.add_(torch.randn_like(p))
    online(torch.randn(8, 3))  # moves the running statistics
    before = [p.clone() for p in target.parameters()]
    ema_update(target, online, 0.9)
    for b, t_, o in zip(before, target.parameters(), online.parameters()):
        assert torch.allclose(t_, 0.9 * b + 0.1 * o)
    assert torch.equal(target[1].running_mean, online[1].running_mean)
    # sequences of modules pair up in order; buffers=False leaves them
    head, t_head = nn.Linear(4, 2), nn.Linear(4, 2)
    old = t_head.weight.clone()
    ema_update((target, t_head), (online, head), 0.5, buffers=False)
    assert torch.allclose(t_head.weight, 0.5 * old + 0.5 * head.weight)
    with pytest.raises(ValueError, match="differ in structure"):
        ema_update(target, head, 0.5)


# --- parameter groups and LARS ----------------------------------------------


def test_biases_and_norms_get_no_weight_decay():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    net(torch.zeros(2, 1, 5, 5))
    opt = make_optimizer("adamw", net.parameters(), lr=1e-3, weight_decay=0.1)
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(net[0].weight), id(net[3].weight)}
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(net.parameters()))
    # groups keep their own options on both halves
    groups = decay_groups([{"params": list(net[3].parameters()), "fixed_lr": True}])
    assert [g["fixed_lr"] for g in groups] == [True, True] and groups[1]["weight_decay"] == 0.0
    opt = make_optimizer("sgd", groups + decay_groups(net[0].parameters()), lr=0.1, weight_decay=0.0)
    set_lr([opt], 0.25)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.1, 0.025, 0.025]


def per_tensor_optimiser(name: str, params, **options):
    """torch's reference loop (one tensor at a time) for the library's optimiser ``name``, its momentum included."""
    kind = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}[name]
    return kind(params, foreach=False, **options, **({"momentum": 0.9} if name == "sgd" else {}))


@pytest.mark.parametrize("name", ["adamw", "adam", "sgd"])
def test_cpu_optimisers_are_fused_and_match_the_per_tensor_update(name):
    """On the CPU the library's optimisers use torch's fused kernels (one pass per step, not one per
    operation and tensor); after 20 steps their weights equal those of torch's reference loop."""
    torch.manual_seed(0)
    # no bias before the batch norm: its gradient is rounding noise, which Adam would scale up to full steps
    net = nn.Sequential(nn.Linear(30, 40, bias=False), nn.BatchNorm1d(40), nn.ReLU(), nn.Linear(40, 3))
    ref, start = copy.deepcopy(net), copy.deepcopy(net)
    opt = make_optimizer(name, net.parameters(), lr=1e-2, weight_decay=1e-3)
    assert all(g["fused"] for g in opt.param_groups)
    ref_opt = per_tensor_optimiser(name, decay_groups(ref.parameters()), lr=1e-2, weight_decay=1e-3)
    for _ in range(20):
        x, y = torch.randn(16, 30), torch.randn(16, 3)
        for model, o in ((net, opt), (ref, ref_opt)):
            o.zero_grad()
            F.mse_loss(model(x), y).backward()
            o.step()
    for a, b, s in zip(net.parameters(), ref.parameters(), start.parameters()):
        assert torch.allclose(a, b, atol=1e-5) and not torch.allclose(a, s, atol=1e-3)


@pytest.mark.parametrize("name", ["adamw", "adam", "sgd", "lars"])
def test_forgotten_state_restarts_like_a_new_optimiser(name):
    """DeepCluster's re-initialised head: its history is forgotten while the trunk's is kept, and its next
    update is a fresh optimiser's first one (the fused kernels refuse a state present for some tensors only)."""
    torch.manual_seed(0)
    trunk, head = torch.nn.Parameter(torch.randn(4, 4)), torch.nn.Parameter(torch.randn(4))
    opt = make_optimizer(name, [trunk, head], 0.1, 0.0)
    for _ in range(3):
        trunk.grad, head.grad = torch.randn(4, 4), torch.randn(4)
        opt.step()
    trunk_state = {k: v.clone() for k, v in opt.state[trunk].items() if torch.is_tensor(v)}
    forget_state([opt], [head])
    assert all(torch.equal(opt.state[trunk][k], v) for k, v in trunk_state.items()), name  # the trunk's history kept
    assert all(torch.count_nonzero(v) for k, v in trunk_state.items() if k != "step"), name
    fresh_head = torch.nn.Parameter(head.detach().clone())
    fresh = make_optimizer(name, [fresh_head], 0.1, 0.0)
    grad = torch.randn(4)
    trunk.grad, head.grad, fresh_head.grad = torch.randn(4, 4), grad.clone(), grad.clone()
    opt.step()
    fresh.step()
    assert torch.allclose(head, fresh_head, atol=1e-6), name


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_a_parameter_first_trained_later_steps_like_the_per_tensor_loop(name):
    """A layer trained after the others (greedy stacking, a new head): the fused kernels meet a parameter
    without history beside parameters with one, and update it as torch's per-tensor loop does."""
    torch.manual_seed(0)
    first, later = torch.nn.Parameter(torch.randn(4, 4)), torch.nn.Parameter(torch.randn(3, 4))  # one group
    copies = [torch.nn.Parameter(first.detach().clone()), torch.nn.Parameter(later.detach().clone())]
    fused = make_optimizer(name, [first, later], 0.1, 0.01)
    loop = per_tensor_optimiser(name, copies, lr=0.1, weight_decay=0.01)
    for step in range(4):
        grads = [torch.randn(4, 4), torch.randn(3, 4) if step >= 2 else None]
        for params in ([first, later], copies):
            for p, g in zip(params, grads):
                p.grad = None if g is None else g.clone()
        fused.step()
        loop.step()
    assert torch.allclose(first, copies[0], atol=1e-6) and torch.allclose(later, copies[1], atol=1e-6), name


def test_lars_adapts_weights_only_and_reduces_a_loss():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1))
    x, y = torch.randn(64, 5), torch.randn(64, 1)
    opt = make_optimizer("lars", net.parameters(), lr=0.5, weight_decay=1e-4, momentum=0.0)
    assert isinstance(opt, LARS)
    w, b = net[0].weight, net[0].bias
    w0, b0 = w.detach().clone(), b.detach().clone()
    loss = F.mse_loss(net(x), y)
    loss.backward()
    gw, gb = w.grad.clone(), b.grad.clone()
    opt.step()
    # a weight: decay, then the trust ratio eta ||w|| / ||g + wd w||; a bias: plain SGD, no decay, no adaptation
    g = gw + 1e-4 * w0
    assert torch.allclose(w.detach(), w0 - 0.5 * 1e-3 * w0.norm() / g.norm() * g, atol=1e-7)
    assert torch.allclose(b.detach(), b0 - 0.5 * gb, atol=1e-7)
    first = float(loss.detach())
    for _ in range(100):
        opt.zero_grad()
        F.mse_loss(net(x), y).backward()
        opt.step()
    assert float(F.mse_loss(net(x), y).detach()) < 0.9 * first


# --- the methods --------------------------------------------------------------

METHODS = [("byol", {}), ("simsiam", {}), ("barlow-twins", {}), ("vicreg", {}), ("moco", {}), ("moco", {"version": 3})]
SMALL_HEADS = {"byol": {"proj_hidden": 256, "pred_hidden": 256}, "simsiam": {"proj_dim": 256, "pred_hidden": 64},
               "barlow-twins": {"proj_dim": 256}, "vicreg": {"proj_dim": 256}, "moco": {"proj_hidden": 256, "queue_size": 128}}


def build(name, **options):
    cls = get_method(name)
    return cls(config_from_dict(cls.Config, {**SMALL_HEADS[name], **options}), (1, 28, 28))


@pytest.fixture(scope="module")
def fixed_batch(fm_small):
    from unsup.data import load

    return load(fm_small, "train").images[:32]


@pytest.mark.parametrize("name,options", METHODS, ids=["byol", "simsiam", "barlow-twins", "vicreg", "moco-v2", "moco-v3"])
def test_loss_falls_on_a_fixed_batch(name, options, fixed_batch):
    torch.manual_seed(0)
    m = build(name, **options).train()
    opt = m.configure_optimizers(lambda params: make_optimizer("adamw", params, 1e-3, 0.0))[0]
    values = []
    queue = m.queue.clone() if hasattr(m, "queue") else None
    for step in range(12):
        torch.manual_seed(1)  # the same views every step: the loss is a fixed function of the weights
        if queue is not None:  # and the same negatives (enqueued keys of this same batch would be its positives)
            m.queue.copy_(queue)
        loss, logs = m.training_loss(fixed_batch)
        # logs are floats or 0-d tensors left on the device (the loop reads them every log_every steps)
        assert all((isinstance(v, float) or (torch.is_tensor(v) and v.dim() == 0)) and math.isfinite(float(v))
                   for v in logs.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        m.after_step(step / 12)
        values.append(float(loss.detach()))
    assert values[-1] < values[0] - 0.05 * abs(values[0]), values


@pytest.mark.parametrize("name,options", [("byol", {}), ("simsiam", {}), ("barlow-twins", {}), ("vicreg", {}),
                                          ("moco", {}), ("moco", {"version": 3})],
                         ids=["byol", "simsiam", "barlow-twins", "vicreg", "moco-v2", "moco-v3"])
def test_pretrain_save_load(name, options, fm_small, tmp_path):
    run = unsup.pretrain(name, data=fm_small, budget="640img", out=tmp_path / name,
                         options={"batch_size": 64, **SMALL_HEADS[name], **options}, quiet=True, figures=False, monitor=False)
    metrics = [m for m in unsup.run.RunDir(run).metrics() if "loss" in m]
    assert metrics and all(math.isfinite(m["loss"]) for m in metrics)
    encoder = unsup.load_encoder(run)
    from unsup.data import load

    x = load(fm_small, "test").images[:200].float() / 255
    with torch.no_grad():
        feats = encoder.eval()(x)
    assert feats.shape == (200, 256) and torch.isfinite(feats).all()
    # not collapsed: the features differ across images (per-dimension std relative to the mean magnitude)
    assert float(feats.std(0).mean() / feats.abs().mean()) > 0.05


def test_moco_queue_and_shuffled_keys(fixed_batch):
    m = build("moco", queue_size=48, shuffle_groups=4)
    keys = F.normalize(torch.randn(32, m.cfg.proj_dim), dim=1)
    m._enqueue(keys)
    assert torch.allclose(m.queue[:32], keys) and int(m.queue_ptr) == 32
    m._enqueue(keys)  # wraps around: the 16 free slots, then the start
    assert torch.allclose(m.queue[32:], keys[:16]) and torch.allclose(m.queue[:16], keys[16:]) and int(m.queue_ptr) == 16
    # with batch norm in eval mode the groups do not matter: the shuffle is undone exactly
    m.eval()
    x = fixed_batch.float() / 255
    with torch.no_grad():
        direct = m.target_projector(m.target_encoder(x))
        assert torch.allclose(m.keys(x), direct, atol=1e-5)
    with pytest.raises(unsup.errors.UnsupError, match="version must be 2 or 3"):
        build("moco", version=1)


def test_simsiam_predictor_keeps_its_learning_rate():
    m = build("simsiam")
    opt = m.configure_optimizers(lambda params: make_optimizer("sgd", params, 0.1, 1e-4))[0]
    set_lr([opt], 0.5)
    pred = {id(p) for p in m.predictor.parameters()}
    for g in opt.param_groups:
        assert g["lr"] == (0.1 if id(g["params"][0]) in pred else 0.05)
