"""Tests for liif_cli.train: data sampling, loss path, checkpoints, resume, interruption."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from liif_cli import checkpoint, dataset, train
from liif_cli.dataset import CropSampler
from liif_cli.errors import LiifError
from liif_cli.model import ModelSpec, build_model, make_cells, make_coords
from liif_cli.train import TrainConfig, lr_at, run_training
from liif_cli.train import loop as train_loop
from liif_cli.train.config import full_degradation

TINY = ModelSpec(encoder_args=dict(n_resblocks=1, n_feats=8), hidden=[16, 16]).to_dict()
REPO = Path(__file__).resolve().parent.parent


def _smooth_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    small = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("train_images")
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(200, 230), (240, 210), (260, 256)]):
        Image.fromarray(_smooth_image(rng, h, w)).save(folder / f"img{i}.png")
    (folder / "README.txt").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def val_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("val_images")
    rng = np.random.default_rng(1)
    Image.fromarray(_smooth_image(rng, 40, 48)).save(folder / "v.png")
    return folder


def tiny_config(data_dir: Path, out: Path, **kw) -> TrainConfig:
    base = dict(data=[str(data_dir)], out=str(out), model=TINY, crop=8, samples=64,
                batch_size=4, steps=6, lr=1e-3, lr_schedule="cosine", checkpoint_every=100,
                val_every=0, workers=1, seed=3, device="cpu", amp="off")
    base.update(kw)
    return TrainConfig(**base)


def collect(events: list, stop_at: int | None = None, stop: threading.Event | None = None):
    def callback(ev: train.TrainEvent) -> None:
        events.append(ev)
        if stop_at is not None and ev.kind == "step" and ev.step == stop_at:
            stop.set()
    return callback


def step_losses(events: list) -> dict[int, float]:
    return {ev.step: ev.loss for ev in events if ev.kind == "step"}


# --------------------------------------------------------------------------- data


def test_package_gives_every_public_name_and_only_those() -> None:
    """Most names come from their modules on first use (so TrainConfig alone needs no torch):
    each one listed resolves, to the object its module defines; anything else is an error."""
    values = {name: getattr(train, name) for name in train.__all__}
    modules = [sys.modules[f"liif_cli.train.{m}"] for m in ("config", "loop", "progress",
                                                            "validation")]
    for name, value in values.items():
        assert any(getattr(m, name, None) is value for m in modules), name
    assert train.run_training is train_loop.run_training
    with pytest.raises(AttributeError, match="no attribute 'run_trainig'"):
        train.run_trainig  # noqa: B018


def test_sampler_default_shapes_and_targets(data_dir: Path) -> None:
    images, _, warnings = dataset.load_images([data_dir], 192)
    assert len(images) == 3 and any("README.txt" in w for w in warnings)
    sampler = CropSampler(images)  # the paper's 48 px crops, 2304 samples, scales in [1, 4]
    g = torch.Generator().manual_seed(0)
    for _ in range(4):
        s = sampler.sample(g)
        size = s.hr.shape[0]
        assert s.hr.shape == (size, size, 3) and 48 <= size <= 192
        assert s.inp.shape == (3, 48, 48)
        assert s.coord.shape == (2304, 2) and s.cell.shape == (2304, 2)
        assert s.gt.shape == (2304, 3)
        assert s.index.unique().numel() == 2304  # distinct pixels
        assert s.inp.min() >= -1 and s.inp.max() <= 1 and s.gt.min() >= -1 and s.gt.max() <= 1
        # LR input: the antialiased bicubic downscale of the (augmented) HR crop, normalised.
        expect = dataset.bicubic_resize(s.hr, (48, 48))
        expect = (torch.from_numpy(expect.copy()).permute(2, 0, 1) / 255 - 0.5) / 0.5
        assert torch.equal(s.inp, expect)
        # Cells: one HR pixel of the crop; coords: the HR pixel centres of the samples.
        assert torch.allclose(s.cell, torch.tensor([2 / size, 2 / size]).expand(2304, 2))
        assert torch.equal(s.coord, make_coords((size, size))[s.index])
        rows = torch.round(((s.coord[:, 0] + 1) * size - 1) / 2).long()
        cols = torch.round(((s.coord[:, 1] + 1) * size - 1) / 2).long()
        hr = torch.from_numpy(s.hr.copy()).float()
        assert torch.equal(s.gt, (hr[rows, cols] / 255 - 0.5) / 0.5)
    batch = sampler.batch(2, g)
    assert batch["inp"].shape == (2, 3, 48, 48) and batch["coord"].shape == (2, 2304, 2)
    assert batch["cell"].shape == (2, 2304, 2) and batch["gt"].shape == (2, 2304, 3)


def test_sampler_is_deterministic_and_covers_scales(data_dir: Path) -> None:
    images, _, _ = dataset.load_images([data_dir], 32)
    sampler = CropSampler(images, crop=8, samples=64)
    a = sampler.batch(3, torch.Generator().manual_seed(5))
    b = sampler.batch(3, torch.Generator().manual_seed(5))
    assert all(torch.equal(a[k], b[k]) for k in a)
    g = torch.Generator().manual_seed(1)
    sizes = {sampler.sample(g).hr.shape[0] for _ in range(200)}
    assert min(sizes) <= 10 and max(sizes) >= 30 and sizes <= set(range(8, 33))


def test_sampler_shrinks_photo_regions_when_asked(data_dir: Path) -> None:
    """shrink_max > 1: each HR crop is a photo region up to shrink_max times its side,
    shrunk to it with the antialiased bicubic (then flipped as usual), drawn
    deterministically; shrink_max 1 draws exactly the paper's samples."""
    images, _, _ = dataset.load_images([data_dir], 64)
    plain = CropSampler(images, crop=16, samples=64)
    same = CropSampler(images, crop=16, samples=64, shrink_max=1.0)
    a = plain.batch(4, torch.Generator().manual_seed(3))
    b = same.batch(4, torch.Generator().manual_seed(3))
    assert all(torch.equal(a[k], b[k]) for k in a)

    sampler = CropSampler(images, crop=16, samples=64, shrink_max=2.0)
    g = torch.Generator().manual_seed(7)
    ratios = []
    for _ in range(60):
        d = sampler.draw(g)
        source = d.source or d.size
        h, w = images[d.image].shape[:2]
        assert d.size <= source <= min(round(d.size * 2.0), h, w)
        ratios.append(source / d.size)
        s = sampler.build(d)
        # The same draw, unshrunk, from the region shrunk beforehand: the paper's path does
        # the flips, downscale and queries.
        region = images[d.image][d.y0:d.y0 + source, d.x0:d.x0 + source]
        shrunk = dataset.bicubic_resize(np.ascontiguousarray(region), (d.size, d.size))
        expect = CropSampler([shrunk], crop=16, samples=64).build(
            dataclasses.replace(d, image=0, y0=0, x0=0, source=None))
        assert np.array_equal(s.hr, expect.hr)
        assert all(torch.equal(getattr(s, k), getattr(expect, k))
                   for k in ("inp", "coord", "cell", "gt"))
        assert s.hr.shape == (d.size, d.size, 3) and s.inp.shape == (3, 16, 16)
    assert min(ratios) < 1.2 and max(ratios) > 1.7  # the whole range is drawn
    again = CropSampler(images, crop=16, samples=64, shrink_max=2.0)
    a = sampler.batch(3, torch.Generator().manual_seed(9))
    b = again.batch(3, torch.Generator().manual_seed(9))
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = again.batch(3, torch.Generator().manual_seed(10))
    assert not torch.equal(a["gt"], c["gt"])


def test_fast_decoder_gradients_match_reference() -> None:
    """The training loss path (project_latents + query_rgb) has the reference's gradients."""
    torch.manual_seed(0)
    model = build_model(ModelSpec(**TINY))
    inp = torch.rand(2, 3, 8, 8) * 2 - 1
    coord = make_coords((20, 20))[torch.randperm(400)[:64]].expand(2, 64, 2).contiguous()
    cell = make_cells((20, 20), 64).expand(2, 64, 2)
    gt = torch.rand(2, 64, 3) * 2 - 1

    def grads(fast: bool) -> tuple[float, list[torch.Tensor]]:
        model.zero_grad()
        feat = model.encode(inp)
        pred = (model.query_rgb(model.project_latents(feat), coord, cell) if fast
                else model.query_rgb_reference(feat, coord, cell))
        loss = (pred - gt).abs().mean()
        loss.backward()
        return loss.item(), [p.grad.clone() for p in model.parameters()]

    fast_loss, fast = grads(True)
    ref_loss, ref = grads(False)
    assert fast_loss == pytest.approx(ref_loss, abs=1e-6)
    for f, r in zip(fast, ref, strict=True):
        # float32 sums in a different order: agree to 1e-5 of the largest gradient entry.
        assert torch.allclose(f, r, rtol=1e-4, atol=1e-5 * float(r.abs().max()) + 1e-8)


# --------------------------------------------------------------------------- training


def test_lr_schedules() -> None:
    cfg = TrainConfig(data=["x"], steps=100, lr=1e-4, lr_schedule="step")
    assert [lr_at(cfg, s) for s in (0, 19, 20, 40, 79, 80, 99)] == [
        1e-4, 1e-4, 5e-5, 2.5e-5, 1.25e-5, 6.25e-6, 6.25e-6]
    cfg.lr_schedule = "cosine"
    assert lr_at(cfg, 0) == 1e-4 and lr_at(cfg, 50) == pytest.approx(5e-5)
    assert lr_at(cfg, 100) == pytest.approx(0, abs=1e-20)
    cfg.time_budget = 10.0  # whichever is further along: steps or time
    assert lr_at(cfg, 50, elapsed=1.0) == pytest.approx(5e-5)
    assert lr_at(cfg, 10, elapsed=5.0) == pytest.approx(5e-5)
    cfg.lr_schedule = "step"
    assert lr_at(cfg, 0, elapsed=2.0) == 5e-5 and lr_at(cfg, 0, elapsed=9.9) == 6.25e-6


def test_time_budget_ends_the_run(data_dir: Path, tmp_path: Path) -> None:
    result = run_training(tiny_config(data_dir, tmp_path / "run", steps=100_000, time_budget=0.3))
    assert not result.interrupted and 1 <= result.step < 100_000
    ckpt = checkpoint.load(tmp_path / "run" / "last.pth")
    assert ckpt.extra["train_state"]["elapsed_s"] >= 0.3


def test_a_few_steps_lower_the_loss(data_dir: Path, tmp_path: Path) -> None:
    events: list = []
    cfg = tiny_config(data_dir, tmp_path / "run", steps=40, lr=3e-3, batch_size=8)
    result = run_training(cfg, collect(events))
    losses = list(step_losses(events).values())
    assert len(losses) == 40 and result.step == 40 and not result.interrupted
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])


def test_bf16_autocast_on_cpu_trains(data_dir: Path, tmp_path: Path) -> None:
    events: list = []
    run_training(tiny_config(data_dir, tmp_path / "run", steps=2, amp="bf16"), collect(events))
    assert all(math.isfinite(x) for x in step_losses(events).values())


@pytest.mark.parametrize("device,fast,legacy,expected", [
    ("cpu", True, False, "bf16"), ("cpu", False, False, "off"), ("cpu", True, True, "off"),
    ("cuda", False, False, "bf16"), ("cuda", False, True, "bf16")])
def test_amp_auto_picks_bf16_where_the_device_computes_it_fast(
        monkeypatch: pytest.MonkeyPatch, device: str, fast: bool, legacy: bool,
        expected: str) -> None:
    monkeypatch.setattr(train_loop, "cpu_has_fast_bf16", lambda: fast)
    assert train.resolve_amp("auto", torch.device(device), legacy) == expected
    for explicit in ("bf16", "off"):  # an explicit choice is kept everywhere
        assert train.resolve_amp(explicit, torch.device(device), legacy) == explicit


@pytest.mark.parametrize("fast,expected", [(True, "bf16"), (False, "off")])
def test_a_run_records_what_amp_auto_chose(data_dir: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch, fast: bool,
                                           expected: str) -> None:
    monkeypatch.setattr(train_loop, "cpu_has_fast_bf16", lambda: fast)
    out = tmp_path / "run"
    run_training(tiny_config(data_dir, out, steps=2, amp="auto"))
    ckpt = checkpoint.load(out / "last.pth")
    assert ckpt.metadata["amp"] == expected
    assert ckpt.extra["train_state"]["config"]["amp"] == expected
    assert json.loads((out / "config.json").read_text())["amp"] == expected


def test_bf16_on_a_cpu_without_bf16_units_warns(data_dir: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train_loop, "cpu_has_fast_bf16", lambda: False)
    result = run_training(tiny_config(data_dir, tmp_path / "run", steps=1, amp="bf16"))
    assert any("no bf16 units" in w for w in result.warnings)
    quiet = run_training(tiny_config(data_dir, tmp_path / "off", steps=1, amp="auto"))
    assert not any("bf16" in w for w in quiet.warnings)


def test_runs_that_saved_amp_auto_resume_in_float32_on_the_cpu(
        data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "old"
    stop = threading.Event()
    run_training(tiny_config(data_dir, out, steps=4), collect([], stop_at=2, stop=stop),
                 stop=stop)
    raw = torch.load(out / "last.pth", map_location="cpu", weights_only=True)
    raw["train_state"]["config"]["amp"] = "auto"  # as saved when 'auto' meant fp32 on a CPU
    torch.save(raw, out / "last.pth")
    monkeypatch.setattr(train_loop, "cpu_has_fast_bf16", lambda: True)
    resumed: list = []
    run_training(tiny_config(data_dir, out, resume=True, steps=None, amp="auto"),
                 collect(resumed))
    assert checkpoint.load(out / "last.pth").metadata["amp"] == "off"
    # Bit-for-bit with a run that never stopped: it kept float32.
    whole: list = []
    run_training(tiny_config(data_dir, tmp_path / "whole", steps=4), collect(whole))
    assert step_losses(resumed) == {k: v for k, v in step_losses(whole).items() if k > 2}


def test_checkpoint_contents_and_validation(data_dir: Path, val_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = tiny_config(data_dir, out, steps=4, checkpoint_every=2, val=str(val_dir), val_every=2)
    result = run_training(cfg)
    assert any("README.txt" in w for w in result.warnings)
    raw = torch.load(out / "last.pth", map_location="cpu", weights_only=True)
    assert raw["format"] == "liif" and raw["train_state"]["step"] == 4
    state = raw["train_state"]
    assert set(state) >= {"optimizer", "scheduler", "step", "rng", "config"}
    assert state["config"]["steps"] == 4 and state["rng"].dtype == torch.uint8
    ckpt = checkpoint.load(out / "last.pth")
    model = ckpt.build()
    meta = ckpt.metadata
    assert meta["steps"] == 4 and meta["encoder"] == "edsr-baseline"
    assert meta["training_data"] == [str(data_dir)]  # as given, never made absolute
    assert meta["val_set"] == str(val_dir)
    assert set(meta["val_psnr"]) == {"x2", "x4", "x8"}
    assert sum(p.numel() for p in model.parameters()) > 0
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [rec["step"] for rec in lines] == [2, 4]
    for rec in lines:
        assert set(rec["psnr"]) == set(rec["bicubic_psnr"]) == {"x2", "x4", "x8"}
        assert math.isfinite(rec["loss"]) and rec["time"] >= 0
        assert all(10 < v < 100 for v in rec["bicubic_psnr"].values())
    assert json.loads((out / "config.json").read_text())["steps"] == 4


def test_resume_continues_bit_for_bit(data_dir: Path, val_dir: Path, tmp_path: Path) -> None:
    common = dict(steps=6, val=str(val_dir), val_every=2)
    full: list = []
    run_training(tiny_config(data_dir, tmp_path / "a", **common), collect(full))

    first: list = []
    stop = threading.Event()
    cut = run_training(tiny_config(data_dir, tmp_path / "b", **common),
                       collect(first, stop_at=3, stop=stop), stop=stop)
    assert cut.interrupted and cut.step == 3
    assert checkpoint.load(tmp_path / "b" / "last.pth").extra["train_state"]["step"] == 3

    rest: list = []
    # The caller's run-defining fields are ignored on resume (the checkpoint's are kept).
    resumed = run_training(tiny_config(data_dir, tmp_path / "b", resume=True, steps=6,
                                       val=str(val_dir), val_every=2, lr=0.5),
                           collect(rest))
    assert any("kept the checkpoint's lr" in w for w in resumed.warnings)
    expected = step_losses(full)
    got = {**step_losses(first), **step_losses(rest)}
    assert min(step_losses(rest)) == 4
    assert got == expected  # exact float equality: bit-for-bit
    a = checkpoint.load(tmp_path / "a" / "last.pth").state_dict
    b = checkpoint.load(tmp_path / "b" / "last.pth").state_dict
    assert all(torch.equal(a[k], b[k]) for k in a)
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(x)["step"] for x in lines]
    assert steps == [2, 4, 6]
    # The records are the unbroken run's, the loss averaged since the last one included
    # (the step before the stop counts in the record after it).
    records = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    for ours, theirs in zip([json.loads(x) for x in lines], records, strict=True):
        assert (ours["loss"], ours["psnr"]) == (theirs["loss"], theirs["psnr"])


def test_resume_keeps_the_runs_validation_and_names_every_option_it_ignores() -> None:
    from liif_cli.train.config import resume_config

    saved = TrainConfig(data=["/d"], out="o", val="/v", val_every=2, val_degrade=["jpeg:75"],
                        checkpoint_every=7, batch_size=1).to_dict()
    assert "given" not in saved
    bare = TrainConfig(out="o", resume=True, given=["out", "resume"])
    merged, warnings = resume_config(bare, saved)
    assert (merged.val, merged.val_every, merged.val_degrade, merged.checkpoint_every,
            merged.batch_size) == ("/v", 2, ["jpeg:75"], 7, 1)
    assert warnings == []
    again = TrainConfig(out="o", resume=True, val_every=5, batch_size=16,
                        given=["out", "resume", "val_every", "batch_size"])
    merged, warnings = resume_config(again, saved)
    assert (merged.val, merged.val_every, merged.batch_size) == ("/v", 5, 1)
    assert any("batch_size" in w for w in warnings)
    # From Python (given=None), a field counts as given where it is not its default.
    merged, warnings = resume_config(TrainConfig(out="o", resume=True, lr=0.5), saved)
    assert merged.val == "/v" and any("lr" in w for w in warnings)


def test_sixteen_bit_and_gray_training_images_are_read_at_their_values(tmp_path: Path) -> None:
    from liif_cli.dataset import load_images

    ramp = np.linspace(0, 65535, 64 * 64).astype(np.uint16).reshape(64, 64)
    Image.fromarray(ramp).save(tmp_path / "deep.png")  # I;16
    Image.fromarray((ramp >> 8).astype(np.uint8)).save(tmp_path / "gray.png")  # L
    images, names, _ = load_images([tmp_path], 8)
    by_name = dict(zip([Path(n).name for n in names], images, strict=True))
    expected = np.rint(ramp / 257.0).astype(np.uint8)
    for name in ("deep.png", "gray.png"):
        got = by_name[name]
        assert got.shape == (64, 64, 3) and got.dtype == np.uint8
        assert np.abs(got[..., 0].astype(int) - expected).max() <= 1
        assert (got[..., 0] == got[..., 2]).all()


def test_resume_extends_a_finished_run_with_more_steps(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    first: list = []
    stop = threading.Event()
    run_training(tiny_config(data_dir, out, steps=4), collect(first, stop_at=2, stop=stop),
                 stop=stop)
    # --steps left out (None): the run goes on as planned, to its own 4 steps.
    done = run_training(tiny_config(data_dir, out, resume=True, steps=None))
    assert done.step == 4 and not any("resuming" in w for w in done.warnings)
    # More steps than planned extend the finished run, with a warning.
    rest: list = []
    more = run_training(tiny_config(data_dir, out, resume=True, steps=7), collect(rest))
    assert more.step == 7 and sorted(step_losses(rest)) == [5, 6, 7]
    assert any("extended the run from 4 to 7 steps at step 4" in w and "not bit-for-bit" in w
               for w in more.warnings)
    ckpt = checkpoint.load(out / "last.pth")
    state = ckpt.extra["train_state"]
    assert state["config"]["steps"] == 7 and state["scheduler"]["total_steps"] == 7
    assert state["config"]["extensions"] == [[4, 4, 7]]
    assert ckpt.metadata["extended"] == ["from 4 to 7 steps at step 4"]
    assert ckpt.metadata["total_steps"] == 7
    # The lr schedule follows the new length from where the run stood.
    first_lr = next(ev.lr for ev in rest if ev.kind == "start")
    assert first_lr == pytest.approx(lr_at(tiny_config(data_dir, out, steps=7), 4))
    # Fewer steps than the run's: refused, nothing changed.
    with pytest.raises(LiifError, match="--steps 5 is fewer than the run's 7"):
        run_training(tiny_config(data_dir, out, resume=True, steps=5))
    assert checkpoint.load(out / "last.pth").extra["train_state"]["step"] == 7


def test_resume_cannot_extend_a_run_whose_time_budget_is_spent(data_dir: Path,
                                                               tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_training(tiny_config(data_dir, out, steps=100_000, time_budget=0.2))
    with pytest.raises(LiifError, match="time-budget"):
        run_training(tiny_config(data_dir, out, resume=True, steps=200_000))


def test_sigint_in_process_saves_and_stops(data_dir: Path, tmp_path: Path) -> None:
    def callback(ev: train.TrainEvent) -> None:
        if ev.kind == "step" and ev.step == 2:
            signal.raise_signal(signal.SIGINT)

    old = signal.getsignal(signal.SIGINT)
    result = run_training(tiny_config(data_dir, tmp_path / "run", steps=50), callback)
    assert result.interrupted and result.step == 2
    assert signal.getsignal(signal.SIGINT) is old  # handler restored
    assert checkpoint.load(tmp_path / "run" / "last.pth").extra["train_state"]["step"] == 2


def test_sigterm_subprocess_leaves_loadable_checkpoint(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = tiny_config(data_dir, out, steps=100_000).to_dict()
    script = textwrap.dedent(f"""
        import sys
        from liif_cli.train import TrainConfig, run_training
        def cb(ev):
            if ev.kind == "step":
                print("STEP", ev.step, flush=True)
        r = run_training(TrainConfig(**{cfg!r}), cb)
        print("DONE", r.step, r.interrupted, flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        for line in proc.stdout:
            if line.startswith("STEP") and int(line.split()[1]) >= 3:
                proc.send_signal(signal.SIGTERM)
                break
        rest = proc.stdout.read()
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    done = [x for x in rest.splitlines() if x.startswith("DONE")]
    assert done and done[0].split()[2] == "True"
    step = int(done[0].split()[1])
    assert step >= 3
    assert checkpoint.load(out / "last.pth").extra["train_state"]["step"] == step


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(
        data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_loss = train.training_loss
    calls = [0]

    def bad_loss(*args, **kwargs):
        calls[0] += 1
        loss = real_loss(*args, **kwargs)
        return loss * float("nan") if calls[0] == 3 else loss

    monkeypatch.setattr(train_loop, "training_loss", bad_loss)
    out = tmp_path / "run"
    with pytest.raises(LiifError, match="diverged.*step 3"):
        run_training(tiny_config(data_dir, out, steps=10, checkpoint_every=2))
    ckpt = checkpoint.load(out / "last.pth")
    assert ckpt.extra["train_state"]["step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt.state_dict.values())


@pytest.mark.parametrize("terminal", [True, False])
def test_console_layer(data_dir: Path, tmp_path: Path, terminal: bool) -> None:
    from rich.console import Console

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=terminal, width=120)
    result = train.train_with_console(tiny_config(data_dir, tmp_path / "run", steps=3), console)
    text = buf.getvalue()
    assert result.step == 3 and "README.txt" in text and "finished 3 steps" in text


def test_non_finite_weights_are_never_saved(
        data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def poison(ev: train.TrainEvent) -> None:
        if ev.kind == "step" and ev.step == 4:  # a checkpoint step: the save must refuse
            with torch.no_grad():
                next(iter(model_ref[-1].parameters())).fill_(float("inf"))

    model_ref: list = []
    real_build = train_loop.build_model
    monkeypatch.setattr(train_loop, "build_model",
                        lambda spec: model_ref.append(real_build(spec)) or model_ref[-1])
    out = tmp_path / "run"
    with pytest.raises(LiifError, match="non-finite weights at step 4"):
        run_training(tiny_config(data_dir, out, steps=10, checkpoint_every=2), poison)
    assert checkpoint.load(out / "last.pth").extra["train_state"]["step"] == 2


# --------------------------------------------------------------------------- errors


def _images(folder: Path, sizes: list[tuple[int, int]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(folder / f"{i}.png")
    return folder


@pytest.mark.parametrize("case, match", [
    ("empty", "no files"),
    ("text_only", "no images"),
    ("too_small", "smaller than 32 px"),
    ("missing", "not found"),
])
def test_bad_training_data(tmp_path: Path, case: str, match: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    if case == "text_only":
        (data / "a.txt").write_text("hi")
        (data / "b.jpg").write_bytes(b"not really a jpeg")
    elif case == "too_small":
        _images(data, [(31, 100), (20, 20)])
    elif case == "missing":
        data = tmp_path / "nope"
    with pytest.raises(LiifError, match=match) as info:
        run_training(tiny_config(data, tmp_path / "runs" / "run"))
    assert "\n" not in str(info.value)
    assert not (tmp_path / "runs").exists()  # no empty run folder (nor its parent) left behind
    kept = tmp_path / "kept"
    kept.mkdir()
    with pytest.raises(LiifError, match=match):
        run_training(tiny_config(data, kept))
    assert kept.is_dir()  # a folder that existed before stays


def test_small_images_are_skipped_with_a_warning(tmp_path: Path) -> None:
    data = _images(tmp_path / "data", [(40, 40), (20, 40)])
    result = run_training(tiny_config(data, tmp_path / "run", steps=1))
    assert any("skipped 1" in w and "40x20" in w for w in result.warnings)


def test_bad_run_dir_and_resume_errors(data_dir: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(LiifError, match="cannot write to run dir"):
        run_training(tiny_config(data_dir, blocker / "run"))
    with pytest.raises(LiifError, match="nothing to resume"):
        run_training(tiny_config(data_dir, tmp_path / "fresh", resume=True))
    run_training(tiny_config(data_dir, tmp_path / "done", steps=1))
    with pytest.raises(LiifError, match="already holds a run"):
        run_training(tiny_config(data_dir, tmp_path / "done", steps=1))
    with pytest.raises(LiifError, match="lr schedule"):
        run_training(tiny_config(data_dir, tmp_path / "x", lr_schedule="linear"))
    with pytest.raises(LiifError, match="samples per crop"):
        run_training(tiny_config(data_dir, tmp_path / "x", samples=65))
    for bad in (0.5, 9.0):
        with pytest.raises(LiifError, match=r"shrink_max must be in \[1, 8\]"):
            run_training(tiny_config(data_dir, tmp_path / "x", shrink_max=bad))


# --------------------------------------------------------------------------- the CLI


def test_cli_train_end_to_end_and_bad_input(data_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from liif_cli.cli import app

    def liif(*args) -> object:
        return CliRunner().invoke(app, ["train", *map(str, args)])

    run_dir = tmp_path / "run"
    common = ("--data", data_dir, "--out", run_dir, "--batch-size", "1", "--device", "cpu",
              "--workers", "1")
    result = liif(*common, "--steps", "2", "--time-budget", "600")
    assert result.exit_code == 0, result.output
    ckpt = checkpoint.load(run_dir / "last.pth")
    assert ckpt.metadata["steps"] == 2 and ckpt.spec.encoder == "edsr-baseline"
    assert ckpt.extra["train_state"]["config"]["time_budget"] == 600

    again = liif(*common, "--steps", "2")  # same folder without --resume: refused, untouched
    assert again.exit_code != 0 and "resume" in again.output
    assert checkpoint.load(run_dir / "last.pth").metadata["steps"] == 2

    # --resume needs no --data (the run's own) and extends a finished run with more --steps.
    # An option given again is kept from the run with a warning, even at its default value.
    extended = liif("--out", run_dir, "--resume", "--steps", "3", "--device", "cpu",
                    "--workers", "1", "--batch-size", "16")
    assert extended.exit_code == 0, extended.output
    assert "extended the run from 2 to 3 steps" in " ".join(extended.output.split())
    assert "kept the checkpoint's batch_size" in " ".join(extended.output.split())
    assert checkpoint.load(run_dir / "last.pth").extra["train_state"]["step"] == 3
    shorter = liif("--out", run_dir, "--resume", "--steps", "1")  # refused before any work
    assert shorter.exit_code == 2 and "fewer than the run's 3" in shorter.output
    no_data = liif("--out", tmp_path / "new-run")  # a new run does need --data
    assert no_data.exit_code == 2 and "--data is required" in no_data.output
    assert not (tmp_path / "new-run").exists()

    tuned = liif("--data", data_dir, "--out", tmp_path / "tuned", "--batch-size", "1",
                 "--device", "cpu", "--workers", "1", "--steps", "1",
                 "--init", run_dir / "last.pth")
    assert tuned.exit_code == 0, tuned.output
    assert checkpoint.load(tmp_path / "tuned" / "last.pth").metadata["init"] == str(
        run_dir / "last.pth")

    empty = tmp_path / "empty"
    empty.mkdir()
    for bad in (("--data", empty, "--out", tmp_path / "r2"),
                ("--data", data_dir, "--out", tmp_path / "r3", "--time-budget", "-1"),
                ("--data", data_dir, "--out", tmp_path / "r4", "--init", tmp_path / "no.pth"),
                ("--data", data_dir, "--out", tmp_path / "r5", "--freeze-encoder"),
                ("--data", data_dir, "--out", tmp_path / "r6", "--teacher", "default"),
                ("--data", data_dir, "--out", tmp_path / "r7", "--val-degrade", "jpeg:75")):
        result = liif(*bad)
        assert result.exit_code != 0
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:"), result.output


def test_init_fine_tunes_given_weights(data_dir: Path, tmp_path: Path) -> None:
    run_training(tiny_config(data_dir, tmp_path / "a", steps=3))
    start = checkpoint.load(tmp_path / "a" / "last.pth")

    # Other options describe another model: the --init weights' architecture wins, with a
    # warning; a tiny lr keeps the weights where they started.
    cfg = tiny_config(data_dir, tmp_path / "b", steps=1, lr=1e-12, model=None,
                      encoder="rdn", init=str(tmp_path / "a" / "last.pth"))
    result = run_training(cfg)
    assert any("--init" in w for w in result.warnings)
    tuned = checkpoint.load(tmp_path / "b" / "last.pth")
    assert tuned.spec == start.spec
    assert tuned.metadata["init"] == str(tmp_path / "a" / "last.pth")
    state = tuned.extra["train_state"]
    assert state["step"] == 1 and state["scheduler"]["total_steps"] == 1  # a schedule anew
    for name, value in start.state_dict.items():
        torch.testing.assert_close(tuned.state_dict[name], value, rtol=0, atol=1e-9)

    # A plain run from the same seed starts from fresh weights instead.
    run_training(tiny_config(data_dir, tmp_path / "c", steps=1, lr=1e-12))
    fresh = checkpoint.load(tmp_path / "c" / "last.pth").state_dict
    assert any(not torch.allclose(fresh[k], v) for k, v in start.state_dict.items())

    with pytest.raises(LiifError, match="weights not found"):
        run_training(tiny_config(data_dir, tmp_path / "d", init=str(tmp_path / "nope.pth")))


def test_fine_tuning_records_the_whole_training_history(data_dir: Path, tmp_path: Path) -> None:
    """Phase after phase (--init), the checkpoint keeps every earlier phase, so `liif info`
    tells the whole story; a resumed phase keeps it too."""
    run_training(tiny_config(data_dir, tmp_path / "p1", steps=3))
    first = str(tmp_path / "p1" / "last.pth")
    run_training(tiny_config(data_dir, tmp_path / "p2", steps=2, init=first))
    second = str(tmp_path / "p2" / "last.pth")
    stop = threading.Event()
    run_training(tiny_config(data_dir, tmp_path / "p3", steps=4, init=second),
                 collect([], stop_at=1, stop=stop), stop=stop)
    run_training(tiny_config(data_dir, tmp_path / "p3", resume=True, steps=4))
    meta = checkpoint.load(tmp_path / "p3" / "last.pth").metadata
    assert [(h["weights"], h["steps"]) for h in meta["history"]] == [(first, 3), (second, 2)]
    assert meta["steps"] == 4 and meta["steps_all_phases"] == 9
    assert "history" not in checkpoint.load(first).metadata


# --------------------------------------------------------------------------- training speed


def test_channels_last_bf16_step_matches_the_straightforward_step() -> None:
    """liif train's loss path (channels-last, whole decoder in bf16) agrees with the plain one
    (NCHW, float32 first layer): exactly in float32, within bf16 rounding under autocast."""
    from liif_cli.bench.training import reference_loss

    torch.manual_seed(0)
    plain = build_model(ModelSpec())
    fast = train.prepare_for_training(build_model(ModelSpec()))
    fast.load_state_dict(plain.state_dict())
    assert fast.encoder.head[0].weight.is_contiguous(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(0)
    images = [np.asarray(_smooth_image(np.random.default_rng(i), 120, 130)) for i in range(2)]
    batch = CropSampler(images, crop=24, samples=256, scale_max=2.0).batch(2, g)

    for amp, tol in ((None, 1e-6), ("cpu", 2e-3)):
        ref = reference_loss(plain, batch, amp)
        ours = train.training_loss(fast, batch, amp)
        assert float(ours.detach()) == pytest.approx(float(ref.detach()), abs=tol)
        plain.zero_grad()
        fast.zero_grad()
        ref.backward()
        ours.backward()
        for (name, p), q in zip(plain.named_parameters(), fast.parameters(), strict=True):
            scale = float(p.grad.abs().max()) + 1e-12
            err = float((p.grad - q.grad).abs().max()) / scale
            # bf16 keeps 8 bits: gradients agree to a few percent of their largest entry.
            assert err < (1e-4 if amp is None else 0.06), (amp, name, err)


def test_retain_freed_memory_on_glibc() -> None:
    from liif_cli.runtime import retain_freed_memory

    if not sys.platform.startswith("linux") or not os.confstr("CS_GNU_LIBC_VERSION"):
        pytest.skip("glibc only")
    assert retain_freed_memory() is True


def test_training_speed_benchmark_runs_both_steps() -> None:
    from liif_cli.bench.training import run_training_speed

    result = run_training_speed(threads=[1], batch_size=2, steps=1, warmup=1, repeats=1,
                                spec=ModelSpec(**TINY))
    (row,) = result["rows"]
    assert row["threads"] == 1 and row["reference_crops_per_s"] > 0
    assert row["liif_crops_per_s"] > 0 and row["speedup"] > 0
    # Same model, same first batches: the two steps learn the same thing.
    assert row["liif_loss"] == pytest.approx(row["reference_loss"], rel=0.05)


def test_ema_weights_are_saved_validated_and_resume_bit_for_bit(
        data_dir: Path, val_dir: Path, tmp_path: Path) -> None:
    common = dict(steps=6, val=str(val_dir), val_every=3, ema=0.5)
    full: list = []
    run_training(tiny_config(data_dir, tmp_path / "a", **common), collect(full))
    stop = threading.Event()
    first: list = []
    run_training(tiny_config(data_dir, tmp_path / "b", **common),
                 collect(first, stop_at=4, stop=stop), stop=stop)
    rest: list = []
    run_training(tiny_config(data_dir, tmp_path / "b", resume=True, **common), collect(rest))
    assert {**step_losses(first), **step_losses(rest)} == step_losses(full)

    a, b = (checkpoint.load(tmp_path / x / "last.pth") for x in "ab")
    state = a.extra["train_state"]
    assert a.metadata["ema"] == 0.5 and state["ema_updates"] == 6
    for k in a.state_dict:  # both runs end with the same averaged and trained weights
        assert torch.equal(a.state_dict[k], b.state_dict[k])
        assert torch.equal(state["model"][k], b.extra["train_state"]["model"][k])
    # The checkpoint's weights are the average, not the last trained weights...
    assert any(not torch.equal(a.state_dict[k], state["model"][k]) for k in a.state_dict)
    # ...and they are what validation scored.
    model = a.build()
    images, _, _ = dataset.load_images([val_dir], 1)
    scored = train.validate(model, images, [2, 4, 8], precision="fp32")
    last = json.loads((tmp_path / "a" / "metrics.jsonl").read_text().splitlines()[-1])
    assert scored["psnr"] == pytest.approx(last["psnr"], abs=1e-3)


def test_ema_decay_out_of_range_is_rejected(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(LiifError, match="ema decay"):
        run_training(tiny_config(data_dir, tmp_path / "run", ema=1.0))


# --------------------------------------------------------------------------- degradation


def test_degradation_changes_only_the_lr_input(data_dir: Path) -> None:
    from liif_cli.degrade import degrade
    from liif_cli.degrade_settings import DegradationConfig

    images, _, _ = dataset.load_images([data_dir], 32)
    clean = CropSampler(images, crop=8, samples=64)
    real = CropSampler(images, crop=8, samples=64, degradation=DegradationConfig())
    g_clean, g_real = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
    a, b = clean.draw(g_clean), real.draw(g_real)
    # The same crop choices; the degrading sampler draws one more number: the chain's seed.
    assert a.degrade_seed is None and b.degrade_seed is not None
    assert (a.image, a.size, a.y0, a.x0) == (b.image, b.size, b.y0, b.x0)
    assert torch.equal(a.index, b.index)
    assert not torch.equal(g_clean.get_state(), g_real.get_state())
    sa, sb = clean.build(a), real.build(b)
    assert np.array_equal(sa.hr, sb.hr) and torch.equal(sa.gt, sb.gt)  # clean targets
    assert not torch.equal(sa.inp, sb.inp)
    lr = degrade(dataset.bicubic_resize(sa.hr, (8, 8)), DegradationConfig(), b.degrade_seed)
    assert torch.equal(sb.inp, dataset.to_tensor(lr))  # the chain, from the draw's seed


def test_degraded_training_records_its_ranges_and_resumes_bit_for_bit(
        data_dir: Path, tmp_path: Path) -> None:
    from liif_cli.degrade_settings import DegradationConfig

    common = dict(steps=6, degradation="real:jpeg_quality=40-90")
    expected_ranges = DegradationConfig(jpeg_quality=(40, 90)).to_dict()
    full: list = []
    run_training(tiny_config(data_dir, tmp_path / "a", **common), collect(full))
    ckpt = checkpoint.load(tmp_path / "a" / "last.pth")
    assert ckpt.metadata["degradation"] == expected_ranges
    assert ckpt.extra["train_state"]["config"]["degradation"] == expected_ranges
    saved = json.loads((tmp_path / "a" / "config.json").read_text())
    assert saved["degradation"] == expected_ranges

    first: list = []
    stop = threading.Event()
    run_training(tiny_config(data_dir, tmp_path / "b", **common),
                 collect(first, stop_at=3, stop=stop), stop=stop)
    rest: list = []
    # Resumed without naming the degradation (as `liif train --resume` does): the run's own.
    resumed = run_training(tiny_config(data_dir, tmp_path / "b", resume=True, steps=6),
                           collect(rest))
    assert not any("degradation" in w for w in resumed.warnings)
    assert {**step_losses(first), **step_losses(rest)} == step_losses(full)  # bit-for-bit

    plain: list = []  # the same seed without degradation trains on other inputs
    run_training(tiny_config(data_dir, tmp_path / "c", steps=2), collect(plain))
    assert "degradation" not in checkpoint.load(tmp_path / "c" / "last.pth").metadata
    assert step_losses(plain)[1] != step_losses(full)[1]


def test_shrunk_crops_are_recorded_and_resume_bit_for_bit(data_dir: Path,
                                                           tmp_path: Path) -> None:
    full: list = []
    run_training(tiny_config(data_dir, tmp_path / "a", steps=4, shrink_max=1.5), collect(full))
    assert checkpoint.load(tmp_path / "a" / "last.pth").metadata["shrink_max"] == 1.5
    first: list = []
    stop = threading.Event()
    run_training(tiny_config(data_dir, tmp_path / "b", steps=4, shrink_max=1.5),
                 collect(first, stop_at=2, stop=stop), stop=stop)
    rest: list = []
    resumed = run_training(tiny_config(data_dir, tmp_path / "b", resume=True, steps=4),
                           collect(rest))  # the run keeps its own shrink_max
    assert resumed.step == 4
    assert {**step_losses(first), **step_losses(rest)} == step_losses(full)  # bit-for-bit
    plain: list = []
    run_training(tiny_config(data_dir, tmp_path / "c", steps=1), collect(plain))
    assert step_losses(plain)[1] != step_losses(full)[1]  # other crops than the paper's


def test_runs_from_before_degradation_resume_clean(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "old"
    stop = threading.Event()
    run_training(tiny_config(data_dir, out, steps=4), collect([], stop_at=2, stop=stop),
                 stop=stop)
    raw = torch.load(out / "last.pth", map_location="cpu", weights_only=True)
    del raw["train_state"]["config"]["degradation"]  # as written before the option existed
    torch.save(raw, out / "last.pth")
    result = run_training(tiny_config(data_dir, out, resume=True, steps=4, degradation="real"))
    assert any("kept the checkpoint's degradation" in w for w in result.warnings)
    state = checkpoint.load(out / "last.pth").extra["train_state"]
    assert state["config"]["degradation"] is None and state["step"] == 4


def test_cli_degradation_option_and_bad_specs(data_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from liif_cli.cli import app

    def liif_train(out: Path, *args: str):
        return CliRunner().invoke(app, ["train", "--data", str(data_dir), "--out", str(out),
                                        "--batch-size", "1", "--device", "cpu", "--workers",
                                        "1", "--steps", "1", *args])

    result = liif_train(tmp_path / "real", "--degradation", "real:jpeg_prob=1")
    assert result.exit_code == 0, result.output
    meta = checkpoint.load(tmp_path / "real" / "last.pth").metadata
    assert meta["degradation"]["jpeg_prob"] == 1.0 and meta["degradation"]["blur_prob"] == 0.8
    result = liif_train(tmp_path / "none", "--degradation", "none")
    assert result.exit_code == 0, result.output
    assert "degradation" not in checkpoint.load(tmp_path / "none" / "last.pth").metadata
    # A bad spec: one line, non-zero exit, before anything is written.
    for spec, words in (("gaussian", "expected none, real"),
                        ("real:jpeg_quality=20-120", "jpeg_quality")):
        result = CliRunner().invoke(app, ["train", "--data", str(data_dir), "--out",
                                          str(tmp_path / "r"), "--degradation", spec])
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code != 0 and len(lines) == 1, result.output
        assert lines[0].startswith("error:") and words in lines[0], result.output
        assert not (tmp_path / "r").exists()
    with pytest.raises(LiifError, match="probability"):
        run_training(tiny_config(data_dir, tmp_path / "r", degradation={"jpeg_prob": 2}))


def test_train_config_takes_a_degradation_in_any_form() -> None:
    from liif_cli.degrade_settings import DegradationConfig

    ranges = DegradationConfig(noise_sigma=(2, 9))
    for given in ("real:noise_sigma=2-9", ranges, ranges.to_dict()):
        cfg = TrainConfig(data=["x"], degradation=given)
        assert cfg.degradation_config() == ranges
        full = full_degradation(cfg)
        assert full.degradation == ranges.to_dict()
        assert json.loads(json.dumps(full.to_dict()))["degradation"] == ranges.to_dict()
    assert TrainConfig(data=["x"], degradation=ranges).to_dict()["degradation"]["noise_sigma"] \
        == [2.0, 9.0]
    assert full_degradation(TrainConfig(data=["x"])).degradation is None
    with pytest.raises(LiifError, match="degradation must be none"):
        TrainConfig(data=["x"], degradation=3).degradation_config()


def test_validation_on_degraded_inputs(data_dir: Path, val_dir: Path, tmp_path: Path) -> None:
    """val_degrade scores each scale again on degraded LR inputs, worse than clean for JPEG,
    the same on every call, and a bad spec is refused before training starts."""
    model = build_model(ModelSpec())
    images, _, _ = dataset.load_images([val_dir], 1)
    scored = train.validate(model, images, [2], precision="fp32", degrades=["jpeg:20", "noise:5"])
    assert list(scored["psnr"]) == ["x2", "x2 jpeg:20", "x2 noise:5"]
    bic = scored["bicubic_psnr"]
    assert bic["x2 jpeg:20"] < bic["x2"] - 0.5 and bic["x2 noise:5"] < bic["x2"]
    again = train.validate(model, images, [2], precision="fp32", degrades=["jpeg:20", "noise:5"])
    assert again == scored

    run_training(tiny_config(data_dir, tmp_path / "run", steps=2, val=str(val_dir),
                             val_scales=[2], val_degrade=["jpeg:50"]))
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert set(record["psnr"]) == {"x2", "x2 jpeg:50"}
    with pytest.raises(LiifError, match="bad --degrade"):
        run_training(tiny_config(data_dir, tmp_path / "bad", val_degrade=["jpeg:500"]))


# ---------------------------------------------------------------- paths of a resumed run


def test_a_run_resumes_from_any_folder_and_follows_its_moved_data(data_dir: Path,
                                                                   tmp_path: Path,
                                                                   monkeypatch) -> None:
    """`liif train --out RUN --resume` from another working folder once failed with
    'training data not found: six': the run stored its data folder as typed."""
    import shutil

    from typer.testing import CliRunner

    from liif_cli.cli import app

    shutil.copytree(data_dir, tmp_path / "six")
    monkeypatch.chdir(tmp_path)
    run_training(tiny_config(Path("six"), Path("run"), steps=2))
    saved = checkpoint.load(tmp_path / "run" / "last.pth").extra["train_state"]["config"]
    assert saved["data"] == [str(tmp_path / "six")]  # absolute

    def resume(*args: object):
        return CliRunner().invoke(app, ["train", "--out", tmp_path / "run", "--resume",
                                        "--device", "cpu", "--workers", "1", *map(str, args)])

    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    result = resume("--steps", "3")
    assert result.exit_code == 0, result.output
    (tmp_path / "six").rename(tmp_path / "moved")
    lost = resume("--steps", "4")
    assert lost.exit_code == 2, lost.output
    assert "give --data" in lost.output and len(lost.output.strip().splitlines()) == 1
    moved = resume("--steps", "4", "--data", "../moved")
    assert moved.exit_code == 0, moved.output
    assert "resuming on the --data given" in " ".join(moved.output.split())
    state = checkpoint.load(tmp_path / "run" / "last.pth").extra["train_state"]
    assert state["step"] == 4 and state["config"]["data"] == [str(tmp_path / "moved")]


def test_run_configs_store_files_absolute_and_bundled_names_as_names(tmp_path: Path,
                                                                     monkeypatch) -> None:
    (tmp_path / "start.pth").write_bytes(b"weights")
    monkeypatch.chdir(tmp_path)
    config = TrainConfig(data=["photos", "~/more"], val="val", init="start.pth",
                         teacher="default").absolute_paths()
    assert config.data == [str(tmp_path / "photos"), str(Path.home() / "more")]
    assert config.val == str(tmp_path / "val")
    assert config.init == str(tmp_path / "start.pth")
    assert config.teacher == "default"  # a bundled name stays a name


# --------------------------------------------------- run folders, resumes and option ranges


def test_sighup_saves_and_stops_as_sigterm_does(data_dir: Path, tmp_path: Path) -> None:
    """Closing the terminal of a run (SIGHUP) killed it without saving."""
    def callback(ev: train.TrainEvent) -> None:
        if ev.kind == "step" and ev.step == 2:
            signal.raise_signal(signal.SIGHUP)

    events: list = []
    old = signal.getsignal(signal.SIGHUP)
    result = run_training(tiny_config(data_dir, tmp_path / "run", steps=50),
                          lambda ev: (events.append(ev), callback(ev)))
    assert result.interrupted and result.step == 2
    assert signal.getsignal(signal.SIGHUP) is old
    assert any("stopped by SIGHUP after step 2" in (ev.message or "") for ev in events)
    assert checkpoint.load(tmp_path / "run" / "last.pth").extra["train_state"]["step"] == 2


def test_a_second_run_into_the_same_folder_is_refused_while_the_first_runs(
        data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    seen: list[str] = []

    def callback(ev: train.TrainEvent) -> None:
        if ev.kind == "step" and ev.step == 1 and not seen:
            for resume in (False, True):  # a new run, and a resume before any checkpoint
                try:
                    run_training(tiny_config(data_dir, out, steps=2, resume=resume))
                except LiifError as exc:
                    seen.append(str(exc))

    result = run_training(tiny_config(data_dir, out, steps=3), callback)
    assert result.step == 3
    assert seen[0] == f"another liif train is running in {out}; wait for it, or choose " \
                      "another output folder"
    assert seen[1].startswith("nothing to resume") or seen[1] == seen[0]
    assert checkpoint.load(out / "last.pth").extra["train_state"]["step"] == 3
    assert not list(out.glob(".*claim"))  # released at the end
    run_training(tiny_config(data_dir, out, resume=True, steps=4))  # resumable as ever


def test_a_new_run_never_replaces_files_it_did_not_make(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "project"
    out.mkdir()
    (out / "config.json").write_text('{"mine": 1}\n')
    with pytest.raises(LiifError, match="already holds config.json but no checkpoint"):
        run_training(tiny_config(data_dir, out, steps=1))
    assert (out / "config.json").read_text() == '{"mine": 1}\n'


def test_resume_keeps_the_runs_threads_and_device(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_training(tiny_config(data_dir, out, steps=2, workers=1))
    saved = checkpoint.load(out / "last.pth").extra["train_state"]["config"]
    from liif_cli.train.config import resume_config

    resumed, _ = resume_config(TrainConfig(out=str(out), resume=True, steps=3,
                                           given=["out", "resume", "steps"]), saved, step=2)
    assert (resumed.workers, resumed.device) == (1, "cpu")  # not torch's default, nor auto
    again, _ = resume_config(TrainConfig(out=str(out), resume=True, workers=2,
                                         given=["out", "resume", "workers"]), saved)
    assert again.workers == 2  # given again: the caller's


def test_resume_warns_when_the_training_images_changed(data_dir: Path, tmp_path: Path) -> None:
    import shutil

    data = tmp_path / "data"
    shutil.copytree(data_dir, data)
    out = tmp_path / "run"
    run_training(tiny_config(data, out, steps=2))
    assert checkpoint.load(out / "last.pth").extra["train_state"]["images"][0][0] == "img0.png"
    result = run_training(tiny_config(data, out, steps=3, resume=True))
    assert not [w for w in result.warnings if "images changed" in w]
    (data / "img1.png").unlink()
    Image.new("RGB", (120, 100)).save(data / "zz.png")
    result = run_training(tiny_config(data, out, steps=4, resume=True))
    assert [w for w in result.warnings if "images changed" in w] == [
        "the training images changed since the run's last checkpoint (1 added, 1 removed): "
        "it resumes on them as they are now, not bit for bit"]


def test_validation_options_without_a_validation_set_are_refused(data_dir: Path,
                                                                 tmp_path: Path) -> None:
    with pytest.raises(LiifError, match="--val-every needs --val"):
        run_training(tiny_config(data_dir, tmp_path / "a", val_every=1, given=["val_every"]))
    out = tmp_path / "b"
    run_training(tiny_config(data_dir, out, steps=1))
    for name, value in (("val_every", 1), ("val_degrade", ["jpeg:75"])):
        with pytest.raises(LiifError, match=f"--{name.replace('_', '-')} needs --val"):
            run_training(TrainConfig(out=str(out), resume=True, steps=2, **{name: value},
                                     given=["out", "resume", "steps", name]))


@pytest.mark.parametrize("field, value, match", [
    ("seed", 2**70, "seed must be between 0 and"),
    ("seed", -1, "seed must be between 0 and"),
    ("workers", 2**31, "workers must be between 0 and 1024"),
    ("steps", 2.5, "steps must be a whole number"),
    ("batch_size", 2.5, "batch_size must be a whole number"),
    ("val_scales", [], "validation scales must be whole numbers"),
    ("val_scales", [2.5], "validation scales must be whole numbers"),
    ("val_crop", -4, "val_crop must be a whole number of pixels"),
    ("scale_max", float("inf"), "scale range"),
])
def test_out_of_range_options_are_one_line_and_leave_no_folder(data_dir: Path, tmp_path: Path,
                                                               field: str, value: object,
                                                               match: str) -> None:
    out = tmp_path / "run"
    with pytest.raises(LiifError, match=match):
        run_training(tiny_config(data_dir, out, **{field: value}))
    assert not out.exists()


def test_a_device_that_is_not_here_is_one_line_and_leaves_no_folder(data_dir: Path,
                                                                    tmp_path: Path) -> None:
    import torch

    if torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    with pytest.raises(LiifError, match="--device mps: Apple's MPS backend is not available"):
        run_training(tiny_config(data_dir, tmp_path / "run", device="mps"))
    assert not (tmp_path / "run").exists()


def test_images_too_large_to_read_and_sub_folders_are_named_as_such(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from liif_cli.dataset import load_images

    data = _images(tmp_path / "data", [(40, 40), (60, 60)])
    _images(data / "more", [(40, 40)])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1700)  # 60x60 is over twice this, 40x40 under
    images, names, warnings = load_images([data], 32)
    assert [Path(n).name for n in names] == ["0.png"]
    assert warnings == [
        "skipped 1 training image(s) too large to read (over 0 MP; cut them into parts): 1.png",
        "skipped 1 sub-folder(s) of the training data (only the images directly in each folder "
        "given are read; give a sub-folder as a folder of its own)"]


def test_whole_numbers_of_any_type_are_taken_as_ints(data_dir: Path, tmp_path: Path) -> None:
    """numpy integers and a JSON file's 10.0 are whole numbers; 2.5 and True are not."""
    config = tiny_config(data_dir, tmp_path / "run", steps=np.int64(2), seed=np.int32(3),
                         checkpoint_every=10.0, val=str(data_dir),
                         val_scales=[np.int64(2), 4.0])
    config.check_options()
    assert (config.steps, config.seed, config.checkpoint_every, config.val_scales) == (
        2, 3, 10, [2, 4])
    assert all(type(v) is int for v in (config.steps, config.seed, config.checkpoint_every))
    for bad in (True, "3"):
        with pytest.raises(LiifError, match="steps must be a whole number"):
            tiny_config(data_dir, tmp_path / "run", steps=bad).check_options()


def test_a_run_with_a_negative_seed_from_before_the_range_check_still_resumes(
        data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(LiifError, match="seed must be between"):
        tiny_config(data_dir, tmp_path / "run", seed=-1).check_options()
    tiny_config(data_dir, tmp_path / "run", seed=-1, resume=True).check_options()


def test_an_ignored_sighup_stays_ignored(data_dir: Path, tmp_path: Path) -> None:
    """Under nohup SIGHUP is ignored: the run must live on when the terminal closes."""
    from liif_cli.train.loop import _StopFlag

    old = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        flag = _StopFlag()
        flag.install()
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        signal.raise_signal(signal.SIGHUP)
        assert not flag.event.is_set()
        flag.restore()
    finally:
        signal.signal(signal.SIGHUP, old)


def test_a_run_that_fails_after_setup_releases_its_folder(data_dir: Path,
                                                          tmp_path: Path) -> None:
    """A progress callback that raises at the first warning (here: a sub-folder skipped)."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(data_dir, data)
    (data / "sub").mkdir()

    def fail_on_warning(ev: train.TrainEvent) -> None:
        if ev.kind == "warning":
            raise RuntimeError("the caller's own error")

    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="the caller's own error"):
        run_training(tiny_config(data, out, steps=2), fail_on_warning)
    assert not list(out.glob(".*claim"))
    assert run_training(tiny_config(data, out, steps=2)).step == 2  # the folder is free


def test_image_changes_are_counted_with_names_shared_by_two_folders() -> None:
    from liif_cli.train.loop import _image_change

    before = [["a.png", 10, 10], ["a.png", 20, 20], ["b.png", 5, 5]]
    assert _image_change(before, [list(r) for r in before]) == ""
    assert _image_change(before, [["a.png", 10, 10], ["a.png", 30, 30], ["b.png", 5, 5],
                                  ["c.png", 1, 1]]) == "1 added, 1 of another size"
    assert _image_change(before, before[1:] + before[:1]) == "in another order"
