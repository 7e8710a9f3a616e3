"""Benchmark of the pretext family on Fashion-MNIST (issue 6 floors).

For each method: pretrain with an images-seen budget, read its pretext
accuracy (logged during training, and on fresh tasks from test images with the
saved head), probe the frozen encoder (k-NN and linear, 10 and 100 labels per
class, 3 seeds) and compare with the random-weights encoder on the very same
splits; for stereo, the right-view error on skimage's motorcycle pair against
no shift and the best global shift, and the rank correlation of the predicted
disparity with the true one. Plus the guard ablation: jigsaw without gaps or
jitter (tile_frac=1.0).

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python benchmarks/pretext.py   # everything, then the table
    .venv/bin/python benchmarks/pretext.py --only rotation,context   # some runs, one after another
    .venv/bin/python benchmarks/pretext.py --retest --only jigsaw    # re-measure held-out pretext accuracy
    .venv/bin/python benchmarks/pretext.py --report             # the table from finished runs

Writes benchmarks/results/pretext.md; runs and per-run JSON under bench-out/pretext/.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import time
from pathlib import Path

import torch
from results_page import write_results

import unsup
from unsup.data import load
from unsup.evaluate import probe, raw_pixel_rows
from unsup.registry import get_method
from unsup.run import RunDir, build_method

ROOT = Path(__file__).resolve().parent
OUT = ROOT.parent / "bench-out" / "pretext"
RESULTS = ROOT / "results" / "pretext.md"
# label -> (method, images-seen budget, options); each budget is about 3 minutes of one idle core
# (measured: rotation 50 images/s = 200 rotated copies/s, jigsaw 84 puzzles/s, context and
# cooccurrence ~500 pairs/s, exemplar ~250 views/s, stereo 52 scenes/s)
RUNS = {
    "rotation": ("rotation", "9k", {}),  # 9k images = 36k rotated copies
    # jigsaw and context at 4x their first budgets (about 8 minutes each): at 15k puzzles / 80k pairs their
    # features were still at or below the random encoder's (rows -15k / -80k); cooccurrence stays at 80k
    # pairs, its features got worse with 4x (row cooccurrence-320k)
    "jigsaw": ("jigsaw", "60k", {}),
    "jigsaw-seed1": ("jigsaw", "60k", {"seed": 1}),
    "jigsaw-seed2": ("jigsaw", "60k", {"seed": 2}),  # fifth session: a third pretraining seed for the linear@10 tie
    "jigsaw-no-gap-60k": ("jigsaw", "60k", {"tile_frac": 1.0}),  # ablation: no gaps, no jitter
    "jigsaw-15k": ("jigsaw", "15k", {}),
    "jigsaw-no-gap": ("jigsaw", "15k", {"tile_frac": 1.0}),  # ablation: no gaps, no jitter
    "context": ("context", "320k", {"free_layout": False}),
    "context-seed1": ("context", "320k", {"free_layout": False, "seed": 1}),
    "context-80k": ("context", "80k", {"free_layout": False}),
    "cooccurrence": ("cooccurrence", "80k", {}),
    "cooccurrence-320k": ("cooccurrence", "320k", {}),
    "exemplar": ("exemplar", "40k", {"surrogate_classes": 500}),  # batches of 64 (the default): 625 steps
    "exemplar-b256": ("exemplar", "40k", {"surrogate_classes": 500, "batch_size": 256}),  # the former default: 156 steps
    "stereo": ("stereo", "9k", {}),
    # more, smaller steps in the same images-seen budget
    "jigsaw-b32": ("jigsaw", "15k", {"batch_size": 32}),
    "context-b64": ("context", "80k", {"free_layout": False, "batch_size": 64}),
    "cooccurrence-b64": ("cooccurrence", "80k", {"batch_size": 64}),
    # the 3x3 layout free to move (17 px of slack on a 64-pixel canvas) instead of pinned to the centred object
    "context-s64": ("context", "80k", {"free_layout": False, "size": 64, "patch_frac": 0.17}),
    "context-s64-ws": ("context", "80k", {"free_layout": False, "size": 64, "patch_frac": 0.17, "probe_at_working_scale": True}),
    "stereo-seed1": ("stereo", "9k", {"seed": 1}),  # the same run with another pretraining seed
    # the next two ran before grounded objects became the default (sixth session), so they name grounded=False now
    "stereo-no-top": ("stereo", "9k", {"global_branch": False, "grounded": False}),  # ablation: without Deep3D's top (fc) branch
    "stereo-plain": ("stereo", "9k", {"plain_background": 0.5, "grounded": False}),  # half the scenes on a black background
    "stereo-free": ("stereo", "9k", {"grounded": False}),  # ablation: objects float at random depths (the old default)
    # the patch tasks probed at the scale their filters were trained at (whole images resized to 48x48)
    "jigsaw-ws": ("jigsaw", "15k", {"probe_at_working_scale": True}),
    "context-ws": ("context", "80k", {"free_layout": False, "probe_at_working_scale": True}),
    "cooccurrence-ws": ("cooccurrence", "80k", {"probe_at_working_scale": True}),
    # fifth session: the pair anywhere in the image (Isola et al. sample pairs over the whole image), not a 3x3
    # layout pinned to the centred object, where the first patch was always the image centre
    "cooccurrence-free": ("cooccurrence", "80k", {"free_layout": True}),
    # fifth session: patches in their own intensities (per-patch normalisation is Doersch's and Noroozi's guard for
    # position tasks; for co-occurrence, shared brightness and contrast are part of what co-occurs)
    "cooccurrence-raw": ("cooccurrence", "80k", {"normalise_patches": False}),
    # fifth session: "nearby" nearer (a gap of a quarter patch, never touching with the 1-pixel jitter; the default half
    # patch is Doersch's), so the 3x3 layout is no longer pinned to the centre either (13 px of slack)
    "cooccurrence-near": ("cooccurrence", "80k", {"gap_frac": 0.25}),
    # fifth session: context's pair anywhere in the image (in the paper's large images the layout moves freely)
    "context-free-80k": ("context", "80k", {"free_layout": True}),
    "context-free": ("context", "320k", {"free_layout": True}),
    "context-free-seed1": ("context", "320k", {"free_layout": True, "seed": 1}),
    "context-free-seed2": ("context", "320k", {"free_layout": True, "seed": 2}),
    "cooccurrence-free-320k": ("cooccurrence", "320k", {"free_layout": True}),
    # fifth session, chosen after the probe numbers above: bigger patches (16 px of 48, a third of the side; only a free
    # pair fits), since one 11-pixel patch carries little of the garment's class
    "cooccurrence-free-p33": ("cooccurrence", "80k", {"free_layout": True, "patch_frac": 0.33}),
    "cooccurrence-free-p33-320k": ("cooccurrence", "320k", {"free_layout": True, "patch_frac": 0.33}),
    # fifth session: the paper's 1000 permutations (Noroozi & Favaro's best transfer; the default 100 dates from the 15k budget)
    "jigsaw-p1000": ("jigsaw", "60k", {"permutations": 1000}),
    "jigsaw-p1000-seed1": ("jigsaw", "60k", {"permutations": 1000, "seed": 1}),
    "cooccurrence-seed1": ("cooccurrence", "80k", {"seed": 1}),
    # sixth session, chosen on the validation probe (benchmarks/pretext_val.py, training split only): a per-patch fully
    # connected layer on each patch's unpooled 2x2 map (the top of each siamese branch) instead of the pooled feature
    "cooccurrence-fc": ("cooccurrence", "80k", {"patch_fc": 128}),
    "cooccurrence-fc-seed1": ("cooccurrence", "80k", {"patch_fc": 128, "seed": 1}),
    "cooccurrence-fc-seed2": ("cooccurrence", "80k", {"patch_fc": 128, "seed": 2}),
    # sixth session, chosen on the validation probe: the paper's per-tile fc6 on each tile's unpooled 3x3 map
    "jigsaw-fc6": ("jigsaw", "60k", {"tile_fc": 128}),
    "jigsaw-fc6-seed1": ("jigsaw", "60k", {"tile_fc": 128, "seed": 1}),
    "jigsaw-fc6-seed2": ("jigsaw", "60k", {"tile_fc": 128, "seed": 2}),
    # seventh session, chosen on the validation probe: 72x72 working images (24-pixel cells, 20-pixel tiles: a 5x5 map
    # after the tile encoder's two poolings, where 14-pixel tiles left 3x3, mostly zero-padding border); the gap and
    # jitter keep the paper's proportions. jigsaw-s72 is the validation screen's run itself (seed 0, the same options;
    # that run logged a k-NN monitor on the side), probed here on the test split
    "jigsaw-s72": ("jigsaw", "60k", {"size": 72}),
    "jigsaw-s72-seed1": ("jigsaw", "60k", {"size": 72, "seed": 1}),
    "jigsaw-s72-seed2": ("jigsaw", "60k", {"size": 72, "seed": 2}),
    "jigsaw-s72-no-gap": ("jigsaw", "60k", {"size": 72, "tile_frac": 1.0}),  # the guard ablation at the new default
    # seventh session, chosen on the validation probe: the papers' SGD with momentum 0.9 and weight decay 5e-4
    # (AdamW's decay here was 1e-4 x lr, nothing), with the per-patch fc
    "cooccurrence-fc-sgd": ("cooccurrence", "80k", {"patch_fc": 128, "optimizer": "sgd", "lr": 0.05, "weight_decay": 5e-4}),
    "cooccurrence-fc-sgd-seed1": ("cooccurrence", "80k", {"patch_fc": 128, "optimizer": "sgd", "lr": 0.05, "weight_decay": 5e-4, "seed": 1}),
    "cooccurrence-fc-sgd-seed2": ("cooccurrence", "80k", {"patch_fc": 128, "optimizer": "sgd", "lr": 0.05, "weight_decay": 5e-4, "seed": 2}),
    # seventh session, chosen on the validation probe (a helper's screen of 20 stereo variants, 2 seeds each for the
    # finalists): 4x the scenes with Adam at 5e-4; at 9k scenes no variant cleared linear@10
    "stereo-36k-lr5e-4": ("stereo", "36k", {"lr": 5e-4}),
    "stereo-36k-lr5e-4-seed1": ("stereo", "36k", {"lr": 5e-4, "seed": 1}),
    "stereo-36k-lr5e-4-seed2": ("stereo", "36k", {"lr": 5e-4, "seed": 2}),
    # eighth session, chosen on the validation probe over 60k puzzles, 96x96 images and Adam at 5e-4: 120k puzzles at
    # 72x72. jigsaw-s72-120k is the validation screen's run itself (seed 0), probed here on the test split
    "jigsaw-s72-120k": ("jigsaw", "120k", {"size": 72}),
    "jigsaw-s72-120k-seed1": ("jigsaw", "120k", {"size": 72, "seed": 1}),
    "jigsaw-s72-120k-seed2": ("jigsaw", "120k", {"size": 72, "seed": 2}),
}
# rows run before the seventh session's defaults (jigsaw: 72x72 working images; cooccurrence: per-patch fc and SGD;
# stereo: Adam at 5e-4), that is every row above "jigsaw-s72",
# keep the settings they ran with, so that a rerun reproduces them
BEFORE_SEVENTH = {"jigsaw": {"size": 48}, "cooccurrence": {"patch_fc": 0, "optimizer": "adamw", "lr": 2e-3, "weight_decay": 1e-4},
                  "stereo": {"lr": 2e-3}}
for _label in list(RUNS)[: list(RUNS).index("jigsaw-s72")]:
    _method, _budget, _options = RUNS[_label]
    RUNS[_label] = (_method, _budget, {**BEFORE_SEVENTH.get(_method, {}), **_options})
CHANCE = {"rotation": 1 / 4, "jigsaw": 1 / 100, "context": 1 / 8, "cooccurrence": 1 / 2, "exemplar": 1 / 500}
PROBE_TRAIN, PROBE_TEST = 6_000, 3_000  # fixed subsets of the splits (the shared CPU cannot afford 70k images x 8 encoders)


def probe_sets():
    g = torch.Generator().manual_seed(0)
    tr, te = load("fashion-mnist", "train"), load("fashion-mnist", "test")
    return (tr.subset(torch.randperm(len(tr), generator=g)[:PROBE_TRAIN]),
            te.subset(torch.randperm(len(te), generator=g)[:PROBE_TEST]))


def summarise(rows) -> dict:
    return {f"{r['classifier']}@{r['labels_per_class']}": [r["accuracy_mean"], r["accuracy_std"]] for r in rows}


def full_method(run: Path):
    """The method with every trained weight (head included) from the final checkpoint."""
    m = build_method(RunDir(run).read_config())
    m.load_state_dict(RunDir(run).load_checkpoint()["method"])
    return m.eval()


def encoder_of(label: str):
    """The trained encoder of a run label under bench-out/pretext/runs, or of a run directory."""
    return full_method(Path(label) if "/" in label else OUT / "runs" / label).encoder


def run_one(label: str, train, test, resume: bool = False) -> dict:
    method, budget, options = RUNS[label]
    train_opts = dict(options)
    seed = train_opts.pop("seed", 0)  # "seed" in a run's options is the pretraining seed, not a method option
    run = OUT / "runs" / label
    t0 = time.perf_counter()
    unsup.pretrain(method, data="fashion-mnist", budget=budget, out=run, options=train_opts, quiet=True, overwrite=not resume, resume=resume,
                   monitor=False, device="cpu", seed=seed)
    seconds = time.perf_counter() - t0
    logged = [r["pretext_acc"] for r in RunDir(run).metrics() if "pretext_acc" in r and "step" in r and "event" not in r]
    m = full_method(run)
    torch.manual_seed(0)
    out = {"label": label, "method": method, "budget": budget, "options": options, "pretrain_seconds": round(seconds, 1),
           "pretext_acc_train": statistics.fmean(logged[-5:]) if logged else None}
    if method == "stereo":
        out["motorcycle"] = m.motorcycle()[0]
        torch.manual_seed(0)
        untrained = get_method("stereo")(m.cfg, m.shape)
        out["motorcycle_untrained"] = untrained.motorcycle()[0]
    else:
        out["pretext_acc_test"] = m.pretext_accuracy(test.images[:2000])
    out["probe"] = summarise(probe(m.encoder, train, test, (10, 100), 3, "cpu"))
    out["probe_seconds"] = round(time.perf_counter() - t0 - seconds, 1)
    (OUT / f"{label}.json").write_text(json.dumps(out, indent=2))
    print(label, json.dumps(out), flush=True)
    return out


def retest(label: str, test) -> None:
    """Re-measure the held-out pretext accuracy of a finished run from its checkpoint (no retraining)."""
    path = OUT / f"{label}.json"
    out = json.loads(path.read_text())
    if RUNS[label][0] == "stereo":
        return
    m = full_method(OUT / "runs" / label)
    torch.manual_seed(0)
    out["pretext_acc_test"] = m.pretext_accuracy(test.images[:2000])
    path.write_text(json.dumps(out, indent=2))
    print(label, "pretext_acc_test", out["pretext_acc_test"], flush=True)


def random_encoder():
    """Every pretext encoder here is the same small convnet on 28x28 input: one random-weights reference (seed 0)."""
    torch.manual_seed(0)
    cls = get_method("rotation")
    return cls(cls.Config(), (1, 28, 28)).random_encoder()


def references(train, test) -> dict:
    ref = {"random_encoder": summarise(probe(random_encoder(), train, test, (10, 100), 3, "cpu")),
           "raw_pixels": summarise(raw_pixel_rows(train, test, (10, 100), 3))}
    (OUT / "references.json").write_text(json.dumps(ref, indent=2))
    return ref


def fmt(v) -> str:
    return f"{100 * v[0]:.1f} ± {100 * v[1]:.1f}"


def report(command: str) -> None:
    if not (OUT / "references.json").exists():
        print("no references yet: run with --only references, then --report")
        return
    ref = json.loads((OUT / "references.json").read_text())
    parts = [json.loads((OUT / f"{k}.json").read_text()) for k in RUNS if (OUT / f"{k}.json").exists()]
    keys = ["linear@10", "knn@10", "linear@100", "knn@100"]
    lines = [
        "# Pretext family (issue 6): Fashion-MNIST benchmark",
        "",
        f"Command: `{command}`  ",
        (f"Date: {datetime.date.today()}; machine: the shared 2-core CPU, one thread per run (`OMP_NUM_THREADS=1`), "
        "one run at a time, other sessions' jobs on the other core; budgets are images seen, each about 2-3 minutes "
        "of that core (jigsaw and context at 60k / 320k: 7-12 minutes; jigsaw at 120k: about 25).  "),
        (f"Probe: frozen features, k-NN and linear, 10 and 100 labels per class, 3 seeds (mean ± std, %), on fixed "
        f"subsets of {PROBE_TRAIN} training / {PROBE_TEST} test images (seed 0); the random encoder is the same "
        "small convnet with fresh weights, on the same splits."),
        "",
        "| run | images seen | pretext acc train / test (chance) | " + " | ".join(keys) + " | beats random at 10 and 100 |",
        "|---|---|---|" + "---|" * len(keys) + "---|",
        "| random encoder (same small convnet, fresh weights) | - | - | "
        + " | ".join(fmt(ref["random_encoder"][k]) for k in keys) + " | - |",
        "| raw pixels | - | - | " + " | ".join(fmt(ref["raw_pixels"][k]) for k in keys) + " | - |",
    ]
    for p in parts:
        pr = p["probe"]
        rnd = ref["random_encoder"]
        beats = all(pr[k][0] > rnd[k][0] for k in keys)
        chance = 1 / p["options"]["permutations"] if "permutations" in p["options"] else CHANCE.get(p["method"])
        test_acc = p.get("pretext_acc_test")
        acc = f"{100 * p['pretext_acc_train']:.1f}" + (f" / {100 * test_acc:.1f}" if test_acc is not None else "")
        acc += f" ({100 * chance:.1f})" if chance else " (pixels within 1 level; ~12)"
        opts = " " + ",".join(f"{k}={v}" for k, v in p["options"].items()) if p["options"] else ""
        done = [r for r in RunDir(OUT / "runs" / p["label"]).metrics() if r.get("event") == "done"]
        seen = done[-1]["images_seen"] if done else p["budget"]
        lines.append(f"| {p['label']}{opts} | {seen} | {acc} | " + " | ".join(fmt(pr[k]) for k in keys)
                     + f" | {'yes' if beats else 'NO'} |")
    stereo = [p for p in parts if p["method"] == "stereo"]
    if stereo:
        mc, mu = stereo[0]["motorcycle"], stereo[0]["motorcycle_untrained"]
        lines += [
            "",
            "## Stereo (Deep3D) on skimage's motorcycle pair (held out; grayscale, 1/4 scale, 185x125, disparities 2-15 px)",
            "",
            "| | right-view L1 | Spearman rho (predicted vs true disparity) |",
            "|---|---|---|",
            f"| no shift | {mc['l1_no_shift']:.4f} | - |",
            f"| best single global shift ({mc['best_global_shift']} px) | {mc['l1_best_global_shift']:.4f} | - |",
            f"| {stereo[0]['label']}, untrained (near-uniform softmax: a blur of shifted copies) | {mu['l1_prediction']:.4f} | {mu['spearman']:.3f} |",
        ]
        for st in stereo:
            m = st["motorcycle"]
            opts = " " + ",".join(f"{k}={v}" for k, v in st["options"].items()) if st["options"] else ""
            lines.append(f"| {st['label']}{opts}, trained ({st['budget']} rendered scenes) | {m['l1_prediction']:.4f} | {m['spearman']:.3f} |")
    missing = [k for k in RUNS if not (OUT / f"{k}.json").exists()]
    if missing:
        lines += ["", f"Not measured (the run did not finish in the time this session had): {', '.join(missing)}."]
    write_results(RESULTS, "\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated run labels (default: all)")
    ap.add_argument("--report", action="store_true", help="only write the table from finished runs")
    ap.add_argument("--resume", action="store_true", help="continue interrupted runs from their checkpoints")
    ap.add_argument("--retest", action="store_true", help="only re-measure the held-out pretext accuracy of finished runs")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    command = "OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python benchmarks/pretext.py"
    if not args.report:
        train, test = probe_sets()
        labels = args.only.split(",") if args.only else ["references", *RUNS]
        for label in labels:
            if args.retest:
                if label != "references":
                    retest(label, test)
            elif label == "references":
                references(train, test)
            else:
                run_one(label, train, test, args.resume)
    report(command)


if __name__ == "__main__":
    main()
