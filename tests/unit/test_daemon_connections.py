"""The daemon's bounds on connections (issue 26, finding 4): the open-files limit, the cap and its log line."""

from __future__ import annotations

import logging
import resource

import pytest

from localllm import daemon
from localllm.daemon import Connections, connection_cap, open_files
from localllm.domain.limits import FD_RESERVE


def test_the_soft_limit_of_open_files_is_raised_to_the_hard_one(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    limits = {resource.RLIMIT_NOFILE: (1024, 65536)}
    monkeypatch.setattr(resource, "getrlimit", lambda which: limits[which])
    monkeypatch.setattr(resource, "setrlimit", lambda which, value: limits.__setitem__(which, value))
    with caplog.at_level(logging.INFO, logger="localllm"):
        assert open_files() == 65536
    assert limits[resource.RLIMIT_NOFILE] == (65536, 65536)
    assert "open files: limit raised from 1024 to 65536" in caplog.text
    assert open_files() == 65536  # already there: nothing to do


def test_a_limit_that_cannot_be_raised_is_said_and_kept(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(which: int, value: tuple[int, int]) -> None:
        raise ValueError("not allowed")

    monkeypatch.setattr(resource, "getrlimit", lambda which: (1024, 4096))
    monkeypatch.setattr(resource, "setrlimit", refuse)
    assert open_files() == 1024
    assert "could not raise the limit from 1024 to 4096" in caplog.text


def test_the_cap_fits_under_the_open_files(caplog: pytest.LogCaptureFixture) -> None:
    assert connection_cap(1000, 65536) == 1000
    assert connection_cap(1000, 1024) == 1024 - FD_RESERVE
    assert "LOCALLLM_MAX_CONNECTIONS=1000 lowered to 768" in caplog.text


def test_reaching_the_cap_is_logged_once_until_the_connections_fall_back(caplog: pytest.LogCaptureFixture) -> None:
    guard = Connections(cap=10)
    assert not guard.over(10, 10) and guard.over(11, 0) and guard.over(1, 11)
    with caplog.at_level(logging.INFO, logger=daemon.log.name):
        for _ in range(5):
            guard.refusing(11)
        guard.closed(10)  # still near the cap: no news
        guard.closed(8)
        guard.refusing(11)
    assert caplog.text.count("past LOCALLLM_MAX_CONNECTIONS (10)") == 2
    assert "connections back under LOCALLLM_MAX_CONNECTIONS (8 open); 5 requests were refused" in caplog.text
