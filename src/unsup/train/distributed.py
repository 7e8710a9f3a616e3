"""Multi-process data parallel under ``torchrun``: gloo on CPU, NCCL on CUDA.

Each process sees its own shard of every batch; gradients are averaged with
one bucketed ``all_reduce`` per step (the arithmetic of
DistributedDataParallel, applied after any custom step so GANs work too), and
contrastive losses gather embeddings with gradients across processes.
"""

from __future__ import annotations

import atexit
import hashlib
import os

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_main() -> bool:
    return rank() == 0


def init_from_env(device: torch.device) -> bool:
    """Join the process group that ``torchrun`` describes in the environment."""
    if is_distributed() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return is_distributed()
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)
    if backend == "gloo":  # a gloo group still open at interpreter exit can abort the process
        atexit.register(_leave)  # ("terminate called without an active exception"), about 1 run in 15 here
    return True


def _leave() -> None:
    if is_distributed():
        dist.destroy_process_group()


def average_gradients(params) -> None:
    if not is_distributed():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every process, keeping gradients to the local part."""
    if not is_distributed():
        return x
    import torch.distributed.nn.functional as dist_nn

    return torch.cat(dist_nn.all_gather(x), dim=0)


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum a statistic over processes in place (k-means counts and sums)."""
    if is_distributed():
        dist.all_reduce(x)
    return x


def broadcast(x: torch.Tensor, src: int = 0) -> torch.Tensor:
    if is_distributed():
        dist.broadcast(x, src)
    return x


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def broadcast_module(module: torch.nn.Module) -> None:
    """Every process takes rank 0's parameters and buffers: replicas start equal
    whatever each process's random state was when the model was built."""
    if is_distributed():
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, 0)


def replica_digests(module: torch.nn.Module) -> list[str]:
    """A digest of ``module``'s parameters on every process (rank order): equal
    digests mean bit-identical weights. Buffers are left out: batch-norm running
    statistics follow each process's shard (rank 0's are the ones saved). One
    host copy: for run start and end only."""
    h = hashlib.sha256()
    for name, t in module.named_parameters():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    if not is_distributed():
        return [h.hexdigest()[:16]]
    out: list = [None] * world_size()
    dist.all_gather_object(out, h.hexdigest()[:16])
    return out
