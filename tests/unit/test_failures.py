"""One line out of whatever a failed task raised: exception groups are looked into."""

from __future__ import annotations

import errno

import pydantic
import pytest
import trio

from rtpcluster.admin.registry import Registry, Reply
from rtpcluster.failures import describe_failure, primary_error


class NoArgs(pydantic.BaseModel):
    pass


def test_a_plain_error_is_its_message() -> None:
    assert describe_failure(ValueError("bad weight")) == "bad weight"


def test_an_os_error_is_its_reason_and_file() -> None:
    refused = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
    assert describe_failure(refused) == "Connection refused"
    missing = FileNotFoundError(errno.ENOENT, "No such file or directory", "/run/x.sock")
    assert describe_failure(missing) == "/run/x.sock: No such file or directory"


def test_a_message_is_one_line_and_never_empty() -> None:
    assert describe_failure(RuntimeError("first\n  second")) == "first second"
    assert describe_failure(KeyError()) == "KeyError"


def test_the_first_real_error_of_nested_groups() -> None:
    group = ExceptionGroup("outer", [ExceptionGroup("inner", [LookupError("the cause")])])
    assert describe_failure(group) == "the cause"
    assert type(primary_error(group)) is LookupError


async def test_a_failed_nursery_names_its_cause_not_the_group() -> None:
    async def fails() -> None:
        await trio.sleep(0)
        raise OSError(errno.EADDRINUSE, "Address already in use")

    with pytest.raises(BaseExceptionGroup) as caught:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)  # cancelled by its sibling's failure
            nursery.start_soon(fails)
    error = caught.value
    assert "Exceptions from Trio nursery" in str(error)
    assert describe_failure(error) == "Address already in use"


async def test_an_admin_command_failing_in_a_group_answers_its_cause() -> None:
    registry: Registry[None] = Registry()

    async def handler(ctx: None, args: NoArgs) -> Reply:
        raise ExceptionGroup("Exceptions from Trio nursery (1 sub-exception)", [OSError("gone")])

    registry.command("explode", args=NoArgs, help="fails")(handler)
    reply = await registry.dispatch(None, "explode")
    assert reply.render() == ["ERROR: internal error: OSError: gone"]
