"""The supervised reference: the upper bound a method is measured against.

The same backbone as the method, with a linear classifier, trained from
scratch with cross-entropy on only the N labelled images per class, to
convergence. Its length does not follow the pretraining budget: it is chosen on
a hold-out inside the labelled subset, never on the test split.

- Hold-out: a stratified share of the labelled images (20% of each class, at
  most ``HOLDOUT_PER_CLASS``, or 500 for a set of more than ``REFIT_MAX``
  images). With one label per class no hold-out can keep every class in
  training, and with a few (under ``SMALL_SET_HOLDOUT`` held out per class, as
  at 10 labels per class: 2) the readings are too coarse to stop on, so such a
  set trains for a fixed ``SMALL_SET_STEPS``, the way the linear probe falls
  back to a fixed L2 there (``SMALL_SET_RECIPE``, chosen on a validation split
  of the training data: ``benchmarks/supervised_small.py``).
- Schedule: AdamW at a constant rate after a short warm-up; the hold-out
  accuracy is read every ``eval_every`` steps; on a plateau (``PATIENCE``
  readings without a gain) the rate drops tenfold, and after ``DROPS`` drops
  and one more plateau training stops (reduce-on-plateau with early stopping).
  The chosen length is the reading with the best hold-out accuracy (ties: the
  lower hold-out loss). The ViT-tiny on a large set (``VIT_LARGE_SET_RECIPE``)
  runs a cosine schedule instead: batches of 64, a warm-up, then a decay to 0
  over the whole length, the hold-out still picking the best reading.
- Final model: for a labelled set of at most ``REFIT_MAX`` images, the network
  is trained again from the same initialisation on every labelled image
  (hold-out included) for the chosen length with the same rate drops; a larger
  set keeps the early-stopped network (its hold-out is under 10% of the set,
  and a second run would double the cost).
- Augmentation: the shared batched pipeline (``unsup.data.augment``): the
  default settings every method starts from (``SUPERVISED_AUGMENT``); for a set
  of more than ``REFIT_MAX`` images a lighter setting (``LARGE_SET_AUGMENT``,
  chosen on a validation split of the training data).

Results are cached (and may ship with the package, see ``protocol.cached``) per
dataset, backbone, label budget and seed.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed

import torch
import torch.nn.functional as F
from torch import nn

from .. import progress
from ..data import augment, few_label_indices
from ..data.augment import AugmentConfig
from ..errors import UnsupError
from ..nets import build_encoder
from ..train.optim import lr_factor
from .features import extract_features

# the AugmentConfig fields the shipped references are keyed by; a field added since enters the key only when set
KEYED_AUGMENT_FIELDS = ("crop_scale", "crop_ratio", "flip", "brightness", "contrast", "jitter_prob", "blur_prob", "blur_sigma",
                        "noise_std")


def augment_key(cfg: AugmentConfig) -> str:
    """The augmentation as it enters a cache key: ``repr`` of the keyed fields
    plus every other field that differs from its default."""
    default = AugmentConfig()
    parts = [f"{f.name}={getattr(cfg, f.name)!r}" for f in dataclasses.fields(cfg)
             if f.name in KEYED_AUGMENT_FIELDS or getattr(cfg, f.name) != getattr(default, f.name)]
    return f"AugmentConfig({', '.join(parts)})"


SUPERVISED_AUGMENT = AugmentConfig()
HOLDOUT_SHARE, HOLDOUT_PER_CLASS = 0.2, 100
FIXED_STEPS = 300  # a recipe's fixed length unless it sets its own
SMALL_SET_STEPS, SMALL_SET_HOLDOUT = 1000, 5
REFIT_MAX = 10_000
LR, WEIGHT_DECAY, WARMUP_STEPS = 1e-3, 5e-4, 50
PATIENCE, DROPS = 2, 2
MAX_EPOCHS, MAX_STEPS = 60, 4000
SCHEDULES = ("plateau", "cosine")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """What a reference's training depends on the size of its labelled set for;
    its ``settings()`` (with the constants above) are the cache key."""

    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)  # SUPERVISED_AUGMENT
    weight_decay: float = WEIGHT_DECAY
    holdout_per_class: int = HOLDOUT_PER_CLASS
    fixed_steps: int = FIXED_STEPS
    # a hold-out with fewer images of some class than this is too coarse to stop on (2 images per class read
    # accuracy in steps of 5 points): such a set trains for the fixed length, as one label per class does
    min_holdout_per_class: int = 1
    lr: float = LR
    batch_size: int = 256  # the largest batch; a smaller set trains on batches of its own size
    warmup_steps: int = WARMUP_STEPS
    # "plateau": reduce-on-plateau with early stopping (the module docstring); "cosine": warm-up, then a cosine
    # decay to 0 over the whole length (max_epochs passes, at most max_steps), the hold-out only picking the best reading
    schedule: str = "plateau"
    max_epochs: int = MAX_EPOCHS
    max_steps: int = MAX_STEPS

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise UnsupError(f"unknown supervised schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")

    def settings(self) -> dict:
        settings = {"augment": augment_key(self.augment), "holdout": [HOLDOUT_SHARE, self.holdout_per_class],
                    "fixed_steps": self.fixed_steps, "refit_max": REFIT_MAX, "lr": self.lr, "weight_decay": self.weight_decay,
                    "warmup": self.warmup_steps, "patience": PATIENCE, "drops": DROPS, "max_epochs": self.max_epochs,
                    "max_steps": self.max_steps}
        # settings added since the shipped keys were made enter a key only when they differ from their default
        added = {"min_holdout_per_class": 1, "batch_size": 256, "schedule": "plateau"}
        settings.update({k: getattr(self, k) for k, default in added.items() if getattr(self, k) != default})
        return settings


DEFAULT_RECIPE = Recipe()
# a labelled set larger than REFIT_MAX: lighter augmentation (chosen on a
# validation split of the training data: benchmarks/supervised_augment.py) and
# a larger hold-out, whose readings are steadier (1,000 images put the first
# rate drop on a noisy dip)
LARGE_SET_AUGMENT = AugmentConfig(crop_scale=(0.6, 1.0), blur_prob=0.0)
LARGE_SET_RECIPE = Recipe(augment=LARGE_SET_AUGMENT, holdout_per_class=500)
# a set whose hold-out would keep under SMALL_SET_HOLDOUT images of some class (1 or 10 labels per class): a fixed
# 1,000 steps, which on the validation split reached the raw-pixel linear probe (1 label: 47.5 vs 47.1; 10 labels:
# 68.3 vs 68.2, 6 draws) where 300 steps and early stopping on 2 per class stayed under it (46.4, 66.5)
SMALL_SET_RECIPE = Recipe(fixed_steps=SMALL_SET_STEPS, min_holdout_per_class=SMALL_SET_HOLDOUT)
# the ViT-tiny on a set larger than REFIT_MAX: batches of 64 and a warm-up of 50 steps, then a cosine decay from 5e-4
# to 0 (the best of six recipes on a validation split of the training data, each given the same 25,600 images:
# benchmarks/vit_recipe.py), up to the same 1,024,000 images as LARGE_SET_RECIPE's 4,000 steps of 256
VIT_LARGE_SET_RECIPE = Recipe(augment=LARGE_SET_AUGMENT, holdout_per_class=500, schedule="cosine", lr=5e-4, batch_size=64,
                              max_steps=16_000)


def recipe_for(labels: torch.Tensor, backbone: str = "small-convnet") -> Recipe:
    """The recipe a reference with ``backbone`` on the labelled images of class ``labels`` trains with."""
    if len(labels) > REFIT_MAX:
        return VIT_LARGE_SET_RECIPE if backbone.startswith("vit") else LARGE_SET_RECIPE
    counts = torch.bincount(labels.cpu())
    fewest = int(counts[counts > 0].min())
    return SMALL_SET_RECIPE if holdout_size(fewest, HOLDOUT_PER_CLASS) < SMALL_SET_HOLDOUT else DEFAULT_RECIPE


def settings_for(labels: torch.Tensor, backbone: str = "small-convnet") -> dict:
    """The settings a reference with ``backbone`` on labelled images of class ``labels`` runs with (its cache key)."""
    return recipe_for(labels, backbone).settings()


def holdout_size(count: int, per_class: int) -> int:
    """How many of a class's ``count`` labelled images the hold-out keeps."""
    return max(1, min(per_class, round(HOLDOUT_SHARE * count)))


def holdout_split(labels: torch.Tensor, seed: int, per_class: int = HOLDOUT_PER_CLASS) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(fit, hold-out) positions, stratified; None when a class has a single image."""
    counts = torch.bincount(labels)
    if int(counts[counts > 0].min()) < 2:
        return None
    g = torch.Generator().manual_seed(seed)
    fit, held = [], []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = holdout_size(len(idx), per_class)
        held.append(idx[:k])
        fit.append(idx[k:])
    return torch.sort(torch.cat(fit)).values, torch.sort(torch.cat(held)).values


class Classifier(nn.Module):
    def __init__(self, backbone: str, shape, num_classes: int, backbone_options: dict | None = None):
        super().__init__()
        c, h, _ = shape
        self.encoder = build_encoder(backbone, c, h, backbone_options)
        self.head = nn.Linear(self.encoder.out_dim, num_classes)

    def forward(self, x):
        return self.head(self.encoder(x))


def _batches(n: int, batch: int, g: torch.Generator):
    """Endless index batches: shuffled passes, a small set repeated to fill a batch."""
    while True:
        perm = torch.cat([torch.randperm(n, generator=g) for _ in range(max(1, -(-batch // n)))])
        for i in range(0, len(perm) - batch + 1, batch):
            yield perm[i : i + batch]


@torch.no_grad()
def _evaluate(model, images, labels) -> tuple[float, float]:
    model.eval()
    logits = extract_features(model, images)
    model.train()
    return float((logits.argmax(1) == labels.cpu()).float().mean()), float(F.cross_entropy(logits, labels.cpu()))


def train_classifier(images, labels, backbone: str, num_classes: int, seed: int, device="cpu", steps: int | None = None,
                     drops_at: tuple[int, ...] = (), holdout=None, quiet: bool = True, max_steps: int | None = None,
                     recipe: Recipe = DEFAULT_RECIPE, backbone_options: dict | None = None,
                     schedule_steps: int | None = None) -> tuple[nn.Module, dict]:
    """Train on (images, labels) with ``recipe``. With ``holdout`` (images, labels)
    the length is chosen there (see the module docstring) and the best network is
    returned; with ``steps`` it trains exactly that long, dropping the rate at
    ``drops_at`` (a cosine schedule decays over ``schedule_steps``, default ``steps``)."""
    device = torch.device(device)
    torch.manual_seed(seed)
    model = Classifier(backbone, images.shape[1:], num_classes, backbone_options).to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), recipe.lr, weight_decay=recipe.weight_decay)
    n = len(images)
    batch = int(min(recipe.batch_size, max(32, n)))
    eval_every = max(25, n // batch)
    max_steps = recipe.max_steps if max_steps is None else min(max_steps, recipe.max_steps)
    limit = steps if steps is not None else min(max_steps, max(eval_every * 20, recipe.max_epochs * n // batch))
    cosine = recipe.schedule == "cosine"
    schedule_steps = schedule_steps or limit
    images, labels = images.to(device), labels.to(device)
    g = torch.Generator().manual_seed(seed)
    lr, drops, best, since_best = recipe.lr, [], None, 0
    history = []
    bar = progress.bar(None if quiet else f"supervised {n} labels", limit, "step")
    for step, idx in enumerate(_batches(n, batch, g), start=1):
        if step in drops_at:
            lr /= 10
        factor = (lr_factor(step / schedule_steps, recipe.warmup_steps / schedule_steps) if cosine
                  else min(1.0, step / recipe.warmup_steps))
        for group in opt.param_groups:
            group["lr"] = lr * factor
        idx = idx.to(device)
        loss = F.cross_entropy(model(augment(images[idx], recipe.augment)), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.update(1)
        if holdout is not None and (step % eval_every == 0 or (cosine and step == limit)):
            acc, hloss = _evaluate(model, *holdout)
            history.append({"step": step, "holdout_accuracy": acc, "holdout_loss": hloss, "lr": lr * factor})
            if best is None or (acc, -hloss) > (best["accuracy"], -best["loss"]):
                best = {"step": step, "accuracy": acc, "loss": hloss, "drops": list(drops),
                        "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}
                since_best = 0
            else:
                since_best += 1
            if since_best >= PATIENCE and not cosine:
                if len(drops) == DROPS:
                    break
                lr /= 10
                drops.append(step)
                since_best = 0
        if step >= limit:
            break
    bar.close()
    if best is not None:
        model.load_state_dict(best.pop("state"))
        info = {"steps": best["step"], "drops_at": best["drops"], "holdout_accuracy": best["accuracy"], "history": history}
    else:
        info = {"steps": limit, "drops_at": list(drops_at)}
    if cosine:
        info["schedule_steps"] = schedule_steps
    model.eval()
    return model, {"batch_size": batch, **info}


def supervised_reference(train, test, per_class, seed: int, backbone: str = "small-convnet", device="cpu",
                         quiet: bool = True, max_steps: int | None = None, backbone_options: dict | None = None,
                         recipe: Recipe | None = None) -> dict:
    """Train the reference on ``per_class`` labels per class (seed ``seed``) and
    score it on the test split: accuracy and how its length was chosen
    (``max_steps`` caps the length: tests use a small cap); ``backbone_options``
    are the backbone factory's arguments; ``recipe`` replaces the one of the
    set's size (to compare recipes on a validation split)."""
    idx = few_label_indices(train.labels, per_class, seed)
    images, labels = train.images[idx], train.labels[idx].cpu()
    recipe = recipe or recipe_for(labels, backbone)
    common = {"quiet": quiet, "backbone_options": backbone_options, "recipe": recipe}
    split = holdout_split(labels, seed, recipe.holdout_per_class)
    if split is None or int(labels[split[1]].unique(return_counts=True)[1].min()) < recipe.min_holdout_per_class:
        model, info = train_classifier(images, labels, backbone, train.num_classes, seed, device,
                                       steps=min(recipe.fixed_steps, max_steps or recipe.fixed_steps), **common)
        info["length"] = ("fixed (one label per class: no hold-out)" if split is None else
                          f"fixed (a hold-out under {recipe.min_holdout_per_class} images per class)")
    else:
        fit, held = split
        model, info = train_classifier(images[fit], labels[fit], backbone, train.num_classes, seed, device,
                                       holdout=(images[held], labels[held]), max_steps=max_steps, **common)
        info["length"] = "chosen on the hold-out"
        if len(idx) <= REFIT_MAX:  # train again on every label for the chosen length
            model, _ = train_classifier(images, labels, backbone, train.num_classes, seed, device, steps=info["steps"],
                                        drops_at=tuple(info["drops_at"]), schedule_steps=info.get("schedule_steps"), **common)
            info["refit_on_all_labels"] = True
    logits = extract_features(model, test.images, device)
    accuracy = float((logits.argmax(1) == test.labels.cpu()).float().mean())
    return {"accuracy": accuracy, "labels": len(idx), **info}


def _one_thread() -> None:
    """A worker runs on one thread."""
    torch.set_num_threads(1)


def _job(args) -> dict:
    return supervised_reference(*args)


def supervised_references(train, test, jobs, backbone: str = "small-convnet", device="cpu", quiet: bool = True,
                          max_steps: int | None = None, on_result=None, backbone_options: dict | None = None) -> dict:
    """``{(labels per class, seed): result}`` for each job; ``on_result(job, result)``
    is called as each one finishes (the cache keeps finished runs if a later one
    is interrupted). On a multi-core CPU the runs go to parallel one-thread worker
    processes (measured 1.4x faster than one after another with two threads on
    the 2-core CPU); on a GPU they run in turn."""
    workers = min(len(jobs), torch.get_num_threads()) if torch.device(device).type == "cpu" else 1
    args = {job: (train, test, *job, backbone, "cpu" if workers > 1 else device, quiet, max_steps, backbone_options)
            for job in jobs}
    results = {}

    def finished(job, result):
        results[job] = result
        if on_result is not None:
            on_result(job, result)

    if workers > 1:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_one_thread) as pool:
            futures = {pool.submit(_job, a): job for job, a in args.items()}
            for future in as_completed(futures):
                finished(futures[future], future.result())
    else:
        for job, a in args.items():
            finished(job, _job(a))
    return {job: results[job] for job in jobs}
