"""Video family benchmark: pretrain video-lstm, future-features and prednet on
Moving Fashion-MNIST, measure frame prediction on the fixed test set against
copying the last frame, probe each frame encoder on Fashion-MNIST stills
(placed on the 64x64 canvas) against its random-weights reference, and run
PredNet's online mode over a stream that changes.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python benchmarks/video.py [--methods M,...]

``--reuse`` keeps a finished pretraining of the same budget and options under
--out; ``--online-only`` (with ``--methods prednet --reuse``) also keeps that
run's probe and prediction numbers from its results JSON and reruns only the
online section. Results of methods run in earlier processes are merged into
the table. Writes benchmarks/results/video.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

import unsup
from unsup.data import load
from unsup.data.video import SPEED, moving, still_source
from unsup.evaluate import probe
from unsup.evaluate.video import prediction_metrics
from unsup.registry import get_method
from unsup.run import RunDir, build_method

BUDGETS = {"video-lstm": "9600", "future-features": "3000", "prednet": "2000"}  # sequences seen (20 frames each)
OUT = Path(__file__).parent / "results" / "video.md"
LOAD = os.getloadavg()


def full_method(run: Path):
    """The whole trained method (decoders, LSTMs), not only its encoder."""
    rd = RunDir(run)
    m = build_method(rd.read_config())
    m.load_state_dict(rd.load_checkpoint()["method"])
    return m.eval()


def options_match(saved: dict, name: str) -> bool:
    """A run pretrained under other defaults (e.g. before a default changed) is
    not reused; options the saved run does not name count as the default."""
    current = json.loads(json.dumps(dataclasses.asdict(get_method(name).Config()), default=list))
    return all(json.loads(json.dumps(saved.get(k, v), default=list)) == v for k, v in current.items())


def balanced(ds, n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return ds.subset(torch.randperm(len(ds), generator=g)[:n])


def acc(rows, n, clf):
    r = next(r for r in rows if r["labels_per_class"] == n and r["classifier"] == clf)
    return r["accuracy_mean"], r["accuracy_std"]


def online(method, args) -> dict:
    """PredNet online: a stream of S parallel sequences; frames 0..A-1 as in
    pretraining, then a change (new sequences whose objects move
    ``after_speed`` times faster: a new kind of motion); no learning vs
    learning on every frame vs only while the error is high."""
    objs = load("fashion-mnist", "test")
    s, a, b = args.streams, args.before, args.after
    before = moving(objs, "test", n=s, seed=5, frames=a)
    after = moving(objs, "test", n=s, seed=6, frames=b, speed=args.after_speed * SPEED)

    def chunks():
        for src, n in ((before, a), (after, b)):
            for t0 in range(0, n, 10):
                yield src.images.window(t0, min(10, n - t0))[slice(0, s)]

    state = {k: v.clone() for k, v in method.state_dict().items()}
    out = {}
    for mode in ("none", "every", "gated"):
        method.load_state_dict(state)
        opt = torch.optim.Adam(method.prednet.parameters(), lr=args.online_lr)
        t0 = time.perf_counter()
        if mode == "none":
            opt = torch.optim.SGD(method.prednet.parameters(), lr=0.0)
        tr = method.learn_online(chunks(), opt, gated=(mode != "every"), threshold=args.threshold if mode == "gated" else float("inf"),
                                 window=args.window)
        if mode == "none":
            tr["learned"] = [False] * len(tr["learned"])
        tr["seconds"] = time.perf_counter() - t0
        out[mode] = tr
    method.load_state_dict(state)
    return out


def smooth(x, k):
    return [statistics.fmean(x[max(0, i - k + 1) : i + 1]) for i in range(len(x))]


def online_summary(tr: dict, a: int, reference: float | None = None, k: int = 20) -> dict:
    """Recovery is measured against the lower of the learner's own error before
    the change and ``reference`` (the frozen model's, the same for every
    learner), so learning that degrades the model before the change cannot
    make recovery easier."""
    e = tr["error"]
    prior = statistics.fmean(e[a - 30 : a])
    level = min(prior, reference) if reference is not None else prior
    sm = smooth(e, k)
    spike = max(sm[a : a + k])
    # recovered: the k-frame mean is within 20% of the level and stays there for the next k frames
    rec = next((i for i in range(a + k, len(e) - k) if max(sm[i : i + k + 1]) <= 1.2 * level), None)
    upd_b = sum(tr["learned"][a:])
    return {"prior": prior, "level": level, "spike": spike, "final": statistics.fmean(e[-30:]), "recovered_at": None if rec is None else rec - a,
            "updates_after_change": upd_b, "updates_to_recover": None if rec is None else sum(tr["learned"][a : rec + 1]),
            "updates_total": sum(tr["learned"]), "seconds": tr["seconds"]}


def run_online(method, args, r: dict) -> None:
    """PredNet's online section: summaries, traces and the figure, into ``r``."""
    tr = online(method, args)
    ref = statistics.fmean(tr["none"]["error"][args.before - 30 : args.before])
    r["online"] = {k: online_summary(v, args.before, ref) for k, v in tr.items()}
    r["online_trace"] = {k: {"error": v["error"], "learned": v["learned"], "switches": v["switches"]} for k, v in tr.items()}
    save_online_figure(tr, args.before, OUT.parent / "video_online.png")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--methods", default="video-lstm,future-features,prednet")
    p.add_argument("--test-sequences", type=int, default=500)
    p.add_argument("--probe-train", type=int, default=5000)
    p.add_argument("--probe-test", type=int, default=2000)
    p.add_argument("--streams", type=int, default=8)
    p.add_argument("--before", type=int, default=60)
    p.add_argument("--after", type=int, default=600)
    p.add_argument("--after-speed", type=float, default=1.25, help="object speed after the change, x the pretraining speed")
    p.add_argument("--window", type=int, default=3)
    p.add_argument("--threshold", type=float, default=1.25)
    p.add_argument("--online-lr", type=float, default=1e-3)
    p.add_argument("--out", default="/tmp/unsup-video-bench")
    p.add_argument("--budget-scale", type=float, default=1.0)
    p.add_argument("--reuse", action="store_true", help="reuse a finished pretraining of the same budget under --out")
    p.add_argument("--online-only", action="store_true", help="with --reuse: keep prednet's probe/prediction results, rerun online")
    args = p.parse_args()
    torch.manual_seed(0)
    test = load("moving-fashion-mnist", "test")
    s_train = balanced(still_source("moving-fashion-mnist", "train"), args.probe_train)
    s_test = balanced(still_source("moving-fashion-mnist", "test"), args.probe_test)
    results = {}
    for name in args.methods.split(","):
        budget = str(int(float(BUDGETS[name]) * args.budget_scale))
        t0 = time.perf_counter()
        run = Path(args.out) / name
        last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1]) if (run / "metrics.jsonl").is_file() else {}
        same = (run / "config.yaml").is_file() and options_match(RunDir(run).read_config().get("options", {}), name)
        if args.reuse and same and last.get("event") == "done" and last.get("images_seen", 0) >= int(budget):
            secs = last["pretrain_seconds"]  # pretrained earlier with this budget
        else:
            run = unsup.pretrain(name, data="fashion-mnist", budget=budget, out=run, quiet=True, overwrite=True, monitor=False)
            secs = time.perf_counter() - t0
        m = full_method(run)
        old = Path(args.out, f"results-{name}.json")
        if args.online_only and name == "prednet" and old.is_file():
            r = json.loads(old.read_text())
            run_online(m, args, r)
            results[name] = r
            print(name, json.dumps(r["online"], default=str), flush=True)
            old.write_text(json.dumps(r, default=str))
            continue
        r = {"budget": budget, "pretrain_seconds": secs, "figures": sorted(str(q) for q in (run / "figures").glob("*.png"))}
        if (run / "figures" / "predictions.png").is_file():
            shutil.copy(run / "figures" / "predictions.png", OUT.parent / f"video_predictions_{name}.png")
        torch.manual_seed(0)
        r["probe"] = probe(m.encoder, s_train, s_test, (10, 100), 3)
        r["random"] = probe(m.random_encoder(), s_train, s_test, (10, 100), 3)
        if name != "future-features":
            r["video"] = prediction_metrics(m.predict, test, limit=args.test_sequences)
        else:
            r["retrieval"] = m.retrieval(test, limit=args.test_sequences)
        if name == "prednet":
            run_online(m, args, r)
        results[name] = r
        print(name, json.dumps({k: v for k, v in r.items() if k != "online_trace"}, default=str)[:3000], flush=True)
        Path(args.out, f"results-{name}.json").write_text(json.dumps(r, default=str))
    merged = {}  # methods run in other processes (--methods) land in the same table
    for name in ("video-lstm", "future-features", "prednet"):
        f = Path(args.out, f"results-{name}.json")
        if f.is_file():
            merged[name] = json.loads(f.read_text())
    write_md(merged, args)


def save_online_figure(tr, a, path):
    from unsup.report.figures import save_curve

    try:
        ys = {k: smooth(v["error"], 10) for k, v in tr.items()}
        save_curve(list(range(len(ys["none"]))), ys, path, xlabel="frame", ylabel="next-frame MSE (10-frame mean)",
                   title=f"PredNet online: learning none / every frame / gated; objects speed up at frame {a}")
    except Exception as e:  # noqa: BLE001 - the figure is a bonus
        print("online figure skipped:", e)


def write_md(results, args):
    lines = ["# Video family benchmark", "",
             f"Command: `OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python benchmarks/video.py {' '.join(sys.argv[1:])}`  ",
             f"Date: {datetime.date.today()}; machine: 2-core CPU ({platform.processor() or platform.machine()}), shared with other "
             f"jobs (1-minute load {LOAD[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end), so seconds vary; budgets are "
             "sequences seen (20 frames of 64x64 each).  ",
             f"Prediction: first {args.test_sequences} sequences of the fixed Moving Fashion-MNIST test set (10 given, 10 predicted); "
             "MSE = squared error summed over the 64x64 frame, values in [0, 1].  ",
             f"Probe: Fashion-MNIST stills on the 64x64 canvas, {args.probe_train} train / {args.probe_test} test images "
             "(class-balanced subsets, to fit the CPU), budgets 10 and 100 labels per class, 3 seeds, linear probe and k-NN.", ""]
    lines += ["## Frame prediction (lower MSE is better)", "",
              "| method | budget | next MSE | copy-last next | 10-ahead MSE | copy-last 10-ahead | next SSIM | copy SSIM | 10-ahead SSIM | copy 10-ahead SSIM |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        v = r.get("video")
        if v:
            lines.append(f"| {name} | {r['budget']} | {v['next_mse']:.1f} | {v['next_copy_mse']:.1f} | {v['ahead10_mse']:.1f} | "
                         f"{v['ahead10_copy_mse']:.1f} | {v['next_ssim']:.3f} | {v['next_copy_ssim']:.3f} | {v['ahead10_ssim']:.3f} | {v['ahead10_copy_ssim']:.3f} |")
    for name, r in results.items():
        if "retrieval" in r:
            q = r["retrieval"]
            lines += ["", f"{name}: anticipation by retrieval (true frame t+k among {q['candidates']} candidates): "
                      f"top-1 {q['future_retrieval_top1']:.3f} from the predicted representation vs {q['current_frame_top1']:.3f} "
                      "from frame t's own representation."]
    lines += ["", "## Frame encoder probe (accuracy, mean ± std over 3 seeds)", "",
              "| method | pretrain s | linear@10 | random linear@10 | linear@100 | random linear@100 | kNN@100 | random kNN@100 |",
              "|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        cells = []
        for n, clf in ((10, "linear"), (100, "linear"), (100, "knn")):
            a, s = acc(r["probe"], n, clf)
            b, t = acc(r["random"], n, clf)
            cells += [f"{a:.3f} ± {s:.3f}", f"{b:.3f} ± {t:.3f}"]
        lines.append(f"| {name} | {r['pretrain_seconds']:.0f} | " + " | ".join(cells) + " |")
    if "prednet" in results and "online" in results["prednet"]:
        o = results["prednet"]["online"]
        lines += ["", f"## PredNet online ({args.streams} parallel streams, {args.before} frames as in pretraining, then "
                  f"{args.after} frames of new sequences at {args.after_speed:g} x the speed; learning step = back-propagation through the last {args.window} frames; "
                  f"gate: on when the 10-frame mean error > {args.threshold} x the familiar level, level frozen while on, off when back "
                  "within 1.1 x that level or after 100 frames without a 2% gain)", "",
                  "Prior error: the learner's mean error over the 30 frames before the change; level: the lower of that and the frozen "
                  "model's (no learning) prior, the level recovery is measured against.", "",
                  "| learning | prior error | level | spike (20-frame mean) | final error (last 30) | frames to recover (20-frame mean <= 1.2 x level for 20 frames) | updates to recover | updates after change | updates total |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for mode, v in o.items():
            lines.append(f"| {mode} | {v['prior']:.1f} | {v['level']:.1f} | {v['spike']:.1f} | {v['final']:.1f} | {v['recovered_at']} | {v['updates_to_recover']} | "
                         f"{v['updates_after_change']} | {v['updates_total']} |")
        sw = results["prednet"].get("online_trace", {}).get("gated", {}).get("switches")
        if sw:
            lines += ["", "Gate switches (frame, event; the change is at frame " f"{args.before}): " + ", ".join(f"{t} {e}" for t, e in sw)]
    figs = [f"`{f.name}`" for f in sorted(OUT.parent.glob("video_*.png"))]
    if figs:
        lines += ["", f"Figures (next to this file): {', '.join(figs)}."]
    lines += ["", "## Floors", ""] + floors(results) + [""]
    OUT.write_text("\n".join(lines))
    print("\n".join(lines))


def floors(results):
    out = []
    if "prednet" in results:
        v = results["prednet"]["video"]
        out.append(f"- prednet next-frame MSE <= half of copy-last: {v['next_mse']:.1f} vs {v['next_copy_mse'] / 2:.1f}: "
                   f"{'met' if v['next_mse'] <= v['next_copy_mse'] / 2 else 'MISSED'}")
    if "video-lstm" in results:
        v = results["video-lstm"]["video"]
        out.append(f"- video-lstm 10-ahead MSE beats copy-last: {v['ahead10_mse']:.1f} vs {v['ahead10_copy_mse']:.1f}: "
                   f"{'met' if v['ahead10_mse'] < v['ahead10_copy_mse'] else 'MISSED'}")
    for name, r in results.items():
        a, _ = acc(r["probe"], 100, "linear")
        b, _ = acc(r["random"], 100, "linear")
        out.append(f"- {name} encoder beats random at 100 labels/class (linear): {a:.3f} vs {b:.3f}: {'met' if a > b else 'MISSED'}")
    if "prednet" in results and "online" in results["prednet"]:
        o = results["prednet"]["online"]
        g, e, n = o["gated"], o["every"], o["none"]
        # honest only if the error spiked and learning is what brought it back: no learning must not recover
        ok = (g["recovered_at"] is not None and n["recovered_at"] is None and n["spike"] > 1.2 * n["level"]
              and g["updates_after_change"] <= 0.5 * e["updates_after_change"])
        out.append(f"- online: gated back within 20% of the level before the change after {g['recovered_at']} frames with {g['updates_after_change']} updates "
                   f"after the change vs {e['updates_after_change']} learning every frame (every frame recovered after {e['recovered_at']}; "
                   f"no learning: {n['recovered_at']}, spike {n['spike']:.1f} vs level {n['level']:.1f}): {'met' if ok else 'MISSED'}")
    return out


if __name__ == "__main__":
    main()
