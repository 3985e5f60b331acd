"""Tests of mripipe.core.devices: GPU-slot allocation with file locks, on a fake device list."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mripipe.core.devices import Slot, allocate, visible_devices


def test_no_device_gives_cpu(tmp_path: Path) -> None:
    with allocate(tmp_path / "locks", devices=[]) as slot:
        assert slot == Slot("cpu", "cpu")
    assert not (tmp_path / "locks").exists()


def test_concurrent_jobs_get_distinct_devices(tmp_path: Path) -> None:
    fake = ["2", "5"]  # e.g. CUDA_VISIBLE_DEVICES=2,5: torch calls them cuda:0 and cuda:1
    with allocate(tmp_path, fake) as a, allocate(tmp_path, fake) as b:
        assert {a, b} == {Slot("cuda:0", "2"), Slot("cuda:1", "5")}
        with pytest.raises(TimeoutError, match="busy"), allocate(tmp_path, fake, timeout_s=0.2, poll_s=0.05):
            pass
    # Released on exit: the next job gets the first device again.
    with allocate(tmp_path, fake) as c:
        assert c == Slot("cuda:0", "2")


def test_waiting_job_gets_the_device_once_released(tmp_path: Path) -> None:
    script = (
        "import sys, time\n"
        "from mripipe.core.devices import allocate\n"
        "with allocate(sys.argv[1], ['0']) as s:\n"
        "    print(s.device, flush=True)\n"
        "    time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "cuda:0"
        with pytest.raises(TimeoutError), allocate(tmp_path, ["0"], timeout_s=0.2, poll_s=0.05):
            pass
        holder.kill()  # a killed job never leaks its slot: the OS drops its lock
        holder.wait()
        start = time.monotonic()
        with allocate(tmp_path, ["0"], timeout_s=10, poll_s=0.05) as slot:
            assert slot.device == "cuda:0"
        assert time.monotonic() - start < 10
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_visible_devices_matches_torch() -> None:
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    assert len(visible_devices()) == n


@pytest.mark.gpu
def test_real_gpu_allocation(tmp_path: Path) -> None:
    with allocate(tmp_path) as slot:
        x = torch.ones(4, device=slot.device)
        assert float(x.sum()) == 4.0


def test_k_trials_per_gpu_fill_every_device_before_sharing(tmp_path: Path) -> None:
    """trials_per_gpu=2 on two fake GPUs: four concurrent trials, two per device, spread first."""
    fake = ["0", "1"]
    with contextlib.ExitStack() as stack:
        slots = [stack.enter_context(allocate(tmp_path, fake, per_device=2)) for _ in range(4)]
        # breadth first: cuda:0, cuda:1 get their first trial before either gets a second
        assert [(s.device, s.slot) for s in slots] == [("cuda:0", 0), ("cuda:1", 0),
                                                       ("cuda:0", 1), ("cuda:1", 1)]
        with pytest.raises(TimeoutError, match="2 devices x 2 slots busy"), \
                allocate(tmp_path, fake, per_device=2, timeout_s=0.2, poll_s=0.05):
            pass
    # k=1 keeps one job per device (the default), on the same lock files
    with allocate(tmp_path, fake) as a, allocate(tmp_path, fake) as b:
        assert {a.device, b.device} == {"cuda:0", "cuda:1"}
        with pytest.raises(TimeoutError), allocate(tmp_path, fake, timeout_s=0.1, poll_s=0.05):
            pass
    with pytest.raises(ValueError, match="per_device"), allocate(tmp_path, fake, per_device=0):
        pass


def test_k_trials_per_gpu_across_processes(tmp_path: Path) -> None:
    """Separate processes (as Snakemake's trial jobs are) share one fake GPU k=3 ways."""
    script = (
        "import sys, time\n"
        "from mripipe.core.devices import allocate\n"
        "with allocate(sys.argv[1], ['7'], per_device=3) as s:\n"
        "    print(s.device, s.slot, flush=True)\n"
        "    time.sleep(60)\n"
    )
    procs = []
    try:
        got = set()
        for _ in range(3):
            p = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
            procs.append(p)
            assert p.stdout is not None
            got.add(p.stdout.readline().strip())
        assert got == {"cuda:0 0", "cuda:0 1", "cuda:0 2"}
        with pytest.raises(TimeoutError), allocate(tmp_path, ["7"], per_device=3, timeout_s=0.2, poll_s=0.05):
            pass
    finally:
        for p in procs:
            p.kill()
            p.wait()
