"""meit.util.atomic: the one atomic-write helper (no half-written file, the user's umask)."""

import os
import stat

import pytest

from meit.util.atomic import atomic_file, write_json, write_text


def test_write_replaces_whole_file_with_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        write_text(tmp_path / "a.txt", "first")
        write_json(tmp_path / "a.txt", {"x": 1})
    finally:
        os.umask(old)
    path = tmp_path / "a.txt"
    assert path.read_text() == '{\n  "x": 1\n}\n'
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_failed_write_keeps_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "metrics.json"
    write_text(path, "old")
    with pytest.raises(RuntimeError), atomic_file(path) as f:
        f.write("half")
        raise RuntimeError("disk full")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
