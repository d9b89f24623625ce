"""controllers/malloc.py: freed heap pages go back to the system (glibc; a no-op elsewhere)."""

from __future__ import annotations

import asyncio
import platform

import pytest

from scriptrun.controllers import malloc

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc tuning is for glibc only")


def rss_kib() -> int:
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("RssAnon:"))


@glibc
def test_trim_gives_back_the_free_pages_inside_the_heap() -> None:
    """What the operator's watch traffic does to the heap: many buffers below the mmap threshold,
    most freed, a few kept between them, so the heap cannot shrink from its top. trim() returns the
    free pages all the same."""
    blocks = [bytearray(64 * 1024) for _ in range(1600)]  # 100 MiB in the heap, every page touched
    kept = blocks[::32]
    del blocks
    before = rss_kib()
    assert malloc.trim()
    after = rss_kib()
    assert before - after > 60 * 1024, (before, after)
    assert len(kept) == 50


@glibc
def test_tune_sets_the_allocator_limits() -> None:
    assert malloc.tune()


def test_the_trimmer_trims_on_its_interval_and_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(malloc, "trim", lambda: calls.append(1) or True)

    async def scenario() -> None:
        never = malloc.Trimmer(0)
        never.start()
        trimmer = malloc.Trimmer(0.01)
        trimmer.start()
        await asyncio.sleep(0.2)
        await trimmer.close()
        await never.close()
        seen = len(calls)
        await asyncio.sleep(0.05)
        assert len(calls) == seen  # closed: no more trims

    asyncio.run(scenario())
    if malloc._LIBC is not None:
        assert len(calls) >= 3
