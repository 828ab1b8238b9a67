"""Tests for liif_cli.files: temporary files, and cleaning up after runs killed mid-write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
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
    from liif_cli import train

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    dead = killed_temp(run_dir)
    files._swept.clear()
    train._prepare_run_dir(run_dir)  # what `liif train` and `liif train --resume` do first
    assert not dead.exists()
