"""The artifact store: builds appear whole or not at all, damage is found, and a damaged entry is rebuilt."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kdkit.errors import CacheError
from kdkit.store import (
    ArtifactStore,
    atomic_dir,
    atomic_write_json,
    atomic_write_text,
    digest,
    seal,
    sha256_file,
    verify,
)


def siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


def write_entry(folder: Path) -> None:
    (folder / "sub").mkdir()
    (folder / "weights.bin").write_bytes(bytes(range(256)) * 4)
    (folder / "sub" / "config.json").write_text('{"layers": 2}')


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()  # reaped, so os.kill(pid, 0) finds no process
    return child.pid


def test_atomic_dir_renames_only_on_success(tmp_path):
    final = tmp_path / "entry"
    with atomic_dir(final) as tmp:
        assert tmp == tmp_path / f"entry.tmp-{os.getpid()}" and tmp.is_dir() and not final.exists()
        (tmp / "a.txt").write_text("new")
    assert (final / "a.txt").read_text() == "new"
    assert siblings(final) == ["entry"]


def test_atomic_dir_leaves_nothing_on_an_exception(tmp_path):
    final = tmp_path / "entry"
    with pytest.raises(KeyboardInterrupt), atomic_dir(final) as tmp:
        (tmp / "a.txt").write_text("half")
        raise KeyboardInterrupt
    assert siblings(final) == []


def test_an_existing_entry_survives_a_failed_rebuild_and_is_replaced_by_a_good_one(tmp_path):
    final = tmp_path / "entry"
    with atomic_dir(final) as tmp:
        (tmp / "a.txt").write_text("old")
    with pytest.raises(RuntimeError, match="killed"), atomic_dir(final) as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("killed")
    assert (final / "a.txt").read_text() == "old" and siblings(final) == ["entry"]
    with atomic_dir(final) as tmp:
        (tmp / "b.txt").write_text("new")
    assert sorted(p.name for p in final.iterdir()) == ["b.txt"]  # replaced, not merged
    assert siblings(final) == ["entry"]  # the moved-aside old version is gone


def test_leftovers_of_dead_processes_are_removed_and_live_ones_kept(tmp_path):
    final = tmp_path / "entry"
    dead = dead_pid()
    for name in (f"entry.tmp-{dead}", f"entry.old-{dead}", f"entry.tmp-{os.getppid()}", f"other.tmp-{dead}"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "partial.bin").write_bytes(b"x")
    with atomic_dir(final) as tmp:
        (tmp / "a.txt").write_text("new")
    # the parent process is alive: its build may be running; another entry's leftovers are not this build's
    assert siblings(final) == sorted(["entry", f"entry.tmp-{os.getppid()}", f"other.tmp-{dead}"])


def test_atomic_writes_replace_whole_files_and_leave_no_temporary(tmp_path):
    path = tmp_path / "deep" / "value.json"
    atomic_write_text(path, "old")
    (path.parent / f"value.json.tmp-{dead_pid()}").write_text("{")  # a crashed writer's
    atomic_write_json(path, {"a": [1, 2]})
    assert json.loads(path.read_text()) == {"a": [1, 2]}
    assert siblings(path) == ["value.json"]


@pytest.fixture
def sealed(tmp_path):
    folder = tmp_path / "entry"
    folder.mkdir()
    write_entry(folder)
    manifest = seal(folder, {"source": "test"})
    return folder, manifest


def test_seal_lists_every_file_with_size_and_sha256(sealed):
    folder, manifest = sealed
    assert manifest == json.loads((folder / "manifest.json").read_text())
    assert (manifest["format"], manifest["version"], manifest["meta"]) == ("kdkit-artifact", 1, {"source": "test"})
    assert sorted(manifest["files"]) == ["sub/config.json", "weights.bin"]
    assert manifest["files"]["weights.bin"] == {"bytes": 1024, "sha256": sha256_file(folder / "weights.bin")}
    assert verify(folder) == manifest


def test_verify_finds_a_truncated_file_even_without_hashes(sealed):
    folder, _ = sealed
    (folder / "weights.bin").write_bytes(bytes(1000))
    with pytest.raises(CacheError, match=r"weights\.bin' is truncated: 1000 of 1024 bytes"):
        verify(folder, hashes=False)


def test_verify_finds_a_same_size_corrupted_file_only_with_hashes(sealed):
    folder, _ = sealed
    raw = bytearray((folder / "sub" / "config.json").read_bytes())
    raw[3] ^= 0x01
    (folder / "sub" / "config.json").write_bytes(bytes(raw))
    assert verify(folder, hashes=False)["meta"] == {"source": "test"}
    with pytest.raises(CacheError, match=r"config\.json' is corrupt: its sha256 differs"):
        verify(folder)


def test_verify_finds_a_missing_file_and_a_missing_or_unreadable_manifest(sealed):
    folder, _ = sealed
    manifest = (folder / "manifest.json").read_text()
    (folder / "manifest.json").write_text(manifest[:40])  # a copy cut short
    with pytest.raises(CacheError, match=r"manifest '.*manifest\.json' cannot be read"):
        verify(folder)
    (folder / "manifest.json").unlink()
    with pytest.raises(CacheError, match="has no manifest.json"):
        verify(folder)
    (folder / "manifest.json").write_text(manifest)
    (folder / "sub" / "config.json").unlink()
    with pytest.raises(CacheError, match=r"config\.json' is missing"):
        verify(folder, hashes=False)


def damage_truncate(folder):
    (folder / "weights.bin").write_bytes(b"short")


def damage_flip(folder):
    raw = bytearray((folder / "weights.bin").read_bytes())
    raw[0] ^= 0xFF
    (folder / "weights.bin").write_bytes(bytes(raw))


def damage_delete(folder):
    (folder / "sub" / "config.json").unlink()


def damage_manifest(folder):
    (folder / "manifest.json").unlink()


@pytest.mark.parametrize("damage, reported", [(damage_truncate, "truncated"), (damage_flip, "corrupt"),
                                              (damage_delete, "missing"), (damage_manifest, None)])
def test_get_treats_a_damaged_entry_as_absent_and_put_rebuilds_it(tmp_path, capsys, damage, reported):
    store = ArtifactStore(tmp_path)
    built = store.put("teachers", "bert-abc123", write_entry, meta={"accuracy": 0.9})
    assert built == tmp_path / "teachers" / "bert-abc123"
    assert store.get("teachers", "bert-abc123") == built
    assert store.read_meta("teachers", "bert-abc123") == {"accuracy": 0.9}
    damage(built)
    capsys.readouterr()
    assert store.get("teachers", "bert-abc123") is None
    out = capsys.readouterr().out
    if reported:  # one line naming the problem
        assert out.count("\n") == 1 and out.startswith("[kdkit] ") and reported in out
    else:  # no manifest: an interrupted or older build, rebuilt silently
        assert out == ""
    assert store.put("teachers", "bert-abc123", write_entry, meta={"accuracy": 0.8}) == built
    assert store.get("teachers", "bert-abc123") == built
    assert store.read_meta("teachers", "bert-abc123") == {"accuracy": 0.8}
    assert siblings(built) == ["bert-abc123"]


def test_a_failed_put_keeps_the_previous_entry(tmp_path):
    store = ArtifactStore(tmp_path)
    store.put_json("evaluations", "k", {"accuracy": 0.5})

    def fail(folder):
        (folder / "value.json").write_text("{")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        store.put("evaluations", "k", fail)
    assert store.get_json("evaluations", "k") == {"accuracy": 0.5}
    assert siblings(store.path("evaluations", "k")) == ["k"]


def test_get_json_on_a_hand_edited_value_returns_none_until_recomputed(tmp_path):
    store = ArtifactStore(tmp_path)
    assert store.get_json("evaluations", "k") is None
    store.put_json("evaluations", "k", {"accuracy": 0.75, "n": 8})
    assert store.get_json("evaluations", "k") == {"accuracy": 0.75, "n": 8}
    value = store.path("evaluations", "k") / "value.json"
    value.write_text(value.read_text().replace("0.75", "0.95"))  # same size, different scores
    assert store.get_json("evaluations", "k") is None
    store.put_json("evaluations", "k", {"accuracy": 0.75, "n": 8})
    assert store.get_json("evaluations", "k") == {"accuracy": 0.75, "n": 8}


def test_root_defaults_to_the_cache_dir_read_at_call_time(tmp_path, monkeypatch):
    store = ArtifactStore()
    monkeypatch.setenv("KDKIT_CACHE", str(tmp_path / "later"))
    assert store.path("probes", "k") == tmp_path / "later" / "probes" / "k"


@pytest.mark.parametrize("key", ["", "..", "a/b", "k.tmp-12"])
def test_keys_that_are_not_plain_folder_names_are_rejected(tmp_path, key):
    with pytest.raises(ValueError, match="plain folder names"):
        ArtifactStore(tmp_path).path("probes", key)


def test_digest_ignores_dict_order_but_not_values():
    assert digest({"a": 1, "b": {"x": 1, "y": 2}}) == digest({"b": {"y": 2, "x": 1}, "a": 1})
    assert digest({"a": 1, "b": 2}) != digest({"a": 2, "b": 1})
    assert len(digest({"a": 1})) == 32 and len(digest({"a": 1}, size=8)) == 16
    assert digest({"path": Path("x")}) == digest({"path": "x"})  # non-JSON values hash as their str
