"""One exception root and one table of exit codes for every ``sentiwire`` command.

A leaf module: it imports nothing of the project, so any module may import it without a
cycle. Each package raises its own subclass (config, bundle, model, pipeline, alerting,
training, retrain, dev tools); a command maps the class to its exit code with
:func:`exit_code_for`, so the same failure exits the same way from ``serve``, ``alert``,
``train`` or ``retrain``.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What a command's exit status means (README "Exit codes")."""

    OK = 0
    FAILED = 1  # ran and then failed: a fatal pipeline error, a failed export or training run
    USAGE = 2  # bad configuration, arguments, input data or model bundle: fix it and run again
    UNAVAILABLE = 3  # a service it needs (Kafka) could not be reached in time: retry later
    REFUSED = 4  # worked as asked and said no: e.g. retrain refused the candidate
    INTERRUPTED = 130  # Ctrl-C / SIGINT before the work finished


class SentiwireError(Exception):
    """Root of every error the project raises on purpose; ``exit_code`` says how a command ends."""

    exit_code: ExitCode = ExitCode.FAILED


class UsageError(SentiwireError):
    """The input is wrong (config, arguments, data, bundle): the message names what and where."""

    exit_code = ExitCode.USAGE


class UnavailableError(SentiwireError):
    """A service the command needs did not answer in time; running again later may work."""

    exit_code = ExitCode.UNAVAILABLE


def exit_code_for(exc: BaseException) -> ExitCode:
    """The exit status a command ends with for ``exc`` (FAILED for anything unplanned)."""
    if isinstance(exc, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    if isinstance(exc, SentiwireError):
        return exc.exit_code
    return ExitCode.FAILED
