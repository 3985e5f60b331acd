"""Tests of mripipe.core.devices: GPU-slot allocation with file locks, on a fake device list."""

from __future__ import annotations

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
