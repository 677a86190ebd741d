"""Running the command line in-process from a test, and what a named error must look like (shared by the
bad-input test modules)."""

from __future__ import annotations

from tokencompose.__main__ import main


def run(capsys, *argv) -> tuple[int, str]:
    """``(exit status, stderr)`` of ``python -m tokencompose *argv``; stdout is dropped."""
    status = main([str(a) for a in argv])
    return status, capsys.readouterr().err


def assert_named(status: int, err: str, *needles: str, one_line: bool = False) -> None:
    """Status 2, no traceback, and every needle in the message (with ``one_line``: in its single ``error:`` line)."""
    assert status == 2, err
    assert "Traceback" not in err, err
    if one_line:
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, err
        err = errors[0]
    for needle in needles:
        assert needle in err, (needle, err)
