"""GPU-slot allocation for concurrent trial jobs.

Snakemake bounds how many trial jobs run at once (``resources: gpu=1`` with
``--resources gpu=N``) but does not say *which* GPU a job gets. Each job therefore takes an
exclusive ``fcntl`` lock on one file per device in a lock folder (e.g.
``.mripipe/gpu-locks/`` under the working directory) and holds it while it trains; the operating
system releases the lock when the process dies, so a killed job never leaks its slot.
Small trials use a fraction of a GPU: with ``per_device=k`` each device offers k slots (one lock
file each) and k jobs share it; give Snakemake ``--resources gpu=N*k``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Slot:
    """An allocated compute device.

    Attributes:
        device: ``"cuda:<index>"`` (index as torch numbers the visible devices) or ``"cpu"``.
        name: the device's name in the visible list (e.g. physical id ``"2"``), or ``"cpu"``.
        slot: which of the device's ``per_device`` slots this is (0 when one job per device).
    """

    device: str
    name: str
    slot: int = 0


def visible_devices() -> list[str]:
    """Names of the CUDA devices this process can use, in torch's index order.

    The names come from ``CUDA_VISIBLE_DEVICES`` when it is set (so jobs that see the same
    physical GPU under different indices still share one lock), else ``"0", "1", ...``.
    Empty without CUDA.
    """
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    names = [n.strip() for n in env.split(",") if n.strip()] if env else []
    if len(names) < count:
        names = [str(i) for i in range(count)]
    return names[:count]


def _try_lock(path: Path) -> IO[str] | None:
    fh = open(path, "a+")  # noqa: SIM115 - kept open while the lock is held
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        return None
    fh.seek(0)
    fh.truncate()
    fh.write(f"{os.getpid()}\n")
    fh.flush()
    return fh


@contextlib.contextmanager
def allocate(
    lock_dir: str | Path,
    devices: Sequence[str] | None = None,
    timeout_s: float | None = None,
    poll_s: float = 1.0,
    per_device: int = 1,
) -> Iterator[Slot]:
    """Hold a free device for the duration of the block.

    Args:
        lock_dir: folder for the per-device lock files (created if missing).
        devices: device names in torch index order; default :func:`visible_devices`. Tests
            pass a fake list.
        timeout_s: give up waiting for a free device after this long (``None`` = wait).
        poll_s: seconds between attempts while every device is taken.
        per_device: jobs that may share one device (``train.trials_per_gpu``): the devices
            offer ``per_device`` slots each, filled breadth first (every device's first slot
            before any second one), so k x N concurrent jobs land k per device.

    Yields:
        The allocated :class:`Slot`; ``Slot("cpu", "cpu")`` when there is no device.

    Raises:
        TimeoutError: every device stayed taken for ``timeout_s`` seconds.
    """
    names = list(visible_devices() if devices is None else devices)
    if per_device < 1:
        raise ValueError(f"per_device must be >= 1, not {per_device}")
    if not names:
        yield Slot("cpu", "cpu")
        return
    lock_dir = Path(lock_dir)
    lock_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    waited = False
    while True:
        for k, index in ((k, i) for k in range(per_device) for i in range(len(names))):
            name = names[index]
            fh = _try_lock(lock_dir / (f"gpu-{name}.lock" if k == 0 else f"gpu-{name}.slot{k}.lock"))
            if fh is None:
                continue
            log.info("allocated GPU %s (cuda:%d, slot %d of %d) under %s", name, index, k + 1,
                     per_device, lock_dir)
            try:
                yield Slot(f"cuda:{index}", name, k)
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
                fh.close()
            return
        if timeout_s is not None and time.monotonic() - start >= timeout_s:
            raise TimeoutError(f"{lock_dir}: all {len(names)} devices x {per_device} slots busy "
                               f"for {timeout_s} s")
        if not waited:
            log.info("all %d GPUs are taken; waiting for one to be released", len(names))
            waited = True
        time.sleep(poll_s)


def _deterministic(mode: bool, warn_only: bool) -> None:
    """``torch.use_deterministic_algorithms`` without its import of ``torch._inductor``.

    That import costs about 4 s in every trial process (measured: 4.4 of a rung-0 trial's 52 s
    under cProfile) and only sets the flag of ``torch.compile``'s inductor, which mripipe does not
    use. Once inductor is loaded (someone compiles), the public call sets both.
    """
    if "torch._inductor.config" in sys.modules:
        torch.use_deterministic_algorithms(mode, warn_only=warn_only)
    else:
        torch._C._set_deterministic_algorithms(mode, warn_only=warn_only)  # noqa: SLF001


@contextlib.contextmanager
def torch_settings(device: torch.device, threads: int, deterministic: bool | None = None) -> Iterator[None]:
    """CPU threads, determinism and cuDNN autotuning for one trial, all restored afterwards.

    Args:
        device: the trial's device.
        threads: torch CPU threads.
        deterministic: None = deterministic algorithms on CPU (the same seed gives a bit-identical
            history) and cuDNN autotuning on CUDA (fastest, not bit-reproducible); True = also
            deterministic on CUDA (cuDNN deterministic kernels, no autotuning, a fixed cuBLAS
            workspace; an op without a deterministic CUDA kernel warns); False = neither.
    """
    cudnn = torch.backends.cudnn
    old = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(), cudnn.benchmark,
           cudnn.deterministic, os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
           torch.is_deterministic_algorithms_warn_only_enabled())
    det = device.type == "cpu" if deterministic is None else bool(deterministic)
    torch.set_num_threads(max(1, threads))
    if det and device.type == "cuda":  # cuBLAS needs a fixed workspace to be deterministic
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # warn_only on CUDA: DiceCE's cross-entropy (nll_loss2d) has no deterministic CUDA kernel
    # (measured on an H200 with torch 2.11, bench/gpu_check.py); strict mode would stop the trial
    _deterministic(det, warn_only=det and device.type == "cuda")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        cudnn.benchmark, cudnn.deterministic = not det, det
    try:
        yield
    finally:
        torch.set_num_threads(old[0])
        _deterministic(old[1], warn_only=old[5])
        cudnn.benchmark, cudnn.deterministic = old[2], old[3]
        if old[4] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
