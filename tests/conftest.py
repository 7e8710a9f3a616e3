"""Shared fixtures: a small real Fashion-MNIST subset as an .npz (with its own
test arrays), and a private cache so the supervised-reference cache of one
test never leaks into another."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("UNSUP_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def torchrun():
    """Run ``ARGS`` as two processes under ``torchrun`` (a free port, one thread
    each) and return the finished process; a failure shows what the processes
    printed (the head of stderr), not only the launcher's traceback (its tail)."""

    def run(*args, timeout: int = 300, cwd=None) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *map(str, args)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert done.returncode == 0, f"{done.stderr[:2500]}\n...\n{done.stderr[-800:]}"
        return done

    return run


@pytest.fixture(scope="session")
def fm_small(tmp_path_factory) -> str:
    """3,000 training and 1,000 test images of Fashion-MNIST, class-balanced."""
    from unsup.data import load

    out = tmp_path_factory.mktemp("data") / "fm-small.npz"
    tr, te = load("fashion-mnist", "train"), load("fashion-mnist", "test")
    g = torch.Generator().manual_seed(0)
    i, j = torch.randperm(len(tr), generator=g)[:3000], torch.randperm(len(te), generator=g)[:1000]
    np.savez(out, images=tr.images[i, 0].numpy(), labels=tr.labels[i].numpy(),
             test_images=te.images[j, 0].numpy(), test_labels=te.labels[j].numpy())
    return str(out)


@pytest.fixture(scope="session")
def fm_tiny(tmp_path_factory) -> str:
    """300 training (30 per class) and 200 test (20 per class) images of
    Fashion-MNIST: enough for 10 labels per class, small enough that a probe
    and a t-SNE figure take a second."""
    from unsup.data import load

    def balanced(ds, per_class: int, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        p = torch.randperm(len(ds), generator=g)
        idx = torch.cat([p[ds.labels[p] == c][:per_class] for c in range(10)])
        return idx[torch.randperm(len(idx), generator=g)]

    out = tmp_path_factory.mktemp("data") / "fm-tiny.npz"
    tr, te = load("fashion-mnist", "train"), load("fashion-mnist", "test")
    i, j = balanced(tr, 30, 0), balanced(te, 20, 1)
    np.savez(out, images=tr.images[i, 0].numpy(), labels=tr.labels[i].numpy(),
             test_images=te.images[j, 0].numpy(), test_labels=te.labels[j].numpy())
    return str(out)
