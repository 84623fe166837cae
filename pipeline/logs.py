"""Log levels held for the length of one step: third-party tools that log a line per graph node."""
from __future__ import annotations

import contextlib
import logging
import sys
from typing import Iterator


@contextlib.contextmanager
def quiet_loggers(levels: dict[str, int]) -> Iterator[None]:
    """Raise each named logger to at least its level (a stricter level already set is kept); restore after."""
    loggers = {logging.getLogger(name): level for name, level in levels.items()}
    before = {logger: logger.level for logger in loggers}
    for logger, level in loggers.items():
        logger.setLevel(max(level, logger.getEffectiveLevel()))
    try:
        yield
    finally:
        for logger, level in before.items():
            logger.setLevel(level)


def setup_logging() -> None:
    """INFO lines with time and logger on stderr: what a stage script or a `bilm` command logs."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
