"""The contract every joint-embedding and masked method keeps (issue 17), one
parametrized case per method: registered with its family, paper and a
docstring naming the paper; ``pretrain`` writes a run whose encoder loads and
gives finite features of the documented width; ``probe_run`` gives a row per
label budget and classifier; the figures stage writes a PNG; and a run
interrupted half-way and resumed ends bit-identical to one never interrupted.

Models and heads are shrunk to a few thousand weights (a 4-wide convnet, a
1-block ViT of width 24), data is ``fm_tiny`` (300 + 200 images), budgets are
a few steps of 16 images: this file checks the plumbing, not the accuracy."""

from __future__ import annotations

import json
import re
import shutil
import sys

import numpy as np
import pytest
import torch

import unsup
from unsup.cli import main as cli_main
from unsup.methods.base import FAMILIES
from unsup.registry import METHODS, get_method
from unsup.run import RunDir

BATCH = 16
CONV = {"batch_size": BATCH, "backbone_options": {"width": 4}}  # small convnet: 4-8-16 channels, 32-d features
VIT = {"batch_size": BATCH, "backbone_options": {"depth": 1, "embed_dim": 24, "num_heads": 2}}

# case id -> (registered name, family, options that shrink it); every option that changes the method's state across
# steps (queues, centres, EMA targets, frozen-prototype phases) stays on, so the resume check covers it
CASES = {
    "simclr": ("simclr", "joint embedding", {**CONV, "proj_hidden": 16, "proj_dim": 8}),
    "moco-v2": ("moco", "joint embedding", {**CONV, "version": 2, "proj_hidden": 16, "proj_dim": 8, "queue_size": 32}),
    "moco-v3": ("moco", "joint embedding", {**CONV, "version": 3, "proj_hidden": 16, "proj_dim": 8}),
    "byol": ("byol", "joint embedding", {**CONV, "proj_hidden": 16, "proj_dim": 8, "pred_hidden": 16}),
    "simsiam": ("simsiam", "joint embedding", {**CONV, "proj_dim": 16, "pred_hidden": 8}),
    "swav": ("swav", "joint embedding", {**CONV, "prototypes": 10, "proj_hidden": 16, "proj_dim": 8, "n_local": 2,
                                         "queue_length": 16, "queue_start": 0.0, "freeze_prototypes": 0.3}),
    "dino": ("dino", "joint embedding", {**CONV, "out_dim": 32, "hidden_dim": 16, "bottleneck_dim": 8, "n_local": 2,
                                         "freeze_last_layer": 0.3, "teacher_temp_warmup": 0.5}),
    # DINO's paper trains ViTs: local crops then take the ViT's interpolated position embeddings (dynamic_size)
    "dino-vit": ("dino", "joint embedding", {**VIT, "backbone": "vit-tiny", "out_dim": 32, "hidden_dim": 16,
                                             "bottleneck_dim": 8, "n_local": 2}),
    "barlow-twins": ("barlow-twins", "joint embedding", {**CONV, "proj_dim": 16}),
    "vicreg": ("vicreg", "joint embedding", {**CONV, "proj_dim": 16}),
    "mae": ("mae", "masked", {**VIT, "decoder_width": 16, "decoder_depth": 1, "decoder_heads": 2}),
    "ijepa": ("ijepa", "masked", {**VIT, "predictor_width": 16, "predictor_depth": 1, "predictor_heads": 2}),
}
IDS = list(CASES)
BUDGET = 3 * BATCH  # the contract run: three steps
HALF = 2 * BATCH  # resume: interrupted after two steps of four
LABELS = (1, 10)


def pretrain(case: str, out, budget: int, **kw):
    name, _, options = CASES[case]
    kw = {"figures": False, **kw}
    return unsup.pretrain(name, data=kw.pop("data"), budget=str(budget), out=out, device="cpu", options=options,
                          quiet=True, monitor=False, tensorboard=False, **kw)


@pytest.fixture(scope="module")
def runs(fm_tiny, tmp_path_factory):
    """case -> its run directory, pretrained (with figures) on first use and shared by the checks below."""
    root, done = tmp_path_factory.mktemp("contract-runs"), {}

    def get(case: str):
        if case not in done:
            done[case] = pretrain(case, root / case, BUDGET, data=fm_tiny, figures=True)
        return done[case]

    return get


def _words(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


# 1. registered -----------------------------------------------------------------
@pytest.mark.parametrize("case", IDS)
def test_registered_with_family_paper_and_docstring(case, capsys):
    name, family, _ = CASES[case]
    cls = get_method(name)
    assert METHODS[name] is cls and cls.name == name
    assert cls.family == family and family in FAMILIES
    # "Author(s) year, Title": the citation `unsup methods` prints
    cited = re.match(r"(.+?) ((?:19|20)\d\d), (.+)$", cls.paper)
    assert cited, f"{name}: paper {cls.paper!r} is not 'Authors year, Title'"
    authors, _, title = cited.groups()
    title = re.sub(r"\s*\(.*\)$", "", title)  # MoCo's note on its v2 / v3 papers
    doc = _words(sys.modules[cls.__module__].__doc__ or "") + " " + _words(cls.__doc__ or "")
    assert _words(title) in doc, f"{name}: the docstring does not name the paper {title!r}"
    assert authors.split()[0].strip(",").lower() in doc  # the first author
    assert cli_main(["methods"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.split()[:1] == [name])
    assert family in row and cls.paper in row


# 2. pretrain -> run directory -> encoder -----------------------------------------
@pytest.mark.parametrize("case", IDS)
def test_pretrain_writes_a_run_whose_encoder_loads(case, runs, fm_tiny):
    run = runs(case)
    assert (run / "config.yaml").is_file() and (run / "encoder.safetensors").is_file()
    config = RunDir(run).read_config()
    assert config["method"] == CASES[case][0] and config["options"]["batch_size"] == BATCH
    state = RunDir(run).load_checkpoint()
    assert state["images_seen"] == BUDGET and state["step"] == BUDGET // BATCH
    declared = json.loads((run / "encoder.json").read_text())["out_dim"]
    enc = unsup.load_encoder(run)
    assert not enc.training and enc.out_dim == declared
    x = torch.from_numpy(np.load(fm_tiny)["test_images"][:5, None].copy()).float() / 255
    with torch.no_grad():
        f = enc(x)
    assert f.shape == (5, declared) and f.dtype == torch.float32 and torch.isfinite(f).all()
    assert f.std(0).max() > 0  # not a constant output
    # the saved encoder is the trained one (not a fresh initialisation)
    trained = {k[len("encoder."):]: v for k, v in state["method"].items() if k.startswith("encoder.")}
    own = enc.state_dict()
    assert trained and all(torch.equal(own[k], v) for k, v in trained.items() if k in own)


# 3. probe ----------------------------------------------------------------------
@pytest.mark.parametrize("case", IDS)
def test_probe_gives_a_row_per_budget_and_classifier(case, runs):
    run = runs(case)
    result = unsup.probe_run(run, budgets=LABELS, seeds=1, device="cpu", references=False, supervised=False)
    assert result["method"] == CASES[case][0] and result["family"] == CASES[case][1]
    assert result["dataset"] == "fm-tiny.npz" and result["test_size"] == 200
    assert result["encoder_dim"] == unsup.load_encoder(run).out_dim
    rows = result["results"]
    assert sorted((r["labels_per_class"], r["classifier"]) for r in rows) == \
        [(n, c) for n in LABELS for c in ("knn", "linear")]
    assert all(0 <= r["accuracy_mean"] <= 1 and r["seeds"] == [0] for r in rows)
    assert json.loads((run / "probe.json").read_text()) == result


# 4. figures --------------------------------------------------------------------
@pytest.mark.parametrize("case", IDS)
def test_figures_stage_writes_a_png(case, runs):
    run = runs(case)
    pngs = sorted((run / "figures").glob("*.png"))
    assert pngs, f"{case}: no figure in {run / 'figures'}"
    for p in pngs:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 1000, p


# 5. resume -----------------------------------------------------------------------
def _same(a, b, where: str = "") -> list[str]:
    """Where ``a`` and ``b`` (nested dicts / lists of tensors and plain values) differ; tensors by ``torch.equal``."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        ok = isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
        return [] if ok else [where]
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{where} keys {sorted(set(a) ^ set(b))}"]
        return [d for k in a for d in _same(a[k], b[k], f"{where}.{k}")]
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        if len(a) != len(b):
            return [f"{where} length"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _same(x, y, f"{where}[{i}]")]
    return [] if a == b or (a != a and b != b) else [f"{where}: {a!r} != {b!r}"]


@pytest.mark.parametrize("case", IDS)
def test_interrupted_run_resumes_bit_identically(case, fm_tiny, tmp_path, monkeypatch):
    """A run of four steps checkpoints after two; the run folder as it stood right after that checkpoint was
    written (what a ``kill -9`` then leaves, less the dead process's lock) resumes to the end, and ends with
    every weight, buffer, optimiser state, random state and last loss equal to those of the uninterrupted run."""
    full, part = tmp_path / "full", tmp_path / "part"
    save = RunDir.save_checkpoint

    def save_and_snapshot(self, state):  # the first checkpoint of `full`, the mid-run one, is copied as it lands
        save(self, state)
        if self.path == full and not part.exists():
            shutil.copytree(full, part)
            (part / ".lock").unlink()

    monkeypatch.setattr(RunDir, "save_checkpoint", save_and_snapshot)
    pretrain(case, full, 2 * HALF, data=fm_tiny, checkpoint_every=f"{HALF}img")
    monkeypatch.undo()
    half = RunDir(part).load_checkpoint()
    assert half["images_seen"] == HALF and half["step"] == HALF // BATCH
    cls, steps = get_method(CASES[case][0]), []
    after_step = cls.after_step

    def counted(self, progress):
        steps.append(progress)
        return after_step(self, progress)

    monkeypatch.setattr(cls, "after_step", counted)
    pretrain(case, part, 2 * HALF, data=fm_tiny, checkpoint_every=f"{HALF}img", resume=True)
    monkeypatch.undo()
    assert len(steps) == HALF // BATCH, f"{case}: the resumed run did {len(steps)} steps, not the last {HALF // BATCH}"
    a, b = RunDir(full).load_checkpoint(), RunDir(part).load_checkpoint()
    assert (a["step"], a["images_seen"]) == (b["step"], b["images_seen"]) == (2 * HALF // BATCH, 2 * HALF)
    diff = _same(a["method"], b["method"], "method")
    assert not diff, f"{case}: weights or buffers differ after resume: {diff[:5]}"
    for key in ("optimizers", "attributes", "rng", "logs", "epoch", "batch"):
        diff = _same(a.get(key), b.get(key), key)
        assert not diff, f"{case}: {key} differs after resume: {diff[:5]}"
    ea, eb = unsup.load_encoder(full).state_dict(), unsup.load_encoder(part).state_dict()
    assert ea.keys() == eb.keys() and all(torch.equal(ea[k], eb[k]) for k in ea)
    assert [r.get("event") for r in RunDir(part).metrics()].count("done") == 1
