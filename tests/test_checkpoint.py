"""Tests for liif_cli.checkpoint: the project format, atomic saving, clean errors for bad files,
named weights, and loading checkpoints written by the paper's code (github.com/yinboc/liif).

The official-format tests build the state dict key by key from random tensors and compare
against an independent functional re-implementation of the official forward pass, so both
the key naming and the maths are checked without going through liif_cli.model."""

from __future__ import annotations

import hashlib
import math
import pathlib
import pickle
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F

from liif_cli import bundled, checkpoint, engine
from liif_cli.errors import LiifError
from liif_cli.model import ModelSpec, build_model

pytestmark = pytest.mark.usefixtures("one_thread")


TINY = ModelSpec(encoder_args=dict(n_resblocks=1, n_feats=8), hidden=[16, 16])


def tiny_model(seed: int = 0, spec: ModelSpec = TINY):
    torch.manual_seed(seed)
    return build_model(spec).eval()


def rand_image(h: int = 5, w: int = 6, seed: int = 1) -> torch.Tensor:
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- project format


def test_project_format_round_trip(tmp_path):
    model = tiny_model()
    meta = {"trained_on": "DIV2K", "psnr": 34.5, "steps": 1000, "tags": ["a", "b"]}
    path = tmp_path / "m.pth"
    checkpoint.save(checkpoint.to_dict(model, meta, train_state={"step": 7}), path)

    raw = torch.load(path, map_location="cpu", weights_only=True)  # plain data only
    assert raw["format"] == "liif" and raw["format_version"] == checkpoint.FORMAT_VERSION
    assert raw["spec"] == TINY.to_dict()
    assert raw["metadata"] == meta

    ckpt = checkpoint.load(path)
    assert ckpt.source_format == "liif"
    assert ckpt.spec == TINY
    assert ckpt.metadata == meta
    assert ckpt.extra == {"train_state": {"step": 7}}
    loaded = ckpt.build()
    assert not loaded.training
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    img = rand_image()
    assert torch.equal(engine.render(loaded, img, (12, 13)), engine.render(model, img, (12, 13)))


def test_round_trip_other_specs(tmp_path):
    spec = ModelSpec(encoder="rdn", encoder_args=dict(G0=4, RDNconfig="A"), hidden=[8],
                     feat_unfold=False, local_ensemble=False, cell_decode=False)
    model = tiny_model(3, spec)
    checkpoint.save(checkpoint.to_dict(model), tmp_path / "r.pth")
    ckpt = checkpoint.load(tmp_path / "r.pth")
    assert ckpt.spec == spec and ckpt.metadata == {}
    img = rand_image(4, 3)
    assert torch.equal(engine.render(ckpt.build(), img, (7, 5)), engine.render(model, img, (7, 5)))


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "sub" / "dir" / "m.pth"  # folders are created
    checkpoint.save(checkpoint.to_dict(tiny_model()), path)
    assert [p.name for p in path.parent.iterdir()] == ["m.pth"]
    # overwriting works and still leaves exactly one file
    checkpoint.save(checkpoint.to_dict(tiny_model(1)), path)
    assert [p.name for p in path.parent.iterdir()] == ["m.pth"]
    assert torch.equal(checkpoint.load(path).state_dict["imnet.layers.0.bias"],
                       tiny_model(1).state_dict()["imnet.layers.0.bias"])


def test_failing_save_keeps_previous_file(tmp_path):
    path = tmp_path / "m.pth"
    checkpoint.save(checkpoint.to_dict(tiny_model()), path)
    before = path.read_bytes()
    bad = checkpoint.to_dict(tiny_model(1))
    bad["metadata"]["callback"] = lambda: None  # not picklable: fails half-way through
    with pytest.raises(Exception):  # noqa: B017 - whatever pickle raises
        checkpoint.save(bad, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.pth"]
    checkpoint.load(path)  # still a good checkpoint


def test_failing_save_of_new_file_leaves_nothing(tmp_path, monkeypatch):
    def boom(obj, f):
        f.write(b"partial data")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save({"format": "liif"}, tmp_path / "new.pth")
    assert list(tmp_path.iterdir()) == []



def test_save_without_overwrite_never_replaces_a_file(tmp_path):
    path = tmp_path / "m.pth"
    checkpoint.save(checkpoint.to_dict(tiny_model()), path)
    before = path.read_bytes()
    with pytest.raises(LiifError, match="already exists"):
        checkpoint.save(checkpoint.to_dict(tiny_model(1)), path, overwrite=False)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.pth"]  # no temp file left
    checkpoint.save(checkpoint.to_dict(tiny_model(1)), tmp_path / "new.pth", overwrite=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pth", "new.pth"]


# --------------------------------------------------------------------------- bad files


def good_dict() -> dict:
    return checkpoint.to_dict(tiny_model())


class Payload:
    """Unpickling this runs code (touches a file): weights_only loading must refuse it."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def test_arbitrary_pickled_object_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model": Payload(marker), "format": "liif"}, path)
    # guard: the payload is live (a full unpickle would run it)
    torch.load(path, weights_only=False)
    assert marker.exists()
    marker.unlink()

    with pytest.raises(LiifError, match="not a LIIF checkpoint"):
        checkpoint.load(path)
    assert not marker.exists()

    plain = tmp_path / "evil.pkl"  # a bare pickle, not even a torch zip file
    plain.write_bytes(pickle.dumps(Payload(marker), protocol=2))
    with pytest.raises(LiifError):
        checkpoint.load(plain)
    assert not marker.exists()


@pytest.mark.parametrize("content", [
    bytes(range(256)) * 7,
    b"",
    b"this is a text file\nnot weights\n",
    b"PK\x03\x04 truncated zip",
])
def test_non_checkpoint_files_are_liif_errors(tmp_path, content):
    path = tmp_path / "x.pth"
    path.write_bytes(content)
    with pytest.raises(LiifError, match="x.pth"):
        checkpoint.load(path)


@pytest.mark.parametrize("obj", [
    {"weights": {"a": torch.zeros(1)}},
    {"format": "other", "state_dict": {}},
    {"model": {"name": "liif"}},  # official-looking but no 'sd'
    [torch.zeros(3)],
    torch.zeros(3),
    {"model": "liif", "sd": {}},
])
def test_torch_files_without_a_checkpoint_are_liif_errors(tmp_path, obj):
    path = tmp_path / "c.pth"
    torch.save(obj, path)
    with pytest.raises(LiifError):
        checkpoint.load(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(LiifError, match="not found"):
        checkpoint.load(tmp_path / "nope.pth")
    with pytest.raises(LiifError):
        checkpoint.load(tmp_path)


def test_wrong_shape_is_a_liif_error(tmp_path):
    raw = good_dict()
    raw["state_dict"]["imnet.layers.2.weight"] = torch.zeros(16, 15)
    torch.save(raw, tmp_path / "c.pth")
    with pytest.raises(LiifError, match=r"imnet\.layers\.2\.weight.*\(16, 15\).*\(16, 16\)"):
        checkpoint.load(tmp_path / "c.pth")


def test_missing_and_unexpected_keys_are_liif_errors(tmp_path):
    raw = good_dict()
    del raw["state_dict"]["encoder.head.0.bias"]
    torch.save(raw, tmp_path / "missing.pth")
    with pytest.raises(LiifError, match="encoder.head.0.bias"):
        checkpoint.load(tmp_path / "missing.pth")
    raw = good_dict()
    raw["state_dict"]["encoder.extra.weight"] = torch.zeros(1)
    torch.save(raw, tmp_path / "extra.pth")
    with pytest.raises(LiifError, match="encoder.extra.weight"):
        checkpoint.load(tmp_path / "extra.pth")


def test_spec_not_matching_weights_is_a_liif_error(tmp_path):
    raw = good_dict()
    raw["spec"]["hidden"] = [16, 16, 16]
    torch.save(raw, tmp_path / "c.pth")
    with pytest.raises(LiifError):
        checkpoint.load(tmp_path / "c.pth")
    raw = good_dict()
    raw["spec"]["encoder"] = "vgg"
    torch.save(raw, tmp_path / "c.pth")
    with pytest.raises(LiifError, match="spec"):
        checkpoint.load(tmp_path / "c.pth")


def test_odd_specs_and_keys_are_liif_errors_not_tracebacks(tmp_path):
    """An encoder named by a list, an RDN config by a list, state-dict keys of mixed types,
    and a LIIF MLP with no hidden layer (it builds, then failed at the first render)."""
    damages = {
        "encoder_list": lambda raw: raw["spec"].update(encoder=["edsr-baseline"]),
        "rdn_config_list": lambda raw: raw["spec"].update(
            encoder="rdn", encoder_args={"RDNconfig": ["B"]}),
        "int_key": lambda raw: raw["state_dict"].update({1: torch.zeros(1)}),
    }
    for name, damage in damages.items():
        raw = good_dict()
        damage(raw)
        torch.save(raw, tmp_path / f"{name}.pth")
        with pytest.raises(LiifError, match="spec|do not fit") as excinfo:
            checkpoint.load(tmp_path / f"{name}.pth")
        assert "\n" not in str(excinfo.value), name
    # Built and saved as it is, so its weights fit its spec: the spec alone is refused.
    no_hidden = checkpoint.to_dict(tiny_model(spec=ModelSpec(
        encoder_args=dict(n_resblocks=1, n_feats=8), hidden=[])))
    torch.save(no_hidden, tmp_path / "no_hidden.pth")
    with pytest.raises(LiifError, match="at least one hidden layer"):
        checkpoint.load(tmp_path / "no_hidden.pth")


@pytest.mark.parametrize("damage", ["no_spec", "spec_extra_field", "no_state_dict",
                                    "spec_not_dict", "bad_encoder_args", "metadata_list",
                                    "metadata_text", "version_text"])
def test_malformed_project_dicts_are_liif_errors(tmp_path, damage):
    raw = good_dict()
    if damage == "metadata_list":
        raw["metadata"] = [("steps", 3)]
    elif damage == "metadata_text":
        raw["metadata"] = "steps=3"
    elif damage == "version_text":
        raw["format_version"] = "2"
    elif damage == "no_spec":
        del raw["spec"]
    elif damage == "spec_extra_field":
        raw["spec"]["colour"] = "blue"
    elif damage == "no_state_dict":
        del raw["state_dict"]
    elif damage == "spec_not_dict":
        raw["spec"] = [1, 2]
    else:
        raw["spec"]["encoder_args"] = {"n_layers": 3}
    torch.save(raw, tmp_path / "c.pth")
    with pytest.raises(LiifError, match="malformed|spec"):
        checkpoint.load(tmp_path / "c.pth")


def test_newer_format_version_is_refused(tmp_path):
    raw = good_dict()
    raw["format_version"] = checkpoint.FORMAT_VERSION + 1
    torch.save(raw, tmp_path / "c.pth")
    with pytest.raises(LiifError, match="newer"):
        checkpoint.load(tmp_path / "c.pth")


# --------------------------------------------------------------------------- named weights


def test_resolve_weights_names_and_paths(tmp_path, monkeypatch):
    bundle = tmp_path / "weights"
    bundle.mkdir()
    for name in ("liif-edsr-baseline", "liif-rdn"):
        checkpoint.save(good_dict(), bundle / f"{name}.pth")
    (bundle / "notes.txt").write_text("not weights")
    monkeypatch.setattr(bundled, "WEIGHTS_DIR", bundle)

    assert set(bundled.available_weights()) == {"liif-edsr-baseline", "liif-rdn"}
    assert bundled.resolve_weights("liif-rdn") == bundle / "liif-rdn.pth"
    assert bundled.resolve_weights(None) == bundle / f"{bundled.DEFAULT}.pth"
    with pytest.raises(LiifError) as err:
        bundled.resolve_weights("liif-swin")
    assert "liif-swin" in str(err.value)
    assert "liif-edsr-baseline" in str(err.value) and "liif-rdn" in str(err.value)

    other = tmp_path / "elsewhere" / "mine.pth"
    checkpoint.save(good_dict(), other)
    assert bundled.resolve_weights(str(other)) == other
    assert bundled.resolve_weights(other) == other
    checkpoint.load(bundled.resolve_weights(other)).build()
    with pytest.raises(LiifError):
        bundled.resolve_weights(tmp_path / "elsewhere")  # a folder is not a file


def test_short_names_of_bundled_models(tmp_path, monkeypatch):
    bundle = tmp_path / "weights"
    bundle.mkdir()
    for name in ("liif-edsr-baseline", "liif-edsr-baseline-real", "a-mine"):
        checkpoint.save(good_dict(), bundle / f"{name}.pth")
    monkeypatch.setattr(bundled, "WEIGHTS_DIR", bundle)
    # The registered models come first, in the registry's order; then the others by name.
    assert list(bundled.available_weights()) == ["liif-edsr-baseline",
                                                    "liif-edsr-baseline-real", "a-mine"]

    assert bundled.resolve_weights("real") == bundle / "liif-edsr-baseline-real.pth"
    assert bundled.resolve_weights("default") == bundle / "liif-edsr-baseline.pth"
    assert bundled.resolve_weights("liif-edsr-baseline-real") == \
        bundle / "liif-edsr-baseline-real.pth"
    with pytest.raises(LiifError) as err:
        bundled.resolve_weights("sharp")
    assert "real (liif-edsr-baseline-real)" in str(err.value)
    # A file in the working folder named like a short name does not shadow the bundle.
    monkeypatch.chdir(tmp_path)
    checkpoint.save(good_dict(), tmp_path / "real")
    assert bundled.resolve_weights("real") == bundle / "liif-edsr-baseline-real.pth"


def test_resolve_weights_without_bundle(tmp_path, monkeypatch):
    monkeypatch.setattr(bundled, "WEIGHTS_DIR", tmp_path / "absent")
    assert bundled.available_weights() == {}
    with pytest.raises(LiifError, match="none"):
        bundled.resolve_weights("liif-edsr-baseline")


def test_file_sha256(tmp_path):
    path = tmp_path / "f.bin"
    data = bytes(range(256)) * 9000  # more than one read block
    path.write_bytes(data)
    assert checkpoint.file_sha256(path) == hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- official format
#
# Everything below is written from the official repository's definitions (models/edsr.py,
# models/rdn.py, models/mlp.py, models/liif.py, utils.make_coord, demo.py), not from liif_cli.


def _uniform(gen, shape, bound):
    return (torch.rand(*shape, generator=gen) * 2 - 1) * bound


def _conv(sd, gen, name, cin, cout, k):
    bound = 1 / math.sqrt(cin * k * k)
    sd[f"{name}.weight"] = _uniform(gen, (cout, cin, k, k), bound)
    sd[f"{name}.bias"] = _uniform(gen, (cout,), bound)


def _linear(sd, gen, name, cin, cout):
    bound = 1 / math.sqrt(cin)
    sd[f"{name}.weight"] = _uniform(gen, (cout, cin), bound)
    sd[f"{name}.bias"] = _uniform(gen, (cout,), bound)


def official_edsr_sd(gen, n_resblocks, n_feats):
    sd = OrderedDict()
    mean = torch.tensor([0.4488, 0.4371, 0.4040])
    for name, sign in (("sub_mean", -1), ("add_mean", 1)):  # MeanShift 1x1 convs
        sd[f"encoder.{name}.weight"] = torch.eye(3).view(3, 3, 1, 1)
        sd[f"encoder.{name}.bias"] = sign * mean
    _conv(sd, gen, "encoder.head.0", 3, n_feats, 3)
    for i in range(n_resblocks):
        _conv(sd, gen, f"encoder.body.{i}.body.0", n_feats, n_feats, 3)
        _conv(sd, gen, f"encoder.body.{i}.body.2", n_feats, n_feats, 3)
    _conv(sd, gen, f"encoder.body.{n_resblocks}", n_feats, n_feats, 3)
    return sd


RDN_TABLE = {"A": (20, 6, 32), "B": (16, 8, 64)}


def official_rdn_sd(gen, G0, k, config):
    D, C, G = RDN_TABLE[config]
    sd = OrderedDict()
    _conv(sd, gen, "encoder.SFENet1", 3, G0, k)
    _conv(sd, gen, "encoder.SFENet2", G0, G0, k)
    for i in range(D):
        for c in range(C):
            _conv(sd, gen, f"encoder.RDBs.{i}.convs.{c}.conv.0", G0 + c * G, G, 3)  # always 3x3
        _conv(sd, gen, f"encoder.RDBs.{i}.LFF", G0 + C * G, G0, 1)
    _conv(sd, gen, "encoder.GFF.0", D * G0, G0, 1)
    _conv(sd, gen, "encoder.GFF.1", G0, G0, k)
    return sd


def add_official_mlp(sd, gen, in_dim, hidden):
    dims = [in_dim, *hidden, 3]
    for j in range(len(dims) - 1):
        _linear(sd, gen, f"imnet.layers.{2 * j}", dims[j], dims[j + 1])


def conv(sd, x, name):
    w = sd[f"{name}.weight"]
    return F.conv2d(x, w, sd[f"{name}.bias"], padding=(w.shape[-1] - 1) // 2)


def official_edsr_forward(sd, x, n_resblocks, res_scale):
    x = conv(sd, x, "encoder.head.0")  # sub_mean is commented out in the official forward
    res = x
    for i in range(n_resblocks):
        body = conv(sd, F.relu(conv(sd, res, f"encoder.body.{i}.body.0")),
                    f"encoder.body.{i}.body.2")
        res = body * res_scale + res
    res = conv(sd, res, f"encoder.body.{n_resblocks}")
    return res + x


def official_rdn_forward(sd, x, config):
    D, C, _ = RDN_TABLE[config]
    f1 = conv(sd, x, "encoder.SFENet1")
    x = conv(sd, f1, "encoder.SFENet2")
    outs = []
    for i in range(D):
        cur = x
        for c in range(C):
            cur = torch.cat((cur, F.relu(conv(sd, cur, f"encoder.RDBs.{i}.convs.{c}.conv.0"))), 1)
        x = conv(sd, cur, f"encoder.RDBs.{i}.LFF") + x
        outs.append(x)
    return conv(sd, conv(sd, torch.cat(outs, 1), "encoder.GFF.0"), "encoder.GFF.1") + f1


def official_mlp(sd, x):
    n = len([k for k in sd if k.startswith("imnet.layers.") and k.endswith(".weight")])
    for j in range(n):
        x = F.linear(x, sd[f"imnet.layers.{2 * j}.weight"], sd[f"imnet.layers.{2 * j}.bias"])
        if j < n - 1:
            x = F.relu(x)
    return x


def official_make_coord(shape):
    seqs = []
    for n in shape:
        r = (1 - (-1)) / (2 * n)
        seqs.append(-1 + r + (2 * r) * torch.arange(n).float())
    return torch.stack(torch.meshgrid(*seqs, indexing="ij"), dim=-1)


def official_query_rgb(sd, feat, coord, cell, feat_unfold, local_ensemble, cell_decode):
    b, c, h, w = feat.shape
    if feat_unfold:
        feat = F.unfold(feat, 3, padding=1).view(b, c * 9, h, w)
    if local_ensemble:
        vxs, vys, eps = [-1, 1], [-1, 1], 1e-6
    else:
        vxs, vys, eps = [0], [0], 0
    rx, ry = 2 / h / 2, 2 / w / 2
    feat_coord = official_make_coord((h, w)).permute(2, 0, 1).unsqueeze(0).expand(b, 2, h, w)
    preds, areas = [], []
    for vx in vxs:
        for vy in vys:
            c_ = coord.clone()
            c_[:, :, 0] += vx * rx + eps
            c_[:, :, 1] += vy * ry + eps
            c_.clamp_(-1 + 1e-6, 1 - 1e-6)
            grid = c_.flip(-1).unsqueeze(1)
            q_feat = F.grid_sample(feat, grid, mode="nearest", align_corners=False)
            q_feat = q_feat[:, :, 0, :].permute(0, 2, 1)
            q_coord = F.grid_sample(feat_coord, grid, mode="nearest", align_corners=False)
            q_coord = q_coord[:, :, 0, :].permute(0, 2, 1)
            rel = coord - q_coord
            rel[:, :, 0] *= h
            rel[:, :, 1] *= w
            parts = [q_feat, rel]
            if cell_decode:
                rel_cell = cell.clone()
                rel_cell[:, :, 0] *= h
                rel_cell[:, :, 1] *= w
                parts.append(rel_cell)
            inp = torch.cat(parts, dim=-1)
            preds.append(official_mlp(sd, inp.view(-1, inp.shape[-1])).view(b, -1, 3))
            areas.append(torch.abs(rel[:, :, 0] * rel[:, :, 1]) + 1e-9)
    total = torch.stack(areas).sum(0)
    if local_ensemble:
        areas[0], areas[3] = areas[3], areas[0]
        areas[1], areas[2] = areas[2], areas[1]
    return sum(p * (a / total).unsqueeze(-1) for p, a in zip(preds, areas, strict=True))


def official_upscale(sd, encoder_forward, img, size, flags):
    """demo.py: normalise, encode, query every output pixel centre, denormalise, clamp."""
    with torch.no_grad():
        feat = encoder_forward(sd, ((img - 0.5) / 0.5).unsqueeze(0))
        h, w = size
        coord = official_make_coord((h, w)).view(-1, 2)
        cell = torch.ones_like(coord)
        cell[:, 0] *= 2 / h
        cell[:, 1] *= 2 / w
        pred = official_query_rgb(sd, feat, coord.unsqueeze(0), cell.unsqueeze(0), **flags)[0]
    return (pred * 0.5 + 0.5).clamp(0, 1).view(h, w, 3).permute(2, 0, 1)


def official_checkpoint(model_args, sd, epoch=10):
    """The dict train_liif.py saves: config['model'] plus 'sd', the optimizer spec, epoch."""
    first = next(iter(sd.values()))
    optimizer_sd = {
        "state": {0: {"step": torch.tensor(1234.0), "exp_avg": torch.zeros_like(first),
                      "exp_avg_sq": torch.zeros_like(first)}},
        "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0,
                          "amsgrad": False, "maximize": False, "foreach": None,
                          "capturable": False, "differentiable": False, "fused": None,
                          "params": list(range(len(sd)))}],
    }
    return {"model": {"name": "liif", "args": model_args, "sd": sd},
            "optimizer": {"name": "adam", "args": {"lr": 1e-4}, "sd": optimizer_sd},
            "epoch": epoch}


def edsr_case(gen, flags, name="edsr-baseline", n_resblocks=2, n_feats=8, hidden=(16, 16)):
    sd = official_edsr_sd(gen, n_resblocks, n_feats)
    in_dim = n_feats * (9 if flags["feat_unfold"] else 1) + 2 + (2 if flags["cell_decode"] else 0)
    add_official_mlp(sd, gen, in_dim, list(hidden))
    res_scale = 0.1 if name == "edsr" else 1.0  # the official factories' defaults
    args = {"encoder_spec": {"name": name, "args": {"no_upsampling": True,
                                                    "n_resblocks": n_resblocks,
                                                    "n_feats": n_feats}},
            "imnet_spec": {"name": "mlp", "args": {"out_dim": 3, "hidden_list": list(hidden)}}}
    return sd, args, lambda s, x: official_edsr_forward(s, x, n_resblocks, res_scale)


def rdn_case(gen, flags, G0=4, k=3, config="A", hidden=(16,)):
    sd = official_rdn_sd(gen, G0, k, config)
    in_dim = G0 * (9 if flags["feat_unfold"] else 1) + 2 + (2 if flags["cell_decode"] else 0)
    add_official_mlp(sd, gen, in_dim, list(hidden))
    args = {"encoder_spec": {"name": "rdn", "args": {"G0": G0, "RDNkSize": k, "RDNconfig": config,
                                                     "no_upsampling": True}},
            "imnet_spec": {"name": "mlp", "args": {"out_dim": 3, "hidden_list": list(hidden)}}}
    return sd, args, lambda s, x: official_rdn_forward(s, x, config)


ALL_ON = dict(feat_unfold=True, local_ensemble=True, cell_decode=True)
ABLATIONS = [
    {},
    {"cell_decode": False},
    {"local_ensemble": False},
    {"feat_unfold": False},
    {"feat_unfold": False, "local_ensemble": False, "cell_decode": False},
]


def check_official(tmp_path, case, ablation, seed, in_hw=(6, 5), scales=(2.5, 1.0, 3.4),
                   **case_args):
    gen = torch.Generator().manual_seed(seed)
    flags = {**ALL_ON, **ablation}
    sd, args, encoder_forward = case(gen, flags, **case_args)
    args = {**args, **ablation}  # the ablation configs put these flags into model args
    path = tmp_path / "official.pth"
    torch.save(official_checkpoint(args, sd), path)

    ckpt = checkpoint.load(path)
    assert ckpt.source_format == "official"
    assert ckpt.metadata.get("epoch") == 10
    assert (ckpt.spec.feat_unfold, ckpt.spec.local_ensemble, ckpt.spec.cell_decode) == (
        flags["feat_unfold"], flags["local_ensemble"], flags["cell_decode"])
    model = ckpt.build()
    img = torch.rand(3, *in_hw, generator=gen)
    for scale in scales:
        size = (round(in_hw[0] * scale), round(in_hw[1] * scale))
        expected = official_upscale(sd, encoder_forward, img, size, flags)
        # the comparison means something: most pixels are not clamped, and vary
        inside = ((expected > 0) & (expected < 1)).float().mean()
        assert inside > 0.5 and expected.std() > 0.01
        got = engine.render(model, img, size)
        err = (got - expected).abs().max().item()
        assert err <= 1e-4, f"scale {scale}: max abs error {err}"
        tiled = engine.render(model, img, size, tile=2)
        assert (tiled - expected).abs().max().item() <= 1e-4
    return ckpt


@pytest.mark.parametrize("ablation", ABLATIONS, ids=lambda a: ",".join(a) or "liif")
def test_official_edsr_baseline_checkpoint(tmp_path, ablation):
    ckpt = check_official(tmp_path, edsr_case, ablation, seed=11)
    assert ckpt.spec.encoder == "edsr-baseline"
    assert not any("mean" in k for k in ckpt.state_dict)  # MeanShifts are dropped


def test_official_edsr_full_checkpoint_uses_res_scale_0_1(tmp_path):
    ckpt = check_official(tmp_path, edsr_case, {}, seed=12, name="edsr", n_resblocks=2,
                          n_feats=8, scales=(2.0,))
    assert ckpt.spec.encoder == "edsr"


def test_official_edsr_deeper_wider_mlp(tmp_path):
    check_official(tmp_path, edsr_case, {}, seed=13, n_resblocks=3, n_feats=6,
                   hidden=(12, 10, 8, 6), in_hw=(4, 7), scales=(1.7, 12.0))


@pytest.mark.parametrize("ablation", [{}, {"feat_unfold": False, "cell_decode": False}],
                         ids=["liif", "ablated"])
def test_official_rdn_checkpoint(tmp_path, ablation):
    ckpt = check_official(tmp_path, rdn_case, ablation, seed=14, in_hw=(5, 4), scales=(2.5,))
    assert ckpt.spec.encoder == "rdn"
    assert ckpt.spec.encoder_args == {"G0": 4, "RDNkSize": 3, "RDNconfig": "A"}


def test_official_rdn_checkpoint_with_5x5_kernels(tmp_path):
    """RDNkSize sets the shallow/global convs; the official dense layers stay 3x3."""
    check_official(tmp_path, rdn_case, {}, seed=15, in_hw=(5, 4), scales=(2.0,), k=5)


def test_official_checkpoint_from_data_parallel(tmp_path):
    gen = torch.Generator().manual_seed(16)
    sd, args, _ = edsr_case(gen, ALL_ON)
    wrapped = OrderedDict((f"module.{k}", v) for k, v in sd.items())
    torch.save(official_checkpoint(args, wrapped), tmp_path / "dp.pth")
    model = checkpoint.load(tmp_path / "dp.pth").build()
    assert torch.equal(model.state_dict()["imnet.layers.0.weight"], sd["imnet.layers.0.weight"])


def test_official_checkpoint_with_wrong_keys_is_a_liif_error(tmp_path):
    gen = torch.Generator().manual_seed(17)
    sd, args, _ = edsr_case(gen, ALL_ON)
    sd["encoder.tail.0.weight"] = torch.zeros(1)  # an upsampling tail LIIF never has
    torch.save(official_checkpoint(args, sd), tmp_path / "c.pth")
    with pytest.raises(LiifError, match="tail"):
        checkpoint.load(tmp_path / "c.pth")


def test_official_checkpoint_of_other_model_is_a_liif_error(tmp_path):
    gen = torch.Generator().manual_seed(18)
    sd, args, _ = edsr_case(gen, ALL_ON)
    raw = official_checkpoint(args, sd)
    raw["model"]["name"] = "metasr"
    torch.save(raw, tmp_path / "c.pth")
    with pytest.raises(LiifError, match="metasr"):
        checkpoint.load(tmp_path / "c.pth")
    raw = official_checkpoint(args, sd)
    raw["model"]["args"]["encoder_spec"]["args"]["no_upsampling"] = False
    torch.save(raw, tmp_path / "c.pth")
    with pytest.raises(LiifError, match="no_upsampling"):
        checkpoint.load(tmp_path / "c.pth")
