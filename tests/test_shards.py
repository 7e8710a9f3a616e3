"""Prepared shard directories: prepare from an .npz and an image folder (corrupt
files skipped and listed), reads equal the in-memory images, a stopped prepare
resumes to the identical result, unfinished directories are refused, and
pretraining gives the same weights from the shards as from memory."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from unsup.cli import main
from unsup.data import load, readers, shards
from unsup.errors import UnsupError
from unsup.run import RunDir

RNG = np.random.default_rng(0)


def _npz(path, n=300, test=0, shape=(3, 8, 8)):
    x = RNG.integers(0, 256, (n, *shape), dtype=np.uint8)
    y = RNG.integers(0, 5, n)
    extra = {"test_images": RNG.integers(0, 256, (test, *shape), dtype=np.uint8), "test_labels": RNG.integers(0, 5, test)} if test else {}
    np.savez(path, images=x, labels=y, **extra)
    return str(path)


def _files(root) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir()) if p.is_file()}


def test_npz_reads_equal_memory(tmp_path, monkeypatch):
    src = _npz(tmp_path / "a.npz", n=300, test=40)
    index = shards.prepare(src, tmp_path / "out", shard_images=64, quiet=True)
    assert index["complete"] and index["shape"] == [3, 8, 8]
    assert [s["count"] for s in index["splits"]["train"]["shards"]] == [64, 64, 64, 64, 44]
    for split in ("train", "test", "unlabeled"):
        mem, disk = load(src, split), load(str(tmp_path / "out"), split)
        assert isinstance(disk.images, shards.ShardImages) and len(disk) == len(mem) and disk.shape == mem.shape
        assert torch.equal(disk.labels, mem.labels)
        idx = torch.randint(-len(mem), len(mem), (200,))  # repeats and negatives, any order
        assert torch.equal(disk.images[idx], mem.images[idx])
        assert torch.equal(disk.images[10:150:3], mem.images[10:150:3]) and torch.equal(disk.images[7], mem.images[7])
        disk.images.prefetch(idx[:50])
        assert torch.equal(disk.images[idx[:50]], mem.images[idx[:50]])
        assert torch.equal(disk.to("cpu").images.cpu(), mem.images)
    # a single-split source: the same fixed hold-out as in memory, on disk or read into memory by size
    src1 = _npz(tmp_path / "b.npz", n=500)
    shards.prepare(src1, tmp_path / "out1", shard_images=100, quiet=True)
    for limit in (0, shards.IN_MEMORY_SUBSET):
        monkeypatch.setattr(shards, "IN_MEMORY_SUBSET", limit)
        for split in ("train", "test", "unlabeled"):
            mem, disk = load(src1, split), load(str(tmp_path / "out1"), split)
            assert isinstance(disk.images, shards.ShardImages) == (limit == 0 or split == "unlabeled")
            assert torch.equal(disk.images[torch.arange(len(disk))], mem.images) and torch.equal(disk.labels, mem.labels)
    sub = load(str(tmp_path / "out1"), "unlabeled").subset(torch.tensor([3, 1, 400]))
    assert torch.equal(sub.images, load(src1, "unlabeled").images[[3, 1, 400]])


def test_image_folder_skips_corrupt_files(tmp_path):
    from PIL import Image

    root = tmp_path / "pics"
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(5):
            side = 6 + i  # sizes differ: --size makes them one
            Image.fromarray(RNG.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    (root / "dog" / "bad.png").write_bytes(b"not a png")
    index = shards.prepare(root, tmp_path / "out", size=8, shard_images=3, quiet=True)
    skipped = index["splits"]["all"]["skipped"]
    assert [k["file"] for k in skipped] == [str(root / "dog" / "bad.png")] and skipped[0]["error"]
    (root / "dog" / "bad.png").unlink()
    x, y, classes = readers.read_image_folder(root, size=8)
    ds = load(str(tmp_path / "out"), "unlabeled")
    assert ds.classes == classes == ["cat", "dog"]
    assert torch.equal(ds.images[:], torch.from_numpy(x)) and torch.equal(ds.labels, torch.from_numpy(y))


def test_resume_gives_the_identical_result(tmp_path):
    from PIL import Image

    src = _npz(tmp_path / "a.npz", n=300, test=40)
    whole = tmp_path / "whole"
    shards.prepare(src, whole, shard_images=64, quiet=True)
    # stopped after two train shards: the third shard and its index entry gone, the rest never written
    half = tmp_path / "half"
    shutil.copytree(whole, half)
    index = json.loads((half / "index.json").read_text())
    index["complete"], index["splits"]["test"] = False, {"complete": False, "next_item": 0, "shards": [], "skipped": []}
    rec = index["splits"]["train"]
    rec["complete"], rec["shards"], rec["next_item"] = False, rec["shards"][:2], rec["shards"][1]["next_item"]
    (half / "index.json").write_text(json.dumps(index))
    for name in ("train-00002.bin", "train-00003.bin", "train-00004.bin", "test-00000.bin"):
        (half / name).unlink()
    with pytest.raises(UnsupError, match="unfinished prepare.*unsup data prepare"):
        load(str(half), "train")
    kept = (half / "train-00001.bin").stat().st_ino
    shards.prepare(src, half, shard_images=64, quiet=True)
    assert _files(half) == _files(whole)
    assert (half / "train-00001.bin").stat().st_ino == kept  # continued after it, not rewritten
    # a damaged shard of a complete set: rewritten from there on
    (half / "train-00001.bin").write_bytes(b"\0" * (64 * 192))
    kept = (half / "train-00000.bin").stat().st_ino
    shards.prepare(src, half, shard_images=64, quiet=True)
    assert _files(half) == _files(whole) and (half / "train-00000.bin").stat().st_ino == kept
    # an image folder stopped mid-way, after a corrupt file was skipped
    root = tmp_path / "pics"
    root.mkdir()
    for i in range(9):
        Image.fromarray(RNG.integers(0, 256, (4, 4), dtype=np.uint8)).save(root / f"{i}.png")
    (root / "3a.png").write_bytes(b"junk")
    shards.prepare(root, tmp_path / "f-whole", shard_images=2, quiet=True)
    part = tmp_path / "f-part"
    shutil.copytree(tmp_path / "f-whole", part)
    index = json.loads((part / "index.json").read_text())
    rec = index["splits"]["all"]
    index["complete"], rec["complete"], rec["shards"] = False, False, rec["shards"][:2]
    rec["next_item"] = rec["shards"][-1]["next_item"]
    (part / "index.json").write_text(json.dumps(index))
    shards.prepare(root, part, shard_images=2, quiet=True)
    assert _files(part) == _files(tmp_path / "f-whole")
    assert len(json.loads((part / "index.json").read_text())["splits"]["all"]["skipped"]) == 1


def test_refusals(tmp_path, capsys):
    src = _npz(tmp_path / "a.npz", n=100)
    out = tmp_path / "out"
    assert main(["data", "prepare", src, "--out", str(out), "--quiet"]) == 0
    assert "all 100 images in 1 shard(s)" in capsys.readouterr().out
    (out / "all-00000.bin").unlink()
    with pytest.raises(UnsupError, match="missing; rerun `unsup data prepare"):
        load(str(out), "train")
    assert main(["data", "prepare", src, "--size", "4", "--out", str(out)]) == 2
    assert "another size" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("x")
    with pytest.raises(UnsupError, match="not empty and not a prepared set"):
        shards.prepare(src, tmp_path / "full")
    assert main(["data", "prepare", src]) == 2
    assert main(["data", "get", "fashion-mnist", "--size", "8"]) == 2
    # reading every row at once is held to the memory limit; batches are not
    shards.prepare(src, tmp_path / "ok", quiet=True)
    ds = load(str(tmp_path / "ok"), "unlabeled")
    readers.set_memory_limit(1000)
    try:
        with pytest.raises(UnsupError, match="over the memory limit"):
            ds.images.cpu()
        assert ds.images[:10].shape == (10, 3, 8, 8)
    finally:
        readers.set_memory_limit(None)


def test_pretrain_same_weights_from_shards(tmp_path, monkeypatch):
    import unsup
    from unsup.train import loop

    src = _npz(tmp_path / "a.npz", n=400, test=100, shape=(3, 16, 16))
    shards.prepare(src, tmp_path / "shards", shard_images=100, quiet=True)
    assert isinstance(load(str(tmp_path / "shards"), "train").images, shards.ShardImages)

    def pretrain(name, data):
        return unsup.pretrain("simclr", data=data, budget="512", out=tmp_path / name, options={"batch_size": 64},
                              quiet=True, figures=False, monitor=True, tensorboard=False)

    runs = [pretrain("mem", src), pretrain("disk", str(tmp_path / "shards"))]
    # the loop with prefetch (the change it needs, patched in here): the batches read ahead are the ones trained
    batches, seen = loop._batches, []

    def prefetching(*args, **kwargs):
        return shards.prefetched(batches(*args, **kwargs), seen[-1])

    def train_loop(method, data, budget, ctx, original=loop.train_loop):
        seen.append(data.images)
        return original(method, data, budget, ctx)

    monkeypatch.setattr(loop, "_batches", prefetching)
    monkeypatch.setattr(unsup.api, "train_loop", train_loop)
    runs.append(pretrain("disk-prefetch", str(tmp_path / "shards")))
    assert seen[-1]._pool is not None  # it did prefetch
    a, b, c = (unsup.load_encoder(r).state_dict() for r in runs)
    assert a.keys() == b.keys() == c.keys() and all(torch.equal(a[k], b[k]) and torch.equal(a[k], c[k]) for k in a)
    monitors = [[m["knn_monitor"] for m in RunDir(r).metrics() if "knn_monitor" in m] for r in runs]
    assert monitors[0] and monitors[0] == monitors[1]  # the k-NN monitor's bank: a subset read into memory
    # probing reads the prepared splits in batches: the same rows as from memory
    from unsup.evaluate import probe, raw_pixel_rows

    encoder = unsup.load_encoder(runs[0])
    rows = [(probe(encoder, load(d, "train"), load(d, "test"), (1, "all"), 1), raw_pixel_rows(load(d, "train"), load(d, "test"), (1,), 1))
            for d in (src, str(tmp_path / "shards"))]
    assert rows[0] == rows[1]
