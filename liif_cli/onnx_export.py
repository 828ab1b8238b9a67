"""ONNX export: a LIIF or LMF checkpoint as two ONNX graphs that run without PyTorch.

`liif export WEIGHTS OUT --format onnx` writes a folder:

- encoder.onnx: image (1, 3, H, W) float32, normalised as (x - 0.5) / 0.5, H and W dynamic
  -> state (1, H, W, C) float32, channels-last: one row of C values per latent (input
  pixel). LIIF: the first MLP layer's latent part (`LIIF.project_latents`, a 3x3
  convolution of the feature map with its bias); LMF: the latent modulations.
- decoder.onnx: state (1, h, w, C), a window of latents of a larger grid or the whole of
  it; coord (1, Q, 2) and cell (1, Q, 2) float32, Q dynamic, in the whole image's [-1, 1]^2
  (row, then column: `model.make_coords`, `model.make_cells`; cell is ignored by models
  without cell decoding); grid_size (2,) int64, the whole grid's (H, W) latents; offset
  (2,) int64, the (row, col) of the window's first latent in it -> rgb (1, Q, 3) float32,
  normalised (x * 0.5 + 0.5 gives [0, 1]). The window must hold every latent the queries
  read: for an output tile, the input window `engine.plan_tiles` plans (the metadata's
  `liif.halo` pixels around the tile's own), or the whole image.
- manifest.json: the same metadata as the graphs' metadata_props, for people and scripts.

The graphs are written node by node from the model's weights (not traced), with the
engine's decoder arithmetic: nearest-latent indices rounded half to even (ONNX `Round`,
exact on the float32 positions the engine rounds in float64), the ensemble shift computed
in float64 and rounded once, rows gathered by integer index, then the MLP. No grid_sample,
no unfold. Pure: no printing; onnx is imported only when a graph is built, and torch only
when a checkpoint is read, so the CLI's usage errors answer without either.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import __version__
from .errors import LiifError, UnusableInput, one_line

if TYPE_CHECKING:
    from .checkpoint import Checkpoint
    from .model import ImplicitImage

DEFAULT_OPSET = 17
OPSETS = (13, 20)  # supported ONNX opsets, inclusive: all that onnx 1.15 and ONNX Runtime 1.17 know
ENCODER_FILE, DECODER_FILE, MANIFEST_FILE = "encoder.onnx", "decoder.onnx", "manifest.json"
EXPORT_FILES = (ENCODER_FILE, DECODER_FILE, MANIFEST_FILE)
LAYOUT_VERSION = 1  # of the graphs' inputs and outputs; bumped if they ever change
NORMALISATION = "(x - 0.5) / 0.5"  # RGB in [0, 1] -> the encoder's input; rgb out: y * 0.5 + 0.5
INSTALL_HINT = "pip install 'liif[onnx]'"


@dataclass
class OnnxExport:
    """What `export_onnx` wrote: the folder, each file's size in bytes, and the metadata
    stored in both graphs."""

    folder: Path
    sizes: dict[str, int]
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def family(self) -> str:
        return self.metadata["liif.family"]


def check_opset(opset: int) -> int:
    """`opset` if this module can write it; UnusableInput naming the supported range
    otherwise."""
    low, high = OPSETS
    if not low <= opset <= high:
        raise UnusableInput(f"--opset {opset} is not supported: liif writes ONNX opsets {low} "
                            f"to {high} (default {DEFAULT_OPSET})")
    return opset


def export_onnx(source: str | Path, target: str | Path, *, opset: int = DEFAULT_OPSET,
                overwrite: bool = False) -> OnnxExport:
    """Write encoder.onnx, decoder.onnx and manifest.json for the checkpoint at `source` into
    the folder `target`, all at once (a hidden temporary folder renamed into place).

    `target` may be new or an empty folder; an earlier export there is replaced only with
    `overwrite`; any other existing file or folder is refused. LiifError for a source that is
    not a checkpoint, an unsupported opset, a missing onnx package or an unwritable target,
    with nothing written (UnusableInput for those found before any work).
    """
    from . import checkpoint

    check_opset(opset)
    onnx = _import_onnx()
    if onnx.defs.onnx_opset_version() < opset:
        raise UnusableInput(f"--opset {opset} needs a newer onnx package (installed: "
                            f"{onnx.__version__}, up to opset {onnx.defs.onnx_opset_version()})")
    source, target = Path(source), Path(target)
    _check_target(target, overwrite)
    ckpt = checkpoint.load(source)
    model = ckpt.build()
    metadata = export_metadata(model, ckpt, source, opset)
    encoder = _finish(onnx, _encoder_graph(model), opset, metadata, "encoder")
    decoder = _finish(onnx, _decoder_graph(model), opset, metadata, "decoder")
    manifest = {**_manifest_header(model), "metadata": metadata}
    files = {ENCODER_FILE: encoder.SerializeToString(),
             DECODER_FILE: decoder.SerializeToString(),
             MANIFEST_FILE: (json.dumps(manifest, indent=2) + "\n").encode()}
    _write_folder(target, files)
    return OnnxExport(target, {name: len(data) for name, data in files.items()}, metadata)


def export_metadata(model: ImplicitImage, ckpt: Checkpoint, source: Path,
                    opset: int) -> dict[str, str]:
    """The metadata_props of both graphs: what the model is, how to feed it, where it came
    from (file name and SHA-256) and under what terms."""
    from .checkpoint import file_sha256

    spec = model.spec
    scale_range = ckpt.metadata.get("scale_range")
    return {
        "liif.family": spec.decoder,
        "liif.spec": json.dumps(spec.to_dict(), sort_keys=True),
        "liif.normalisation": f"image in: {NORMALISATION} of RGB in [0, 1]; "
                              "rgb out: y * 0.5 + 0.5, clamped to [0, 1]",
        "liif.scale_range": (json.dumps(scale_range, default=str) if scale_range is not None
                             else "unknown"),
        "liif.halo": str(_halo(model)),
        "liif.state_channels": str(_state_channels(model)),
        "liif.licence": _licence(ckpt, source),
        "liif.source": source.name,
        "liif.source_sha256": file_sha256(source),
        "liif.layout_version": str(LAYOUT_VERSION),
        "liif.opset": str(opset),
        "liif.version": __version__,
    }


# --------------------------------------------------------------------------- metadata


def _halo(model: ImplicitImage) -> int:
    """Input pixels a tile's window extends past the latents its queries read, as in
    engine.plan_tiles: the encoder's receptive radius, plus one for the 3x3 unfold."""
    return model.encoder.receptive_radius + (1 if model.spec.feat_unfold else 0)


def _state_channels(model: ImplicitImage) -> int:
    """C of the per-latent state: the first hidden width (LIIF) or the modulations (LMF)."""
    if model.spec.decoder == "lmf":
        return model.mod_dim
    return model.imnet.layers[0].out_features


def _licence(ckpt: Checkpoint, source: Path) -> str:
    """The terms of the weights: the bundled models' model card, the checkpoint's own
    metadata, or 'unknown'."""
    from . import bundled

    if bundled.is_bundled(source):
        card = bundled.WEIGHTS_DIR / f"MODEL_CARD{source.stem.removeprefix(bundled.DEFAULT)}.md"
        card = card if card.is_file() else bundled.WEIGHTS_DIR / "MODEL_CARD.md"
        return (f"research use: liif's bundled weights, trained on photographs listed with "
                f"their licences in weights/MODEL_CARD.md (one set states no licence); model "
                f"card: weights/{card.name}; liif's code: MIT")
    for key in ("licence", "license"):
        if isinstance(ckpt.metadata.get(key), str):
            return ckpt.metadata[key]
    if ckpt.source_format == "official":
        return "as released with the paper's code and weights: see github.com/yinboc/liif"
    return "unknown: not a bundled model, and the checkpoint states no licence"


def _manifest_header(model: ImplicitImage) -> dict[str, Any]:
    """manifest.json's description of the files and the graphs' inputs and outputs."""
    channels = _state_channels(model)
    return {
        "format": "liif-onnx",
        "layout_version": LAYOUT_VERSION,
        "encoder": {"file": ENCODER_FILE,
                    "inputs": {"image": "float32 (1, 3, H, W), " + NORMALISATION},
                    "outputs": {"state": f"float32 (1, H, W, {channels}), channels-last"}},
        "decoder": {"file": DECODER_FILE,
                    "inputs": {"state": f"float32 (1, h, w, {channels}): a window of latents",
                               "coord": "float32 (1, Q, 2): (row, col) in [-1, 1] of the "
                                        "whole image",
                               "cell": "float32 (1, Q, 2): output pixel size, 2/H' and 2/W'",
                               "grid_size": "int64 (2,): (H, W) latents of the whole image",
                               "offset": "int64 (2,): (row, col) of the window's first latent"},
                    "outputs": {"rgb": "float32 (1, Q, 3), normalised: y * 0.5 + 0.5"}},
    }


# --------------------------------------------------------------------------- graph building


class _Graph:
    """A tiny ONNX graph builder: nodes and initialisers with generated names."""

    def __init__(self, onnx: Any):
        self.onnx, self.nodes, self.initialisers = onnx, [], []
        self.inputs, self.outputs, self._count = [], [], 0

    def name(self, stem: str) -> str:
        self._count += 1
        return f"{stem}_{self._count}"

    def const(self, value: Any, dtype: Any = np.float32, stem: str = "c") -> str:
        """An initialiser holding `value` (an array, or a scalar as a rank-0 tensor)."""
        array = np.array(value, dtype=dtype, order="C")  # (ascontiguousarray: rank >= 1)
        name = self.name(stem)
        self.initialisers.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def weight(self, tensor: Any, stem: str = "w") -> str:
        """An initialiser holding a torch tensor's values as float32."""
        return self.const(tensor.detach().cpu().float().numpy(), stem=stem)

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs: Any) -> str:
        """Add one node; returns its (single) output's name."""
        output = out or self.name(op_type.lower())
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), [output], **attrs))
        return output

    def conv(self, x: str, conv: Any, weight: Any = None, bias: Any = None) -> str:
        """A torch Conv2d (or its weight and bias given apart) as an ONNX Conv."""
        if conv is not None:
            if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
                raise UnusableInput(f"cannot export a convolution padded with "
                                    f"{conv.padding!r} ({conv.padding_mode}) to ONNX")
            weight, bias = conv.weight, conv.bias
            pads, strides = list(conv.padding), list(conv.stride)
            dilations, groups = list(conv.dilation), conv.groups
        else:
            pads, strides, dilations, groups = [weight.shape[-1] // 2] * 2, [1, 1], [1, 1], 1
        inputs = [x, self.weight(weight, "conv_w")]
        if bias is not None:
            inputs.append(self.weight(bias, "conv_b"))
        return self.op("Conv", *inputs, kernel_shape=list(weight.shape[-2:]), pads=pads * 2,
                       strides=strides, dilations=dilations, group=groups)

    def tensor_info(self, name: str, elem: int, shape: list[Any]) -> Any:
        return self.onnx.helper.make_tensor_value_info(name, elem, shape)

    def build(self, name: str, doc: str) -> Any:
        return self.onnx.helper.make_graph(self.nodes, name, self.inputs, self.outputs,
                                           self.initialisers, doc_string=doc)


def _import_onnx() -> Any:
    try:
        import onnx
        import onnx.numpy_helper  # noqa: F401  (a submodule: import it explicitly)
    except ImportError:
        raise UnusableInput(f"ONNX export needs the onnx package: {INSTALL_HINT}") from None
    return onnx


def _finish(onnx: Any, graph: Any, opset: int, metadata: dict[str, str], part: str) -> Any:
    """A checked ModelProto of `graph` at `opset`, with the lowest IR version that holds it
    (so older ONNX Runtimes load it) and `metadata` plus the graph's part as metadata_props."""
    opsets = [onnx.helper.make_opsetid("", opset)]
    model = onnx.helper.make_model(graph, opset_imports=opsets, producer_name="liif",
                                   producer_version=__version__,
                                   ir_version=onnx.helper.find_min_ir_version_for(opsets))
    onnx.helper.set_model_props(model, {**metadata, "liif.graph": part})
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        # a bug in this module, not the user's input
        raise RuntimeError(f"liif wrote an invalid ONNX {part} graph: {one_line(exc)}") from exc
    return model


def _encoder_graph(model: ImplicitImage) -> Any:
    """image (1, 3, H, W) -> state (1, H, W, C): the encoder, then the per-latent state."""
    from .model import LIIF

    onnx = _import_onnx()
    g = _Graph(onnx)
    float_ = onnx.TensorProto.FLOAT
    g.inputs.append(g.tensor_info("image", float_, [1, 3, "height", "width"]))
    feat = _emit_module(g, model.encoder, "image")  # (1, C_feat, H, W)
    if isinstance(model, LIIF):
        first = model.imnet.layers[0]
        kernel = 3 if model.spec.feat_unfold else 1
        weight = first.weight[:, :model.latent_dim].reshape(
            -1, model.encoder.out_dim, kernel, kernel)  # unfold + linear = a conv
        proj = g.conv(feat, None, weight, first.bias)  # (1, hidden0, H, W)
    else:
        proj = _emit_module(g, model.latent_mlp, feat)  # (1, mod_dim, H, W)
    g.op("Transpose", proj, out="state", perm=[0, 2, 3, 1])  # (1, H, W, C)
    g.outputs.append(g.tensor_info("state", float_, [1, "height", "width",
                                                    _state_channels(model)]))
    return g.build(f"liif_{model.spec.decoder}_encoder",
                   "normalised image (1, 3, H, W) -> per-latent state (1, H, W, C)")


def _emit_module(g: _Graph, module: Any, x: str) -> str:
    """The ONNX nodes of one of the encoders' modules applied to `x`; UnusableInput for a module
    this exporter does not know."""
    from torch import nn

    from .model import EDSR, RDN, DenseLayer, ResBlock, ResidualDenseBlock

    if isinstance(module, nn.Conv2d):
        return g.conv(x, module)
    if isinstance(module, nn.ReLU):
        return g.op("Relu", x)
    if isinstance(module, nn.Sequential):
        for child in module:
            x = _emit_module(g, child, x)
        return x
    if isinstance(module, ResBlock):  # x + body(x) * res_scale
        body = _emit_module(g, module.body, x)
        if module.res_scale != 1:
            body = g.op("Mul", body, g.const(module.res_scale))
        return g.op("Add", x, body)
    if isinstance(module, EDSR):  # head, then a long skip over the body
        x = _emit_module(g, module.head, x)
        return g.op("Add", x, _emit_module(g, module.body, x))
    if isinstance(module, DenseLayer):
        return g.op("Concat", x, _emit_module(g, module.conv, x), axis=1)
    if isinstance(module, ResidualDenseBlock):
        return g.op("Add", _emit_module(g, module.LFF, _emit_module(g, module.convs, x)), x)
    if isinstance(module, RDN):
        shallow = _emit_module(g, module.SFENet1, x)
        x = _emit_module(g, module.SFENet2, shallow)
        blocks = []
        for block in module.RDBs:
            x = _emit_module(g, block, x)
            blocks.append(x)
        fused = _emit_module(g, module.GFF, g.op("Concat", *blocks, axis=1))
        return g.op("Add", fused, shallow)
    raise UnusableInput(f"cannot export {type(module).__name__} modules to ONNX")


def _decoder_graph(model: ImplicitImage) -> Any:
    """state, coord, cell, grid_size, offset -> rgb (1, Q, 3): `model.query_rgb`'s
    arithmetic (via `ImplicitImage.neighbours`) for one image."""
    from .model import EPS_SHIFT, ensemble_shifts

    onnx = _import_onnx()
    g = _Graph(onnx)
    tp = onnx.TensorProto
    channels = _state_channels(model)
    spec = model.spec
    g.inputs += [g.tensor_info("state", tp.FLOAT, [1, "rows", "cols", channels]),
                 g.tensor_info("coord", tp.FLOAT, [1, "queries", 2]),
                 g.tensor_info("cell", tp.FLOAT, [1, "queries", 2]),
                 g.tensor_info("grid_size", tp.INT64, [2]),
                 g.tensor_info("offset", tp.INT64, [2])]
    shifts = ensemble_shifts(spec.local_ensemble)  # n of them, as (row, col) steps
    n = len(shifts)
    eps = EPS_SHIFT if spec.local_ensemble else 0.0
    coord = g.op("Reshape", "coord", g.const([-1, 2], np.int64))  # (Q, 2)
    cell = g.op("Reshape", "cell", g.const([-1, 2], np.int64))  # (Q, 2)
    # Per axis: each neighbour's latent index (in the window) and the query's offset from it.
    index, rel, size = [], [], []
    for axis in (0, 1):
        steps = np.array([[s[axis]] for s in shifts], np.float64)  # (n, 1)
        idx, offset, size_f = _neighbour_axis(g, coord, axis, steps, eps)
        index.append(idx)
        rel.append(offset)
        size.append(size_f)
    # A latent outside the window (a caller's tiling mistake) must not wrap around or run
    # into the next row: its index is clamped for the gather, and its query answers NaN.
    state_shape = g.op("Shape", "state")
    inside = None
    for axis in (0, 1):
        extent = g.op("Gather", state_shape, g.const([axis + 1], np.int64))  # (1,)
        last = g.op("Sub", extent, g.const([1], np.int64))
        ok = g.op("And", g.op("GreaterOrEqual", index[axis], g.const(0, np.int64)),
                  g.op("LessOrEqual", index[axis], last))  # (n, Q)
        inside = ok if inside is None else g.op("And", inside, ok)
        index[axis] = g.op("Min", g.op("Max", index[axis], g.const(0, np.int64)), last)
    win_w = g.op("Gather", state_shape, g.const([2], np.int64))  # (1,)
    rows = g.op("Add", g.op("Mul", index[0], win_w), index[1])  # (n, Q)
    rows = g.op("Reshape", rows, g.const([-1], np.int64), out="latent_rows")  # (n*Q,)
    values = g.op("Reshape", "state", g.const([-1, channels], np.int64))  # (h*w, C)
    gathered = g.op("Gather", values, rows, axis=0)  # (n*Q, C)
    # The small per-query inputs: offset in latent units (and the cell in latent units).
    small = list(rel)  # (n, Q) each
    if spec.cell_decode:
        shape = g.op("Shape", rel[0])
        for axis in (0, 1):
            part = g.op("Mul", g.op("Gather", cell, g.const(axis, np.int64), axis=1), size[axis])
            small.append(g.op("Expand", part, shape))  # (Q,) -> (n, Q)
    last_axis = g.const([-1], np.int64)
    small = g.op("Concat", *[g.op("Unsqueeze", s, last_axis) for s in small], axis=-1)
    small = g.op("Reshape", small, g.const([-1, len(rel) + 2 * spec.cell_decode], np.int64))
    if spec.decoder == "lmf":
        out = _lmf_mlp(g, model, gathered, small)
    else:
        out = _liif_mlp(g, model, gathered, small)  # (n*Q, 3)
    out = g.op("Reshape", out, g.const([n, -1, 3], np.int64))  # (n, Q, 3)
    out = g.op("Where", g.op("Unsqueeze", inside, g.const([-1], np.int64)), out,
               g.const(float("nan")))
    if n > 1:  # local ensemble: weight each by the area opposite it (model.area_weights)
        areas = g.op("Add", g.op("Abs", g.op("Mul", rel[0], rel[1])), g.const(1e-9))  # (n, Q)
        flipped = g.op("Gather", areas, g.const(list(range(n - 1, -1, -1)), np.int64), axis=0)
        total = g.op("ReduceSum", areas, g.const([0], np.int64), keepdims=1)  # (1, Q)
        weights = g.op("Div", flipped, total, out="ensemble_weights")  # (n, Q)
        out = g.op("Mul", out, g.op("Unsqueeze", weights, last_axis))
        out = g.op("ReduceSum", out, g.const([0], np.int64), keepdims=1)  # (1, Q, 3)
    g.op("Identity", out, out="rgb")
    g.outputs.append(g.tensor_info("rgb", tp.FLOAT, [1, "queries", 3]))
    return g.build(f"liif_{spec.decoder}_decoder",
                   "state (1, h, w, C), coord and cell (1, Q, 2), grid_size and offset (2,) "
                   "int64 -> normalised rgb (1, Q, 3)")


def _neighbour_axis(g: _Graph, coord: str, axis: int, steps: np.ndarray,
                    eps: float) -> tuple[str, str, str]:
    """model._neighbour_axis in ONNX, for (Q, 2) coordinates along `axis` and (n, 1) float64
    steps: each neighbour's latent index in the window (int64) and the query's offset from
    that latent in latent units (float32), both (n, Q); and the grid's size as float32.

    The same float32 and float64 operations in the same order, so the same indices: the
    shift is step / size + eps in float64 rounded once to float32; the position
    ((c + 1) * size - 1) / 2 is float32; Round is half to even, exact on a float32 position
    (the engine's floor(pos + 0.5) with its tie test, in float64); the latent's centre is
    float32(-1 + r) + float32(2 r) * index with r = 1 / size in float64, like _centre.
    """
    tp = g.onnx.TensorProto
    axis_index = g.const([axis], np.int64)
    c = g.op("Gather", coord, g.const(axis, np.int64), axis=1)  # (Q,)
    size_i = g.op("Gather", "grid_size", axis_index)  # (1,) int64
    size_d, size_f = g.op("Cast", size_i, to=tp.DOUBLE), g.op("Cast", size_i, to=tp.FLOAT)
    shift = g.op("Add", g.op("Div", g.const(steps, np.float64), size_d),
                 g.const(eps, np.float64))
    shift = g.op("Cast", shift, to=tp.FLOAT)  # (n, 1)
    one, two = g.const(1.0), g.const(2.0)
    shifted = g.op("Clip", g.op("Add", c, shift), g.const(-1 + 1e-6), g.const(1 - 1e-6))
    pos = g.op("Div", g.op("Sub", g.op("Mul", g.op("Add", shifted, one), size_f), one), two)
    index = g.op("Round", pos)  # (n, Q), whole numbers in float32
    index = g.op("Min", g.op("Max", index, g.const(0.0)), g.op("Sub", size_f, one))
    r = g.op("Div", g.const(1.0, np.float64), size_d)  # (1,) float64
    start = g.op("Cast", g.op("Add", g.const(-1.0, np.float64), r), to=tp.FLOAT)
    step = g.op("Cast", g.op("Mul", g.const(2.0, np.float64), r), to=tp.FLOAT)
    centre = g.op("Add", start, g.op("Mul", step, index))
    rel = g.op("Mul", g.op("Sub", c, centre), size_f)  # (n, Q)
    local = g.op("Sub", g.op("Cast", index, to=tp.INT64), g.op("Gather", "offset", axis_index))
    return local, rel, size_f


def _liif_mlp(g: _Graph, model: Any, gathered: str, small: str) -> str:
    """LIIF's MLP from its first layer's precomputed latent part: (n*Q, hidden0) gathered
    rows and (n*Q, 2 or 4) small inputs -> (n*Q, 3)."""
    from torch import nn

    linears = [m for m in model.imnet.layers if isinstance(m, nn.Linear)]
    small_weight = linears[0].weight[:, model.latent_dim:].T  # (2 or 4, hidden0)
    hidden = g.op("Relu", g.op("Add", gathered, g.op("MatMul", small, g.weight(small_weight))))
    for k, layer in enumerate(linears[1:], start=1):
        hidden = g.op("Gemm", hidden, g.weight(layer.weight), g.weight(layer.bias), transB=1)
        if k < len(linears) - 1:
            hidden = g.op("Relu", hidden)
    return hidden


def _lmf_mlp(g: _Graph, model: Any, mods: str, small: str) -> str:
    """LMF's render MLP on (n*Q, mod_dim) gathered modulations and (n*Q, 2 or 4) small
    inputs -> (n*Q, 3), as LMF.query_rgb computes it."""
    width = model.spec.render_width

    def columns(start: int, stop: int) -> str:  # mods[:, start:stop]
        return g.op("Slice", mods, g.const([start], np.int64), g.const([stop], np.int64),
                    g.const([1], np.int64))

    query = g.op("MatMul", small, g.weight(model.query_in.weight.T))  # (n*Q, width)
    hidden = g.op("Relu", g.op("Add", columns(0, width), query))
    for k, layer in enumerate(model.hidden):
        scale = g.op("Add", g.const(1.0), columns(width * (2 * k + 1), width * (2 * k + 2)))
        shift = columns(width * (2 * k + 2), width * (2 * k + 3))
        hidden = g.op("MatMul", hidden, g.weight(layer.weight.T))
        hidden = g.op("Relu", g.op("Add", g.op("Mul", hidden, scale), shift))
    return g.op("Gemm", hidden, g.weight(model.to_rgb.weight), g.weight(model.to_rgb.bias),
                transB=1)


# --------------------------------------------------------------------------- writing


def _check_target(target: Path, overwrite: bool) -> None:
    """UnusableInput (a LiifError) unless `target` can take an export: absent, an empty
    folder, or (with `overwrite`) a folder holding only an earlier export's files."""
    if not os.path.lexists(target):
        above = target.absolute().parent
        while not os.path.lexists(above):  # the nearest existing folder must be a folder
            above = above.parent
        if not os.path.isdir(above):
            raise UnusableInput(f"cannot write {target}: {above} is not a folder")
        return
    if not os.path.isdir(target) or os.path.islink(target):
        raise UnusableInput(f"{target} exists and is not a folder: an ONNX export is a "
                            f"folder ({', '.join(EXPORT_FILES)}); choose another name")
    try:
        entries = set(os.listdir(target))
    except OSError as exc:
        raise UnusableInput(f"cannot write {target}: {exc.strerror or one_line(exc)}") from None
    if not entries:  # filled in place (_write_folder)
        return
    here = os.getcwd()
    if os.path.commonpath([here, os.path.realpath(target)]) == os.path.realpath(target):
        raise UnusableInput(f"cannot export into {target}: it is the current folder or holds "
                            "it, and is swapped whole; name a folder inside it instead")
    if not entries <= set(EXPORT_FILES):
        raise UnusableInput(f"{target} is a folder holding other files; export into a new or "
                            "empty folder (--overwrite replaces only an earlier ONNX export)")
    if not overwrite:
        raise UnusableInput(f"{target} already holds an ONNX export (pass --overwrite to "
                            "replace it)")


def _remove_old_export(old: Path, target: Path) -> None:
    """Delete the export that `target` held before, now at `old`: its files alone, so that
    anything another program put there since the check is kept (and named)."""
    for name in EXPORT_FILES:
        try:
            os.unlink(old / name)
        except FileNotFoundError:
            pass
    try:
        os.rmdir(old)
    except OSError:
        raise LiifError(f"wrote {target}; files that appeared in the folder it replaced "
                        f"meanwhile are kept in {old}") from None


def _write_folder(target: Path, files: dict[str, bytes]) -> None:
    """Write `files` into a hidden temporary folder beside `target`, then rename it into
    place (swapping out an earlier export's folder), so `target` is never half-written. An
    existing empty folder is filled in place instead, so that it keeps its owner, group and
    permissions (a shared folder) and a mount point works."""
    if os.path.isdir(target) and not os.path.islink(target) and not os.listdir(target):
        _fill_empty_folder(target, files)
        return
    parent = target.absolute().parent
    temp = parent / f".{target.name}.liif-onnx-{secrets.token_hex(8)}"
    old = parent / f".{target.name}.liif-old-{secrets.token_hex(8)}"
    try:
        parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(temp)  # permissions from the umask: shareable like any new folder
        for name, data in files.items():
            with open(temp / name, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        if os.path.lexists(target):  # an empty folder or an earlier export (_check_target)
            os.rename(target, old)
            try:
                os.rename(temp, target)
            except OSError:
                os.rename(old, target)
                raise
            _remove_old_export(old, target)
        else:
            os.rename(temp, target)
    except OSError as exc:
        raise LiifError(f"cannot write {target}: {exc.strerror or one_line(exc)}") from None
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)


def _fill_empty_folder(target: Path, files: dict[str, bytes]) -> None:
    """Write `files` into the empty folder `target`: each to a hidden temporary name first,
    all renamed to their own names only once every one is written."""
    temps = {name: target / f".{name}.liif-onnx-{secrets.token_hex(8)}" for name in files}
    try:
        for name, data in files.items():
            with open(temps[name], "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        for name, temp in temps.items():
            os.replace(temp, target / name)
    except OSError as exc:
        raise LiifError(f"cannot write {target}: {exc.strerror or one_line(exc)}") from None
    finally:
        for temp in temps.values():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
