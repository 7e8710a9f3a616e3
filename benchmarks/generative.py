"""Generative family benchmark on Fashion-MNIST (the floors of issue 4).

    .venv/bin/python benchmarks/generative.py                       # everything
    .venv/bin/python benchmarks/generative.py --methods dcgan,bigan # a part
    .venv/bin/python benchmarks/generative.py --report-only         # rewrite the table

Each method's results go to <out>/<method>.json as soon as they exist, and
the table in benchmarks/results/generative.md is rewritten from all of them,
so parts can run in separate processes.

- dcgan, infogan, bigan, text-to-image-gan: pretrain with an images-seen
  budget, probe the encoder (10 and 100 labels per class, 3 seeds, linear
  and k-NN, with the random-encoder reference), the Fréchet classifier
  distance (FCD, own classifier) of 5,000 samples against the test split;
  the InfoGAN categorical-code accuracy (Hungarian), the GAN-CLS share of
  samples classified as the class named.
- improved-gan: semi-supervised, trained once per (labels per class, seed)
  in {10, 100} x {0, 1, 2} (``--improved-labels``); its discriminator's test
  error, against the supervised reference (the protocol of
  unsup.evaluate.supervised: same labels, same budget). Each budget's runs go
  to <out>/improved-gan-<budget>.json and get their own rows.
  ``--improved-arch mlp``: the paper's fully connected MNIST model and
  settings (``improved_gan.PAPER_MNIST``, Polyak average with
  ema_rate x steps = 18 as the paper's 1e-4 x 180k), to
  <out>/improved-gan-mlp-<budget>.json, with the same-network reference (the
  identical run with the unsupervised weight at 0: D learns from the labels
  alone); ``--methods improved-gan-same-net`` computes only that reference
  and adds it to an existing set's file.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from results_page import write_results

import unsup
from unsup.data import load
from unsup.evaluate.generative import FCD_NAME, generator_report, load_trained_method, reference_classifier
from unsup.evaluate.supervised import supervised_accuracy
from unsup.train.budget import parse_budget

UNSUP = ["dcgan", "infogan", "bigan", "text-to-image-gan"]
RESULTS = Path(__file__).resolve().parent / "results" / "generative.md"


def _mean_std(xs):
    return statistics.fmean(xs), (statistics.pstdev(xs) if len(xs) > 1 else 0.0)


def run_unsup(name, budget, out, train, test):
    t0 = time.perf_counter()
    run = unsup.pretrain(name, data="fashion-mnist", budget=budget, out=out / "runs" / name, quiet=True, overwrite=True,
                         monitor=False, seed=0)
    seconds = time.perf_counter() - t0
    probe = unsup.probe_run(run, budgets=(10, 100), seeds=3, supervised=False)
    method = load_trained_method(run)
    gen = generator_report(method, train, test)
    res = {"method": name, "budget": budget, "pretrain_seconds": round(seconds, 1), "probe": probe["results"],
           "random_encoder": probe["references"]["random_encoder"], "raw_pixels": probe["references"]["raw_pixels"],
           "generator": gen, "figures": probe["figures"], "run": str(run)}
    if name == "infogan":
        res["code_accuracy"] = method.code_accuracy(test.images, test.labels)
    metrics = unsup.run.RunDir(run).metrics()
    d = [r["d_loss"] for r in metrics if "d_loss" in r]
    res["d_loss_first_last"] = [d[0], d[-1]] if d else None
    return res


def improved_options(arch: str, budget) -> dict:
    if arch == "conv":
        return {}
    from unsup.methods.generative.improved_gan import PAPER_MNIST

    steps = parse_budget(budget).value / PAPER_MNIST["batch_size"]
    return {**PAPER_MNIST, "ema_rate": min(0.5, 18 / steps)}


def run_code_only(name, budget, out, test, seed):
    """Another training seed of InfoGAN: only its code accuracy (no probe, no FCD)."""
    t0 = time.perf_counter()
    run = unsup.pretrain(name, data="fashion-mnist", budget=budget, out=out / "runs" / f"{name}-seed{seed}", quiet=True,
                         overwrite=True, monitor=False, seed=seed, figures=False)
    method = load_trained_method(run)
    return {"method": name, "budget": budget, "seed": seed, "pretrain_seconds": round(time.perf_counter() - t0, 1),
            "code_accuracy": method.code_accuracy(test.images, test.labels), "run": str(run)}


def improved_tag(arch: str) -> str:
    """The name of an improved-gan set's runs and JSON file (the conv default keeps the plain name)."""
    return "improved-gan" if arch == "conv" else f"improved-gan-{arch}"


def improved_run(budget, out, test, tag, opts, n, s, figures=False) -> dict:
    """One improved-gan training (labelled draw and training seed ``s``, ``n`` labels per class): its test error row."""
    t0 = time.perf_counter()
    run = unsup.pretrain("improved-gan", data="fashion-mnist", budget=budget, out=out / "runs" / f"{tag}-{budget}-{n}-s{s}",
                         quiet=True, overwrite=True, monitor=False, seed=s, options={**opts, "labels_per_class": n, "seed": s},
                         figures=figures)
    row = {"labels_per_class": n, "seed": s, "test_error": load_trained_method(run).test_error(test),
           "pretrain_seconds": round(time.perf_counter() - t0, 1)}
    print(f"{tag} {budget} {n}/class seed {s}: error {row['test_error']:.4f}", flush=True)
    return row


def run_same_net(budget, out, test, arch, seeds=3, n=100):
    """The same-network supervised reference of an improved-gan set: the identical run (nets, optimiser, budget,
    labelled batches, Polyak average) with the unsupervised weight at 0, so D learns from the labels alone."""
    opts = {**improved_options(arch, budget), "unsup_weight": 0.0}
    return [improved_run(budget, out, test, f"{improved_tag(arch)}-samenet", opts, n, s) for s in range(seeds)]


def run_improved(budget, out, train, test, seeds=3, labels=(10, 100), arch="conv"):
    tag = improved_tag(arch)
    opts = improved_options(arch, budget)
    rows = [improved_run(budget, out, test, tag, opts, n, s, figures=(n == 100 and s == 0)) for n in labels for s in range(seeds)]
    sup = []  # the floor compares at 100 labels per class; 10/class supervised runs are left out for time
    for n in (100,):
        for s in range(seeds):
            acc = supervised_accuracy(train, test, n, s, budget)
            sup.append({"labels_per_class": n, "seed": s, "test_error": 1 - acc})
            print(f"supervised {budget} {n}/class seed {s}: error {1 - acc:.4f}", flush=True)
    res = {"method": "improved-gan", "arch": arch, "options": opts, "budget": budget, "rows": rows, "supervised": sup}
    if arch != "conv":
        res["supervised_same_net"] = run_same_net(budget, out, test, arch, seeds)
    return res


def _acc(rows, n, clf):
    r = next(r for r in rows if r["labels_per_class"] == n and r["classifier"] == clf)
    return r["accuracy_mean"], r["accuracy_std"]


def write_table(out: Path, command: str):
    res = {p.stem: json.loads(p.read_text()) for p in sorted(out.glob("*.json")) if p.stem != "classifier"}
    clf = json.loads((out / "classifier.json").read_text()) if (out / "classifier.json").exists() else {}
    lines = ["# Generative models on Fashion-MNIST", "",
             f"Command: `{command}`  ", (f"Date: {datetime.date.today()}; machine: {platform.machine()} 2-core CPU (shared, so "
             "times are indicative only); one process; torch threads as the reading below says.  "),
             ("Probe: frozen encoder, 10 and 100 labels per class, 3 seeds, linear probe and k-NN (the protocol of "
             "`unsup.evaluate`); reference: the same encoder with random weights on the same splits."), ""]
    if clf:
        lines += [(f"Sample quality: **{FCD_NAME}**: the Fréchet distance between Gaussians fitted to the penultimate "
                  f"features of a small classifier trained by the project on the training split (test accuracy "
                  f"{clf['classifier_test_accuracy']:.3f}); 5,000 samples vs 5,000 test images. Not FID; "
                  f"the real-vs-real reference (5,000 training vs test images) is {clf['fcd_real_train_vs_test']:.2f}."), ""]
    lines += ["## Encoders (unsupervised pretraining)", "",
              ("| method | budget (images seen) | pretrain s | linear 10/class | random enc. | linear 100/class | random enc. "
              "| k-NN 10/class | random enc. | k-NN 100/class | random enc. | FCD | beats random at 10 and 100 |"),
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in UNSUP:
        if name not in res:
            continue
        r = res[name]
        cells, beats = [], True
        for clf_name in ("linear", "knn"):
            for n in (10, 100):
                (m, s), (rm, rs) = _acc(r["probe"], n, clf_name), _acc(r["random_encoder"], n, clf_name)
                cells += [f"{m:.3f} ± {s:.3f}", f"{rm:.3f} ± {rs:.3f}"]
                if clf_name == "linear":
                    beats &= m > rm
        lines.append(f"| {name} | {r['budget']} | {r['pretrain_seconds']:.0f} | " + " | ".join(cells)
                     + f" | {r['generator']['fcd']:.2f} | {'yes' if beats else 'NO'} |")
    lines.append("")
    if "infogan" in res:
        acc = res["infogan"]["code_accuracy"]
        lines += ["## InfoGAN categorical code", "",
                  (f"Unsupervised accuracy of the 10-way code on the 10,000 test images after Hungarian matching: "
                  f"**{acc:.3f}** (floor 0.50, chance 0.10): {'met' if acc >= 0.5 else 'MISSED'}."), ""]
        more = sorted((r for k, r in res.items() if k.startswith("infogan-seed") and r["budget"] == res["infogan"]["budget"]),
                      key=lambda r: r["seed"])
        if more:
            accs = [acc] + [r["code_accuracy"] for r in more]
            m, sd = _mean_std(accs)
            lines += [(f"Over training seeds 0, {', '.join(str(r['seed']) for r in more)} at {res['infogan']['budget']} "
                       f"(`--seed N`, code accuracy only): {', '.join(f'{a:.3f}' for a in accs)}; mean **{m:.3f} ± {sd:.3f}**: "
                       f"{'met' if m >= 0.5 else 'MISSED'} on the mean."), ""]
    if "text-to-image-gan" in res:
        g = res["text-to-image-gan"]["generator"]
        lines += ["## Text-to-image GAN (GAN-CLS)", "",
                  (f"{g['n_descriptions']} descriptions ('a small dark ankle boot', ...), {g['samples_per_description']} samples each: "
                  f"share classified by the reference classifier as the class named **{g['named_class_accuracy']:.3f}** "
                  f"(floor 0.70: {'met' if g['named_class_accuracy'] >= 0.7 else 'MISSED'}); the size word holds for "
                  f"{g['size_word_holds']:.3f} and the brightness word for {g['brightness_word_holds']:.3f} of the samples "
                  "(0.5 = chance; attributes measured against the class medians of real images)."), ""]
    improved = sorted((r for k, r in res.items() if k.startswith("improved-gan-")), key=lambda r: (r.get("arch", "conv"), parse_budget(r["budget"]).value))
    if improved:
        lines += ["## Improved GAN (semi-supervised: uses the labels below)", "",
                  ("Test error of the discriminator's K-class argmax on the 10,000 test images, one run per (labels per "
                  "class, seed of the labelled draw). Two supervised references on the same labelled images and budget: "
                  "the *same network* (the identical run with the unsupervised weight at 0, so D learns from the labels "
                  "alone: the protocol's same backbone, same augmentations (none), same budget; for the mlp sets), and "
                  "the project's *convnet* (the small convnet with the shared augmentations, "
                  "`unsup.evaluate.supervised.supervised_accuracy`). Floor: at 100 labels per class, below the reference."), "",
                  ("| nets (`arch`) | budget (images seen) | labels per class | pretrain s (mean) | improved-gan test error (3 seeds) "
                   "| same-network reference error | convnet reference error | floor (same network / convnet) |"),
                  "|---|---|---|---|---|---|---|---|"]
        for r in improved:
            for n in (10, 100):
                rows = [x for x in r["rows"] if x["labels_per_class"] == n]
                if not rows:
                    continue
                e = [x["test_error"] for x in rows]
                m, s = _mean_std(e)
                refs, floors = [], []
                for key in ("supervised_same_net", "supervised"):
                    se = [x["test_error"] for x in r.get(key, []) if x["labels_per_class"] == n]
                    sm, ss = _mean_std(se) if se else (float("nan"), 0)
                    refs.append(f"{sm:.4f} ± {ss:.4f} ({', '.join(f'{x:.4f}' for x in se)})" if se else "not run")
                    floors.append(("met" if m < sm else "MISSED") if se and n == 100 else "-")
                secs = statistics.fmean(x["pretrain_seconds"] for x in rows)
                arch = {"conv": "conv (3 strided layers)", "mlp": "mlp (the paper's MNIST model)"}[r.get("arch", "conv")]
                lines.append(f"| {arch} | {r['budget']} | {n} | {secs:.0f} | {m:.4f} ± {s:.4f} ({', '.join(f'{x:.4f}' for x in e)}) "
                             f"| {refs[0]} | {refs[1]} | {' / '.join(floors)} |")
        lines.append("")
    if any(n in res for n in UNSUP):
        lines += ["## Sample quality and training", "", "| method | FCD (own classifier) | D loss first -> last logged |", "|---|---|---|"]
        for name in UNSUP:
            if name in res:
                d = res[name].get("d_loss_first_last") or [float("nan")] * 2
                lines.append(f"| {name} | {res[name]['generator']['fcd']:.2f} | {d[0]:.3f} -> {d[1]:.3f} |")
        lines.append("")
    write_results(RESULTS, "\n".join(lines) + "\n")
    print(RESULTS.read_text())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default=",".join([*UNSUP, "improved-gan"]))
    ap.add_argument("--budget", default="60k")
    ap.add_argument("--out", default="bench-out/generative")
    ap.add_argument("--improved-labels", default="10,100", help="labels per class of the improved-gan runs")
    ap.add_argument("--improved-arch", default="conv", choices=["conv", "mlp"],
                    help="improved-gan's nets: the scaled conv D, or the paper's fully connected MNIST model")
    ap.add_argument("--seed", type=int, default=0,
                    help="training seed; other than 0 only with --methods infogan: trains and scores the code only")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--skip-reference", action="store_true", help="leave the classifier's real-vs-real numbers to another part")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.seed and args.methods != "infogan":
        ap.error("--seed other than 0 is only for --methods infogan (the code accuracy over seeds)")
    command = ".venv/bin/python benchmarks/generative.py" + (f" --budget {args.budget}" if args.budget != "60k" else "")
    if not args.report_only:
        train, test = load("fashion-mnist", "train"), load("fashion-mnist", "test")
        if set(args.methods.split(",")) & set(UNSUP) and not (out / "classifier.json").exists() and not args.skip_reference:
            clf = reference_classifier(train)
            from unsup.evaluate.generative import classify, fcd

            g = torch.Generator().manual_seed(0)
            held = train.images[torch.randperm(len(train), generator=g)[:5000]]
            (out / "classifier.json").write_text(json.dumps({
                "classifier_test_accuracy": float((classify(clf, test.images) == test.labels).float().mean()),
                "fcd_real_train_vs_test": fcd(clf, held, test.images[:5000])}))
        for name in args.methods.split(","):
            print(f"== {name}", flush=True)
            if name == "improved-gan-same-net":  # only the same-network reference, added to an existing set's file
                path = out / f"{improved_tag(args.improved_arch)}-{args.budget}.json"
                if not path.is_file():
                    ap.error(f"{path} does not exist: run --methods improved-gan with the same --budget and --improved-arch first")
                res = json.loads(path.read_text())
                res["supervised_same_net"] = run_same_net(args.budget, out, test, args.improved_arch)
                path.write_text(json.dumps(res, indent=1))
            elif name == "improved-gan":
                labels = tuple(int(x) for x in args.improved_labels.split(","))
                res = run_improved(args.budget, out, train, test, labels=labels, arch=args.improved_arch)
                (out / f"{improved_tag(args.improved_arch)}-{args.budget}.json").write_text(json.dumps(res, indent=1))
            elif args.seed:
                res = run_code_only(name, args.budget, out, test, args.seed)
                (out / f"{name}-seed{args.seed}.json").write_text(json.dumps(res, indent=1))
            else:
                res = run_unsup(name, args.budget, out, train, test)
                (out / f"{name}.json").write_text(json.dumps(res, indent=1))
            write_table(out, command)
    write_table(out, command)


if __name__ == "__main__":
    sys.exit(main())
