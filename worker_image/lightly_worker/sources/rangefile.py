"""A seekable, read-only file over ranged reads, with a small block cache (PyAV reads videos from it).

``RangeFile(fetch, block_size, max_blocks)``: ``fetch(start, end)`` returns bytes ``start..end``
inclusive of the object and its whole size (the first fetch learns the size). Reads are served from
cached blocks; a miss fetches a run of blocks in one request, the run doubling (up to ``max_span``)
while the reads go forward, so a sequential demux makes few large requests and a seek a small one.
Memory stays under ``max_blocks * block_size``, whatever the object's size.
"""

from __future__ import annotations

import io
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["RangeFile"]

Fetch = Callable[[int, int], tuple[bytes, int | None]]


class RangeFile(io.RawIOBase):
    def __init__(
        self,
        fetch: Fetch,
        *,
        block_size: int = 1 << 20,
        max_blocks: int = 32,
        max_span: int = 8,
        name: str = "",
    ) -> None:
        super().__init__()
        if block_size < 1 or max_blocks < 1:
            raise ValueError("block_size and max_blocks must be >= 1")
        self._fetch = fetch
        self.block_size = block_size
        self.max_blocks = max_blocks
        self.max_span = max(1, min(max_span, max_blocks))
        self.name = name
        self._blocks: OrderedDict[int, bytes] = OrderedDict()
        self._pos = 0
        self._size: int | None = None
        self._span = 1
        self._last_miss = -2
        self.requests = 0  # ranged reads made (for tests and benchmarks)
        self.fetched = 0  # bytes fetched

    @property
    def size(self) -> int:
        if self._size is None:
            self._load(0)
        assert self._size is not None
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise OSError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view):
            if self._pos >= self.size:
                break
            index, offset = divmod(self._pos, self.block_size)
            block = self._block(index)
            part = block[offset : offset + len(view) - done]
            if not part:
                break
            view[done : done + len(part)] = part
            done += len(part)
            self._pos += len(part)
        return done

    def _block(self, index: int) -> bytes:
        block = self._blocks.get(index)
        if block is not None:
            self._blocks.move_to_end(index)
            return block
        self._load(index)
        return self._blocks[index]

    def _load(self, index: int) -> None:
        """Fetch the blocks from ``index`` on (a run of ``_span`` blocks, longer while reads go forward)."""
        self._span = min(self.max_span, self._span * 2) if index == self._last_miss + 1 else 1
        span = self._span
        if self._size is not None:
            span = max(1, min(span, -(-self._size // self.block_size) - index))
        self._last_miss = index + span - 1
        start = index * self.block_size
        data, total = self._fetch(start, start + span * self.block_size - 1)
        self.requests += 1
        self.fetched += len(data)
        if total is not None:
            self._size = total
        elif self._size is None:
            self._size = start + len(data) if len(data) < span * self.block_size else None
            if self._size is None:
                raise OSError(f"{self.name}: the store did not say the object's size")
        for i in range(span):
            part = data[i * self.block_size : (i + 1) * self.block_size]
            if not part and i > 0:
                break
            self._blocks[index + i] = part
            self._blocks.move_to_end(index + i)
        while len(self._blocks) > self.max_blocks:
            self._blocks.popitem(last=False)
