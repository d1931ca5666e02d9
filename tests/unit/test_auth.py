"""The control token (node.auth): created once and shared, found by callers, checked on every control call."""
from __future__ import annotations

import os
import stat

import pytest

from node import auth


def test_ensure_token_creates_once_and_is_private(tmp_path):
    path = str(tmp_path / "d" / "control-token")
    t1 = auth.ensure_token(path)
    assert len(t1) >= 32 and auth.ensure_token(path) == t1
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["control-token"]  # no temp file left


def test_ensure_token_race_second_creator_adopts_the_first(tmp_path, monkeypatch):
    """Two agents start at once: both find no file; the other one links its token first. This one must
    end up with the other's token (never overwrite it, never use its own)."""
    path = str(tmp_path / "control-token")
    real_link = os.link
    other = {}

    def link_after_the_other(src, dst):
        if not other:
            other["token"] = "the-other-agents-token"
            with open(dst, "w") as f:
                f.write(other["token"] + "\n")
        return real_link(src, dst)

    monkeypatch.setattr(auth.os, "link", link_after_the_other)
    assert auth.ensure_token(path) == "the-other-agents-token"
    assert auth.read_token(path) == "the-other-agents-token"
    assert [p.name for p in tmp_path.iterdir()] == ["control-token"]


def test_resolve_token_order(tmp_path, monkeypatch):
    monkeypatch.delenv(auth.TOKEN_ENV, raising=False)
    missing = auth.resolve_token(None, str(tmp_path))
    assert missing.token is None and "not found" in missing.source and str(tmp_path) in missing.source
    auth.ensure_token(auth.token_path(str(tmp_path)))
    from_file = auth.resolve_token(None, str(tmp_path))
    assert from_file.token == auth.read_token(auth.token_path(str(tmp_path)))
    monkeypatch.setenv(auth.TOKEN_ENV, "from-env")
    assert auth.resolve_token(None, str(tmp_path)) == auth.ResolvedToken("from-env", "$BROKERLAB_CONTROL_TOKEN")
    assert auth.resolve_token("typed", str(tmp_path)).token == "typed"


@pytest.mark.parametrize("metadata, expect", [
    ((), "no control token given"),
    ((("x-src", "chaos"),), "no control token given"),
    ((("authorization", "Bearer nope"),), "bad control token"),
    ((("authorization", "secret"),), "bad control token"),
    ((("authorization", "Bearer secret"),), None),
])
def test_check_names_the_problem(metadata, expect):
    why = auth.check("secret", metadata)
    if expect is None:
        assert why is None
    else:
        assert expect in why and "--control-token" in why and auth.TOKEN_ENV in why


def test_a_node_without_a_token_refuses_everything():
    assert "started without a control token" in auth.check(None, auth.call_metadata("anything"))
