"""An image's voxels streamed in bounded z-slabs, never the whole array at once.

NIfTI bytes are read straight from the file after its header (through :mod:`zlib` for
``.nii.gz``, so a stream that ends early tells how many bytes it held); other formats go through
SimpleITK's region reading (ITK streams the slab alone where the format allows it: MHA, raw
NRRD). Memory stays within a few times :data:`SLAB_BYTES` whatever the file's size.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np
import SimpleITK as sitk

from mripipe.data.header import Header

#: stored bytes per slab (whole z-slices; one slice when a slice alone is larger)
SLAB_BYTES = 8 << 20
_BLOCK = 1 << 20


class TruncatedError(Exception):
    """The voxel data ended before the header's promise (``present`` of ``promised`` bytes)."""

    def __init__(self, present: int, promised: int) -> None:
        super().__init__(f"{present} of {promised} bytes")
        self.present = present
        self.promised = promised


def _plain_blocks(fh: BinaryIO) -> Iterator[bytes]:
    while block := fh.read(_BLOCK):
        yield block


def _gzip_blocks(fh: BinaryIO) -> Iterator[bytes]:
    """The decompressed bytes of a gzip file, at most ``_BLOCK`` at a time (members concatenated).
    Ends quietly at the end of the file, complete or not; a corrupt stream raises ``zlib.error``."""
    inflate = zlib.decompressobj(zlib.MAX_WBITS | 16)
    pending = b""
    while True:
        if not pending:
            pending = fh.read(_BLOCK)
            if not pending:
                return
        out = inflate.decompress(pending, _BLOCK)
        pending = inflate.unconsumed_tail
        if inflate.eof:  # the next gzip member, if any
            pending = inflate.unused_data
            inflate = zlib.decompressobj(zlib.MAX_WBITS | 16)
        if out:
            yield out


class _Bytes:
    """Exact-length reads from a stream of blocks; ``count``: bytes handed out so far."""

    def __init__(self, blocks: Iterator[bytes]) -> None:
        self._blocks = blocks
        self._parts: list[bytes | memoryview] = []
        self._held = 0
        self.count = 0

    def take(self, n: int) -> memoryview:
        """The next ``n`` bytes; :class:`EOFError` when fewer remain."""
        while self._held < n:
            block = next(self._blocks, None)
            if block is None:
                raise EOFError(self.count + self._held)
            self._parts.append(block)
            self._held += len(block)
        joined = memoryview(b"".join(self._parts))
        self._parts = [joined[n:]] if self._held > n else []
        self._held -= n
        self.count += n
        return joined[:n]

    def drain(self) -> int:
        """Read to the end; the total number of bytes the stream held."""
        total = self.count + self._held
        self._parts, self._held = [], 0
        for block in self._blocks:
            total += len(block)
        return total


def _plan(header: Header, slab_bytes: int) -> list[tuple[int, int, int]]:
    """(volume, first z, number of z-slices) of every slab, in file order."""
    x, y, z = header.shape
    per_slice = max(1, x * y * header.dtype.itemsize)
    nz = max(1, min(z, slab_bytes // per_slice))
    return [(v, z0, min(nz, z - z0)) for v in range(header.volumes) for z0 in range(0, z, nz)]


def _scaled(arr: np.ndarray, scaling: tuple[float, float] | None) -> np.ndarray:
    if scaling is None:
        return arr
    out: np.ndarray = arr.astype(np.float64 if arr.dtype == np.float64 else np.float32)
    out *= scaling[0]
    out += scaling[1]
    return out


def _nifti_slabs(header: Header, plan: list[tuple[int, int, int]]) -> Iterator[tuple[int, int, np.ndarray]]:
    x, y, _ = header.shape
    with open(header.path, "rb") as fh:
        stream = _Bytes(_gzip_blocks(fh) if header.compressed else _plain_blocks(fh))
        try:
            stream.take(header.offset)  # the header and its extensions
            for v, z0, n in plan:
                raw = stream.take(x * y * n * header.dtype.itemsize)
                yield v, z0, _scaled(np.frombuffer(raw, header.dtype).reshape((x, y, n), order="F"), header.scaling)
        except EOFError:
            raise TruncatedError(max(0, stream.drain() - header.offset), header.data_bytes) from None


def _itk_slabs(header: Header, plan: list[tuple[int, int, int]]) -> Iterator[tuple[int, int, np.ndarray]]:
    x, y, _ = header.shape
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(header.path))
    reader.ReadImageInformation()
    ndim = reader.GetDimension()
    for v, z0, n in plan:
        reader.SetExtractIndex([0, 0, z0, v, 0, 0][:ndim])
        reader.SetExtractSize([x, y, n, 1, 1, 1][:ndim])
        arr = sitk.GetArrayFromImage(reader.Execute())  # (..., n, Y, X)
        yield v, z0, arr.reshape(n, y, x).transpose(2, 1, 0)


def slabs(header: Header, slab_bytes: int = SLAB_BYTES) -> Iterator[tuple[int, int, np.ndarray]]:
    """Every slab of ``header``'s file, in file order: (volume, first z index, values (X, Y, nz)).

    Values are scaled by the NIfTI slope and intercept when the header sets them.

    Raises:
        TruncatedError: the voxel data ends early (an uncompressed file is caught by its header).
        zlib.error, OSError, RuntimeError: a corrupt or unreadable file.
    """
    plan = _plan(header, slab_bytes)
    return _nifti_slabs(header, plan) if header.nifti else _itk_slabs(header, plan)
