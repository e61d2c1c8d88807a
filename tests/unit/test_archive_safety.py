"""Cube archives are untrusted input: zip bombs, encrypted or oddly compressed members, non-finite
numbers and disk errors are refused with memos-agents errors, never raw zipfile/OS errors."""

import hashlib
import json
import math
import os
import random
import re
import struct
import time
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ConfigDict

from memos_agents import cube as cube_module
from memos_agents.cube import (
    MAX_COMPRESSION_RATIO,
    CubeHeader,
    MemCube,
    read_archive,
    write_archive,
)
from memos_agents.errors import ArchiveIOError, CubeFormatError, InvalidInputError, MemOSError
from memos_agents.schema import Edge, MemoryItem, RelationType

pytestmark = pytest.mark.unit


def _cube(n: int = 3, dim: int = 8) -> MemCube:
    rng = random.Random(n * 1000 + dim)
    items = []
    for i in range(n):
        vec = [rng.gauss(0, 1) for _ in range(dim)]
        norm = math.sqrt(sum(x * x for x in vec))
        items.append(MemoryItem(id=f"m{i}", text=f"memory number {i}", embedding=[x / norm for x in vec]))
    edges = [Edge(source_id=f"m{i}", target_id=f"m{i + 1}", type=next(iter(RelationType))) for i in range(n - 1)]
    return MemCube(header=CubeHeader(cube_id="c", owner_id="alice"), items=items, edges=edges)


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def _write_members(
    path: Path, members: dict[str, bytes], *, fix_sums: bool = True, compression: int = zipfile.ZIP_DEFLATED
) -> Path:
    """Write ``members`` as a zip, updating the manifest's checksums (and counts) to match."""
    members = dict(members)
    if fix_sums and "manifest.json" in members:
        manifest = json.loads(members["manifest.json"])
        for name in ("items.jsonl", "edges.jsonl"):
            if name in members:
                manifest["sha256"][name] = hashlib.sha256(members[name]).hexdigest()
                manifest["counts"][name.split(".")[0]] = sum(1 for line in members[name].splitlines() if line.strip())
        members["manifest.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _patch_headers(path: Path, member: str, *, flag_or: int = 0, method: int | None = None) -> None:
    """Patch the flag bits / compression method of ``member`` in its local and central headers."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
        start_dir = zf.start_dir  # type: ignore[attr-defined]
    local = info.header_offset
    assert data[local : local + 4] == b"PK\x03\x04"
    offsets = [(local + 6, local + 8)]  # local header: flags at +6, method at +8
    pos = start_dir
    while data[pos : pos + 4] == b"PK\x01\x02":
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", data, pos + 28)
        if data[pos + 46 : pos + 46 + name_len].decode() == member:
            offsets.append((pos + 8, pos + 10))  # central header: flags at +8, method at +10
        pos += 46 + name_len + extra_len + comment_len
    assert len(offsets) == 2
    for flag_at, method_at in offsets:
        struct.pack_into("<H", data, flag_at, struct.unpack_from("<H", data, flag_at)[0] | flag_or)
        if method is not None:
            struct.pack_into("<H", data, method_at, method)
    path.write_bytes(bytes(data))


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    return write_archive(tmp_path / "cube.zip", _cube())


# -- 1. zip bombs ------------------------------------------------------------------------------------


BOMB_BYTES = 200 << 20  # inflated size of the test bombs; each deflates to ~200 KB


def _bomb(path: Path, archive: Path, fill: bytes, size: int) -> Path:
    """Replace items.jsonl of ``archive`` by ``size`` bytes of ``fill``, deflated (~1000x)."""
    members = _members(archive)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("manifest.json", members["manifest.json"])
        with zf.open("items.jsonl", "w") as fh:
            block = (fill * (1 << 20))[: 1 << 20]
            for _ in range(size >> 20):
                fh.write(block)
        zf.writestr("edges.jsonl", members["edges.jsonl"])
    return path


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> Callable[[bytes], Path]:
    """Build (once per fill pattern) a ~200 KB archive whose items.jsonl inflates to 200 MB."""
    root = tmp_path_factory.mktemp("bombs")
    base = write_archive(root / "base.zip", _cube())
    cache: dict[bytes, Path] = {}

    def make(fill: bytes) -> Path:
        if fill not in cache:
            cache[fill] = _bomb(root / f"bomb{len(cache)}.zip", base, fill, BOMB_BYTES)
        return cache[fill]

    return make


def _refused_within(path: Path, match: str) -> tuple[float, int]:
    """Read ``path``, expecting a CubeFormatError; return the seconds taken and the peak memory traced."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(CubeFormatError) as info:
            read_archive(path)
        seconds, (_, peak) = time.perf_counter() - t0, tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < BOMB_BYTES // 8, f"peak {peak} bytes: the member was inflated into memory"
    assert re.search(match, str(info.value)), str(info.value)
    return seconds, peak


FILLS = pytest.mark.parametrize(
    "fill", [b"\0", b" ", b"\n", b'[1.0, "x"], '], ids=["zeros", "spaces", "newlines", "json"]
)


@FILLS
def test_zip_bomb_is_refused_quickly_and_in_little_memory(bombs: Callable[[bytes], Path], fill: bytes) -> None:
    bomb = bombs(fill)
    assert bomb.stat().st_size < 1 << 20  # a small file ...
    seconds, peak = _refused_within(bomb, "zip bomb")
    assert seconds < 5
    assert peak < BOMB_BYTES // 8  # ... never inflated into memory (the old reader took > 200 MB)


@FILLS
def test_bytes_are_counted_while_inflating_not_taken_from_the_declared_size(
    bombs: Callable[[bytes], Path], monkeypatch: pytest.MonkeyPatch, fill: bytes
) -> None:
    monkeypatch.setattr(cube_module._Budget, "check_declared", lambda *args: None)  # as if the size were forged
    seconds, peak = _refused_within(bombs(fill), "zip bomb")
    assert seconds < 5
    assert peak < BOMB_BYTES // 8


def test_bomb_with_forged_small_declared_size_is_refused(bombs: Callable[[bytes], Path], tmp_path: Path) -> None:
    source = bombs(b"\0")
    data = bytearray(source.read_bytes())
    with zipfile.ZipFile(source) as zf:
        info, start_dir = zf.getinfo("items.jsonl"), zf.start_dir  # type: ignore[attr-defined]
    # uncompressed size: +22 in the local header, +24 in the central one
    struct.pack_into("<I", data, info.header_offset + 22, 100)
    pos = start_dir
    while data[pos : pos + 4] == b"PK\x01\x02":
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", data, pos + 28)
        if data[pos + 46 : pos + 46 + name_len] == b"items.jsonl":
            struct.pack_into("<I", data, pos + 24, 100)
        pos += 46 + name_len + extra_len + comment_len
    bomb = tmp_path / "forged.zip"
    bomb.write_bytes(bytes(data))
    seconds, peak = _refused_within(bomb, "readable|checksum|zip bomb")
    assert seconds < 5 and peak < BOMB_BYTES // 8


def test_size_limits_are_keyword_arguments(archive: Path, tmp_path: Path) -> None:
    items_size = len(_members(archive)["items.jsonl"])
    assert read_archive(archive, max_member_bytes=items_size).items
    with pytest.raises(CubeFormatError, match="limit"):
        read_archive(archive, max_member_bytes=items_size - 1)
    with pytest.raises(CubeFormatError, match="limit"):
        read_archive(archive, max_total_bytes=items_size)
    with pytest.raises(CubeFormatError, match="limit"):
        read_archive(archive, max_manifest_bytes=100)
    with pytest.raises(InvalidInputError):
        read_archive(archive, max_ratio=0)


def test_ratio_cap_applies_past_the_floor(tmp_path: Path) -> None:
    text = "the same sentence, over and over. " * 200
    cube = MemCube(header=CubeHeader(cube_id="c", owner_id="alice"), items=[MemoryItem(text=text) for _ in range(1000)])
    path = write_archive(tmp_path / "dup.zip", cube)
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("items.jsonl")
    ratio = info.file_size / info.compress_size
    assert info.file_size > 1 << 20 and ratio > 10
    assert len(read_archive(path).items) == 1000  # legitimate, highly repetitive: within the default
    with pytest.raises(CubeFormatError, match="zip bomb"):
        read_archive(path, max_ratio=ratio / 2)


def test_real_exports_compress_well_below_the_ratio_cap(tmp_path: Path) -> None:
    cube = _cube(300, 384)  # 384-d random unit vectors, like MiniLM's; ~2.4 MB of JSON lines
    path = write_archive(tmp_path / "real.zip", cube)
    with zipfile.ZipFile(path) as zf:
        worst = max(i.file_size / i.compress_size for i in zf.infolist() if i.file_size > 10_000)
    assert worst < MAX_COMPRESSION_RATIO / 10
    back = read_archive(path)
    assert back.items == cube.items and back.edges == cube.edges  # records span many 1 MiB chunks


@pytest.mark.parametrize(
    "change",
    [
        {"extra.bin": b"x"},
        {"../evil.jsonl": b"x"},
        {"items.jsonl/": b""},
    ],
    ids=["extra", "traversal", "directory"],
)
def test_unexpected_members_are_refused(archive: Path, tmp_path: Path, change: dict[str, bytes]) -> None:
    path = _write_members(tmp_path / "x.zip", {**_members(archive), **change})
    with pytest.raises(CubeFormatError, match="unexpected"):
        read_archive(path)


def test_duplicate_and_missing_members_are_refused(archive: Path, tmp_path: Path) -> None:
    members = _members(archive)
    dup = tmp_path / "dup.zip"
    with pytest.warns(UserWarning), zipfile.ZipFile(dup, "w") as zf:
        for name, data in [*members.items(), ("items.jsonl", members["items.jsonl"])]:
            zf.writestr(name, data)
    with pytest.raises(CubeFormatError, match="duplicate"):
        read_archive(dup)
    del members["edges.jsonl"]
    with pytest.raises(CubeFormatError, match="lacks"):
        read_archive(_write_members(tmp_path / "missing.zip", members))


def test_blank_lines_and_a_missing_final_newline_are_tolerated(archive: Path, tmp_path: Path) -> None:
    members = _members(archive)
    members["items.jsonl"] = b"\n  \n" + members["items.jsonl"].replace(b"\n", b"\n\r\n\n", 1).rstrip(b"\n")
    back = read_archive(_write_members(tmp_path / "blank.zip", members))
    assert [i.id for i in back.items] == ["m0", "m1", "m2"]


def test_more_records_than_counted_are_refused(archive: Path, tmp_path: Path) -> None:
    members = _members(archive)
    members["items.jsonl"] += members["items.jsonl"]
    manifest = json.loads(members["manifest.json"])
    manifest["sha256"]["items.jsonl"] = hashlib.sha256(members["items.jsonl"]).hexdigest()
    members["manifest.json"] = json.dumps(manifest).encode()
    path = _write_members(tmp_path / "more.zip", members, fix_sums=False)
    with pytest.raises(CubeFormatError, match="more records"):
        read_archive(path)


# -- 2. encryption and compression methods ----------------------------------------------------------


@pytest.mark.parametrize("member", ["manifest.json", "items.jsonl"])
def test_encrypted_member_is_refused(archive: Path, member: str) -> None:
    _patch_headers(archive, member, flag_or=0x1)
    with pytest.raises(CubeFormatError, match="encrypted"):
        read_archive(archive)


@pytest.mark.parametrize("method", [99, 7])
def test_unknown_compression_method_is_refused(archive: Path, method: int) -> None:
    _patch_headers(archive, "items.jsonl", method=method)
    with pytest.raises(CubeFormatError, match="compression"):
        read_archive(archive)


def test_other_zip_compressions_are_refused(archive: Path, tmp_path: Path) -> None:
    path = _write_members(tmp_path / "lzma.zip", _members(archive), compression=zipfile.ZIP_LZMA)
    with pytest.raises(CubeFormatError, match="compression"):
        read_archive(path)
    stored = _write_members(tmp_path / "stored.zip", _members(archive), compression=zipfile.ZIP_STORED)
    assert len(read_archive(stored).items) == 3


def test_corrupt_deflate_stream_is_refused(archive: Path) -> None:
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo("items.jsonl")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start : start + 16] = b"\xff" * 16
    archive.write_bytes(bytes(data))
    with pytest.raises(CubeFormatError):
        read_archive(archive)


# -- 3. non-finite numbers -----------------------------------------------------------------------------


class _LaxItem(MemoryItem):
    model_config = ConfigDict(**{**MemoryItem.model_config, "allow_inf_nan": True})


class _LaxEdge(Edge):
    model_config = ConfigDict(**{**Edge.model_config, "allow_inf_nan": True})


@pytest.mark.parametrize("lax", [False, True], ids=["schema", "lax-schema"])
@pytest.mark.parametrize(
    ("member", "field", "literal"),
    [
        ("items.jsonl", "embedding", "NaN"),
        ("items.jsonl", "embedding", "Infinity"),
        ("items.jsonl", "embedding", "-Infinity"),
        ("items.jsonl", "embedding", "1e999"),
        ("items.jsonl", "embedding", '"nan"'),
        ("items.jsonl", "confidence", "NaN"),
        ("edges.jsonl", "weight", "NaN"),
        ("edges.jsonl", "weight", "-1e400"),
    ],
)
def test_non_finite_numbers_are_refused(
    archive: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    member: str,
    field: str,
    literal: str,
    lax: bool,
) -> None:
    if lax:  # the archive reader refuses them itself, whatever the record models allow
        monkeypatch.setattr(cube_module, "MemoryItem", _LaxItem)
        monkeypatch.setattr(cube_module, "Edge", _LaxEdge)
    members = _members(archive)
    lines = members[member].decode().splitlines()
    record = json.loads(lines[0])
    value = "[0.5, __X__, 0.25]" if field == "embedding" else "__X__"
    record[field] = "__V__"
    lines[0] = json.dumps(record).replace('"__V__"', value).replace("__X__", literal)
    members[member] = ("\n".join(lines) + "\n").encode()
    with pytest.raises(CubeFormatError, match="finite"):
        read_archive(_write_members(tmp_path / "nan.zip", members))


def test_non_finite_constant_in_manifest_is_refused(archive: Path, tmp_path: Path) -> None:
    members = _members(archive)
    manifest = json.loads(members["manifest.json"])
    manifest["header"]["priority"] = float("nan")
    members["manifest.json"] = json.dumps(manifest).encode()
    with pytest.raises(CubeFormatError):
        read_archive(_write_members(tmp_path / "nan.zip", members, fix_sums=False))


# -- 4. disk errors ------------------------------------------------------------------------------------


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_write_to_a_directory_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out.zip"
    target.mkdir()
    with pytest.raises(ArchiveIOError, match="directory") as info:
        write_archive(target, _cube())
    assert isinstance(info.value, MemOSError) and isinstance(info.value, OSError)
    assert _leftovers(tmp_path) == [] and target.is_dir() and not any(target.iterdir())


def test_write_under_a_file_raises_archive_io_error(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("not a directory")
    for target in (tmp_path / "plain" / "out.zip", tmp_path / "plain" / "sub" / "out.zip"):
        with pytest.raises(ArchiveIOError, match=r"(?i)not a directory"):
            write_archive(target, _cube())
    assert _leftovers(tmp_path) == []


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores directory permissions")
def test_write_to_an_unwritable_directory_raises_archive_io_error(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(ArchiveIOError):
            write_archive(locked / "out.zip", _cube())
    finally:
        locked.chmod(0o700)
    assert list(locked.iterdir()) == []


@pytest.mark.parametrize("step", ["mkdir", "open"])
def test_permission_denied_raises_archive_io_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str) -> None:
    """As root ignores directory modes, the denial is simulated where the OS would refuse."""

    def deny(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    if step == "mkdir":
        monkeypatch.setattr(Path, "mkdir", deny)
    else:
        monkeypatch.setattr(os, "open", deny)
    with pytest.raises(ArchiveIOError, match="Permission denied") as info:
        write_archive(tmp_path / "out.zip", _cube())
    assert info.value.errno == 13 and list(tmp_path.iterdir()) == []


def test_failed_write_removes_its_temp_file_and_keeps_the_old_archive(
    archive: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = archive.read_bytes()

    def fail(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(ArchiveIOError, match="No space left"):
        write_archive(archive, _cube(5))
    assert _leftovers(archive.parent) == [] and archive.read_bytes() == before


def test_interrupted_write_removes_its_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupt(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(zipfile.ZipFile, "writestr", interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_archive(tmp_path / "out.zip", _cube())
    assert list(tmp_path.iterdir()) == []


def test_write_replaces_an_existing_archive(archive: Path) -> None:
    write_archive(archive, _cube(5))
    assert len(read_archive(archive).items) == 5
    assert _leftovers(archive.parent) == []


def test_read_missing_file_or_directory_raises_archive_io_error(tmp_path: Path) -> None:
    with pytest.raises(ArchiveIOError, match="No such file") as info:
        read_archive(tmp_path / "absent.zip")
    assert str(info.value).startswith("[Errno 2] cannot read cube archive") and info.value.errno == 2
    with pytest.raises(ArchiveIOError, match="directory"):
        read_archive(tmp_path)
