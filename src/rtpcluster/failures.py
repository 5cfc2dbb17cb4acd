"""One line for an operator out of whatever a failed task raised.

trio wraps what fails inside a nursery in an exception group, whose own message
("Exceptions from Trio nursery (1 sub-exception)") says nothing about the cause. Every
place that reports a failure (admin replies, the member warning, the startup error)
goes through :func:`describe_failure`, which looks inside the groups.
"""

from __future__ import annotations

import trio


def primary_error(error: BaseException) -> BaseException:
    """The first error inside (nested) exception groups that is not a cancellation.

    A task cancelled because its sibling failed shows up in the same group as
    ``trio.Cancelled``; the sibling's error is the cause. Without any other error the
    first cancellation is returned.
    """
    leaves = _leaves(error)
    for leaf in leaves:
        if not isinstance(leaf, trio.Cancelled):
            return leaf
    return leaves[0] if leaves else error


def describe_failure(error: BaseException) -> str:
    """The primary error as one line: an OS error as its reason, others as their message."""
    primary = primary_error(error)
    if isinstance(primary, OSError) and primary.strerror:
        where = f"{primary.filename}: " if primary.filename else ""
        return f"{where}{primary.strerror}"
    text = " ".join(str(primary).split())  # one line, whatever the message held
    return text or type(primary).__name__


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]
