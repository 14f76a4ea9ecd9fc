import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.media.storage import LocalMediaStore


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_put_writes_dated_task_path_with_size_and_sha(tmp_path: Path) -> None:
    store = LocalMediaStore(tmp_path / "media")
    data = b"\x89PNG fake bytes"
    blob = store.put(task_id="task_abc", position=0, data=data, extension="png")
    today = datetime.now(UTC)
    assert blob.path == f"{today:%Y/%m/%d}/task_abc/0.png"
    assert blob.size_bytes == len(data)
    assert blob.sha256 == hashlib.sha256(data).hexdigest()
    assert store.absolute(blob.path).read_bytes() == data
    assert store.absolute(blob.path) == (tmp_path / "media" / blob.path).resolve()


def test_put_replaces_atomically_and_leaves_no_temp_files(tmp_path: Path) -> None:
    store = LocalMediaStore(tmp_path)
    first = store.put(task_id="task_abc", position=1, data=b"old", extension="mp4")
    second = store.put(task_id="task_abc", position=1, data=b"newer", extension="mp4")
    assert first.path == second.path
    assert store.absolute(second.path).read_bytes() == b"newer"
    assert _files(tmp_path) == [second.path]  # no `.1.mp4.*.tmp` left behind


def test_failed_write_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalMediaStore(tmp_path)

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("app.media.storage.os.replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        store.put(task_id="task_abc", position=0, data=b"x", extension="png")
    assert _files(tmp_path) == []


@pytest.mark.parametrize(
    ("task_id", "position", "extension"),
    [("../etc", 0, "png"), ("task/x", 0, "png"), (".hidden", 0, "png"),
     ("task_a", -1, "png"), ("task_a", 0, "p/g"), ("task_a", 0, "")],
)  # fmt: skip
def test_put_refuses_unsafe_components(
    tmp_path: Path, task_id: str, position: int, extension: str
) -> None:
    with pytest.raises(ValueError):
        LocalMediaStore(tmp_path).put(
            task_id=task_id, position=position, data=b"x", extension=extension
        )


@pytest.mark.parametrize(
    "path", ["../outside.png", "2026/../../outside.png", "/etc/passwd", "", ".", "a\\..\\b"]
)
def test_absolute_refuses_paths_escaping_the_root(tmp_path: Path, path: str) -> None:
    with pytest.raises(ValueError):
        LocalMediaStore(tmp_path / "media").absolute(path)


def test_absolute_refuses_symlinks_out_of_the_root(tmp_path: Path) -> None:
    root = tmp_path / "media"
    root.mkdir()
    (tmp_path / "secret.txt").write_text("x")
    (root / "link.png").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(ValueError):
        LocalMediaStore(root).absolute("link.png")


def test_delete_task_removes_files_and_empty_directories_only(tmp_path: Path) -> None:
    store = LocalMediaStore(tmp_path)
    a0 = store.put(task_id="task_a", position=0, data=b"a0", extension="png")
    a1 = store.put(task_id="task_a", position=1, data=b"a1", extension="png")
    b0 = store.put(task_id="task_b", position=0, data=b"b0", extension="png")
    stale = store.absolute(a0.path).parent / ".0.png.abc123.tmp"
    stale.write_bytes(b"half")

    store.delete_task("task_a", [a0.path, a1.path])
    assert _files(tmp_path) == [b0.path]
    assert not store.absolute(a0.path).parent.exists()

    store.delete_task("task_a", [a0.path, a1.path])  # repeating is harmless
    store.delete_task("task_b", [b0.path])
    assert list(tmp_path.iterdir()) == []  # date directories pruned, root kept


def test_delete_task_refuses_another_tasks_files(tmp_path: Path) -> None:
    store = LocalMediaStore(tmp_path)
    a0 = store.put(task_id="task_a", position=0, data=b"a0", extension="png")
    b0 = store.put(task_id="task_b", position=0, data=b"b0", extension="png")
    with pytest.raises(ValueError):
        store.delete_task("task_a", [a0.path, b0.path])
    assert _files(tmp_path) == sorted([a0.path, b0.path])  # nothing deleted
    with pytest.raises(ValueError):
        store.delete_task("task_a", ["../../x"])
