"""The run directory: resolved config (YAML), metrics (JSON lines), encoder
weights (safetensors) with a JSON description, a checkpoint, figures and probe
results. Writes are atomic; an existing run is never silently overwritten."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch
import yaml

from .errors import UnsupError

CONFIG, METRICS, ENCODER, ENCODER_JSON, CHECKPOINT, PROBE, FIGURES, TENSORBOARD = (
    "config.yaml", "metrics.jsonl", "encoder.safetensors", "encoder.json", "checkpoint.pt", "probe.json", "figures", "tensorboard",
)


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write to a temporary file beside ``path``, flush it to disk (fsync), then
    rename over it: a crash or ``kill -9`` at any moment leaves the old file or
    the new one, never a torn one. The file gets the permissions of an ordinary
    new file (mkstemp's are owner-only)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())  # the data is on disk before the rename makes it the file
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # the rename itself survives a power cut once the directory is flushed
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


# options a resumed run may change: the learning rates (the fix for a run that diverged)
RESUMABLE_OPTIONS = ("lr", "g_lr")


def comparable_config(config: dict) -> dict:
    """The fields that make two runs the same run (YAML turns tuples into lists)."""
    return json.loads(json.dumps({k: config.get(k) for k in ("method", "data", "options", "seed")}))


def _same_run(old: dict, new: dict) -> bool:
    """Whether ``new`` may resume ``old``: equal but for ``RESUMABLE_OPTIONS``."""
    a, b = comparable_config(old), comparable_config(new)
    for c in (a, b):
        if isinstance(c.get("options"), dict):
            c["options"] = {k: v for k, v in c["options"].items() if k not in RESUMABLE_OPTIONS}
    return a == b


def _differences(old: dict, new: dict) -> str:
    a, b = comparable_config(old), comparable_config(new)
    diffs = [f"{k}: {a[k]!r} -> {b[k]!r}" for k in ("method", "data", "seed") if a[k] != b[k]]
    opts_a, opts_b = a.get("options") or {}, b.get("options") or {}
    diffs += [f"option {k}: {opts_a.get(k)!r} -> {opts_b.get(k)!r}" for k in sorted(set(opts_a) | set(opts_b)) if opts_a.get(k) != opts_b.get(k)]
    return "; ".join(diffs)


def checkpoint_bytes(state: dict) -> bytes:
    """``state`` serialised as ``checkpoint.pt`` holds it: a copy that later training does not change."""
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def figures_dir(self) -> Path:
        return self.path / FIGURES

    def read_config(self) -> dict:
        p = self.file(CONFIG)
        if not p.is_file():
            raise UnsupError(f"{self.path}: not a run directory (no {CONFIG}); create one with `unsup pretrain`")
        fix = "restore the file, or redo the run with `unsup pretrain ... --overwrite`"
        try:
            config = yaml.safe_load(p.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise UnsupError(f"{p}: not valid YAML ({str(e).splitlines()[0]}); {fix}") from None
        except OSError as e:
            raise UnsupError(f"{p}: cannot read ({e.strerror}); {fix}") from None
        if not isinstance(config, dict):
            raise UnsupError(f"{p}: a run config is a mapping (method:, data:, shape:, options:), not {type(config).__name__}; {fix}")
        shape = config.get("shape")
        problem = next((m for bad, m in (
            (not isinstance(config.get("method"), str), "'method' must name a method"),
            (not isinstance(config.get("data"), str), "'data' must name the dataset"),
            (not (isinstance(shape, list) and len(shape) == 3 and all(type(v) is int and 0 < v <= 65536 for v in shape)),
             "'shape' must be [C, H, W], three positive whole numbers"),
            (not isinstance(config.get("options") or {}, dict), "'options' must be a mapping"),
            (type(config.get("seed", 0)) is not int, "'seed' must be a whole number")) if bad), None)
        if problem:
            raise UnsupError(f"{p}: {problem}; {fix}")
        from .methods.base import config_from_dict
        from .registry import get_method

        try:  # the method and its options, so that a damaged file is named here, not met later as a bad option
            config_from_dict(get_method(config["method"]).Config, config.get("options") or {})
        except UnsupError as e:
            raise UnsupError(f"{p}: {e}; {fix}") from None
        return config

    def prepare(self, config: dict, resume: bool = False, overwrite: bool = False) -> None:
        """Claim the directory for this run, refusing to clobber another one."""
        existing = self.file(CONFIG)
        if existing.is_file() and not overwrite:
            old = self.read_config()
            if not resume:
                raise UnsupError(f"{self.path} already holds a run ({old.get('method')} on {old.get('data')}); "
                                 "pass --resume to continue it, --overwrite to replace it, or choose another --out")
            if not _same_run(old, config):
                raise UnsupError(f"{self.path} holds a different run ({_differences(old, config)}); --resume needs the same "
                                 f"method, data, options (all but {', '.join(RESUMABLE_OPTIONS)}) and seed, or pass --overwrite")
        if overwrite and self.path.exists():
            for name in (CONFIG, METRICS, ENCODER, ENCODER_JSON, CHECKPOINT, PROBE):
                self.file(name).unlink(missing_ok=True)
            shutil.rmtree(self.figures_dir, ignore_errors=True)
            shutil.rmtree(self.file(TENSORBOARD), ignore_errors=True)
        self.path.mkdir(parents=True, exist_ok=True)
        for name in (CONFIG, METRICS, ENCODER, ENCODER_JSON, CHECKPOINT, PROBE):  # temp files of a killed atomic_write
            for tmp in self.path.glob(f".{name}.*"):
                tmp.unlink(missing_ok=True)
        atomic_write(self.file(CONFIG), yaml.safe_dump(config, sort_keys=False))

    def log(self, record: dict) -> None:
        with open(self.file(METRICS), "a") as f:
            f.write(json.dumps(record) + "\n")

    def metrics_size(self) -> int:
        """Bytes in ``metrics.jsonl`` now; a checkpoint keeps it to cut the file back on resume."""
        p = self.file(METRICS)
        return p.stat().st_size if p.is_file() else 0

    def truncate_metrics(self, size: int) -> None:
        """Keep the first ``size`` bytes of ``metrics.jsonl`` (rewritten atomically): a resumed run drops the
        records that attempts after its checkpoint wrote, so the file tells one story."""
        p = self.file(METRICS)
        if not p.is_file():
            return
        data = p.read_bytes()
        if len(data) > size:
            atomic_write(p, data[:size])

    def metrics(self) -> list[dict]:
        """The records of ``metrics.jsonl``; lines that are not JSON objects (a run killed mid-write, an
        edited file) are skipped, with one warning on stderr naming the file and counting them."""
        p = self.file(METRICS)
        if not p.is_file():
            return []
        records, bad = [], []
        for number, line in enumerate(p.read_bytes().decode(errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (ValueError, RecursionError):  # garbage, or brackets nested past Python's stack
                record = None
            if isinstance(record, dict):
                records.append(record)
            else:
                bad.append(number)
        if bad:
            where = ", ".join(map(str, bad[:5])) + (", ..." if len(bad) > 5 else "")
            print(f"warning: {p}: {len(bad)} line(s) not a JSON object (line {where}), skipped", file=sys.stderr)
        return records

    # --- checkpoint (weights_only loading: no arbitrary pickle) -----------
    def save_checkpoint(self, state: dict | bytes) -> None:
        """Write ``state`` (or its bytes from ``checkpoint_bytes``) as ``checkpoint.pt``, atomically."""
        atomic_write(self.file(CHECKPOINT), state if isinstance(state, bytes) else checkpoint_bytes(state))

    def load_checkpoint(self) -> dict | None:
        p = self.file(CHECKPOINT)
        if not p.is_file():
            return None
        try:
            return torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - corrupt zip / refused object
            # torch's own message runs to several lines and suggests weights_only=False, which would run the file's code
            reason = "it holds objects other than tensors, refused as unsafe" if "weights_only" in str(e) else "corrupt or truncated"
            raise UnsupError(f"{p}: cannot read the checkpoint ({reason}); delete it or pass --overwrite to start again") from None

    # --- the encoder -------------------------------------------------------
    def save_encoder(self, method) -> None:
        from safetensors.torch import save

        enc = method.encoder
        tensors = {k: v.detach().cpu().contiguous() for k, v in enc.state_dict().items()}
        atomic_write(self.file(ENCODER), save(tensors))
        c, h, w = method.shape
        desc = {
            "method": method.name,
            "backbone": getattr(method.cfg, "backbone", None),
            "backbone_options": dict(getattr(method.cfg, "backbone_options", None) or {}),  # the factory's arguments
            "input": {"channels": c, "height": h, "width": w, "range": [0.0, 1.0], "dtype": "float32"},
            "normalisation": "inside the encoder: (x - mean) / std, see the mean and std tensors" if hasattr(enc, "mean") else "none",
            "out_dim": int(getattr(enc, "out_dim", 0)),
            "config": asdict(method.cfg),
        }
        atomic_write(self.file(ENCODER_JSON), json.dumps(desc, indent=2))


def build_method(config: dict):
    """The method object a run's config describes (random weights)."""
    from .methods.base import config_from_dict
    from .registry import get_method

    cls = get_method(config["method"])
    cfg = config_from_dict(cls.Config, config.get("options") or {})
    return cls(cfg, tuple(config["shape"]))


def load_method(run_dir: str | Path, map_location: str = "cpu", backbone: torch.nn.Module | None = None,
                whole: bool = False):
    """The method with its trained encoder weights loaded; ``whole``: every other
    part too (heads, generators, decoders, from the run's final checkpoint), which
    the family metrics need. ``backbone``: the user's own module the run was
    pretrained with (``pretrain(..., backbone=)``)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .user import user_backbone

    run = RunDir(run_dir)
    config = run.read_config()
    if str(config.get("backbone", "")).startswith("user:") and backbone is None:
        raise UnsupError(f"{run.path} was pretrained with a backbone of the user's ({config['backbone'][6:]}); "
                         "pass that module: load_encoder(run, backbone=module)")
    with user_backbone(backbone):
        method = build_method(config)
    if whole:
        state = run.load_checkpoint()
        if state is None:
            raise UnsupError(f"{run.path}: no {CHECKPOINT}; the heads and generators are kept only there (pretrain again)")
        try:
            method.load_state_dict(state["method"])
        except (KeyError, RuntimeError) as e:
            raise UnsupError(f"{run.path / CHECKPOINT}: does not fit the method in {CONFIG} "
                             f"({str(e).splitlines()[0]}); pretrain again") from None
    p = run.file(ENCODER)
    if not p.is_file():
        raise UnsupError(f"{p}: no encoder weights; the run did not finish (resume it with --resume)")
    try:
        state = load_file(str(p), device=map_location)
    except (SafetensorError, OSError, ValueError) as e:
        raise UnsupError(f"{p}: not a valid safetensors file ({e})") from None
    try:
        method.encoder.load_state_dict(state)
    except RuntimeError as e:
        raise UnsupError(f"{p}: weights do not fit the encoder in {CONFIG} ({str(e).splitlines()[0]})") from None
    return method


def load_encoder(run_dir: str | Path, map_location: str = "cpu", backbone: torch.nn.Module | None = None) -> torch.nn.Module:
    """A ready ``nn.Module``: float images (B, C, H, W) in [0, 1] -> (B, D);
    ``backbone``: the user's own module the run was pretrained with."""
    return load_method(run_dir, map_location, backbone).encoder.eval()
