"""keys.check_changes: the one checker of option changes (set, add, reloadconfig)."""

from __future__ import annotations

from circus.keys import UNSET
from circus.watcher import Watcher


def test_any_key_taken_back_to_its_default_is_checked_as_the_default() -> None:
    w = Watcher("w", "sleep 1", max_processes=5, copy_env=True, copy_path=True)
    assert w.check_options({"max_processes": UNSET}) == {"max_processes": UNSET}
    # copy_path removed along with copy_env: the default (false) breaks no rule
    checked = w.check_options({"copy_path": UNSET, "copy_env": False})
    assert checked == {"copy_path": UNSET, "copy_env": False}


def test_a_custom_key_that_starts_like_hooks_is_not_a_hook() -> None:
    w = Watcher("w", "sleep 1", hooks_retry="3")
    assert w.check_options({"hooks_retry": "4"}) == {"hooks_retry": "4"}
