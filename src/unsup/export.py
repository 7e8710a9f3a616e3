"""Export a run's encoder to a file other tools load without ``unsup``.

Formats (``export_encoder(run_dir, fmt, out)``, ``unsup export RUN --format F --out PATH``):

- ``torchscript``: ``torch.jit.trace`` of the encoder, normalisation included:
  float images ``(B, C, H, W)`` in [0, 1] -> features ``(B, D)``; load with ``torch.jit.load``.
- ``onnx``: the same traced graph as ONNX (opset 17, dynamic batch axis; input
  ``images``, output ``features``); needs ``pip install 'unsup[onnx]'``.
- ``torchvision``: resnet18 runs only. A safetensors state dict that loads with
  ``strict=True`` into ``torchvision.models.resnet18()`` after the small-image stem
  change (``conv1`` -> 3x3 stride 1, ``maxpool`` and ``fc`` -> ``Identity``).
  Normalisation is *not* inside: apply ``(x - mean) / std`` per channel yourself.
- ``timm``: the same weights for ``timm.create_model("resnet18", num_classes=0)``
  with the same stem change (the two libraries name ResNet-18's tensors alike);
  for a vit-tiny run, the ViT's own state dict for
  ``timm.create_model("vit_tiny_patch16_224", img_size=..., patch_size=...,
  in_chans=..., num_classes=0, global_pool=..., class_token=..., embed_dim=...,
  depth=..., num_heads=..., fc_norm=False)`` with the run's values (the JSON gives the line);
  ``model(x)`` is then the pooled feature. Normalisation is not inside, as above.

Every export writes ``<out>.json`` beside the file: input channels and size, the
normalisation, the feature dimension, and for torchvision/timm the Python lines
that build the model. Each export is checked before anything is written: the
traced graph, the ONNX model (in onnxruntime) and the torchvision/timm model
built from those very lines must give the encoder's features on a batch of a
different size from the traced one. Writes are atomic and never replace an
existing file unless ``overwrite=True``.

Patch encoders (k-means, sparse coding, convolutional clustering) run the whole
batch in one pass in the exported graph (eager they go a few images at a time
to bound memory), so feed them moderate batches. TorchScript and the
TorchScript-based ONNX exporter are deprecated by PyTorch in favour of
``torch.export`` but work in the versions this package installs; their
deprecation warnings are silenced here.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from .errors import UnsupError
from .run import atomic_write, load_method

FORMATS = ("torchvision", "timm", "torchscript", "onnx")
WEIGHT_FORMATS = ("torchvision", "timm")  # a state dict for another library's model
TRACE_BATCH, CHECK_BATCH = 2, 33  # the check batch is larger than any chunk an encoder loops over
TOLERANCE = 1e-4  # max abs difference, relative to the features' scale when that exceeds 1
ONNX_OPSET = 17


def sidecar(out: str | Path) -> Path:
    """The JSON description written next to an export: ``<out>.json``."""
    return Path(f"{out}.json")


def export_encoder(run_dir: str | Path, fmt: str, out: str | Path, overwrite: bool = False) -> Path:
    """Export the encoder of ``run_dir`` as ``fmt`` to ``out`` (plus ``<out>.json``); returns ``out``."""
    if fmt not in FORMATS:
        raise UnsupError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out = Path(out)
    _check_targets(out, overwrite)
    method = _load_run(run_dir)
    encoder = method.encoder.eval()
    c, h, w = (int(v) for v in method.shape)
    meta = {"format": fmt, "run": str(run_dir), "method": method.name, "backbone": getattr(method.cfg, "backbone", None),
            "input": {"layout": "NCHW", "channels": c, "height": h, "width": w, "dtype": "float32", "range": [0.0, 1.0]},
            "out_dim": int(encoder.out_dim)}
    with torch.no_grad(), warnings.catch_warnings():
        _quiet_export_warnings()
        if fmt in WEIGHT_FORMATS:
            data = _weights(method, fmt, meta, out.name)
        else:
            traced = _trace(encoder, (c, h, w), for_onnx=fmt == "onnx")
            data = _torchscript_bytes(traced) if fmt == "torchscript" else _onnx_bytes(encoder, traced, (c, h, w))
            meta["normalisation"] = "inside the model: feed float images in [0, 1]"
    atomic_write(out, data)
    atomic_write(sidecar(out), json.dumps(meta, indent=2) + "\n")
    return out


# --- inputs and targets -----------------------------------------------------
def _check_targets(out: Path, overwrite: bool) -> None:
    for p in (out, sidecar(out)):
        if p.is_dir():
            raise UnsupError(f"{p} is a directory; give --out a file path, e.g. {p / 'encoder.onnx'}")
        if p.exists() and not overwrite:
            raise UnsupError(f"{p} already exists; pass --overwrite to replace it, or choose another --out")


def _load_run(run_dir: str | Path):
    """The run's method with its trained encoder, or one line saying what is wrong with the directory."""
    path = Path(run_dir)
    if not path.is_dir():
        raise UnsupError(f"{path}: no such run directory; give the --out of an `unsup pretrain` run")
    return load_method(path)  # one line on a missing or damaged config.yaml, missing or corrupt weights


# --- torchscript and onnx ---------------------------------------------------
def _quiet_export_warnings() -> None:
    """Tracer and deprecation warnings of torch.jit / torch.onnx: the export checks its result numerically instead."""
    warnings.simplefilter("ignore", torch.jit.TracerWarning)
    for category in (FutureWarning, DeprecationWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category, module=r"torch\.(jit|onnx)")
    warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export", category=DeprecationWarning)


def _images(n: int, shape: tuple[int, int, int], seed: int) -> torch.Tensor:
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed))


def _single_pass(encoder: nn.Module) -> nn.Module:
    """A copy that runs a batch in one pass: a trace would freeze an encoder's
    per-chunk Python loop to the traced batch size."""
    enc = copy.deepcopy(encoder)
    for m in enc.modules():
        if isinstance(getattr(m, "chunk", None), int):
            m.chunk = 2**62
    return enc


class _SlicedAdaptiveMaxPool(TorchFunctionMode):
    """Adaptive max pooling to a size that does not divide the input's (the GAN
    encoders' 4x4 grid over 7x7 maps) has no ONNX form in the TorchScript-based
    exporter; at the fixed size of a trace it equals a max over PyTorch's bins,
    written here as slices."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.adaptive_max_pool2d and len(args) == 2 and not kwargs.get("return_indices", False):
            x, size = args
            h, w = (int(v) for v in x.shape[-2:])
            oh, ow = (size, size) if isinstance(size, int) else (size[0] or h, size[1] or w)
            if h % oh or w % ow:
                return _binned_max(_binned_max(x, oh, -2), ow, -1)  # a max over a rectangle: rows, then columns
        return func(*args, **kwargs)


def _binned_max(x: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    """Max over PyTorch's adaptive-pooling bins along ``dim``: bin i spans [floor(i L / n), ceil((i + 1) L / n))."""
    length = int(x.shape[dim])  # a constant of the trace: its arithmetic must not become ONNX ops
    starts, ends = [i * length // n for i in range(n)], [((i + 1) * length + n - 1) // n for i in range(n)]
    bins = [x.narrow(dim, a, b - a) for a, b in zip(starts, ends)]
    return torch.cat([b.amax(dim, keepdim=True) for b in bins], dim)


def _trace(encoder: nn.Module, shape: tuple[int, int, int], for_onnx: bool = False) -> torch.jit.ScriptModule:
    try:
        with _SlicedAdaptiveMaxPool() if for_onnx else contextlib.nullcontext():
            traced = torch.jit.trace(_single_pass(encoder), (_images(TRACE_BATCH, shape, 0),), check_trace=False)
    except Exception as e:  # noqa: BLE001 - any tracing failure is this encoder's limit, said in one line
        raise UnsupError(f"{type(encoder).__name__} cannot be traced ({str(e).splitlines()[0]})") from None
    _check_same(encoder, lambda x: traced(x), shape, "the traced TorchScript graph")
    return traced


def _check_same(encoder: nn.Module, exported, shape: tuple[int, int, int], what: str) -> None:
    """Refuse an export whose features differ from the encoder's (at a batch size other than the traced one)."""
    x = _images(CHECK_BATCH, shape, 1)
    want = encoder(x)
    try:
        got = exported(x)
    except Exception as e:  # noqa: BLE001 - e.g. a batch size frozen into the graph
        raise UnsupError(f"{what} fails on a batch of {CHECK_BATCH} images ({str(e).strip().splitlines()[-1][:200]}); "
                         "this encoder cannot be exported to this format, try another --format") from None
    diff = float((got - want).abs().max()) if got.shape == want.shape else float("inf")
    if diff > TOLERANCE * max(1.0, float(want.abs().max())):
        raise UnsupError(f"{what} does not reproduce the {type(encoder).__name__} encoder (max difference {diff:.3g}); "
                         "this encoder cannot be exported to this format, try another --format")


def _torchscript_bytes(traced: torch.jit.ScriptModule) -> bytes:
    buf = io.BytesIO()
    torch.jit.save(traced, buf)
    return buf.getvalue()


def _onnx_bytes(encoder: nn.Module, traced: torch.jit.ScriptModule, shape: tuple[int, int, int]) -> bytes:
    try:
        import onnx
        import onnxruntime as ort
    except ImportError:
        raise UnsupError("the onnx format needs the onnx and onnxruntime packages: pip install 'unsup[onnx]'") from None
    buf = io.BytesIO()
    # the TorchScript-based exporter takes the traced graph that was just checked;
    # the torch.export-based one cannot follow the patch encoders' shape-dependent Python code
    try:
        torch.onnx.export(traced, (_images(TRACE_BATCH, shape, 0),), buf, dynamo=False, opset_version=ONNX_OPSET,
                          input_names=["images"], output_names=["features"],
                          dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}})
    except Exception as e:  # noqa: BLE001 - an operator without an ONNX form: say which, in one line
        raise UnsupError(f"{type(encoder).__name__} cannot be exported to ONNX ({str(e).splitlines()[0][:300]}); "
                         "try --format torchscript") from None
    data = buf.getvalue()
    onnx.checker.check_model(onnx.load_from_string(data))
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    _check_same(encoder, lambda x: torch.from_numpy(session.run(None, {"images": x.numpy()})[0]), shape,
                "the ONNX model (onnxruntime)")
    return data


# --- torchvision and timm ---------------------------------------------------
def build_lines(fmt: str, in_channels: int, vit_arguments: dict | None = None) -> list[str]:
    """Python lines that build the model a ``fmt`` export loads into (as ``model``):
    the small-stem ResNet-18, or with ``vit_arguments`` (``ViT.timm_arguments()``) timm's ViT."""
    if vit_arguments is not None:
        args = ", ".join(f"{k}={v!r}" for k, v in vit_arguments.items())
        return ["import timm", f'model = timm.create_model("vit_tiny_patch16_224", {args})']
    stem = [f"model.conv1 = torch.nn.Conv2d({in_channels}, 64, kernel_size=3, stride=1, padding=1, bias=False)",
            "model.maxpool = torch.nn.Identity()"]
    if fmt == "torchvision":
        return ["import torch, torchvision", "model = torchvision.models.resnet18(weights=None)", *stem,
                "model.fc = torch.nn.Identity()"]
    return ["import timm, torch", 'model = timm.create_model("resnet18", num_classes=0)', *stem]


def build_model(lines: list[str]) -> nn.Module:
    """The model ``build_lines`` describes, built by running those lines."""
    scope: dict = {}
    exec("\n".join(lines), scope)  # the documented lines themselves, so they stay true
    return scope["model"]


def _library_net(method, fmt: str) -> tuple[nn.Module, dict | None]:
    """The other library's network inside the run's encoder (a small-stem
    ResNet-18 for torchvision or timm, a ViT for timm) and the ViT's timm
    arguments (None for the ResNet), or one line naming the formats that work."""
    import torchvision

    from .nets import Encoder

    enc = method.encoder
    backbone = getattr(method.cfg, "backbone", None)
    net = enc.net if isinstance(enc, Encoder) else None
    if backbone == "resnet18" and isinstance(net, torchvision.models.ResNet):
        return net, None
    if backbone == "vit-tiny" and hasattr(net, "timm_arguments"):
        if fmt == "timm":
            return net, net.timm_arguments()
        raise UnsupError("the vit-tiny backbone is timm's VisionTransformer; export it with --format timm, "
                         "--format torchscript or --format onnx")
    what = f"the {backbone} backbone" if net is not None and backbone else f"{method.name}'s encoder ({type(enc).__name__})"
    raise UnsupError(f"{what} is not a torchvision/timm model (those formats take resnet18 runs, and timm vit-tiny runs); "
                     "export it with --format torchscript or --format onnx")


def _weights(method, fmt: str, meta: dict, file_name: str) -> bytes:
    from safetensors.torch import save

    net, vit_arguments = _library_net(method, fmt)
    c = meta["input"]["channels"]
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    lines = build_lines(fmt, c, vit_arguments)
    _check_weights(method.encoder, fmt, lines, state, meta)
    enc = method.encoder
    meta["normalisation"] = {"mean": enc.mean.flatten().tolist(), "std": enc.std.flatten().tolist(),
                             "apply": "x = (x - mean) / std per channel, x float in [0, 1]; then features = model(x)"}
    meta["build"] = lines
    meta["load"] = ["from safetensors.torch import load_file", f'model.load_state_dict(load_file("{file_name}"), strict=True)',
                    "model.eval()"]
    return save(state)


def _check_weights(encoder: nn.Module, fmt: str, lines: list[str], state: dict, meta: dict) -> None:
    c = meta["input"]["channels"]
    try:
        model = build_model(lines).eval()
    except ImportError:
        # an installation without the library: the export is checked against the model it loads into
        raise UnsupError(f"the {fmt} format needs the {fmt} package to check the export against: pip install {fmt}") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise UnsupError(f"the weights do not fit the documented {fmt} model ({str(e).splitlines()[0]})") from None
    shape = (c, meta["input"]["height"], meta["input"]["width"])
    _check_same(encoder, lambda x: model((x - encoder.mean) / encoder.std), shape, f"the {fmt} model")
