"""Tests for running under torchrun (liif_cli.distributed): DDP training and sharded resize.

The multi-process tests launch PyTorch's own launcher, `python -m torch.distributed.run
--standalone --nproc-per-node 2` (torchrun; it picks a free localhost port), with gloo on
the CPU and one thread per rank, and compare with a single process: training to float
tolerance, resize bit for bit.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from liif_cli import checkpoint, distributed, train
from liif_cli.cli import app
from liif_cli.dataset import CropSampler
from liif_cli.errors import LiifError
from liif_cli.model import ModelSpec
from liif_cli.train import TrainConfig, run_training

TINY = ModelSpec(encoder_args=dict(n_resblocks=1, n_feats=8), hidden=[16]).to_dict()
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
LAUNCH_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK",
               "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")


def torchrun(*args: object, cwd: Path, extra_env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    env.update(OMP_NUM_THREADS="1", **(extra_env or {}))
    return subprocess.run([*TORCHRUN, *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=180)


def write_script(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(body))
    return path


# --------------------------------------------------------------------------- no torchrun


def test_without_torchrun_everything_is_a_plain_process(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in LAUNCH_VARS:
        monkeypatch.delenv(var, raising=False)
    assert distributed.init_from_env() is False and not distributed.is_distributed()
    assert (distributed.rank(), distributed.world_size(), distributed.local_rank()) == (0, 1, 0)
    assert distributed.is_main() and distributed.backend() is None
    assert distributed.shard([3, 1, 2]) == [3, 1, 2]
    assert distributed.all_sum([2, 0.5]) == [2.0, 0.5]
    obj = object()
    assert distributed.broadcast(obj) is obj
    assert distributed.first_error("x") == "x" and distributed.first_error(None) is None
    assert distributed.device_name("auto") == "auto" and distributed.device_name("cpu") == "cpu"
    with pytest.raises(LiifError, match="boom"), distributed.agreed_errors():
        raise LiifError("boom")
    distributed.barrier()
    distributed.cleanup()
    monkeypatch.setenv("WORLD_SIZE", "1")  # torchrun with one process: still plain
    monkeypatch.setenv("RANK", "0")
    assert distributed.init_from_env() is False


def test_more_ranks_than_gpus_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rank 1 of two on a machine with one GPU: a LiifError naming the fix, before any
    process group is joined (not CUDA's 'invalid device ordinal')."""
    for var in LAUNCH_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(LiifError, match=r"rank 1 needs GPU 1, but this machine has 1.*cpu"):
        distributed.init_from_env("auto")
    assert not distributed.is_distributed()


def test_a_group_that_cannot_be_joined_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rank variables without torchrun's MASTER_ADDR (set by hand): one line, not
    torch.distributed's traceback."""
    for var in (*LAUNCH_VARS, "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(LiifError, match=r"rank 0 cannot join the process group .*torchrun.*"
                                        "MASTER_ADDR"):
        distributed.init_from_env("cpu")
    assert not distributed.is_distributed()


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shard_splits_items_exactly_once(monkeypatch: pytest.MonkeyPatch, world: int) -> None:
    items = [f"f{i}" for i in range(7)]
    monkeypatch.setattr(distributed, "world_size", lambda: world)
    parts = []
    for r in range(world):
        monkeypatch.setattr(distributed, "rank", lambda r=r: r)
        parts.append(distributed.shard(items))
    assert sorted(sum(parts, [])) == sorted(items)  # disjoint and complete
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_a_rank_gets_its_part_of_the_global_batch(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40, 44, 3), dtype=np.uint8) for _ in range(3)]
    sampler = CropSampler(images, crop=8, samples=16)
    g = torch.Generator().manual_seed(7)
    whole = sampler.batch(6, g)
    after = g.get_state()
    for r in range(3):
        g.manual_seed(7)
        part = sampler.batch(6, g, part=(r, 3))
        assert all(torch.equal(part[k], whole[k][r::3]) for k in whole)
        assert torch.equal(g.get_state(), after)  # every rank's generator stays in step


# --------------------------------------------------------------------------- two ranks


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ddp_data")
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(40, 44), (48, 40), (36, 36)]):
        small = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
        Image.fromarray(small).resize((w, h), Image.BICUBIC).save(folder / f"img{i}.png")
    return folder


def weights_of(path: Path) -> dict[str, torch.Tensor]:
    return checkpoint.load(path).state_dict


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:  # the same maths summed in another order: float tolerance, not bits
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-5, msg=key)


DDP_SCRIPT = """
    import json, signal, sys
    from liif_cli import distributed, train
    from liif_cli.errors import LiifError
    from liif_cli.train import loop

    cfg, log = json.loads(sys.argv[1]), sys.argv[2]
    distributed.init_from_env("cpu")
    rank, events = distributed.rank(), []
    try:  # a global batch of 3 does not split over 2 ranks: every rank must raise
        train.run_training(train.TrainConfig(**{**cfg, "batch_size": 3}))
    except LiifError as exc:
        events.append(["error", str(exc)])

    real_loss, calls = loop.training_loss, [0]

    def loss(*args, **kwargs):
        calls[0] += 1
        if rank == 1 and calls[0] == 3:  # only rank 1 is asked to stop, during step 3
            signal.raise_signal(signal.SIGTERM)
        return real_loss(*args, **kwargs)

    loop.training_loss = loss  # the step calls it from there
    result = train.run_training(train.TrainConfig(**cfg),
                                lambda ev: events.append([ev.kind, ev.step, ev.message]))
    events.append(["result", result.step, result.interrupted])
    with open(f"{log}/rank{rank}.json", "w") as f:
        json.dump(events, f)
    distributed.cleanup()
"""


def test_two_ranks_train_like_one_and_resume_together(data_dir: Path, tmp_path: Path) -> None:
    common = dict(data=[str(data_dir)], model=TINY, crop=8, samples=16, batch_size=4, steps=6,
                  lr=1e-3, lr_schedule="cosine", val_every=0, workers=1, seed=3, device="cpu",
                  amp="off")

    # One process, global batch 4: the reference, with a copy of its weights at step 3.
    one = tmp_path / "one"
    at3 = tmp_path / "one_step3.pth"

    def keep_step3(ev: train.TrainEvent) -> None:
        if ev.kind == "checkpoint" and ev.step == 3:
            shutil.copy(one / "last.pth", at3)

    run_training(TrainConfig(out=str(one), checkpoint_every=3, **common), keep_step3)

    # Two ranks, 2 crops each, from scratch; SIGTERM reaches rank 1 only, during step 3.
    two = tmp_path / "two"
    script = write_script(tmp_path, "ddp.py", DDP_SCRIPT)
    proc = torchrun(script, json.dumps({**common, "out": str(two), "checkpoint_every": 100}),
                    tmp_path, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ev0, ev1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    for events in (ev0, ev1):
        assert "does not split evenly over 2 ranks" in events[0][1]
        assert events[-1] == ["result", 3, True]  # both stopped after the same step
    assert len(ev1) == 2  # progress is reported on rank 0 only
    start = next(e for e in ev0 if e[0] == "start")
    assert "batch 4 = 2 ranks x 2" in start[2]
    assert [e[1] for e in ev0 if e[0] == "step"] == [1, 2, 3]
    assert any(e[0] == "interrupted" and "another rank's signal" in e[2] for e in ev0)
    assert sorted(p.name for p in two.iterdir()) == ["config.json", "last.pth"]
    assert checkpoint.load(two / "last.pth").extra["train_state"]["step"] == 3
    assert_same_weights(weights_of(at3), weights_of(two / "last.pth"))
    meta = checkpoint.load(two / "last.pth").metadata
    assert (meta["batch_size"], meta["ranks"], meta["batch_per_rank"]) == (4, 2, 2)

    # `liif train --resume` under torchrun: both ranks load last.pth and finish steps 4-6.
    proc = torchrun("-m", "liif_cli", "train", "--data", data_dir, "--out", two, "--resume",
                    "--device", "cpu", "--workers", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    log = " ".join(proc.stderr.split())
    assert log.count("batch 4 = 2 ranks x 2") == 1 and log.count("finished 6 steps") == 1
    assert checkpoint.load(two / "last.pth").extra["train_state"]["step"] == 6
    assert_same_weights(weights_of(one / "last.pth"), weights_of(two / "last.pth"))


AMP_SCRIPT = """
    import json, sys
    from liif_cli import distributed, train
    from liif_cli.train import loop

    distributed.init_from_env("cpu")
    loop.cpu_has_fast_bf16 = lambda: distributed.rank() == 0  # only rank 0's CPU has bf16
    train.run_training(train.TrainConfig(**json.loads(sys.argv[1])))
"""


BARRIER_SCRIPT = """
    import sys, time
    from pathlib import Path
    from liif_cli import distributed

    marker = Path(sys.argv[1])
    distributed.init_from_env("cpu")
    if distributed.rank() == 0:
        time.sleep(0.5)  # rank 1 reaches the barrier first and must wait
        marker.write_text("rank 0 was here")
    distributed.barrier()
    assert marker.exists(), f"rank {distributed.rank()} left the barrier before rank 0"
    distributed.cleanup()
"""


def test_barrier_waits_for_every_rank(tmp_path: Path) -> None:
    script = write_script(tmp_path, "barrier.py", BARRIER_SCRIPT)
    proc = torchrun(script, tmp_path / "marker", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ranks_agree_on_amp_auto(data_dir: Path, tmp_path: Path) -> None:
    script = write_script(tmp_path, "amp.py", AMP_SCRIPT)
    out = tmp_path / "run"
    cfg = dict(data=[str(data_dir)], out=str(out), model=TINY, crop=8, samples=16, batch_size=2,
               steps=1, val_every=0, workers=1, device="cpu", amp="auto")
    proc = torchrun(script, json.dumps(cfg), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Rank 1 would have chosen float32: both train in float32, and the run records that.
    assert checkpoint.load(out / "last.pth").metadata["amp"] == "off"


RESIZE_SCRIPT = """
    import os, signal, sys
    from liif_cli import batch, cli

    # torchrun stops the other ranks (SIGTERM) as soon as one exits non-zero; here both exit 1
    # on purpose, so let the slower one finish and report its own code.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

    real_run_job = batch.run_job

    def logged(upscaler, job, *args, **kwargs):  # which rank wrote which file
        with open(os.path.join(os.environ["JOB_LOG"], f"rank{os.environ['RANK']}.txt"),
                  "a") as f:
            f.write(f"{job.target.name}\\n")
        return real_run_job(upscaler, job, *args, **kwargs)

    batch.run_job = logged
    sys.argv = ["liif", *sys.argv[1:]]
    try:
        cli.main()
    except SystemExit as stop:  # each rank's own exit code (torchrun may stop a slower rank)
        with open(os.path.join(os.environ["JOB_LOG"], f"exit{os.environ['RANK']}.txt"),
                  "w") as f:
            f.write(str(stop.code))
        raise
"""


def test_two_rank_resize_writes_each_file_once_and_bit_for_bit(tiny_weights: Path,
                                                               tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    rng = np.random.default_rng(5)
    names = [f"im{i}.png" for i in range(5)] + ["sub/deep.png"]
    for i, name in enumerate(names):
        pixels = rng.integers(0, 256, (8 + i, 10, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(src / name)
    (src / "broken.png").write_bytes(b"not an image")
    args = ["resize", src, "--size", "24x24", "-o", None, "-w", tiny_weights, "-r", "-q",
            "--device", "cpu"]  # two CPU ranks (a GPU machine may have one GPU)

    def with_output(out: Path) -> list[str]:
        return [str(out if a is None else a) for a in args]

    # One process, one thread (as each rank): the reference, and the exit-code rule.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = CliRunner().invoke(app, with_output(tmp_path / "one"))
    finally:
        torch.set_num_threads(threads)
    assert single.exit_code == 1, single.output  # one broken file: 1
    assert "resized 6, skipped 0 existing, failed 1 (of 7 images)" in " ".join(
        single.output.split())

    two = tmp_path / "two"
    two.mkdir()
    shutil.copy(tmp_path / "one" / "im0.png", two / "im0.png")  # already done: skipped
    logs = tmp_path / "logs"
    logs.mkdir()
    script = write_script(tmp_path, "resize.py", RESIZE_SCRIPT)
    proc = torchrun(script, *with_output(two), cwd=tmp_path, extra_env={"JOB_LOG": str(logs)})
    text = " ".join(proc.stderr.split())
    assert proc.returncode != 0 and "exitcode : 1" in text, proc.stderr
    assert [(logs / f"exit{r}.txt").read_text() for r in (0, 1)] == ["1", "1"]  # both ranks
    assert text.count("resized 5, skipped 1 existing, failed 1 (of 7 images)") == 1
    assert text.count("on 2 ranks") == 1 and text.count("broken.png") == 1

    done = [(logs / f"rank{r}.txt").read_text().split() for r in (0, 1)]
    assert all(done) and not set(done[0]) & set(done[1])  # both worked, never on one file
    assert sorted(done[0] + done[1]) == sorted(["im1.png", "im2.png", "im3.png", "im4.png",
                                                "deep.png", "broken.png"])
    assert sorted(p.relative_to(two).as_posix() for p in two.rglob("*") if p.is_file()) == \
        sorted(names)  # no temporary files left behind
    for name in names:
        assert (two / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name
