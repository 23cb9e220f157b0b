"""Files and folders written through wsimito.outputs.atomic: all or nothing under the final name."""

import os

import pytest

from wsimito.outputs.atomic import atomic_directory, atomic_path, replace_directory, temporary_name


def test_a_file_lands_whole_and_nothing_else_is_left(tmp_path):
    target = tmp_path / "table.csv"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        tmp.write_text("new")
        assert target.read_text() == "old"  # not yet
    assert target.read_text() == "new"
    assert os.listdir(tmp_path) == ["table.csv"]


def test_a_failure_inside_the_block_keeps_the_old_file_and_removes_the_temporary_one(tmp_path):
    target = tmp_path / "table.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["table.csv"]


def test_temporary_names_are_hidden_unique_and_end_in_the_unique_part(tmp_path):
    target = tmp_path / "rcnn.pt"
    first, second = temporary_name(target), temporary_name(target)
    assert first != second and first.parent == tmp_path and first.name.startswith(".")
    # torch.save names the archive inside after the file less its last suffix: always ".rcnn.pt"
    assert first.name.rsplit(".", 1)[0] == ".rcnn.pt" == second.name.rsplit(".", 1)[0]


def test_a_folder_replaces_the_old_one_only_once_complete(tmp_path):
    target = tmp_path / "store"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with atomic_directory(target) as tmp:
        (tmp / "part").mkdir()
        (tmp / "part" / "new.txt").write_text("new")
        assert sorted(os.listdir(target)) == ["old.txt"]  # the old folder is whole while the new one fills
    assert sorted(os.listdir(target)) == ["part"] and (target / "part" / "new.txt").read_text() == "new"
    assert os.listdir(tmp_path) == ["store"]


def test_a_failure_while_filling_a_folder_keeps_the_old_one(tmp_path):
    target = tmp_path / "store"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            (tmp / "new.txt").write_text("half")
            raise RuntimeError("killed")
    assert sorted(os.listdir(target)) == ["old.txt"]
    assert os.listdir(tmp_path) == ["store"]


def test_a_failed_rename_puts_the_old_folder_back(tmp_path, monkeypatch):
    target, staged = tmp_path / "store", tmp_path / "store.partial"
    target.mkdir()
    (target / "old.txt").write_text("old")
    staged.mkdir()
    (staged / "new.txt").write_text("new")
    rename = os.rename

    def failing(source, destination):
        if os.fspath(source) == os.fspath(staged):
            raise OSError("no space")
        rename(source, destination)

    monkeypatch.setattr(os, "rename", failing)
    with pytest.raises(OSError, match="no space"):
        replace_directory(staged, target)
    assert sorted(os.listdir(target)) == ["old.txt"]
    assert sorted(os.listdir(tmp_path)) == ["store", "store.partial"]


def test_a_folder_where_there_was_none(tmp_path):
    staged = tmp_path / "new.partial"
    staged.mkdir()
    (staged / "a").write_text("a")
    assert replace_directory(staged, tmp_path / "new") == tmp_path / "new"
    assert (tmp_path / "new" / "a").read_text() == "a" and os.listdir(tmp_path) == ["new"]
