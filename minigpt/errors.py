"""Exception types whose message is one line a user can act on, so entrypoints print it and exit."""


class ConfigError(ValueError):
    """Raised for bad input (config, paths, data) before any compute starts.

    The message is a single line that says what is wrong and how to fix it.
    """


class RunFailure(RuntimeError):
    """A run stopped for a cause the user can fix (a full disk, divergence), after it started training.

    Like ConfigError the message is one line naming the cause and the fix; the entrypoint prints it
    as `error: ...` (exit code 1), train.log gets the same line and run_summary.json the same text.
    """


def os_error_cause(exc: BaseException) -> OSError | None:
    """The OSError behind `exc`, if any: torch.save, for one, wraps a failed write (ENOSPC, EDQUOT) in
    an opaque `RuntimeError: [enforce fail ...] unexpected pos` whose cause is the real one."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def write_failure(what: str, path, exc: BaseException) -> RunFailure | None:
    """`could not write <what> <path>: No space left on device; ...` for a failed write, or None if `exc`
    has no OSError behind it (then it is a bug, and its own traceback says more)."""
    cause = os_error_cause(exc)
    if cause is None:
        return None
    import errno

    reason = cause.strerror or str(cause)
    fix = "free space (or quota) there" if cause.errno in (errno.ENOSPC, errno.EDQUOT) else "check that path"
    return RunFailure(f"could not write {what} {path}: {reason}; {fix}, then rerun the same command "
                      "(it resumes from the last checkpoint)")


def refusal_reason(exc: BaseException) -> str:
    """Why safe loading (weights_only=True) refused a file, in a few words. torch's message leads with advice
    to retry with weights_only=False, which runs whatever the file holds: a security refusal never passes
    that on, so only the line naming the refused object is kept (whole, never cut mid-word)."""
    lines = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
    named = [line for line in lines if "weights_only" not in line and not line.startswith("Check the documentation")]
    what = named[0].split(". ")[0].rstrip(".") if named else "objects other than tensors and plain values"
    return f"it holds objects safe loading refuses: {what}; minigpt never unpickles arbitrary objects"
