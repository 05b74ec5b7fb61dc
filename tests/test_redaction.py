"""Log redaction lives in authmw._redaction; authmw.client._base re-exports it."""

from __future__ import annotations


def test_redaction_is_importable_from_its_old_place_and_its_own_module() -> None:
    from authmw import _redaction
    from authmw.client import _base

    assert _base.redact is _redaction.redact
    assert _base.install_log_redaction is _redaction.install_log_redaction
