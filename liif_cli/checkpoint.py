"""Checkpoints: the project's own format, the official LIIF format, and named weights.

The project's format is a plain dict, safe to load with `torch.load(weights_only=True)`:

    {"format": "liif", "format_version": 1, "spec": ModelSpec.to_dict(),
     "state_dict": {...}, "metadata": {...}}

Training checkpoints add "train_state" (optimiser, scheduler, step, RNG) beside those keys.
Checkpoints written by the paper's code (github.com/yinboc/liif) load unchanged: a dict
whose "model" entry holds "name", "args" (encoder_spec / imnet_spec) and "sd".
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import LiifError, UnusableInput
from .files import file_identity, write_atomic
from .model import DECODERS, RDN_CONFIGS, ImplicitImage, ModelSpec, build_model

FORMAT_NAME = "liif"
FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    """A loaded checkpoint: how to build the model, its weights, and what is known of it."""

    spec: ModelSpec
    state_dict: dict[str, torch.Tensor]
    metadata: dict[str, Any] = field(default_factory=dict)
    source_format: str = FORMAT_NAME
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. "train_state"

    def build(self) -> ImplicitImage:
        """The model with these weights loaded, in eval mode."""
        model = build_model(self.spec)
        model.load_state_dict(self.state_dict)
        return model.eval()


def to_dict(model: ImplicitImage, metadata: dict[str, Any] | None = None,
            **extra: Any) -> dict[str, Any]:
    """The project-format dict for a model (tensors moved to CPU, in the standard layout
    whatever layout training used)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
            "spec": model.spec.to_dict(), "state_dict": state,
            "metadata": dict(metadata or {}), **extra}


def save(obj: dict[str, Any], path: str | Path, *, overwrite: bool = True) -> None:
    """Write a checkpoint dict atomically: a temp file in the same folder, then rename;
    without `overwrite`, LiifError rather than replace an existing file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda f: torch.save(obj, f), overwrite=overwrite)


def export(source: str | Path, target: str | Path, overwrite: bool = False,
           metadata: dict[str, Any] | None = None) -> Checkpoint:
    """Write a slim, inference-only copy of a checkpoint (either format) in the project format.

    Training state (optimiser, RNG, ...) is dropped, so a run's last.pth shrinks to the
    weights alone; `metadata` entries are added to the checkpoint's own.
    """
    target = Path(target)
    ckpt = load(source)
    if os.path.lexists(target) and not overwrite:  # os.path: never raises (e.g. ENAMETOOLONG)
        raise LiifError(f"{target} already exists (pass --overwrite to replace it)")
    if file_identity(target) == file_identity(source):
        raise LiifError(f"export would overwrite its source {source}; choose another file")
    meta = {**ckpt.metadata, **(metadata or {})}
    try:
        save(to_dict(ckpt.build(), meta), target, overwrite=overwrite)
    except OSError as exc:
        raise LiifError(f"cannot write {target}: {exc.strerror or exc}") from None
    return load(target)


def load(path: str | Path) -> Checkpoint:
    """Read a checkpoint file of either format; UnusableInput (a LiifError: exit 2 in the
    CLI) if it is not one."""
    path = Path(path)
    if not os.path.isfile(path):
        raise UnusableInput(f"weights file not found: {path}")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and weights-only errors all mean "not a checkpoint"
        raise UnusableInput(f"not a LIIF checkpoint: {path} ({type(exc).__name__})") from None
    return from_dict(raw, name=str(path))


def from_dict(raw: Any, name: str = "checkpoint") -> Checkpoint:
    """Interpret a loaded checkpoint dict (project or official format)."""
    if isinstance(raw, dict) and raw.get("format") == FORMAT_NAME:
        version = raw.get("format_version", 0)
        if not isinstance(version, int) or isinstance(version, bool):
            raise UnusableInput(f"{name}: malformed liif checkpoint (format_version {version!r} is "
                            "not a whole number)")
        if version > FORMAT_VERSION:
            raise UnusableInput(f"{name}: checkpoint format version {version} is newer "
                            f"than this liif understands ({FORMAT_VERSION}); upgrade liif")
        extra = {k: v for k, v in raw.items()
                 if k not in ("format", "format_version", "spec", "state_dict", "metadata")}
        try:
            spec, state = ModelSpec(**raw["spec"]), raw["state_dict"]
            if not isinstance(state, dict):
                raise TypeError("state_dict is not a dict")
            metadata = raw.get("metadata") or {}
            if not isinstance(metadata, dict):
                raise TypeError("metadata is not a dict")
        except (KeyError, TypeError) as exc:
            raise UnusableInput(f"{name}: malformed liif checkpoint "
                                f"({type(exc).__name__}: {exc})") from None
        ckpt = Checkpoint(spec, state, dict(metadata), FORMAT_NAME, extra)
    elif isinstance(raw, dict) and isinstance(raw.get("model"), dict) and "sd" in raw["model"]:
        try:
            ckpt = _from_official(raw, name)
        except (AttributeError, TypeError, ValueError) as exc:
            raise UnusableInput(f"{name}: malformed official LIIF checkpoint "
                            f"({type(exc).__name__}: {exc})") from None
    else:
        raise UnusableInput(f"not a LIIF checkpoint: {name} (no 'format' or 'model' entry)")
    _check_weights_fit(ckpt, name)
    return ckpt


def _from_official(raw: dict[str, Any], name: str) -> Checkpoint:
    """Translate the paper's checkpoint layout into a Checkpoint."""
    model = raw["model"]
    if model.get("name") != "liif":
        raise UnusableInput(f"{name}: official checkpoint holds model {model.get('name')!r}, "
                        "not 'liif'")
    args = model.get("args", {})
    enc = args.get("encoder_spec", {})
    enc_name, enc_args = enc.get("name"), dict(enc.get("args", {}))
    if not enc_args.pop("no_upsampling", False):
        raise UnusableInput(f"{name}: the encoder must be built with no_upsampling=True")
    for unused in ("scale", "rgb_range", "n_colors"):
        enc_args.pop(unused, None)
    imnet = args.get("imnet_spec", {}).get("args", {})
    spec = ModelSpec(
        encoder=enc_name, encoder_args=enc_args,
        hidden=list(imnet.get("hidden_list", [256, 256, 256, 256])),
        feat_unfold=args.get("feat_unfold", True), local_ensemble=args.get("local_ensemble", True),
        cell_decode=args.get("cell_decode", True))
    if imnet.get("out_dim", 3) != 3:
        raise UnusableInput(f"{name}: decoder must output 3 channels")
    state = {}
    for key, value in model["sd"].items():
        key = key.removeprefix("module.")
        if ".sub_mean." in key or ".add_mean." in key:  # EDSR's mean shifts: unused by LIIF
            continue
        state[key] = value
    meta = {"source": "official LIIF checkpoint (github.com/yinboc/liif)"}
    if "epoch" in raw:
        meta["epoch"] = raw["epoch"]
    return Checkpoint(spec, state, meta, "official")


# Sane ranges for every number a spec may hold: a checkpoint describing a model outside them
# is damaged or hostile, and is refused before anything is built or allocated.
_INT_ARGS = {"n_resblocks": (0, 256), "n_feats": (1, 1024), "G0": (1, 1024),
             "RDNkSize": (1, 9), "n_colors": (3, 3)}
_ENCODER_ARGS = {"edsr-baseline": {"n_resblocks", "n_feats", "res_scale", "n_colors"},
                 "edsr": {"n_resblocks", "n_feats", "res_scale", "n_colors"},
                 "rdn": {"G0", "RDNkSize", "RDNconfig", "n_colors"}}
_MAX_HIDDEN_LAYERS, _MAX_HIDDEN_WIDTH, _MAX_RENDER_WIDTH = 32, 4096, 1024


def check_spec(spec: ModelSpec) -> None:
    """Raise LiifError unless every field of `spec` is of the right type and in a sane range."""
    def bad(problem: str) -> LiifError:
        return UnusableInput(f"bad model spec: {problem}")

    if not isinstance(spec.encoder, str) or spec.encoder not in _ENCODER_ARGS:
        raise bad(f"unknown encoder {spec.encoder!r} (known: {', '.join(_ENCODER_ARGS)})")
    if not isinstance(spec.encoder_args, dict):
        raise bad("encoder_args is not a dict")
    unknown = set(spec.encoder_args) - _ENCODER_ARGS[spec.encoder]
    if unknown:
        raise bad(f"{spec.encoder} takes no argument {sorted(map(str, unknown))[0]!r}")
    for key, value in spec.encoder_args.items():
        if key in _INT_ARGS:
            low, high = _INT_ARGS[key]
            if not _is_int(value) or not low <= value <= high:
                raise bad(f"{key} = {value!r}, expected a whole number from {low} to {high}")
        elif key == "res_scale":
            if not is_finite_number(value) or not 0 < value <= 10:
                raise bad(f"res_scale = {value!r}, expected a number in (0, 10]")
        elif key == "RDNconfig" and (not isinstance(value, str) or value not in RDN_CONFIGS):
            raise bad(f"RDNconfig = {value!r}, expected one of {', '.join(RDN_CONFIGS)}")
    if spec.encoder_args.get("RDNkSize", 1) % 2 == 0:
        raise bad(f"RDNkSize = {spec.encoder_args['RDNkSize']}, expected an odd number")
    hidden = spec.hidden
    if not isinstance(hidden, (list, tuple)) or len(hidden) > _MAX_HIDDEN_LAYERS:
        raise bad(f"hidden = {hidden!r}, expected a list of at most {_MAX_HIDDEN_LAYERS} widths")
    for width in hidden:
        if not _is_int(width) or not 1 <= width <= _MAX_HIDDEN_WIDTH:
            raise bad(f"hidden layer width {width!r}, expected a whole number from 1 to "
                      f"{_MAX_HIDDEN_WIDTH}")
    if not hidden and spec.decoder == "liif":  # the MLP's first layer is a hidden one
        raise bad("hidden = [], expected at least one hidden layer")
    for flag in ("feat_unfold", "local_ensemble", "cell_decode"):
        if not isinstance(getattr(spec, flag), bool):
            raise bad(f"{flag} = {getattr(spec, flag)!r}, expected true or false")
    if spec.decoder not in DECODERS:
        raise bad(f"unknown decoder {spec.decoder!r} (known: {', '.join(DECODERS)})")
    latent = spec.latent_hidden
    if not isinstance(latent, (list, tuple)) or len(latent) > _MAX_HIDDEN_LAYERS:
        raise bad(f"latent_hidden = {latent!r}, expected a list of at most "
                  f"{_MAX_HIDDEN_LAYERS} widths")
    for width in latent:
        if not _is_int(width) or not 1 <= width <= _MAX_HIDDEN_WIDTH:
            raise bad(f"latent MLP width {width!r}, expected a whole number from 1 to "
                      f"{_MAX_HIDDEN_WIDTH}")
    for key, high in (("render_width", _MAX_RENDER_WIDTH), ("render_depth", _MAX_HIDDEN_LAYERS)):
        value = getattr(spec, key)
        if not _is_int(value) or not 1 <= value <= high:
            raise bad(f"{key} = {value!r}, expected a whole number from 1 to {high}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    """An int or a finite float (not a bool): a number metadata can be shown or checked as."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


def _check_weights_fit(ckpt: Checkpoint, name: str) -> None:
    """Fail with one clear line unless the spec is sane and every tensor of the state dict
    has the shape the spec implies and finite values. Nothing real is built: the expected
    shapes come from a model on the 'meta' device, which allocates no memory."""
    try:
        check_spec(ckpt.spec)
    except LiifError as exc:
        raise UnusableInput(f"{name}: {exc}") from None
    try:
        with torch.device("meta"):
            expected = build_model(ckpt.spec).state_dict()
    except (TypeError, ValueError, KeyError, RuntimeError) as exc:
        raise UnusableInput(f"{name}: bad model spec ({exc})") from None
    missing = sorted(set(expected) - set(ckpt.state_dict))
    unexpected = sorted(set(ckpt.state_dict) - set(expected), key=str)  # keys may be any type
    if missing or unexpected:
        raise UnusableInput(f"{name}: weights do not fit the model "
                        f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    for key, value in expected.items():
        weight = ckpt.state_dict[key]
        if not isinstance(weight, torch.Tensor) or not weight.is_floating_point():
            raise UnusableInput(f"{name}: weight {key} is not a floating-point tensor")
        if tuple(weight.shape) != tuple(value.shape):
            raise UnusableInput(f"{name}: weight {key} has shape "
                            f"{tuple(weight.shape)}, expected {tuple(value.shape)}")
        if not bool(torch.isfinite(weight).all()):
            raise UnusableInput(f"{name}: weight {key} holds NaN or infinite values "
                            "(a diverged or damaged checkpoint)")


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, to identify exactly which weights produced a result."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
