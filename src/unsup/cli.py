"""The command line: ``unsup methods | data get | data prepare | pretrain | probe | bench | show | export``.

User-fixable problems (``UnsupError``) print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys

import yaml

from .errors import UnsupError


def _options(pairs: list[str] | None) -> dict:
    """``--option key=value`` (values parsed as YAML: numbers, lists, booleans, mappings)."""
    out = {}
    for pair in pairs or []:
        key, _, value = pair.partition("=")
        if not key.strip() or "=" not in pair:
            raise UnsupError(f"bad --option {pair!r}; write key=value, e.g. --option temperature=0.2")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise UnsupError(f"bad --option {pair!r}: the value is not valid YAML ({str(e).splitlines()[0]}); "
                             "e.g. -o lr=0.001, -o crop_scale=[0.2,1.0], -o augment={flip: 0.5}") from None
    return out


class _Parser(argparse.ArgumentParser):
    """argparse with its refusals on one line (usage stays in ``--help``)."""

    def error(self, message):
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def _whole(low: int, high: int | None = None):
    """An argparse type: a whole number in [low, high]."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{value} is out of range; give {low}.." + (str(high) if high is not None else ""))
        return value
    return parse


def _memory(text: str) -> int:
    from .data.readers import parse_memory

    try:
        return parse_memory(text)
    except UnsupError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def cmd_methods(args) -> None:
    from .registry import all_methods

    rows = [(m.name, m.family, m.paper) for m in all_methods()]
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    for name, family, paper in rows:
        print(f"{name:<{w0}}  {family:<{w1}}  {paper}")


def cmd_data(args) -> None:
    from .data.datasets import LOADERS
    from .data.fetch import get_fashion_mnist

    if args.action == "prepare":
        from .data import shards

        if not args.out:
            raise UnsupError("unsup data prepare needs --out DIR (where the shards go)")
        index = shards.prepare(args.name, args.out, size=args.size, quiet=args.quiet)
        print(shards.summary(index, args.out))
        return
    if args.size is not None or args.out is not None:
        raise UnsupError("--size and --out belong to `unsup data prepare SOURCE --size S --out DIR`, not `data get`")
    if args.name != "fashion-mnist":
        if args.name in LOADERS:
            print(f"{args.name}: ships with the installed packages, nothing to fetch")
            return
        raise UnsupError(f"unknown dataset {args.name!r}; `unsup data get` knows fashion-mnist (others: {', '.join(LOADERS)})")
    print(f"fashion-mnist: {get_fashion_mnist(quiet=args.quiet)}")


def cmd_pretrain(args) -> None:
    from .api import pretrain

    run = pretrain(args.method, data=args.data, budget=args.budget, out=args.out, device=args.device, seed=args.seed,
                   options=_options(args.option), resume=args.resume, overwrite=args.overwrite, quiet=args.quiet,
                   compile=args.compile, tensorboard=not args.no_tensorboard,
                   checkpoint_every=args.checkpoint_every)
    from .train import distributed as dist

    if dist.is_main():
        print(run)


def cmd_probe(args) -> None:
    from .api import probe_run
    from .data import parse_label_budgets
    from .report import format_rows

    result = probe_run(args.run, parse_label_budgets(args.labels), args.seeds, args.device,
                       references=not args.no_references, supervised=not args.no_supervised, quiet=args.quiet)
    print(json.dumps(result, indent=2) if args.json else format_rows(result))


def cmd_bench(args) -> None:
    from .api import DEFAULT_BENCH, bench
    from .data import parse_label_budgets
    from .registry import all_methods

    if args.plan and args.methods:
        raise UnsupError("give --plan or --methods, not both (a plan lists its methods)")
    if args.plan and (args.family_metrics or args.no_supervised):
        raise UnsupError("--family-metrics and --no-supervised go with --methods; a plan sets family_metrics and supervised itself")
    if args.fresh and args.report_only:
        raise UnsupError("give --fresh or --report-only, not both (--report-only trains nothing)")
    if args.methods == "all":
        methods = [m.name for m in all_methods()]
    else:
        methods = [m.strip() for m in (args.methods or ",".join(DEFAULT_BENCH)).split(",") if m.strip()]
        if not methods:  # an empty list would fall back to the default bench
            raise UnsupError(f"--methods {args.methods!r} names no method; give comma-separated names, e.g. simclr,kmeans, or all")
    from .api import resolve_device

    budget = args.budget or ("30s" if resolve_device(args.device).type == "cuda" else "60s")
    # the command that makes these numbers: --report-only only rewrote the report
    command = "unsup " + " ".join(shlex.quote(a) for a in sys.argv[1:] if a != "--report-only")
    bench(data=args.data, methods=methods, budget=budget, out=args.out, budgets=parse_label_budgets(args.labels),
          seeds=args.seeds, device=args.device, quiet=args.quiet, command=command, plan=args.plan, fresh=args.fresh,
          family_metrics=args.family_metrics, report_only=args.report_only, jobs=args.jobs, threads=args.threads,
          supervised=not args.no_supervised)
    print(f"leaderboard: {args.out}/leaderboard.md, report: {args.out}/report.html")


def cmd_show(args) -> None:
    """Config, k-NN monitor, training summary and curves (``RUN/figures/curves.png``), probe results."""
    from .curves import plot_curves, summary
    from .run import RunDir

    run = RunDir(args.run)
    config = run.read_config()
    print(yaml.safe_dump(config, sort_keys=False).rstrip())
    metrics = run.metrics()
    monitor = [m for m in metrics if isinstance(m.get("knn_monitor"), int | float)]
    if monitor:
        print("k-NN monitor: " + ", ".join(f"{m.get('images_seen', '?')}: {m['knn_monitor']:.3f}" for m in monitor))
    if metrics:
        print(summary(metrics))
        if run.figures_dir.exists() and not run.figures_dir.is_dir():
            raise UnsupError(f"{run.figures_dir}: a file where the run's figures folder belongs; move it away and run `unsup show` again")
        curves = plot_curves(metrics, run.figures_dir / "curves.png")
        if curves is not None:
            print(f"curves: {curves}")
    probe_file = run.file("probe.json")
    if probe_file.exists():
        from .report import format_rows

        try:
            table = format_rows(json.loads(probe_file.read_text()))
        except (ValueError, UnsupError, KeyError, TypeError, AttributeError) as e:  # a damaged file, not a bug here
            raise UnsupError(f"{probe_file}: not a probe result ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                             f"rewrite it with `unsup probe {run.path}`") from None
        print(table)


def cmd_export(args) -> None:
    from .export import export_encoder, sidecar

    out = export_encoder(args.run, args.format, args.out, overwrite=args.overwrite)
    print(f"{args.format}: {out} (description: {sidecar(out)})")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="unsup", description="Unsupervised visual representation learning, measured with few labels.")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp, device=True):
        sp.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
        sp.add_argument("--max-memory", type=_memory, default=None, metavar="SIZE",
                        help="refuse a dataset whose arrays would take more (4G, 512M; default half the RAM)")
        if device:
            sp.add_argument("--device", default="auto", help="auto | cpu | cuda")

    sp = sub.add_parser("methods", help="list the methods: name, family, paper")
    sp.set_defaults(fn=cmd_methods)

    sp = sub.add_parser("data", help="fetch a dataset (get NAME), or write one into shards that stream from disk "
                        "(prepare SOURCE --size S --out DIR)")
    sp.add_argument("action", choices=["get", "prepare"])
    sp.add_argument("name", help="get: a dataset name; prepare: a name or path (.npz, CIFAR, STL-10, image folder)")
    sp.add_argument("--size", type=_whole(1, 4096), default=None, help="prepare: resize every image to SIZE x SIZE "
                    "(needed when an image folder's images differ in size)")
    sp.add_argument("--out", default=None, help="prepare: the directory of shards (rerun to resume a stopped prepare)")
    common(sp, device=False)
    sp.set_defaults(fn=cmd_data)

    sp = sub.add_parser("pretrain", help="pretrain a method without labels")
    sp.add_argument("method")
    sp.add_argument("--data", default="fashion-mnist", help="a dataset name or a path (.npz, CIFAR, STL-10, image folder)")
    sp.add_argument("--budget", default="2m", help="images seen (50000, 100k) or time (90s, 2m)")
    sp.add_argument("--out", default=None, help="run directory (default runs/METHOD-DATA-seedS)")
    sp.add_argument("--seed", type=_whole(0, 2**31 - 1), default=0)
    sp.add_argument("--option", "-o", action="append", metavar="KEY=VALUE", help="a method option, e.g. temperature=0.2")
    sp.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    sp.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    sp.add_argument("--checkpoint-every", default="60s", metavar="INTERVAL",
                    help="checkpoint interval: time (60s, 2m) or images (5000img, 20k); default 60s. A checkpoint is also "
                    "written at the end and on SIGTERM/SIGINT; --resume continues from it exactly")
    sp.add_argument("--compile", action="store_true", help="torch.compile the method's networks (off by default: not faster on small models)")
    sp.add_argument("--no-tensorboard", action="store_true", help="no TensorBoard event files in OUT/tensorboard/ "
                    "(written by default when the tensorboard package is installed)")
    common(sp)
    sp.set_defaults(fn=cmd_pretrain)

    sp = sub.add_parser("probe", help="measure a run's encoder with few labels")
    sp.add_argument("run")
    sp.add_argument("--labels", default="1,10,100,all", help="labels per class, e.g. 1,10,100,all")
    sp.add_argument("--seeds", type=_whole(1, 1000), default=3, help="label draws per budget")
    sp.add_argument("--json", action="store_true", help="print one JSON object")
    sp.add_argument("--no-references", action="store_true", help="skip raw pixels, random encoder and supervised")
    sp.add_argument("--no-supervised", action="store_true", help="skip the supervised reference")
    common(sp)
    sp.set_defaults(fn=cmd_probe)

    sp = sub.add_parser("bench", help="pretrain and probe several methods; write a leaderboard and report")
    sp.add_argument("--data", default="fashion-mnist")
    sp.add_argument("--methods", default=None, help="comma-separated names, or all (default: one method per family)")
    sp.add_argument("--plan", default=None, help="a plan file (YAML: entries with method, options, budget, seeds, floors)")
    sp.add_argument("--budget", default=None, help="the pretraining budget of every method (a plan's default): time (90s, 10m) or "
                    "images (60k); default 60s on a CPU, 30s on a GPU")
    sp.add_argument("--family-metrics", action="store_true", help="with --methods: each method's own numbers too (a plan sets family_metrics itself)")
    sp.add_argument("--no-supervised", action="store_true", help="with --methods: leave out the supervised reference (a plan "
                    "sets supervised itself; a ViT-tiny's takes hours on a CPU)")
    sp.add_argument("--fresh", action="store_true", help="redo every entry (by default results already in --out for an unchanged entry are reused)")
    sp.add_argument("--jobs", type=_whole(1, 256), default=1, help="run this many entries side by side, each in its own "
                    "process (each time-budgeted entry then gets an equal share of the machine)")
    sp.add_argument("--threads", type=_whole(1, 1024), default=None, help="torch threads per entry (default: torch's; with "
                    "--jobs, the cores shared out)")
    sp.add_argument("--report-only", action="store_true", help="train nothing: write the leaderboard and report from the results "
                    "kept in --out (entries without one are named in the header)")
    sp.add_argument("--out", default="bench-out")
    sp.add_argument("--labels", default="1,10,100,all")
    sp.add_argument("--seeds", type=_whole(1, 1000), default=3, help="label draws per budget")
    common(sp)
    sp.set_defaults(fn=cmd_bench)

    sp = sub.add_parser("show", help="show a run: config, k-NN monitor, training summary and curves (RUN/figures/curves.png), probe results")
    sp.add_argument("run")
    sp.set_defaults(fn=cmd_show)

    sp = sub.add_parser("export", help="write a run's encoder for other tools: torchvision, timm, torchscript or onnx")
    sp.add_argument("run")
    sp.add_argument("--format", required=True, help="torchvision | timm (resnet18 runs: weights, normalise inputs yourself) | "
                    "torchscript | onnx (any run: images in [0, 1] -> features, normalisation inside)")
    sp.add_argument("--out", required=True, help="the file to write; a JSON description goes to OUT.json")
    sp.add_argument("--overwrite", action="store_true", help="replace OUT and OUT.json if they exist")
    sp.set_defaults(fn=cmd_export)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .data.readers import set_memory_limit

    set_memory_limit(getattr(args, "max_memory", None))  # this command's limit (None: the default), not an earlier call's
    try:
        args.fn(args)
    except UnsupError as e:
        print(f"unsup: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # a training loop's own message says where its checkpoint is
        print(f"unsup: {e}" if str(e) else "unsup: interrupted; the last checkpoint is kept (continue with --resume)",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
