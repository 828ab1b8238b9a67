"""Thread count for training runs on a shared 2-core CPU (imported by the recipes here).

On a shared 2-core box, 2 oneDNN threads collapse (up to 10x slower) when another process
runs; 1 thread degrades gracefully. AdaptiveThreads, a training progress callback, tries
the other thread count every few minutes and keeps the faster (speed only; it makes a run
non-bit-exact across thread counts).
"""
import os
import statistics
import time

import torch

from liif_cli.train import line_progress


def recipe_progress(write=print):
    """The recipes' progress callback: a log line a minute, and AdaptiveThreads unless
    ADAPTIVE=0 in the environment (1 thread throughout, for a run that shares the CPU with
    another run). Starts at 1 thread."""
    torch.set_num_threads(1)
    lines = line_progress(write, every_s=60)
    if os.environ.get("ADAPTIVE", "1") != "1":
        return lines
    threads = AdaptiveThreads(write)

    def progress(ev):
        lines(ev)
        threads(ev)

    return progress


class AdaptiveThreads:
    """Every `period` s, run a few steps on the other thread count; keep the faster."""

    def __init__(self, write=print, period=120.0, probe_s=8.0, min_steps=4):
        self.write, self.period, self.probe_s, self.min_steps = write, period, probe_s, min_steps
        self.threads = torch.get_num_threads()
        self.last = None
        self.run_times: list[float] = []
        self.probe_times: list[float] = []
        self.probing = False
        self.since = time.monotonic() - period + 20  # first probe after ~20 s

    def __call__(self, ev):
        if ev.kind != "step":
            self.last = None  # interval includes validation / checkpoint: ignore
            return
        now = time.perf_counter()
        dt, self.last = (None if self.last is None else now - self.last), now
        if dt is None:
            return
        if self.probing:
            self.probe_times.append(dt)
            if (len(self.probe_times) >= self.min_steps + 1
                    and sum(self.probe_times[1:]) >= self.probe_s):
                probe = statistics.median(self.probe_times[1:])
                base = statistics.median(self.run_times[-max(self.min_steps, 8):])
                other = 3 - self.threads
                if probe < base:
                    self.write(f"threads: {self.threads} ({probe:.3f} s/step) beats {other} "
                               f"({base:.3f}); now {self.threads} from step {ev.step}")
                else:
                    self.write(f"threads: {other} ({base:.3f} s/step) beats {self.threads} "
                               f"({probe:.3f}); keeping {other} at step {ev.step}")
                    torch.set_num_threads(other)
                    self.threads = other
                self.probing, self.probe_times, self.run_times = False, [], []
                self.since = time.monotonic()
        else:
            self.run_times.append(dt)
            if (time.monotonic() - self.since >= self.period
                    and len(self.run_times) >= self.min_steps):
                self.threads = 3 - self.threads
                torch.set_num_threads(self.threads)
                self.probing = True
