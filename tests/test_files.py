"""Tests for liif_cli.files: temporary files, and cleaning up after runs killed mid-write."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from liif_cli import files
from liif_cli.cli import app

pytestmark = pytest.mark.skipif(os.name != "posix", reason="process probing is POSIX-only")

# A process that starts writing through liif, then is killed with SIGKILL (kill -9), which
# no cleanup handler can catch.
KILLED_MID_WRITE = """
import os, signal, sys
from pathlib import Path
from liif_cli.files import create_temp
fd, temp = create_temp(Path(sys.argv[1]) / "out.png")
os.write(fd, b"half an image")
print(temp.name, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def killed_temp(folder: Path) -> Path:
    """The temporary file a `kill -9`ed writer left in `folder`."""
    proc = subprocess.run([sys.executable, "-c", KILLED_MID_WRITE, str(folder)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    temp = folder / proc.stdout.strip()
    assert temp.is_file() and temp.name.startswith(".liif-")
    return temp


def test_temp_name_records_the_process(tmp_path):
    fd, temp = files.create_temp(tmp_path / "x.png")
    os.close(fd)
    assert temp.name.startswith(f".liif-{os.getpid()}-") and temp.suffix == ".png"


def test_temps_of_dead_processes_are_removed_and_live_ones_kept(tmp_path):
    dead = killed_temp(tmp_path)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / dead.name.replace(dead.name.split("-")[1], str(sleeper.pid), 1)
        live.write_bytes(b"a live run's unfinished file")
        mine_fd, mine = files.create_temp(tmp_path / "y.png")  # sweeps the folder first
        os.close(mine_fd)
        assert not dead.exists()
        assert live.exists() and mine.exists()
        other_host = tmp_path / ".liif-1-00000000-0123456789abcdef.png"
        other_host.write_bytes(b"")  # written over a shared disk by another machine
        stranger = tmp_path / ".liif-notes.txt"
        stranger.write_bytes(b"")
        assert files.remove_stale_temps(tmp_path, again=True) == []
        assert other_host.exists() and stranger.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_later_resize_cleans_up_after_a_killed_one(tmp_path, tiny_weights):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(src / "a.png")
    args = ["resize", str(src), "--size", "16x16", "-o", str(out), "-w", str(tiny_weights)]
    for _ in range(2):  # the second time there is nothing to write, but still to clean
        dead = killed_temp(out)
        files._swept.clear()  # as in a new process
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        assert sorted(p.name for p in out.iterdir()) == ["a.png"]
        assert not dead.exists()


def test_a_training_run_cleans_up_after_a_killed_one(tmp_path):
    from liif_cli.train.run_files import prepare_run_dir

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    dead = killed_temp(run_dir)
    files._swept.clear()
    prepare_run_dir(run_dir)  # what `liif train` and `liif train --resume` do first
    assert not dead.exists()


def dead_pid() -> int:
    """The id of a process that has just exited."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_claims_are_exclusive_released_and_taken_over_from_dead_runs(tmp_path):
    target = tmp_path / "a.png"
    assert files.claim(target)
    path = files.claim_path(target)
    assert path.name == ".a.png.liif-claim" and path.read_text().split()[0] == str(os.getpid())
    assert not files.claim(target)  # held (here by this very process): not again
    files.release(target)
    assert not path.exists()

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        path.write_text(f"{sleeper.pid} {files._HOST}\n")  # a live run's claim
        assert not files.claim(target)
        files.release(target)  # never removes another run's claim
        assert path.exists()
        path.write_text(f"{dead_pid()} {files._HOST}\n")  # left by a run killed with -9
        assert files.claim(target) and path.read_text().split()[0] == str(os.getpid())
        files.release(target)
        path.write_text(f"{dead_pid()} 00000000\n")  # another machine's: cannot tell
        assert not files.claim(target)
        stale = tmp_path / ".b.png.liif-claim"
        stale.write_text(f"{dead_pid()} {files._HOST}\n")
        assert files.remove_stale_temps(tmp_path, again=True) == [stale]
        assert path.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def run_resize(*args):
    result = CliRunner().invoke(app, ["resize", *map(str, args)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def test_resize_skips_outputs_another_live_run_has_claimed(tmp_path, tiny_weights):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(src / name)
    out.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        files.claim_path(out / "a.png").write_text(f"{sleeper.pid} {files._HOST}\n")
        result = run_resize(src, "--size", "16x16", "-o", out, "-w", tiny_weights)
        # Its output is still missing when this run ends: not done, and it says which.
        assert result.exit_code == 1, result.output
        text = " ".join(result.output.split())
        assert "resized 1, skipped 0 existing, 1 being written by another run" in text
        assert "error: 1 output not written: another run holds its claim" in text
        assert text.endswith(f"{out / 'a.png'}")
        assert not (out / "a.png").exists() and (out / "b.png").exists()
        assert files.claim_path(out / "a.png").exists()  # the other run's, untouched
        assert not files.claim_path(out / "b.png").exists()  # ours, released
    finally:
        sleeper.kill()
        sleeper.wait()
    # That run died without finishing: the next one takes its claim over.
    result = run_resize(src, "--size", "16x16", "-o", out, "-w", tiny_weights)
    assert result.exit_code == 0, result.output
    assert "resized 1, skipped 1 existing" in " ".join(result.output.split())
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]


def test_resize_output_written_meanwhile_by_another_run_counts_as_done(
        tmp_path, tiny_weights, monkeypatch):
    from liif_cli import batch

    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(src / name)
    real_claim, real_write = batch.claim, batch.write_image

    def claim_after_other_run(target):  # a.png: the other run finished just before our claim
        if target.name == "a.png":
            target.write_bytes(b"the other run's a.png")
        return real_claim(target)

    def write_after_other_run(picture, path, **kw):  # b.png: it finished while we rendered
        path.write_bytes(b"the other run's b.png")
        return real_write(picture, path, **kw)

    monkeypatch.setattr(batch, "claim", claim_after_other_run)
    monkeypatch.setattr(batch, "write_image", write_after_other_run)
    result = run_resize(src, "--size", "16x16", "-o", out, "-w", tiny_weights)
    assert result.exit_code == 0, result.output
    assert "already exists" not in result.output
    assert "resized 0, skipped 2 existing, failed 0" in " ".join(result.output.split())
    assert (out / "a.png").read_bytes() == b"the other run's a.png"
    assert (out / "b.png").read_bytes() == b"the other run's b.png"
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]  # no claims left


# ------------------------------------------------------------------------ claims are leases


def test_a_claim_is_a_lease_its_run_refreshes(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "CLAIM_REFRESH_S", 0.05)
    target = tmp_path / "a.png"
    assert files.claim(target)
    path = files.claim_path(target)
    try:
        old = time.time() - 1000
        os.utime(path, (old, old))
        deadline = time.monotonic() + 10
        while path.stat().st_mtime < old + 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert path.stat().st_mtime > time.time() - 60  # touched again by the refresher
    finally:
        files.release(target)
    assert not path.exists()


def test_an_unrefreshed_claim_of_any_host_is_taken_over(tmp_path):
    target = tmp_path / "a.png"
    path = files.claim_path(target)
    path.write_text("1 00000000\n")  # another machine's (or PID namespace's) run
    assert not files.claim(target)  # fresh: its run may be working on it
    stale = time.time() - files.CLAIM_LEASE_S - 5
    os.utime(path, (stale, stale))
    assert files.claim(target) and path.read_text().split()[0] == str(os.getpid())
    files.release(target)


def test_a_claim_interrupted_before_it_is_written_leaves_nothing(tmp_path, monkeypatch):
    # Ctrl-C between creating the claim and writing its owner left an empty claim that
    # blocked the output for a minute after the run.
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    target = tmp_path / "a.png"
    with monkeypatch.context() as patch:
        patch.setattr(files.os, "fdopen", interrupted)
        with pytest.raises(KeyboardInterrupt):
            files.claim(target)
    assert not files.claim_path(target).exists()
    assert files.claim(target)  # the rerun takes it at once
    files.release(target)


def test_claims_of_names_too_long_for_their_prefix_use_a_digest(tmp_path):
    target = tmp_path / ("n" * 248 + ".png")  # 252 bytes: the claim's 265 would not fit
    path = files.claim_path(target)
    assert len(path.name) <= 255 and path.name.endswith(files.CLAIM_SUFFIX)
    assert path == files.claim_path(target) != files.claim_path(tmp_path / ("m" * 248 + ".png"))
    assert files.claim(target) and path.exists()
    files.release(target)
    assert not path.exists()


def can_unshare() -> bool:
    try:
        return subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"],
                              capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


# `liif ARGS` in a process whose model renders slowly: it prints `rendering` first (or
# `writing` once it has begun to write the output file, with `slow_write`), so a test can
# signal it mid-render or mid-write.
SLOW_LIIF = """
import sys, time
from liif_cli import api, images
which = sys.argv.pop(1)

def slow_render(self, *args, **kwargs):
    print("rendering", flush=True)
    time.sleep(60)

def slow_write(file, *args, **kwargs):
    file.write(b"half an image")
    file.flush()
    print("writing", flush=True)
    time.sleep(60)

if which == "render":
    api.Upscaler.render_into = slow_render
else:
    images._save_with_pillow = slow_write
from liif_cli.cli import main
sys.argv = ["liif", *sys.argv[1:]]
main()
"""


def start_slow_liif(which: str, *args, prefix: tuple[str, ...] = ()) -> subprocess.Popen:
    """Start SLOW_LIIF and wait until it renders (or writes)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    proc = subprocess.Popen([*prefix, sys.executable, "-c", SLOW_LIIF, which, *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()
    if line.strip() not in ("rendering", "writing"):
        proc.kill()
        raise AssertionError(f"{line!r} {proc.communicate()}")
    return proc


def hidden_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*"))


@pytest.mark.parametrize(("command", "which", "sig"), [
    ("upscale", "render", signal.SIGTERM), ("upscale", "write", signal.SIGTERM),
    ("resize", "render", signal.SIGTERM), ("resize", "write", signal.SIGHUP)])
def test_sigterm_and_sighup_stop_like_ctrl_c_and_leave_nothing(tmp_path, tiny_weights,
                                                                command, which, sig):
    """What `timeout`, `docker stop` and systemd send (SIGTERM), and a closed terminal (SIGHUP):
    the run stops, removes its temporary file and its claim, says so in one line, exits 130."""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(src / "a.png")
    args = (["upscale", src / "a.png", "-s", "2", "-o", out / "a.png"] if command == "upscale"
            else ["resize", src, "--size", "16x16", "-o", out])
    proc = start_slow_liif(which, *args, "-w", tiny_weights)
    try:
        if which == "write":
            assert any(name.startswith(files.TEMP_PREFIX) for name in hidden_files(out))
        if command == "resize":
            assert files.claim_path(out / "a.png").exists()
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines == [f"error: stopped by {signal.Signals(sig).name}; nothing half-written "
                     "was left"], stderr
    assert "Traceback" not in stderr
    assert sorted(p.name for p in out.iterdir()) == []  # no output, temp file or claim


def test_ctrl_c_exits_as_sigterm_does(tmp_path, tiny_weights):
    src = tmp_path / "a.png"
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(src)
    proc = start_slow_liif("write", "upscale", src, "-s", "2", "-w", tiny_weights)
    try:
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "error: interrupted; nothing half-written" in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


@pytest.mark.skipif(not can_unshare(), reason="needs unshare of a PID namespace (root)")
def test_a_claim_of_a_run_killed_in_another_pid_namespace_is_taken_over(tmp_path, tiny_weights):
    """A `liif resize` killed with -9 in a container: its claim names pid 1 (its namespace's),
    which is alive out here; only the lease can tell the claim is dead."""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(src / "a.png")
    proc = start_slow_liif("render", "resize", src, "--size", "16x16", "-o", out, "-w",
                           tiny_weights, prefix=("unshare", "--pid", "--fork", "--mount-proc",
                                                 "--kill-child=SIGKILL"))
    proc.kill()  # unshare, and with it (SIGKILL) the run it forked
    proc.communicate(timeout=60)
    claim = files.claim_path(out / "a.png")
    deadline = time.monotonic() + 10  # the run inside is gone once its parent is
    while time.monotonic() < deadline and claim.read_text().split()[0] != "1":
        time.sleep(0.05)
    assert claim.read_text().split()[0] == "1"  # pid 1: its own namespace's init
    args = (src, "--size", "16x16", "-o", out, "-w", tiny_weights, "--overwrite")
    held = run_resize(*args)
    assert held.exit_code == 1 and "not written: another run holds its claim" in held.output
    stale = time.time() - files.CLAIM_LEASE_S - 5  # as if CLAIM_LEASE_S had passed
    os.utime(claim, (stale, stale))
    done = run_resize(*args)
    assert done.exit_code == 0, done.output
    assert sorted(p.name for p in out.iterdir()) == ["a.png"]


def test_overwrite_never_replaces_a_pipe_or_device(tmp_path):
    """--overwrite replaces files and links, not what merely sits at the name: a FIFO here,
    /dev/null for root."""
    from liif_cli.errors import LiifError
    from liif_cli.files import write_text_atomic

    fifo = tmp_path / "results.json"
    os.mkfifo(fifo)
    with pytest.raises(LiifError, match="not a regular file"):
        write_text_atomic(fifo, "{}", overwrite=True)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]  # no temp left
    link = tmp_path / "link.json"
    link.symlink_to(tmp_path / "elsewhere.json")
    write_text_atomic(link, "{}", overwrite=True)  # the link itself is replaced
    assert not link.is_symlink() and link.read_text() == "{}"
