"""FileWatch: a watched file's content changes, as the replicas see them."""

from __future__ import annotations

from tiergate.serving.filewatch import FileWatch


def test_file_watch_reports_a_content_change_once_and_ignores_a_missing_file(tmp_path):
    """changed() is true once after the content changes (not for a rewrite of the same bytes),
    and false while the file is missing."""
    path = tmp_path / "keys.yaml"
    path.write_text("keys: [a]")
    watch = FileWatch(path)
    assert not watch.changed()
    path.write_text("keys: [a]")
    assert not watch.changed()
    path.write_text("keys: [b]")
    assert watch.changed() and not watch.changed()
    path.unlink()
    assert not watch.changed()
    path.write_text("keys: [c]")
    assert watch.changed()
