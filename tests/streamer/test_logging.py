"""Log lines never carry secrets: tracebacks are rendered without frame locals."""

from __future__ import annotations

import logging

import pytest
import structlog

from streamer.logging import configure_logging


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_tracebacks_do_not_print_local_variables(fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", fmt)  # type: ignore[arg-type]
    log = structlog.get_logger("sentiwire.test")

    def connect(sasl_plain_password: str) -> None:
        raise ConnectionError("refused")

    secret = "-".join(["hunter", str(2 * 1000), "not-in-logs"])  # not in any source line
    try:
        connect(secret)
    except ConnectionError:
        log.exception("connect failed")
    logging.getLogger().handlers[0].flush()
    err = capsys.readouterr().err
    assert "connect failed" in err
    assert "ConnectionError" in err  # the traceback is there ...
    assert secret not in err  # ... without the frame's locals
