"""Two CPU processes under torchrun (gloo): SimCLR trains data-parallel with
negatives gathered across processes, and averaged gradients keep the two
replicas identical."""

from __future__ import annotations

import torch
from safetensors.torch import load_file


def test_torchrun_two_processes_simclr(fm_small, tmp_path, torchrun):
    out = tmp_path / "ddp"
    torchrun("-m", "unsup.cli", "pretrain", "simclr", "--data", fm_small, "--budget", "512", "--out", out,
             "-o", "batch_size=64", "--device", "cpu", "--quiet", timeout=600)
    assert (out / "encoder.safetensors").is_file()
    import yaml

    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["world_size"] == 2
    weights = load_file(str(out / "encoder.safetensors"))
    assert all(torch.isfinite(v.float()).all() for v in weights.values())
    # each process seeds with seed + rank, so only the broadcast from rank 0 makes the replicas start equal
    import json

    replicas = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r.get("event") == "replicas"]
    assert len(replicas) == 1 and replicas[0]["identical"], replicas
    assert len(set(replicas[0]["start_digests"])) == 1 and len(set(replicas[0]["end_digests"])) == 1
    assert replicas[0]["start_digests"] != replicas[0]["end_digests"]  # and they trained


REPLICA_SCRIPT = r'''
import torch, torch.distributed as dist
from unsup.train import distributed as d
from unsup.train.loop import TrainContext, train_loop
from unsup.methods.joint.simclr import SimCLR, SimCLRConfig
from unsup.data import load
import sys
d.init_from_env(torch.device("cpu"))
torch.manual_seed(0)  # same initial weights on both ranks
m = SimCLR(SimCLRConfig(batch_size=32), (1, 28, 28))
torch.manual_seed(100 + d.rank())  # different augmentations per rank
data = load(sys.argv[1], "train").subset(torch.arange(256))
train_loop(m, data, "192", TrainContext(quiet=True))
flat = torch.cat([p.detach().flatten() for p in m.parameters()])
both = [torch.zeros_like(flat) for _ in range(2)]
dist.all_gather(both, flat)
# gradient averaging keeps replicas identical; a gathered loss has gradients for both ranks
x = torch.randn(4, 3, requires_grad=True)
g = d.gather_with_grad(x)
(g.sum() * (d.rank() + 1)).backward()
if d.rank() == 0:
    print("MAXDIFF", float((both[0] - both[1]).abs().max()), "GRAD", float(x.grad.mean()))
dist.destroy_process_group()
'''


def test_replicas_stay_identical_and_gather_has_gradients(fm_small, tmp_path, torchrun):
    script = tmp_path / "replicas.py"
    script.write_text(REPLICA_SCRIPT)
    done = torchrun(script, fm_small, timeout=600)
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("MAXDIFF"))
    _, maxdiff, _, grad = line.split()
    assert float(maxdiff) == 0.0
    assert float(grad) == 3.0  # d(sum over both ranks' losses)/dx = 1 + 2
