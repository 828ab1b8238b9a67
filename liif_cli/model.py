"""The LIIF model: encoders, the MLP decoder and the local implicit image function.

Pure tensors: no file I/O, no printing. Images are (B, 3, H, W) tensors normalised as
(x - 0.5) / 0.5, exactly like the official checkpoints (github.com/yinboc/liif).

Coordinates live in the continuous square [-1, 1]^2; component 0 is the row (y) and
component 1 the column (x). A feature map of size (h, w) has one latent code per input
pixel, sitting at that pixel's centre. A query is a coordinate plus a cell: the size of
the target pixel in the same units (2 / H', 2 / W').

Two decoders compute the same function:
- `query_rgb_reference`: the paper's definition written out directly (unfold the feature
  map, gather with nearest sampling, run the whole MLP on [latent, offset, cell] for each
  of the four ensemble neighbours). Slow; the yardstick for tests and `liif bench --speed`.
- `query_rgb`: the fast path. The MLP's first layer is linear in the unfolded latent, so
  its latent part is a 3x3 convolution of the feature map computed once per *input* pixel
  (`project_latents`); per query only the small offset/cell part and the deeper layers run.
  It addresses latents by global index, so it also works on a window of a larger feature
  map, which is what lets the rendering engine tile exactly. `Decoder` is the same
  computation for rendering: no autograd, weights cast once, fused bias + ReLU.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .runtime import cpu_has_fast_bf16

# The official code nudges each ensemble shift by this much so that a query lying exactly
# between two latents picks a deterministic one, and clamps shifted coordinates inside the
# square by the same margin.
EPS_SHIFT = 1e-6
AREA_EPS = 1e-9
# The fast model's latent MLP runs on bands of this many latent rows when rendering: a band of
# a 512-wide window holds about 0.1 GB of its 256-wide hidden layers.
LATENT_BAND_ROWS = 64


# --------------------------------------------------------------------------- coordinates


def make_coords(shape: tuple[int, int], flatten: bool = True) -> Tensor:
    """Pixel-centre coordinates of an (H, W) grid in [-1, 1]^2, as (H*W, 2) or (H, W, 2)."""
    axes = [axis_centres(n) for n in shape]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)  # (H, W, 2)
    return grid.reshape(-1, 2) if flatten else grid


def make_cells(shape: tuple[int, int], count: int) -> Tensor:
    """The cell (pixel size) of an (H, W) target grid, repeated for `count` queries: (count, 2)."""
    cell = torch.tensor([2.0 / shape[0], 2.0 / shape[1]])
    return cell.expand(count, 2).clone()


def axis_centres(n: int) -> Tensor:
    """Centres of n equal cells spanning [-1, 1], computed like the official make_coord."""
    r = 1.0 / n  # half a cell
    return -1 + r + (2 * r) * torch.arange(n).float()


def nearest_latent_index(coord: Tensor, size: int) -> Tensor:
    """Index of the latent nearest to each coordinate along one axis of `size` latents.

    Same rule as grid_sample(mode="nearest", align_corners=False): unnormalise, round
    half to even, and stay inside the grid.
    """
    pos = (((coord + 1) * size - 1) / 2).double()  # float64: exact +0.5 and tie test
    index = torch.floor(pos + 0.5)
    index -= (((index - pos) == 0.5) & (index.remainder(2) == 1)).double()  # ties: to even
    return index.long().clamp_(0, size - 1)


def ensemble_shifts(local_ensemble: bool) -> list[tuple[int, int]]:
    """The (row, col) neighbour shifts queried per output pixel, in the official order."""
    if not local_ensemble:
        return [(0, 0)]
    return [(-1, -1), (-1, 1), (1, -1), (1, 1)]


def ensemble_weights(rel_coords: list[Tensor]) -> list[Tensor]:
    """Local-ensemble weights from each neighbour's (..., 2) offset (in latent units),
    summing to 1; see area_weights."""
    rel = torch.stack(rel_coords)  # (n, ..., 2)
    return list(area_weights(rel[..., 0], rel[..., 1]).unbind(0))


def area_weights(rel_y: Tensor, rel_x: Tensor) -> Tensor:
    """Local-ensemble weights from the n neighbours' offsets along each axis, (n, ...) each,
    in the order of ensemble_shifts; (n, ...), summing to 1 over n.

    Each neighbour is weighted by the area of the rectangle between the query and the
    diagonally opposite neighbour, so the nearest latent gets the largest weight.
    """
    areas = (rel_y * rel_x).abs() + AREA_EPS
    return areas.flip(0) / areas.sum(0)  # flip: swap diagonal partners


# --------------------------------------------------------------------------- encoders


class ResBlock(nn.Module):
    """conv-ReLU-conv with an identity skip (EDSR's residual block, no batch norm)."""

    def __init__(self, channels: int, res_scale: float = 1.0):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
        )
        self.res_scale = res_scale

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x) * self.res_scale


class EDSR(nn.Module):
    """EDSR without its upsampling tail: an image becomes a (B, n_feats, H, W) feature map."""

    def __init__(self, n_resblocks: int = 16, n_feats: int = 64, res_scale: float = 1.0,
                 n_colors: int = 3):
        super().__init__()
        self.head = nn.Sequential(nn.Conv2d(n_colors, n_feats, 3, padding=1))
        blocks: list[nn.Module] = [ResBlock(n_feats, res_scale) for _ in range(n_resblocks)]
        blocks.append(nn.Conv2d(n_feats, n_feats, 3, padding=1))
        self.body = nn.Sequential(*blocks)
        self.out_dim = n_feats
        # Pixels of context each side that reach one output feature (3x3 convs: 1 each).
        self.receptive_radius = 2 + 2 * n_resblocks

    def forward(self, x: Tensor) -> Tensor:
        x = self.head(x)
        return x + self.body(x)


class DenseLayer(nn.Module):
    """RDN's conv-ReLU whose output is concatenated to its input."""

    def __init__(self, in_channels: int, growth: int, kernel: int = 3):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(in_channels, growth, kernel, padding=kernel // 2),
                                  nn.ReLU(inplace=True))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat((x, self.conv(x)), 1)


class ResidualDenseBlock(nn.Module):
    """C dense layers, a 1x1 local fusion and a residual skip."""

    def __init__(self, channels: int, growth: int, n_layers: int, kernel: int = 3):
        super().__init__()
        self.convs = nn.Sequential(*[DenseLayer(channels + i * growth, growth, kernel)
                                     for i in range(n_layers)])
        self.LFF = nn.Conv2d(channels + n_layers * growth, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.LFF(self.convs(x)) + x


RDN_CONFIGS = {"A": (20, 6, 32), "B": (16, 8, 64)}  # (blocks D, layers per block C, growth G)


class RDN(nn.Module):
    """Residual Dense Network without its upsampling tail (the LIIF paper uses config B)."""

    def __init__(self, G0: int = 64, RDNkSize: int = 3, RDNconfig: str = "B", n_colors: int = 3):
        super().__init__()
        n_blocks, n_layers, growth = RDN_CONFIGS[RDNconfig]
        pad = RDNkSize // 2
        self.SFENet1 = nn.Conv2d(n_colors, G0, RDNkSize, padding=pad)
        self.SFENet2 = nn.Conv2d(G0, G0, RDNkSize, padding=pad)
        # The official RDB never passes RDNkSize on: its dense layers are always 3x3.
        self.RDBs = nn.ModuleList([ResidualDenseBlock(G0, growth, n_layers)
                                   for _ in range(n_blocks)])
        self.GFF = nn.Sequential(nn.Conv2d(n_blocks * G0, G0, 1),
                                 nn.Conv2d(G0, G0, RDNkSize, padding=pad))
        self.out_dim = G0
        self.receptive_radius = 3 * pad + n_blocks * n_layers

    def forward(self, x: Tensor) -> Tensor:
        shallow = self.SFENet1(x)
        x = self.SFENet2(shallow)
        block_outputs = []
        for block in self.RDBs:
            x = block(x)
            block_outputs.append(x)
        return self.GFF(torch.cat(block_outputs, 1)) + shallow


def _edsr_full(**kwargs: Any) -> EDSR:
    """EDSR at full size (32 blocks, 256 channels, residual scaling 0.1)."""
    return EDSR(**{"n_resblocks": 32, "n_feats": 256, "res_scale": 0.1, **kwargs})


ENCODERS: dict[str, Any] = {"edsr-baseline": EDSR, "edsr": _edsr_full, "rdn": RDN}


# --------------------------------------------------------------------------- decoder


class MLP(nn.Module):
    """Linear-ReLU stack; `layers` is named like the official code so checkpoints load."""

    def __init__(self, in_dim: int, out_dim: int, hidden: list[int]):
        super().__init__()
        layers: list[nn.Module] = []
        last = in_dim
        for width in hidden:
            layers += [nn.Linear(last, width), nn.ReLU(inplace=True)]
            last = width
        layers.append(nn.Linear(last, out_dim))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


DECODERS = ("liif", "lmf")


@dataclass
class ModelSpec:
    """Everything needed to rebuild a model (stored in checkpoints).

    `decoder` names the family: 'liif', the paper's MLP (`hidden` widths), or 'lmf', the
    latent-modulated fast decoder (`latent_hidden`, `render_width`, `render_depth`; see LMF).
    Checkpoints from before the field existed are LIIF.
    """

    encoder: str = "edsr-baseline"
    encoder_args: dict[str, Any] = field(default_factory=dict)
    hidden: list[int] = field(default_factory=lambda: [256, 256, 256, 256])
    feat_unfold: bool = True
    local_ensemble: bool = True
    cell_decode: bool = True
    decoder: str = "liif"
    latent_hidden: list[int] = field(default_factory=lambda: [256, 256])
    render_width: int = 16
    render_depth: int = 5

    def to_dict(self) -> dict[str, Any]:
        """The spec as a plain dict, with only the fields of its own decoder family."""
        raw = asdict(self)
        unused = ("hidden",) if self.decoder == "lmf" else (
            "decoder", "latent_hidden", "render_width", "render_depth")
        return {k: v for k, v in raw.items() if k not in unused}


@dataclass
class LatentProjection:
    """The first MLP layer's latent part, precomputed per latent: the fast path's state.

    `values` is channels-last, one row per latent of a (possibly windowed) feature map that
    starts at `offset` inside a global grid of `grid_size` latents.
    """

    values: Tensor  # (B, h*w, hidden0)
    window: tuple[int, int]  # (h, w) of this window
    offset: tuple[int, int]  # (row, col) of the window's first latent in the global grid
    grid_size: tuple[int, int]  # (H, W) of the global latent grid


@dataclass
class Neighbours:
    """What the fast decoders need per query and ensemble neighbour (n of them), flattened
    neighbour-major: row n*B*Q + b*Q + q belongs to neighbour n, image b, query q."""

    rows: Tensor  # (n*B*Q,) long: row of the neighbour's latent in the projection's values
    small: Tensor  # (n*B*Q, 2 or 4): offset to that latent in latent units (and the cell)
    weights: Tensor | None  # (n, B, Q): local-ensemble weights; None without the ensemble


class ImplicitImage(nn.Module):
    """What both decoder families share: the encoder, and how a query finds its latents.

    A subclass turns a feature map into per-latent state (`project_latents`, run once per
    input pixel) and decodes queries from that state (`query_rgb`, differentiable, for
    training; `renderer`, for the engine).
    """

    def __init__(self, spec: ModelSpec):
        super().__init__()
        if spec.encoder not in ENCODERS:
            raise ValueError(f"unknown encoder {spec.encoder!r}; choose from {sorted(ENCODERS)}")
        self.spec = spec
        self.encoder = ENCODERS[spec.encoder](**spec.encoder_args)
        self.latent_dim = self.encoder.out_dim * (9 if spec.feat_unfold else 1)
        self.query_dim = 2 + (2 if spec.cell_decode else 0)  # offset (and cell) per query

    @property
    def context_radius(self) -> int:
        """Input pixels each side that one output pixel can depend on (for tiling halos)."""
        unfold = 1 if self.spec.feat_unfold else 0
        ensemble = 1  # a neighbouring latent may be picked, whether ensembling or not
        return self.encoder.receptive_radius + unfold + ensemble

    @property
    def n_neighbours(self) -> int:
        """Latents each query reads: 4 with the local ensemble, else 1."""
        return len(ensemble_shifts(self.spec.local_ensemble))

    def encode(self, image: Tensor) -> Tensor:
        """(B, 3, H, W) normalised image -> (B, C, H, W) feature map."""
        return self.encoder(image)

    def forward(self, image: Tensor, coord: Tensor, cell: Tensor) -> Tensor:
        """Normalised image, (B, Q, 2) coordinates and cells -> (B, Q, 3) normalised RGB."""
        return self.query_rgb(self.project_latents(self.encode(image)), coord, cell)

    def decoder_macs(self, scale: float) -> float:
        """Multiply-adds of the decoder per output pixel at `scale` (encoder excluded): the
        per-query work, plus the per-latent work shared by the scale^2 pixels of a latent."""
        return self.macs_per_query() + self.macs_per_latent() / scale ** 2

    def macs_per_latent(self) -> int:
        raise NotImplementedError

    def macs_per_query(self) -> int:
        raise NotImplementedError

    def project_latents(self, feat: Tensor, offset: tuple[int, int] = (0, 0),
                        grid_size: tuple[int, int] | None = None) -> LatentProjection:
        raise NotImplementedError

    def query_rgb(self, proj: LatentProjection, coord: Tensor, cell: Tensor | None,
                  check_window: bool = True) -> Tensor:
        raise NotImplementedError

    def neighbours(self, proj: LatentProjection, coord: Tensor, cell: Tensor | None,
                   check_window: bool = True) -> Neighbours:
        """The latents each query reads and the small inputs it pairs them with, for all
        ensemble neighbours at once; (B, Q, 2) global coordinates and cells.

        One vectorised pass per axis over the n neighbours (n = 4 with the local ensemble,
        else 1), computing exactly what the reference decoder's per-neighbour sampling does.
        check_window: verify that every latent the queries need lies inside the projected
        window (ValueError otherwise). The check reads indices back to the host, which stalls
        a GPU; callers that know the window covers the queries (the engine's tile plan, a
        whole-image projection) pass False.
        """
        b, q, _ = coord.shape
        big_h, big_w = proj.grid_size
        win_h, win_w = proj.window
        n = len(ensemble_shifts(self.spec.local_ensemble))
        eps = EPS_SHIFT if self.spec.local_ensemble else 0.0
        # Neighbour k's shift in latent steps: (-1, -1), (-1, 1), (1, -1), (1, 1), the order
        # of ensemble_shifts; made on the device (a tensor made from a list would be a
        # blocking host-to-device copy on every call). float64 like the Python scalars of
        # the reference, so each shifted coordinate is rounded exactly as it rounds them.
        k = torch.arange(n, device=coord.device, dtype=torch.float64)
        steps = ((k // 2) * 2 - 1, (k % 2) * 2 - 1) if n > 1 else (k, k)  # (n,) each
        iy, rel_y = _neighbour_axis(coord[..., 0], steps[0], big_h, eps)  # (n, B, Q) each
        ix, rel_x = _neighbour_axis(coord[..., 1], steps[1], big_w, eps)
        local_y, local_x = iy - proj.offset[0], ix - proj.offset[1]
        if check_window and local_y.numel() and not (
                0 <= int(local_y.min()) and int(local_y.max()) < win_h
                and 0 <= int(local_x.min()) and int(local_x.max()) < win_w):
            raise ValueError("query falls outside the projected feature window")
        first_rows = torch.arange(b, device=coord.device).view(1, b, 1) * (win_h * win_w)
        rows = (first_rows + local_y * win_w + local_x).view(-1)  # (n*B*Q,)
        small = [rel_y, rel_x]
        if self.spec.cell_decode:
            if cell is None:
                raise ValueError("this model decodes cells: pass the queries' cells")
            small += [(cell[..., 0] * big_h).expand(n, b, q),
                      (cell[..., 1] * big_w).expand(n, b, q)]
        weights = area_weights(rel_y, rel_x) if n > 1 else None  # (n, B, Q)
        return Neighbours(rows, torch.stack(small, dim=-1).view(n * b * q, -1), weights)



class LIIF(ImplicitImage):
    """Encoder + local implicit image function (the paper's MLP decoder): RGB at any
    coordinate of any image."""

    def __init__(self, spec: ModelSpec):
        super().__init__(spec)
        self.imnet = MLP(self.latent_dim + self.query_dim, 3, list(spec.hidden))

    def macs_per_latent(self) -> int:
        return self.imnet.layers[0].weight.shape[0] * self.latent_dim

    def macs_per_query(self) -> int:
        linears = [m for m in self.imnet.layers if isinstance(m, nn.Linear)]
        per_neighbour = (linears[0].weight.shape[0] * self.query_dim
                         + sum(m.weight.numel() for m in linears[1:]))
        return self.n_neighbours * per_neighbour

    def renderer(self, dtype: torch.dtype = torch.float32) -> Decoder:
        """The engine's decoder for this model, its weights cast to `dtype` once."""
        return Decoder(self, dtype)

    # ---------------------------------------------------------------- fast decoder

    def project_latents(self, feat: Tensor, offset: tuple[int, int] = (0, 0),
                        grid_size: tuple[int, int] | None = None) -> LatentProjection:
        """Apply the first MLP layer's latent weights to every latent of `feat` (B, C, h, w).

        With feature unfolding this is a zero-padded 3x3 convolution; the weight layout of
        F.unfold (channel-major, then kernel row, then kernel column) is exactly a conv kernel.
        """
        first = self.imnet.layers[0]
        b, c, h, w = feat.shape
        kernel = 3 if self.spec.feat_unfold else 1
        weight = first.weight[:, : self.latent_dim].reshape(-1, c, kernel, kernel)
        proj = F.conv2d(feat, weight, first.bias, padding=kernel // 2)  # (B, hidden0, h, w)
        values = proj.flatten(2).transpose(1, 2).contiguous()  # (B, h*w, hidden0)
        return LatentProjection(values, (h, w), offset, grid_size or (h, w))

    def query_rgb(self, proj: LatentProjection, coord: Tensor, cell: Tensor | None,
                  check_window: bool = True) -> Tensor:
        """Fast decoder: (B, Q, 2) global coordinates and cells -> (B, Q, 3) normalised RGB.

        Differentiable (training uses it) and autocast-aware; rendering uses the equivalent
        `Decoder`. check_window: see `neighbours`.
        """
        b, q, _ = coord.shape
        nb = self.neighbours(proj, coord, cell, check_window)
        # First layer for every neighbour at once: precomputed latent part + offset/cell part.
        first = self.imnet.layers[0]
        values = proj.values.reshape(-1, proj.values.shape[-1])  # (B*h*w, hidden0)
        hidden = values.index_select(0, nb.rows)  # (n*B*Q, hidden0)
        small_weight = first.weight[:, self.latent_dim:].T.to(hidden.dtype)  # (2 or 4, hidden0)
        hidden = hidden.addmm_(nb.small.to(hidden.dtype), small_weight)
        hidden = torch.relu_(hidden)
        out = self.imnet.layers[2:](hidden).view(-1, b, q, 3)  # (n, B, Q, 3)
        return _blend(out, nb.weights)

    # ---------------------------------------------------------------- reference decoder

    def query_rgb_reference(self, feat: Tensor, coord: Tensor, cell: Tensor | None) -> Tensor:
        """The paper's decoder written out directly; (B, Q, 2) -> (B, Q, 3). Slow, exact."""
        b, c, h, w = feat.shape
        if self.spec.feat_unfold:
            feat = F.unfold(feat, 3, padding=1).view(b, c * 9, h, w)
        latent_coord = make_coords((h, w), flatten=False).to(feat)
        latent_coord = latent_coord.permute(2, 0, 1).unsqueeze(0).expand(b, 2, h, w)

        eps = EPS_SHIFT if self.spec.local_ensemble else 0.0
        preds, rel_coords = [], []
        for dy, dx in ensemble_shifts(self.spec.local_ensemble):
            shifted = coord.clone()
            shifted[..., 0] += dy / h + eps
            shifted[..., 1] += dx / w + eps
            shifted.clamp_(-1 + 1e-6, 1 - 1e-6)
            grid = shifted.flip(-1).unsqueeze(1)  # grid_sample wants (x, y): (B, 1, Q, 2)
            q_feat = F.grid_sample(feat, grid, mode="nearest", align_corners=False)
            q_coord = F.grid_sample(latent_coord, grid, mode="nearest", align_corners=False)
            q_feat = q_feat[:, :, 0, :].permute(0, 2, 1)  # (B, Q, C*9)
            q_coord = q_coord[:, :, 0, :].permute(0, 2, 1)  # (B, Q, 2)
            rel = (coord - q_coord) * coord.new_tensor([h, w])
            inputs = [q_feat, rel]
            if self.spec.cell_decode:
                inputs.append(cell * cell.new_tensor([h, w]))
            x = torch.cat(inputs, dim=-1)
            preds.append(self.imnet(x.view(b * coord.shape[1], -1)).view(b, coord.shape[1], -1))
            rel_coords.append(rel)
        if len(preds) == 1:
            return preds[0]
        weights = ensemble_weights(rel_coords)
        return sum(p * wt.unsqueeze(-1) for p, wt in zip(preds, weights, strict=True))


def _blend(out: Tensor, weights: Tensor | None) -> Tensor:
    """(n, B, Q, 3) neighbour predictions -> (B, Q, 3): their ensemble-weighted sum, or the
    one prediction without the ensemble."""
    if weights is None:
        return out[0]
    return (out * weights.unsqueeze(-1)).sum(0)


def _centre(index: Tensor, size: int) -> Tensor:
    """Coordinate of latent `index` along an axis of `size` latents (like make_coords)."""
    r = 1.0 / size
    return -1 + r + (2 * r) * index.float()


class Decoder:
    """`LIIF.query_rgb` for rendering: no autograd, and no autocast around every chunk.

    The MLP's weights are cast to the compute dtype once, here (autocast casts them again
    for every chunk). Each hidden layer is one GEMM whose bias and ReLU are applied as it
    writes its output (oneDNN's fused linear on the CPU; elsewhere addmm, then an in-place
    ReLU), instead of a GEMM and two more passes over a (4*Q, 256) tensor. The first layer
    is the gathered latent part plus the offset/cell part, added in place. Same arithmetic
    and dtypes as query_rgb under autocast (bf16) or without it (float32), so the same
    pixels up to float rounding.
    """

    def __init__(self, model: LIIF, dtype: torch.dtype = torch.float32):
        linears = [m for m in model.imnet.layers if isinstance(m, nn.Linear)]
        device = linears[0].weight.device

        def cast(t: Tensor) -> Tensor:
            return t.detach().to(dtype).contiguous()

        self.model, self.dtype = model, dtype
        self.small_weight = cast(linears[0].weight[:, model.latent_dim:].T)  # (2 or 4, hidden0)
        self.layers = [(cast(m.weight), cast(m.bias)) for m in linears[1:]]  # (out, in), (out,)
        self.fused = device.type == "cpu" and _onednn_linear_relu_works(dtype)

    @torch.no_grad()
    def __call__(self, proj: LatentProjection, coord: Tensor, cell: Tensor | None,
                 check_window: bool = False) -> Tensor:
        """(B, Q, 2) global coordinates and cells -> (B, Q, 3) float32 normalised RGB.

        No window check by default: the engine plans windows that cover their queries."""
        b, q, _ = coord.shape
        nb = self.model.neighbours(proj, coord, cell, check_window)
        values = proj.values.reshape(-1, proj.values.shape[-1]).to(self.dtype)  # (B*h*w, hidden0)
        hidden = values.index_select(0, nb.rows)  # (n*B*Q, hidden0)
        hidden.addmm_(nb.small.to(self.dtype), self.small_weight).relu_()
        *deep, (last_weight, last_bias) = self.layers
        for weight, bias in deep:  # (n*B*Q, hidden) -> (n*B*Q, hidden)
            if self.fused:
                hidden = torch.ops.mkldnn._linear_pointwise(hidden, weight, bias, "relu", [], "")
            else:
                hidden = torch.addmm(bias, hidden, weight.T).relu_()
        out = torch.addmm(last_bias, hidden, last_weight.T).float().view(-1, b, q, 3)
        return _blend(out, nb.weights)


@functools.cache
def _onednn_linear_relu_works(dtype: torch.dtype) -> bool:
    """Whether oneDNN's fused linear + bias + ReLU (the op torch.compile uses on the CPU)
    runs here in `dtype`: a private op of torch, so try it once rather than trust it."""
    if dtype == torch.bfloat16 and not cpu_has_fast_bf16():
        return False  # it would emulate bf16; addmm picks the best kernel there
    try:
        x, w = torch.ones(2, 3, dtype=dtype), torch.ones(4, 3, dtype=dtype)
        y = torch.ops.mkldnn._linear_pointwise(x, w, -torch.ones(4, dtype=dtype), "relu", [], "")
        return y.shape == (2, 4) and bool((y == 2).all())
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


def _neighbour_axis(coord: Tensor, steps: Tensor, size: int,
                    eps: float) -> tuple[Tensor, Tensor]:
    """Along one axis of `size` latents, for (B, Q) coordinates and (n,) float64 neighbour
    steps: each neighbour's latent index and the query's offset from it in latent units,
    both (n, B, Q). Rounds like the reference: shift = step / size + eps in float64, then
    one rounding to the coordinates' dtype."""
    shift = (steps / size + eps).to(coord.dtype).view(-1, 1, 1)  # (n, 1, 1)
    index = nearest_latent_index((coord + shift).clamp_(-1 + 1e-6, 1 - 1e-6), size)
    return index, (coord - _centre(index, size)) * size


# --------------------------------------------------------------------------- fast model


class LMF(ImplicitImage):
    """LIIF with a latent-modulated decoder (after He & Jin, "Latent Modulated Function for
    Computational Optimal Continuous Image Representation", CVPR 2024): the fast model.

    The wide part of the decoder runs once per latent instead of once per query. A latent
    MLP (a 3x3 convolution over the feature map, which is feature unfolding followed by a
    linear layer, then 1x1 convolutions of `latent_hidden` widths) turns each latent into
    modulations: the first render layer's latent term, and a scale and shift for each
    deeper one. Per query and ensemble neighbour only a narrow render MLP runs
    (`render_width` wide, `render_depth` layers, then RGB):

        h1 = relu(m0 + W1 q)                      q = (offset, cell), in latent units
        hk = relu((Wk h(k-1)) * (1 + sk) + tk)    k = 2 .. render_depth
        rgb = Wout h + bout

    where (m0, s2, t2, ...) are the modulations of the latent the query reads. Local
    ensemble and cell decoding are as in LIIF.
    """

    def __init__(self, spec: ModelSpec):
        super().__init__(spec)
        width, depth = spec.render_width, spec.render_depth
        self.mod_dim = width * (2 * depth - 1)  # m0, then a scale and a shift per deeper layer
        kernel = 3 if spec.feat_unfold else 1
        widths = [self.encoder.out_dim, *spec.latent_hidden]
        layers: list[nn.Module] = []
        for k, (a, b) in enumerate(zip(widths, widths[1:], strict=False)):
            size = kernel if k == 0 else 1
            layers += [nn.Conv2d(a, b, size, padding=size // 2), nn.ReLU(inplace=True)]
        size = kernel if len(widths) == 1 else 1
        layers.append(nn.Conv2d(widths[-1], self.mod_dim, size, padding=size // 2))
        self.latent_mlp = nn.Sequential(*layers)
        self.query_in = nn.Linear(self.query_dim, width, bias=False)  # W1 (m0 is its bias)
        self.hidden = nn.ModuleList([nn.Linear(width, width, bias=False)
                                     for _ in range(depth - 1)])  # W2 .. W_depth
        self.to_rgb = nn.Linear(width, 3)

    def macs_per_latent(self) -> int:
        return sum(m.weight.numel() for m in self.latent_mlp if isinstance(m, nn.Conv2d))

    def macs_per_query(self) -> int:
        per_neighbour = sum(m.weight.numel() for m in (self.query_in, *self.hidden, self.to_rgb))
        return self.n_neighbours * per_neighbour

    def renderer(self, dtype: torch.dtype = torch.float32) -> GridDecoder:
        """The engine's decoder for this model, its weights cast to `dtype` once."""
        return GridDecoder(self, dtype)

    def project_latents(self, feat: Tensor, offset: tuple[int, int] = (0, 0),
                        grid_size: tuple[int, int] | None = None) -> LatentProjection:
        """The latent MLP over every latent of `feat` (B, C, h, w): its modulations.

        Outside autograd it runs on bands of LATENT_BAND_ROWS rows (plus the first
        convolution's halo), so its wide hidden layers never hold a whole tile."""
        b, _, h, w = feat.shape
        if torch.is_grad_enabled() or h <= LATENT_BAND_ROWS:
            mods = self.latent_mlp(feat)  # (B, mod_dim, h, w)
            values = mods.flatten(2).transpose(1, 2).contiguous()  # (B, h*w, mod_dim)
            return LatentProjection(values, (h, w), offset, grid_size or (h, w))
        halo = self.latent_mlp[0].padding[0]
        values = None
        for top in range(0, h, LATENT_BAND_ROWS):
            stop = min(h, top + LATENT_BAND_ROWS)
            low, high = max(0, top - halo), min(h, stop + halo)
            mods = self.latent_mlp(feat[:, :, low:high])[:, :, top - low:stop - low]
            if values is None:  # the dtype autocast gives
                values = mods.new_empty(b, h * w, self.mod_dim)  # (B, h*w, mod_dim)
            values[:, top * w:stop * w] = mods.flatten(2).transpose(1, 2)
        return LatentProjection(values, (h, w), offset, grid_size or (h, w))

    def query_rgb(self, proj: LatentProjection, coord: Tensor, cell: Tensor | None,
                  check_window: bool = True) -> Tensor:
        """(B, Q, 2) global coordinates and cells -> (B, Q, 3) normalised RGB, for any
        coordinates. Differentiable (training uses it) and autocast-aware; the engine's
        `GridDecoder` computes the same for grids of pixel centres. check_window: see
        `neighbours`."""
        b, q, _ = coord.shape
        width = self.spec.render_width
        nb = self.neighbours(proj, coord, cell, check_window)
        mods = proj.values.reshape(-1, self.mod_dim).index_select(0, nb.rows)  # (n*B*Q, M)
        hidden = torch.relu(mods[:, :width] + self.query_in(nb.small.to(mods.dtype)))
        for k, layer in enumerate(self.hidden):
            scale, shift = mods[:, width * (2 * k + 1):width * (2 * k + 3)].chunk(2, dim=1)
            hidden = torch.relu(layer(hidden) * (1 + scale) + shift)
        out = self.to_rgb(hidden).view(-1, b, q, 3)  # (n, B, Q, 3)
        return _blend(out, nb.weights)

    def query_rgb_reference(self, feat: Tensor, coord: Tensor, cell: Tensor | None) -> Tensor:
        """The straightforward decoder, the yardstick of `liif bench --speed`: the latent MLP
        over the whole feature map, then query_rgb; (B, Q, 2) -> (B, Q, 3)."""
        return self.query_rgb(self.project_latents(feat), coord, cell)

    def init_from_liif(self, liif: LIIF) -> None:
        """Start from a trained LIIF: its encoder, and its first layer's latent part as the
        latent MLP's first convolution (the same 3x3 projection of the unfolded latent), where
        the widths allow."""
        self.encoder.load_state_dict(liif.encoder.state_dict())
        first, conv = liif.imnet.layers[0], self.latent_mlp[0]
        if self.spec.latent_hidden and conv.out_channels == first.out_features \
                and self.spec.feat_unfold == liif.spec.feat_unfold:
            with torch.no_grad():
                conv.weight.copy_(first.weight[:, :liif.latent_dim].reshape(conv.weight.shape))
                conv.bias.copy_(first.bias)


@dataclass
class AxisLayout:
    """How a grid's queries along one axis group by the latent they read, for each
    ensemble step along the axis (2 with the local ensemble, else 1).

    Queries reading the same latent with the same step form a run of consecutive pixels (a
    block); each block is padded to `block` slots. Slot `slot[v, i]` of step v holds query
    i, at offset `rel[v, i]` from its latent; `latent[v, j]` is block j's latent (index in
    the window); `slot_rel[v, j * block + p]` the offset of the query in slot p of block j
    (0 for padding).
    """

    block: int
    latent: Tensor  # (n_steps, n_blocks) long
    slot: Tensor  # (n_steps, n_queries) long
    rel: Tensor  # (n_steps, n_queries)
    slot_rel: Tensor  # (n_steps, n_blocks * block)


def axis_layout(coord: Tensor, size: int, offset: int, local_ensemble: bool) -> AxisLayout:
    """The AxisLayout of (n,) sorted global coordinates along an axis of `size` latents whose
    window starts at latent `offset`. Indices and offsets are computed exactly as
    `ImplicitImage.neighbours` computes them; blocks split wherever the latent changes or a
    coordinate reaches the square's edge, so a block is never longer than about the scale."""
    n_steps = 2 if local_ensemble else 1
    steps = torch.tensor([-1.0, 1.0] if local_ensemble else [0.0], dtype=torch.float64)
    eps = EPS_SHIFT if local_ensemble else 0.0
    index, rel = _neighbour_axis(coord.view(1, -1), steps, size, eps)  # (n_steps, 1, n)
    index, rel = index[:, 0], rel[:, 0]
    shift = (steps / size + eps).to(coord.dtype).view(-1, 1)
    edge = ((coord + shift) <= -1 + 1e-6).long() - ((coord + shift) >= 1 - 1e-6).long()
    starts = torch.ones_like(index, dtype=torch.bool)
    starts[:, 1:] = (index[:, 1:] != index[:, :-1]) | (edge[:, 1:] != edge[:, :-1])
    block_of = starts.long().cumsum(1) - 1  # (n_steps, n): the block of each query
    n_blocks = int(block_of[:, -1].max()) + 1
    first = torch.zeros(n_steps, n_blocks, dtype=torch.long)  # first query of each block
    latent = torch.zeros(n_steps, n_blocks, dtype=torch.long)
    position = torch.arange(coord.shape[0]).expand(n_steps, -1)
    for v in range(n_steps):
        first[v, :int(block_of[v, -1]) + 1] = position[v][starts[v]]
        latent[v, :int(block_of[v, -1]) + 1] = index[v][starts[v]] - offset
    within = position - first.gather(1, block_of)  # (n_steps, n)
    block = int(within.max()) + 1
    slot = block_of * block + within
    slot_rel = torch.zeros(n_steps, n_blocks * block, dtype=rel.dtype)
    slot_rel.scatter_(1, slot, rel)
    return AxisLayout(block, latent, slot, rel, slot_rel)


class GridDecoder:
    """`LMF.query_rgb` for the engine: a (rows x columns) grid of pixel centres at once,
    without autograd.

    A grid's queries that read the same latent form a rectangle of about scale x scale
    pixels, and their offsets split into a row part and a column part. So instead of
    gathering every query's modulations (2 * render_depth * width values each), each
    ensemble neighbour's queries are laid out block by block, (rows of blocks, columns of
    blocks, rows in a block, columns in a block, width), and each block's modulations are
    read once and broadcast over its slots. The first layer is the latent's term plus a row term
    plus a column term; each deeper layer one matrix product over all slots and an in-place
    scale, shift and ReLU. Same arithmetic as query_rgb up to float rounding (the sums of
    the first layer are taken in another order); weights cast to `dtype` once.
    """

    def __init__(self, model: LMF, dtype: torch.dtype = torch.float32):
        def cast(t: Tensor) -> Tensor:
            return t.detach().to(dtype).contiguous()

        self.model, self.dtype = model, dtype
        spec = model.spec
        self.width = spec.render_width
        self.query_weight = cast(model.query_in.weight.T)  # (2 or 4, width)
        self.hidden = [cast(m.weight.T) for m in model.hidden]  # (width, width) each
        # The RGB layer padded with zero outputs to `width` columns: a (N, 16) by (16, 16)
        # product ran 2.5x faster than by (16, 3) (oneDNN, 2-core AMD EPYC). Only the
        # first 3 columns are read.
        to_rgb = model.to_rgb
        rgb_weight = to_rgb.weight.new_zeros(self.width, max(self.width, 3))  # (width, >= 3)
        rgb_weight[:, :3] = to_rgb.weight.detach().T
        rgb_bias = to_rgb.bias.new_zeros(max(self.width, 3))
        rgb_bias[:3] = to_rgb.bias.detach()
        self.rgb_weight, self.rgb_bias = cast(rgb_weight), cast(rgb_bias)

    @torch.no_grad()
    def __call__(self, proj: LatentProjection, rows: Tensor, cols: Tensor,
                 cell: Tensor | None) -> Tensor:
        """(R,) row and (C,) column coordinates (sorted, global, on the CPU) and the (2,)
        cell -> (R, C, 3) float32 normalised RGB on the projection's device. The window must
        cover the queries (the engine's tile plan sees to it)."""
        spec = self.model.spec
        device = proj.values.device
        (big_h, big_w), (_, win_w) = proj.grid_size, proj.window
        ly = axis_layout(rows, big_h, proj.offset[0], spec.local_ensemble)
        lx = axis_layout(cols, big_w, proj.offset[1], spec.local_ensemble)
        ly_latent, ly_slot, ly_rel, ly_slot_rel = _on(device, ly.latent, ly.slot, ly.rel,
                                                      ly.slot_rel)
        lx_latent, lx_slot, lx_rel, lx_slot_rel = _on(device, lx.latent, lx.slot, lx.rel,
                                                      lx.slot_rel)
        # The first layer's query terms per slot: the row offset (and the cell) along rows,
        # the column offset along columns.
        w_query = self.query_weight
        row_term = ly_slot_rel.to(self.dtype)[..., None] * w_query[0]  # (ny, Sy, W)
        col_term = lx_slot_rel.to(self.dtype)[..., None] * w_query[1]  # (nx, Sx, W)
        if spec.cell_decode:
            if cell is None:
                raise ValueError("this model decodes cells: pass the queries' cell")
            cell_units = torch.stack([cell[0] * big_h, cell[1] * big_w]).float()  # (2,)
            row_term = row_term + (cell_units.to(self.dtype) @ w_query[2:4])
        # Local-ensemble weights, (n, R, C): the area opposite each neighbour, normalised.
        steps = [(vy, vx) for vy in range(ly.slot.shape[0]) for vx in range(lx.slot.shape[0])]
        values = proj.values[0].to(self.dtype)  # (h*w, M)
        rgb = None
        if len(steps) > 1:
            areas = torch.stack([(ly_rel[vy][:, None] * lx_rel[vx][None, :]).abs() + AREA_EPS
                                 for vy, vx in steps])  # (n, R, C)
            weights = areas.flip(0) / areas.sum(0)
        for k, (vy, vx) in enumerate(steps):
            out = self._neighbour(values, ly_latent[vy], lx_latent[vx], win_w, ly.block,
                                  lx.block, row_term[vy], col_term[vx])  # (slots, 3)
            # Query (r, c) sits in block (slot_y // By, slot_x // Bx), at (slot_y % By,
            # slot_x % Bx) inside it: a row part plus a column part of its flat index.
            sy, sx = ly_slot[vy], lx_slot[vx]
            n_x, block = lx_latent.shape[1], ly.block * lx.block
            row_part = (sy // ly.block) * (n_x * block) + (sy % ly.block) * lx.block  # (R,)
            col_part = (sx // lx.block) * block + sx % lx.block  # (C,)
            index = (row_part[:, None] + col_part[None, :]).view(-1)
            out = out.index_select(0, index).view(len(sy), len(sx), 3)  # (R, C, 3)
            if len(steps) == 1:
                return out.float()
            if rgb is None:
                rgb = out.float().mul_(weights[k, ..., None])
            else:
                rgb.addcmul_(out.float(), weights[k, ..., None])
        return rgb

    def _neighbour(self, values: Tensor, lat_y: Tensor, lat_x: Tensor, win_w: int,
                   block_y: int, block_x: int, row_term: Tensor, col_term: Tensor) -> Tensor:
        """One ensemble neighbour's RGB at every slot, block by block: (ny * nx * block_y *
        block_x, 3), the slots of block (i, j) at rows (i * nx + j) * block_y * block_x
        onwards. Blocks outermost, so that a latent's scale and shift broadcast over one
        run of slots (2.5x faster than over a (rows, columns) layout, oneDNN CPU)."""
        width = self.width
        ny, nx = lat_y.shape[0], lat_x.shape[0]
        mods = values.index_select(0, (lat_y[:, None] * win_w + lat_x[None, :]).view(-1))
        mods = mods.view(ny * nx, 1, -1)  # one row of modulations per block
        # The first layer: the latent's and the row's terms (a small tensor), plus the column
        # terms of one row of blocks, made contiguous once (a broadcast over both in one
        # pass ran half as fast).
        latent_row = (mods[..., :width].view(ny, nx, 1, 1, width)
                      + row_term.view(ny, 1, block_y, 1, width))  # (ny, nx, By, 1, W)
        cols = col_term.view(nx, 1, block_x, width).expand(nx, block_y, block_x, width)
        hidden = torch.add(latent_row, cols.contiguous()).relu_()  # (ny, nx, By, Bx, W)
        hidden = hidden.view(ny * nx, block_y * block_x, width)
        product = torch.empty_like(hidden)
        for k, weight in enumerate(self.hidden):
            scale = mods[..., width * (2 * k + 1):width * (2 * k + 2)] + 1  # (ny * nx, 1, W)
            shift = mods[..., width * (2 * k + 2):width * (2 * k + 3)]
            torch.mm(hidden.view(-1, width), weight, out=product.view(-1, width))
            torch.addcmul(shift, product, scale, out=hidden).relu_()  # one pass, not three
        out = torch.addmm(self.rgb_bias, hidden.view(-1, width), self.rgb_weight)
        return out[:, :3]


def _on(device: torch.device, *tensors: Tensor) -> list[Tensor]:
    """CPU tensors copied to `device`; to a GPU through pinned memory without waiting, so
    that a render's chunk loop never stalls on a host synchronisation."""
    if device.type != "cuda":
        return [t.to(device) for t in tensors]
    return [t.pin_memory().to(device, non_blocking=True) for t in tensors]


FAMILIES: dict[str, type[ImplicitImage]] = {"liif": LIIF, "lmf": LMF}


def build_model(spec: ModelSpec | dict[str, Any]) -> ImplicitImage:
    """A randomly initialised model of the spec's family (LIIF or LMF), from a spec or its
    dict form."""
    if isinstance(spec, dict):
        spec = ModelSpec(**spec)
    if spec.decoder not in FAMILIES:
        raise ValueError(f"unknown decoder {spec.decoder!r}; choose from {sorted(FAMILIES)}")
    return FAMILIES[spec.decoder](spec)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
