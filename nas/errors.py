"""User-facing errors: one line that says what was wrong and what to do, exit code 2.

Anything a user can cause (a bad override, a missing corpus, an unreachable database) raises
`NasError`; `run_cli` prints its message without a traceback. Errors raised deep inside a library
that still name a user's problem (a full disk, a damaged study database) are turned into such a
line by the explainers registered with `explain_with` (e.g. `nas.study.storage`'s). Anything else
is a bug: its traceback is printed, with every password hidden, and the exit code is 1.

Redaction: `redact` hides what can hold a secret in any URL of a text (the password of the user
information, however it is written: an empty user name, unencoded `@`, `/`, `?` or `:` in it;
`password=`/`token=`-like query parameters), libpq's `password=...` keywords, and every password
seen in a storage URL this process opened (`remember_secrets`), wherever it shows up.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import re
import shutil
import signal
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

USAGE_EXIT_CODE = 2
BUG_EXIT_CODE = 1
MASK = "***"
# A URL runs from its scheme to the next white space: a password may hold quotes or brackets.
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://\S*")
_QUERY_SECRET = re.compile(
    r"([?&;][^=&;#\s]*(?:pass|pwd|secret|token|key|auth)[^=&;#\s]*=)[^&;#\s]*", re.IGNORECASE
)
_KEYWORD_SECRET = re.compile(
    r"\b((?:ssl)?(?:password|passwd|pwd)\s*=\s*)('[^']*'|\"[^\"]*\"|[^\s,;&)'\"]+)", re.IGNORECASE
)
_SECRETS: set[str] = set()
_TRAILING = "'\".,;:)]}>"
_MASKED = rf"\g<1>{MASK}"  # keep the key (group 1), hide the value
MIN_SECRET = 3  # shorter "passwords" would mask ordinary text; the URL rules still hide them


class NasError(Exception):
    """A problem with the user's input or environment, explained in one line."""


# -- redaction -------------------------------------------------------------------------------------
def _split_userinfo(rest: str) -> tuple[str, str | None, str]:
    """`user`, `password` (None: none given) and what follows the user information, for the
    part of a URL after `scheme://`. The user information ends at the *last* `@`: parsers
    disagree on unencoded `@`, `/`, `?` and `#` in a password, so the widest reading wins."""
    at = rest.rfind("@")
    if at < 0:
        return "", None, rest
    user, colon, password = rest[:at].partition(":")
    return user, (password if colon else None), rest[at:]


def _redact_url(match: re.Match[str]) -> str:
    core = match.group(0).rstrip(_TRAILING)  # the sentence's punctuation after a URL stays
    scheme, _, rest = core.partition("://")
    user, password, host = _split_userinfo(rest)
    if password is not None:
        rest = f"{user}:{MASK}{host}"
    return f"{scheme}://{_QUERY_SECRET.sub(_MASKED, rest)}{match.group(0)[len(core) :]}"


def passwords(url: str) -> list[str]:
    """Every secret `url` holds (user password, password-like query values), as written and
    percent-decoded."""
    found: list[str] = []
    for match in _URL.finditer(url):
        rest = match.group(0).partition("://")[2]
        password = _split_userinfo(rest)[1]
        if password:
            found.append(password)
        for query in _QUERY_SECRET.finditer(rest):
            value = rest[query.end(1) : query.end()]
            if value:
                found.append(value)
    return [s for p in found for s in dict.fromkeys((p, unquote(p)))]


def remember_secrets(url: str) -> None:
    """Hide the passwords of `url` wherever they appear from now on (a library may echo them
    in a form no URL rule recognises)."""
    _SECRETS.update(p for p in passwords(url) if len(p) >= MIN_SECRET)


def redact(text: str) -> str:
    """Hide passwords in database URLs (`postgresql://user:secret@host` -> `user:***@host`),
    in `password=` keywords, and every password remembered from a storage URL."""
    text = _URL.sub(_redact_url, text)
    text = _KEYWORD_SECRET.sub(_MASKED, text)
    for secret in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    """Installed on log handlers: no password in a database URL reaches a log line (nor the
    traceback a record carries)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[0] is not None:
            text = "".join(traceback.format_exception(*record.exc_info))
            record.exc_info, record.exc_text = None, None
            record.msg, record.args = f"{record.msg}\n{redact(text).rstrip()}", None
        return True


# -- turning library errors into one line ------------------------------------------------------
Explainer = Callable[[BaseException], "str | None"]
_EXPLAINERS: list[Explainer] = []


def explain_with(explainer: Explainer) -> Explainer:
    """Register `explainer(err) -> one line | None`; `run_cli` asks it about any exception (and
    the exceptions it was raised from) before treating it as a bug."""
    if explainer not in _EXPLAINERS:
        _EXPLAINERS.append(explainer)
    return explainer


def free_mb(path: str | Path) -> float | None:
    """Megabytes free on the file system holding `path` (its nearest existing folder)."""
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free / 1e6
    except OSError:
        return None


def out_of_space(path: str | Path, setting: str = "runs_dir") -> str:
    """The one line for a full disk (or quota) while writing `path`."""
    free = free_mb(path)
    left = f" ({free:.1f} MB free)" if free is not None else ""
    return (
        f"{setting} is out of space writing {path}{left}: free some space there or pass "
        f"{setting}=PATH on another disk; nothing half-written was left"
    )


def _disk_trouble(err: BaseException) -> str | None:
    if not isinstance(err, OSError):
        return None
    where = err.filename
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        if where is None:  # the library did not say which file: no free-space figure either
            return (
                f"runs_dir is out of space ({err.strerror}): free some space there or pass "
                "runs_dir=PATH on another disk; nothing half-written was left"
            )
        return out_of_space(where)
    if err.errno == errno.EROFS:
        return (
            f"cannot write {where or 'a file'}: read-only file system; pass runs_dir=PATH "
            "somewhere writable"
        )
    return None


def explain(err: BaseException) -> str | None:
    """The one line a registered explainer gives for `err` or any exception it came from."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        for explainer in [*_EXPLAINERS, _disk_trouble]:
            line = explainer(current)
            if line:
                return line
        current = current.__cause__ or current.__context__
    return None


def one_line(text: str) -> str:
    return redact(" ".join(text.split()))


# -- the command line's edge ---------------------------------------------------------------------
def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def raised_by_interrupt(error: BaseException | None) -> bool:
    """Whether `error` is Ctrl-C or SIGTERM, or was raised while one unwound: a library's
    cleanup that fails on the way out (Optuna's trial bookkeeping interrupted mid-write raises
    UnboundLocalError, with the interrupt as its context)."""
    while error is not None:
        if isinstance(error, KeyboardInterrupt):
            return True
        error = error.__context__
    return False


class InterruptedCleanupFilter(logging.Filter):
    """Installed on log handlers: drops the errors libraries log while Ctrl-C or SIGTERM
    unwinds them (SQLAlchemy's "Error closing cursor", with the interrupt as its context), so
    an interrupted command prints "interrupted" and no traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not raised_by_interrupt(record.exc_info[1] if record.exc_info else None)


def _interrupt_again(unraisable: Any) -> None:
    """`sys.unraisablehook`: Ctrl-C or SIGTERM that lands in a weak-reference callback or a
    finalizer (SQLAlchemy's, during garbage collection) cannot propagate, so Python would print
    "Exception ignored" and the command would run on. Deliver it again to the main thread,
    where it stops the command as any interrupt does; other errors print as before."""
    if not isinstance(unraisable.exc_value, KeyboardInterrupt):
        sys.__unraisablehook__(unraisable)
        return
    import _thread
    import threading

    for signum in (signal.SIGINT, signal.SIGTERM):  # whichever Python handles
        if callable(signal.getsignal(signum)):
            # From another thread, a moment later: raised here, it would be ignored again.
            threading.Timer(0.05, _thread.interrupt_main, (signum,)).start()
            return


def sigterm_as_interrupt() -> Any:
    """SIGTERM (`kill`, SLURM's time limit) stops a command as Ctrl-C does: cleanups run, so
    no temporary file or half-written folder is left behind. Returns the previous handler
    (None when none was replaced)."""
    try:
        if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            return signal.signal(signal.SIGTERM, _interrupt)
    except ValueError:  # not the main thread
        pass
    return None


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Ctrl-C or SIGTERM during the block acts when it ends (a few renames that must all happen).
    Blocking the signals with `pthread_sigmask` does not do this: the mask is the calling
    thread's, the kernel hands the signal to another thread (torch's, ONNX Runtime's), and
    Python still runs the handler in the main thread, inside the block."""
    caught: list[int] = []
    try:
        previous = {
            s: signal.signal(s, lambda signum, frame: caught.append(signum))
            for s in (signal.SIGINT, signal.SIGTERM)
        }
    except ValueError:  # not the main thread, where no Python handler runs anyway
        yield
        return
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for s in caught[:1]:
            signal.raise_signal(s)  # now handled as it would have been: KeyboardInterrupt, or exit


def run_cli(main: Callable[[list[str]], int | None], argv: list[str] | None = None) -> None:
    """Run a command's `main(argv)`; turn `NasError` (and every explained library error) into
    one line on stderr and exit code 2; print a bug's traceback redacted, exit code 1."""
    args = sys.argv[1:] if argv is None else argv
    previous = sigterm_as_interrupt()
    sys.unraisablehook = _interrupt_again
    try:
        code = _run(main, args)
    except KeyboardInterrupt:  # a SIGTERM or Ctrl-C just after `main` returned: no traceback
        print("interrupted", file=sys.stderr)
        code = 130
    finally:
        sys.unraisablehook = sys.__unraisablehook__
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    _forget_caught_interrupts()
    sys.exit(code)


def _forget_caught_interrupts() -> None:
    """CPython (3.11 to 3.13) marks a KeyboardInterrupt that escapes code run from source text
    (`exec`/`eval` of a string, as `dataclasses` does when it builds a class) as unhandled, even
    when a caller catches it; at exit a `python -m` process then kills itself with SIGINT (exit
    -2 instead of 130 or 0: the flaky export fault test in CI). Running empty source text
    through the same path clears the mark."""
    exec("")


def _run(main: Callable[[list[str]], int | None], args: list[str]) -> int:
    try:
        return main(args) or 0
    except NasError as err:
        print(f"error: {one_line(str(err))}", file=sys.stderr)
        return USAGE_EXIT_CODE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if raised_by_interrupt(err):  # a library's cleanup that failed while Ctrl-C unwound it
            print("interrupted", file=sys.stderr)
            return 130
        line = explain(err)
        if line is not None:
            print(f"error: {one_line(line)}", file=sys.stderr)
            return USAGE_EXIT_CODE
        print(redact(traceback.format_exc()).rstrip(), file=sys.stderr)
        return BUG_EXIT_CODE
