"""The one error base class and the one exit path (a leaf module: it imports nothing from pipeline).

Every error a user can fix derives from `BilmError`; its message names the problem and the fix. Commands and
stage scripts run inside `exit_on_user_error`, which prints that message on one line and exits with code 2.
Any other exception is a bug and keeps its traceback.
"""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

USER_ERROR_EXIT_CODE = 2


class BilmError(Exception):
    """A problem the user can fix (bad params, missing input, unavailable backend); exits with code 2."""


@contextmanager
def exit_on_user_error(prefix: str = "") -> Iterator[None]:
    """Turn a `BilmError` into `error: <prefix><message>` on stderr and exit code 2."""
    try:
        yield
    except BilmError as exc:
        print(f"error: {prefix}{exc}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT_CODE)
