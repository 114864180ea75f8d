"""User-facing errors: one line that says what was wrong and what to do, exit code 2.

Anything a user can cause (a bad override, a missing corpus, an unreachable database) raises
`NasError`; `run_cli` prints its message without a traceback. Bugs still raise normally.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable

USAGE_EXIT_CODE = 2
_PASSWORD_IN_URL = re.compile(r"(\w+://[^:/@\s]+:)[^@\s]+@")


class NasError(Exception):
    """A problem with the user's input or environment, explained in one line."""


def redact(text: str) -> str:
    """Hide passwords in database URLs (`postgresql://user:secret@host` -> `user:***@host`)."""
    return _PASSWORD_IN_URL.sub(r"\1***@", text)


class RedactingFilter(logging.Filter):
    """Installed on log handlers: no password in a database URL reaches a log line."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def run_cli(main: Callable[[list[str]], int | None], argv: list[str] | None = None) -> None:
    """Run a command's `main(argv)`; turn `NasError` into one line on stderr and exit code 2."""
    args = sys.argv[1:] if argv is None else argv
    try:
        code = main(args)
    except NasError as err:
        message = " ".join(str(err).split())  # one line, whatever the message held
        print(f"error: {redact(message)}", file=sys.stderr)
        sys.exit(USAGE_EXIT_CODE)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
