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
    """Write to a temporary file beside ``path``, then rename over it; the file
    gets the permissions of an ordinary new file (mkstemp's are owner-only)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _comparable(config: dict) -> dict:
    """The fields that make two runs the same run (YAML turns tuples into lists)."""
    return json.loads(json.dumps({k: config.get(k) for k in ("method", "data", "options", "seed")}))


def _differences(old: dict, new: dict) -> str:
    a, b = _comparable(old), _comparable(new)
    diffs = [f"{k}: {a[k]!r} -> {b[k]!r}" for k in ("method", "data", "seed") if a[k] != b[k]]
    opts_a, opts_b = a.get("options") or {}, b.get("options") or {}
    diffs += [f"option {k}: {opts_a.get(k)!r} -> {opts_b.get(k)!r}" for k in sorted(set(opts_a) | set(opts_b)) if opts_a.get(k) != opts_b.get(k)]
    return "; ".join(diffs)


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
        try:
            return yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise UnsupError(f"{p}: not valid YAML ({e})") from None

    def prepare(self, config: dict, resume: bool = False, overwrite: bool = False) -> None:
        """Claim the directory for this run, refusing to clobber another one."""
        existing = self.file(CONFIG)
        if existing.is_file() and not overwrite:
            old = self.read_config()
            if not resume:
                raise UnsupError(f"{self.path} already holds a run ({old.get('method')} on {old.get('data')}); "
                                 "pass --resume to continue it, --overwrite to replace it, or choose another --out")
            if _comparable(old) != _comparable(config):
                raise UnsupError(f"{self.path} holds a different run ({_differences(old, config)}); --resume needs the same "
                                 "method, data, options and seed, or pass --overwrite")
        if overwrite and self.path.exists():
            for name in (CONFIG, METRICS, ENCODER, ENCODER_JSON, CHECKPOINT, PROBE):
                self.file(name).unlink(missing_ok=True)
            shutil.rmtree(self.figures_dir, ignore_errors=True)
            shutil.rmtree(self.file(TENSORBOARD), ignore_errors=True)
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write(self.file(CONFIG), yaml.safe_dump(config, sort_keys=False))

    def log(self, record: dict) -> None:
        with open(self.file(METRICS), "a") as f:
            f.write(json.dumps(record) + "\n")

    def metrics(self) -> list[dict]:
        """The records of ``metrics.jsonl``; a line that is not a JSON object (a run killed mid-write) is
        skipped with a one-line warning on stderr naming the file and line."""
        p = self.file(METRICS)
        if not p.exists():
            return []
        records = []
        for number, line in enumerate(p.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if isinstance(record, dict):
                records.append(record)
            else:
                print(f"warning: {p}:{number}: not a JSON object, skipped", file=sys.stderr)
        return records

    # --- checkpoint (weights_only loading: no arbitrary pickle) -----------
    def save_checkpoint(self, state: dict) -> None:
        import io

        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write(self.file(CHECKPOINT), buf.getvalue())

    def load_checkpoint(self) -> dict | None:
        p = self.file(CHECKPOINT)
        if not p.is_file():
            return None
        try:
            return torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - corrupt zip / refused object
            raise UnsupError(f"{p}: cannot read the checkpoint ({e}); delete it or pass --overwrite to start again") from None

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


def load_method(run_dir: str | Path, map_location: str = "cpu"):
    """The method with its trained encoder weights loaded."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    run = RunDir(run_dir)
    method = build_method(run.read_config())
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


def load_encoder(run_dir: str | Path, map_location: str = "cpu") -> torch.nn.Module:
    """A ready ``nn.Module``: float images (B, C, H, W) in [0, 1] -> (B, D)."""
    return load_method(run_dir, map_location).encoder.eval()
