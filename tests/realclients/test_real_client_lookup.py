"""need_program: how real-client tests find their programs, and how CI turns a missing one into a failure."""

from __future__ import annotations

import pytest

from tests.harness import programs


def test_it_finds_programs_in_the_system_folders_off_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    assert programs.need_program("sh").endswith("/sh")
    assert programs.need_program("no-such-program-xyz", "sh").endswith("/sh")


def test_a_missing_program_skips_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(programs, "REQUIRE_REAL_CLIENTS", False)
    with pytest.raises(pytest.skip.Exception, match="no-such-program-xyz is not installed"):
        programs.need_program("no-such-program-xyz")


def test_a_missing_program_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(programs, "REQUIRE_REAL_CLIENTS", True)
    with pytest.raises(pytest.fail.Exception, match="ENROLL_REQUIRE_REAL_CLIENTS=1"):
        programs.need_program("no-such-program-xyz")
