"""Tests of circus.util.template: $(circus.KEY), ((circus.KEY)), $WID and $VAR."""

from __future__ import annotations

import pytest

from circus.util.template import env_values, expand, expand_env_vars, expand_wid

VALUES: dict[str, object] = {
    "wid": 3,
    "env.path": "/bin:/usr/bin",
    "sockets.web": 5,
    "rlimits.nofile": 1024,
    "my-key.x_1": "dash",
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(circus.wid)", "3"),
        ("((circus.wid))", "3"),
        ("--fd $(circus.sockets.web) --n ((circus.wid))", "--fd 5 --n 3"),
        ("$(circus.env.path)", "/bin:/usr/bin"),
        ("$(circus.rlimits.nofile)", "1024"),
        ("$(circus.my-key.x_1)", "dash"),
        ("a$(circus.wid)b$(circus.wid)c", "a3b3c"),
    ],
)
def test_expand_known_keys(text: str, expected: str) -> None:
    assert expand(text, VALUES) == expected


@pytest.mark.parametrize(
    "text",
    ["$(CIRCUS.WID)", "$(Circus.Wid)", "((CIRCUS.wid))", "$(circus.WID)"],
)
def test_expand_ignores_case_of_placeholder(text: str) -> None:
    assert expand(text, VALUES) == "3"


def test_expand_env_key_is_lowercased() -> None:
    assert expand("$(circus.env.PATH)", VALUES) == "/bin:/usr/bin"


@pytest.mark.parametrize(
    "text",
    [
        "$(circus.nope)",
        "((circus.env.unset))",
        "$(circus.sockets.other)",
        "$(circus.)",
        "$(other.wid)",
        "$(circus.wid",
        "(circus.wid)",
        "$(circus.w d)",
    ],
)
def test_expand_leaves_unknown_or_malformed_verbatim(text: str) -> None:
    assert expand(text, VALUES) == text


def test_expand_uses_str_of_value() -> None:
    assert expand("$(circus.flag) $(circus.none)", {"flag": True, "none": None}) == "True None"


def test_expand_fast_path_returns_same_object() -> None:
    text = "python -m app --workers 4"
    assert expand(text, VALUES) is text


def test_expand_does_not_recurse() -> None:
    values = {"a": "$(circus.b)", "b": "x"}
    assert expand("$(circus.a)", values) == "$(circus.b)"


def test_bug_2_wid_is_substituted() -> None:
    assert expand_wid("myprogram.py $WID", 7) == "myprogram.py 7"
    assert expand_wid("--id=$WID,$WID", 2) == "--id=2,2"


def test_expand_wid_only_whole_name() -> None:
    assert expand_wid("$WIDTH $WID_X $WID.", 4) == "$WIDTH $WID_X 4."
    assert expand_wid("$wid", 4) == "$wid"


def test_expand_wid_fast_path() -> None:
    text = "no placeholder"
    assert expand_wid(text, 1) is text


def test_expand_env_vars() -> None:
    environ = {"HOME": "/root", "A_1": "x", "PATH": "/bin"}
    assert expand_env_vars("$HOME/bin:$PATH", environ) == "/root/bin:/bin"
    assert expand_env_vars("v$A_1.", environ) == "vx."


def test_expand_env_vars_unset_is_empty() -> None:
    assert expand_env_vars("a$NOT_SET_ANYWHERE-b", {}) == "a-b"


@pytest.mark.parametrize("text", ["${HOME}", "$home", "$Home", "$HOMEdir", "$1", "$", "cost: 5$"])
def test_expand_env_vars_leaves_other_forms(text: str) -> None:
    assert expand_env_vars(text, {"HOME": "/root", "H": "x"}) == text


def test_expand_env_vars_fast_path() -> None:
    text = "plain"
    assert expand_env_vars(text, {"X": "1"}) is text


def test_env_values_lowercases_names() -> None:
    assert env_values({"PATH": "/bin", "Mixed": "m"}) == {"env.path": "/bin", "env.mixed": "m"}
    assert env_values({"X": "1"}, prefix="") == {"x": "1"}
