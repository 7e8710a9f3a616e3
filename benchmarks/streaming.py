"""Training from prepared shards on disk vs from memory: SimCLR throughput and
peak resident memory, measured side by side in one run.

    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python benchmarks/streaming.py [--dir /tmp/unsup-shards] [--seconds 60]

1. Generates ``--images`` (1,000,000) RGB 32x32 images of smooth noise (random
   4x4 colour blocks upsampled, plus fine noise) straight into shards in
   ``--dir`` (about 3 GB; reused when already there), with ``shards.ShardWriter``.
2. Trains SimCLR (small convnet, batch 256, default augmentation) with the real
   ``train_loop`` for ``--seconds`` after a short warm-up, each path in its own
   process, interleaved A-B-B-A over ``--rounds`` x 2 runs: in memory (the first
   ``--in-memory`` images read into a tensor) and streaming (all the shards).
   Both go through ``shards.prefetched``, the loop change that prefetch needs
   (applied here by wrapping ``loop._batches``; a plain tensor passes through).
   Each process reports its images/s and its peak resident memory (VmHWM).
3. Pretrains SimCLR on a 10,000-image ``.npz`` cut from the set and on the
   same images prepared into shards (``unsup.pretrain`` both times, same seed)
   and compares the encoders' weights.

Writes benchmarks/results/streaming.md and streaming.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).parent / "results"


def generate(root: Path, n: int, seed: int = 0) -> float:
    """The set in ``root`` as one ``train`` split; returns the seconds it took (0 when reused)."""
    from unsup.data import shards

    if shards.is_prepared(root):
        index = shards.read_index(root)
        if index.get("complete") and sum(s["count"] for s in index["splits"]["train"]["shards"]) == n:
            return 0.0
        shutil.rmtree(root)
    t0 = time.perf_counter()
    writer = shards.ShardWriter(root, f"benchmarks/streaming.py: {n} smooth-noise images, seed {seed}", None,
                                (3, 32, 32), [], ["train"])
    rng = np.random.default_rng(seed)
    for lo in range(0, n, writer.per):
        m = min(writer.per, n - lo)
        img = rng.integers(0, 224, (m, 3, 4, 4), dtype=np.uint8).repeat(8, axis=2).repeat(8, axis=3)
        img += rng.integers(0, 32, img.shape, dtype=np.uint8)  # below 256: no wrap-around
        writer.add("train", img, np.full(m, -1, np.int64), np.arange(lo, lo + m))
    writer.finish("train", n)
    writer.close()
    return time.perf_counter() - t0


def peak_rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker(args) -> dict:
    """One path's run in this process: images/s of ``train_loop`` and the peak resident memory."""
    from unsup.data import ImageDataset, load, shards
    from unsup.methods.base import config_from_dict
    from unsup.registry import get_method
    from unsup.train import loop

    torch.set_num_threads(args.threads)
    ds = load(args.dir, "train")
    data = ImageDataset("in-memory", ds.images[: args.in_memory], None) if args.worker == "memory" else ds
    loaded_rss = peak_rss_mb()
    batches = loop._batches
    loop._batches = lambda *a, **k: shards.prefetched(batches(*a, **k), data.images)  # the loop change, applied here
    cls = get_method("simclr")
    torch.manual_seed(0)
    method = cls(config_from_dict(cls.Config, {"batch_size": 256}), data.shape)

    def ctx():
        return loop.TrainContext(quiet=True, seed=0, checkpoint_every="1000000s", tensorboard=False)

    loop.train_loop(method, data, str(args.warmup), ctx())
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    summary = loop.train_loop(method, data, f"{args.seconds}s", ctx())
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)  # this process, every thread
    g = torch.Generator().manual_seed(1)
    t0 = time.perf_counter()
    for _ in range(20):  # the read alone: random batches of 256, no prefetch
        data.images[torch.randint(len(data), (256,), generator=g)]
    read_ms = (time.perf_counter() - t0) / 20 * 1000
    return {"path": args.worker, "images": len(data), "images_seen": summary["images_seen"],
            "seconds": round(summary["seconds"], 2), "images_per_s": round(summary["images_seen"] / summary["seconds"], 1),
            "images_per_cpu_s": round(summary["images_seen"] / cpu_s, 1),
            "read_ms_per_batch": round(read_ms, 2), "peak_rss_mb": round(peak_rss_mb(), 1),
            "rss_after_load_mb": round(loaded_rss, 1)}


def run_worker(path: str, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", path, "--dir", str(args.dir), "--seconds", str(args.seconds),
           "--warmup", str(args.warmup), "--in-memory", str(args.in_memory), "--threads", str(args.threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    if done.returncode:
        raise SystemExit(f"{path} worker failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"  {path}: {result['images_per_s']} images/s, {result['images_per_cpu_s']} per CPU-s, peak RSS {result['peak_rss_mb']:.0f} MB, "
          f"read {result['read_ms_per_batch']} ms/batch", flush=True)
    return result


def identical_weights(root: Path, n: int = 10_000) -> dict:
    """SimCLR on ``n`` images from an .npz vs the same images prepared into shards: equal encoder weights?"""
    import unsup
    from unsup.data import load, shards

    ds = load(str(root), "train")
    x = ds.images[: n + 1000].numpy()
    work = root.parent / f"{root.name}-identical"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    npz = work / "set.npz"
    np.savez(npz, images=x[:n], test_images=x[n:])  # its own test split: the train split is all n, streamed
    shards.prepare(npz, work / "shards", quiet=True)
    streamed = isinstance(load(str(work / "shards"), "train").images, shards.ShardImages)
    runs = [unsup.pretrain("simclr", data=str(d), budget="2560", out=work / name, options={"batch_size": 256}, quiet=True,
                           figures=False, monitor=False, tensorboard=False)
            for name, d in (("memory", npz), ("shards", work / "shards"))]
    a, b = (unsup.load_encoder(r).state_dict() for r in runs)
    same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    shutil.rmtree(work)
    return {"images": n, "budget_images": 2560, "batch_size": 256, "streamed": streamed, "identical": same}


def report(res: dict) -> str:
    mem, st = res["memory"], res["stream"]
    rows = [f"| {r['path']} | {r['images']:,} | {r['images_seen']:,} | {r['images_per_s']} | {r['images_per_cpu_s']} | "
            f"{r['read_ms_per_batch']} | {r['peak_rss_mb']:.0f} |"
            for pair in zip(mem, st) for r in pair]
    ratio = res["ratio"]
    return "\n".join([
        "# Streaming from prepared shards vs in memory",
        "",
        f"Command: `{res['command']}`  ",
        f"Machine: {res['machine']} (torch); {res['date']}. The CPU is shared with other "
        "jobs: the paths ran interleaved (A-B-B-A), so the ratio is what to read.",
        "",
        f"Set: {res['images']:,} generated RGB 32x32 images in {res['shards']} shards "
        f"({res['bytes'] / 2**30:.2f} GiB; generated in {res['generate_seconds']:.0f} s, 0 = reused), read with "
        "positional reads (no memory map), the files in the page cache. Training: SimCLR, small convnet, batch 256, "
        f"the real `train_loop`, {res['seconds']} s per run after {res['warmup']} warm-up images, each run in its own process. "
        "images/s is wall-clock; images per CPU-second (every thread of the process, prefetch included) depends "
        "less on what else the machine runs.",
        "",
        "Rows in pairs of adjacent runs (run order: memory, stream, stream, memory per block).",
        "",
        "| path | images held | images trained | images/s | images per CPU-s | read ms/batch (alone) | peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"Streaming / in memory, images/s: **{ratio:.3f}** (floor 0.90); per adjacent pair: "
        + ", ".join(f"{r:.3f}" for r in res["pair_ratios"]) + f"; per CPU-second: **{res['cpu_ratio']:.3f}**.  ",
        f"Peak resident memory streaming {res['stream_peak_rss_mb']:.0f} MB (floor 2048 MB).  ",
        f"Same encoder weights from a {res['identical']['images']:,}-image .npz and from its shards (SimCLR, "
        f"{res['identical']['budget_images']} images, batch 256, seed 0, read streamed: {res['identical']['streamed']}): "
        f"**{res['identical']['identical']}**.",
        "",
    ])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--dir", type=Path, default=Path("/tmp/unsup-shards"))
    p.add_argument("--images", type=int, default=1_000_000)
    p.add_argument("--in-memory", type=int, default=200_000, help="images the in-memory path holds")
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--warmup", type=int, default=512, help="images trained before the measured run")
    p.add_argument("--rounds", type=int, default=1, help="A-B-B-A blocks (each: 2 runs per path)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--keep", action="store_true", help="keep the generated set (default: deleted at the end)")
    p.add_argument("--worker", choices=["memory", "stream"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    from unsup.api import machine
    from unsup.data import shards

    print(f"generating {args.images:,} images into {args.dir}", flush=True)
    gen = generate(args.dir, args.images)
    index = shards.read_index(args.dir)
    res = {"memory": [], "stream": []}
    for _ in range(args.rounds):
        for path in ("memory", "stream", "stream", "memory"):
            res[path].append(run_worker(path, args))
    mean = {k: float(np.mean([r["images_per_s"] for r in v])) for k, v in res.items()}
    per_cpu = {k: float(np.mean([r["images_per_cpu_s"] for r in v])) for k, v in res.items()}
    torch.set_num_threads(args.threads)
    print("identical weights check (10k images)", flush=True)
    same = identical_weights(args.dir)
    res.update(
        command="OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python benchmarks/streaming.py " + " ".join(sys.argv[1:]),
        machine=machine(), threads=args.threads, date=datetime.date.today().isoformat(), images=args.images,
        shards=len(index["splits"]["train"]["shards"]), bytes=args.images * 3 * 32 * 32, generate_seconds=round(gen, 1),
        seconds=args.seconds, warmup=args.warmup, mean_images_per_s=mean, ratio=mean["stream"] / mean["memory"],
        mean_images_per_cpu_s=per_cpu, cpu_ratio=per_cpu["stream"] / per_cpu["memory"],
        pair_ratios=[s["images_per_s"] / m["images_per_s"] for m, s in zip(res["memory"], res["stream"])],
        stream_peak_rss_mb=max(r["peak_rss_mb"] for r in res["stream"]), identical=same)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "streaming.json").write_text(json.dumps(res, indent=2))
    from kmeans_speed import write_results  # the benchmarks' one writer: keeps the hand-written reading

    write_results(RESULTS / "streaming.md", report(res))
    print(report(res))
    if not args.keep:
        shutil.rmtree(args.dir)


if __name__ == "__main__":
    main()
