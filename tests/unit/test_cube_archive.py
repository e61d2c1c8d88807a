import json
import zipfile
from pathlib import Path

import pytest

from memos_agents import MemOS
from memos_agents.config import PRESET_OFFLINE
from memos_agents.cube import (
    ARCHIVE_FORMAT_VERSION,
    ActivationPayload,
    CubeHeader,
    MemCube,
    ParametricPayload,
    read_archive,
    write_archive,
)
from memos_agents.errors import CubeExistsError, CubeFormatError, PermissionDeniedError
from memos_agents.schema import MemoryItem

pytestmark = pytest.mark.unit


@pytest.fixture
def mos(tmp_path: Path):
    with MemOS.from_path(tmp_path / "home", **PRESET_OFFLINE) as m:
        m.create_cube("src", "alice", description="notes")
        m.add(
            [
                {"name": "Alice", "content": "I adopted a cat named Pixel.", "id": "m1", "session_id": "s1"},
                {"name": "Bob", "content": "Pixel is a lovely name!", "id": "m2", "session_id": "s1"},
                {"name": "Alice", "content": "I adopted a cat named Pixel.", "id": "m3", "session_id": "s2"},
            ],
            "alice",
            "src",
        )
        yield m


def test_export_import_roundtrip_is_exact(mos: MemOS, tmp_path: Path) -> None:
    path = mos.export_cube("src", "alice", tmp_path / "src.zip")
    header = mos.import_cube(path, "alice", cube_id="copy")
    assert header.cube_id == "copy"
    src_items = {i.id: i for i in mos.store.list_items("src", with_embeddings=True)}
    copy_items = {i.id: i for i in mos.store.list_items("copy", with_embeddings=True)}
    assert src_items.keys() == copy_items.keys() and len(src_items) >= 4
    for key, item in src_items.items():
        assert copy_items[key].model_dump(exclude={"cube_id"}) == item.model_dump(exclude={"cube_id"})
    edge_key = lambda e: (e.source_id, e.target_id, e.type, e.weight, e.created_at)  # noqa: E731
    assert sorted(map(edge_key, mos.store.get_edges("src"))) == sorted(map(edge_key, mos.store.get_edges("copy")))
    assert mos.search("cat Pixel", "alice", ["copy"])[0].item.id == mos.search("cat Pixel", "alice", ["src"])[0].item.id


def test_import_refuses_existing_cube_and_foreign_owner(mos: MemOS, tmp_path: Path) -> None:
    path = mos.export_cube("src", "alice", tmp_path / "src.zip")
    with pytest.raises(CubeExistsError):
        mos.import_cube(path, "alice")
    with pytest.raises(CubeExistsError):  # never merged into or replaced, whoever asks
        mos.import_cube(path, "mallory")
    with pytest.raises(PermissionDeniedError):
        mos.get_cube("src", "mallory")


def _rewrite_manifest(path: Path, target: Path, **changes: object) -> Path:
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    manifest = json.loads(members["manifest.json"])
    manifest.update(changes)
    members["manifest.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(target, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return target


def test_newer_unknown_and_corrupt_archives_are_refused(mos: MemOS, tmp_path: Path) -> None:
    path = mos.export_cube("src", "alice", tmp_path / "src.zip")
    newer = _rewrite_manifest(path, tmp_path / "newer.zip", format_version=ARCHIVE_FORMAT_VERSION + 1)
    with pytest.raises(CubeFormatError, match="newer"):
        mos.import_cube(newer, "alice", cube_id="x1")
    with pytest.raises(CubeFormatError):
        read_archive(_rewrite_manifest(path, tmp_path / "fmt.zip", format="something-else"))
    with pytest.raises(CubeFormatError):
        read_archive(_rewrite_manifest(path, tmp_path / "ver.zip", format_version="one"))
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    members["items.jsonl"] = members["items.jsonl"].replace(b"Pixel", b"Pixie")
    with zipfile.ZipFile(tmp_path / "tampered.zip", "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    with pytest.raises(CubeFormatError, match="checksum"):
        read_archive(tmp_path / "tampered.zip")
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(CubeFormatError):
        read_archive(tmp_path / "junk.zip")
    assert [h.cube_id for h in mos.list_cubes("alice")] == ["src"]


def test_archives_of_derived_payloads_are_refused(tmp_path: Path) -> None:
    """KV-cache and LoRA cubes are made here from their sources by their owner, never imported."""
    for payload in (ActivationPayload(model_name_or_path="smollm2"), ParametricPayload(base_model="smollm2")):
        header = CubeHeader(cube_id="kv", owner_id="alice", payload=payload)
        cube = MemCube(header=header, items=[MemoryItem(text="hot memory")])
        path = write_archive(tmp_path / f"{payload.type}.zip", cube)
        with pytest.raises(CubeFormatError, match="plaintext"):
            read_archive(path)


def test_header_tampering_and_bad_manifest_fields_are_refused(mos: MemOS, tmp_path: Path) -> None:
    path = mos.export_cube("src", "alice", tmp_path / "src.zip")
    with zipfile.ZipFile(path) as zf:
        manifest = json.loads(zf.read("manifest.json"))
    manifest["header"]["owner_id"] = "mallory"
    with pytest.raises(CubeFormatError, match="header"):
        read_archive(_rewrite_manifest(path, tmp_path / "owner.zip", header=manifest["header"]))
    with pytest.raises(CubeFormatError):
        read_archive(_rewrite_manifest(path, tmp_path / "sums.zip", sha256="nope"))
