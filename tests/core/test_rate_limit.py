"""USER_RATE_LIMIT: a sliding window per person and workspace, shared by every process
through Redis, one private note per window, nobody else affected. Real Redis; the
in-process fallback gets its own test."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import replace

import pytest

from core.engine import Engine
from core.intake import Intake
from core.queue import Admission
from core.ratelimit import UserRateLimit, parse_rate
from core.sink import ReplySink
from core.store import connect_store
from core.types import Author, ConversationKey, Incoming
from tests.fakes.cometapi import FakeCometAPI, Reply
from tests.support import RecordingSink, make_settings

EngineWith = Callable[..., AbstractAsyncContextManager[Engine]]


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("20/minute", (20, 60.0)),
        ("5/10 seconds", (5, 10.0)),
        ("100 / hour", (100, 3600.0)),
        ("1/day", (1, 86_400.0)),
        ("off", (0, 0.0)),
        ("0", (0, 0.0)),
    ],
)
def test_rates_read_as_people_write_them(text: str, rate: tuple[int, float]) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["20", "twenty/minute", "20/fortnight", "0/minute", "-1/hour"])
def test_a_bad_rate_is_a_plain_error(text: str) -> None:
    with pytest.raises(ValueError, match=r"like 20/minute|must be positive"):
        parse_rate(text)


def test_a_bad_rate_setting_names_the_variable() -> None:
    from core.settings import ConfigError

    with pytest.raises((ConfigError, ValueError), match=r"(?i)user_rate_limit"):
        make_settings(user_rate_limit="lots")


async def _limiter(redis_url: str | None, key_prefix: str, rate: str) -> UserRateLimit:
    store = await connect_store(make_settings(redis_url=redis_url, redis_key_prefix=key_prefix))
    return UserRateLimit(store, rate)


async def test_over_the_limit_is_refused_told_once_and_others_go_on(
    redis_url: str, key_prefix: str
) -> None:
    limit = await _limiter(redis_url, key_prefix, "3/minute")
    other_process = await _limiter(redis_url, key_prefix, "3/minute")
    try:
        verdicts = [
            await (limit if n % 2 else other_process).check("slack", "T1", "U1") for n in range(6)
        ]
        assert [v.allowed for v in verdicts] == [True, True, True, False, False, False]
        assert [v.tell for v in verdicts[3:]] == [True, False, False]  # once per window
        assert 0 < verdicts[3].retry_after <= 60
        # another person, the same person in another workspace or platform: unaffected
        assert (await limit.check("slack", "T1", "U2")).allowed
        assert (await limit.check("slack", "T2", "U1")).allowed
        assert (await limit.check("discord", "T1", "U1")).allowed
        # the console is the operator's own terminal
        assert all([(await limit.check("console", "local", "U1")).allowed for _ in range(10)])
    finally:
        await limit.store.close()
        await other_process.store.close()


async def test_the_window_slides(redis_url: str, key_prefix: str) -> None:
    limit = await _limiter(redis_url, key_prefix, "2/1 second")
    try:
        assert (await limit.check("slack", "T1", "U1")).allowed
        await asyncio.sleep(0.6)
        assert (await limit.check("slack", "T1", "U1")).allowed
        refused = await limit.check("slack", "T1", "U1")
        assert not refused.allowed and refused.tell
        await asyncio.sleep(0.5)  # the first has left the window, the second not
        assert (await limit.check("slack", "T1", "U1")).allowed
        assert not (await limit.check("slack", "T1", "U1")).allowed
    finally:
        await limit.store.close()


async def test_concurrent_checks_never_let_more_through(redis_url: str, key_prefix: str) -> None:
    limiters = [await _limiter(redis_url, key_prefix, "20/minute") for _ in range(3)]
    try:
        verdicts = await asyncio.gather(
            *(limiters[n % 3].check("slack", "T1", "U1") for n in range(60))
        )
        assert sum(v.allowed for v in verdicts) == 20
        assert sum(v.tell for v in verdicts) == 1
    finally:
        for limiter in limiters:
            await limiter.store.close()


async def test_the_in_process_store_limits_too(key_prefix: str) -> None:
    limit = await _limiter(None, key_prefix, "2/minute")
    try:
        verdicts = [await limit.check("discord", "G1", "U1") for _ in range(3)]
        assert [v.allowed for v in verdicts] == [True, True, False]
    finally:
        await limit.store.close()


def _message(n: int, user: Author, thread: str | None = None) -> Incoming:
    key = ConversationKey("slack", "T1", "C1", thread or f"t{user.id}{n}")
    return Incoming(key=key, event_id=f"Ev-rl-{user.id}-{n}", author=user, text=f"q{n}")


async def test_intake_answers_up_to_the_limit_and_tells_the_sender_once_in_private(
    engine_with: EngineWith, cometapi: FakeCometAPI
) -> None:
    """30 messages from one person at a limit of 20/minute: 20 answered, one private note,
    no reply for the other 10; another person's message is answered at once."""
    cometapi.set_responder(lambda r: Reply(f"re {r.last_user_text}"))
    alice, bob = Author("U1", "Alice"), Author("U2", "Bob")
    async with engine_with(user_rate_limit="20/minute") as engine:
        intake = Intake(engine)
        sinks: dict[str, RecordingSink] = {}
        private: list[tuple[str, str]] = []

        def submit(incoming: Incoming) -> Incoming:
            async def notify(text: str) -> None:
                private.append((incoming.author.id, text))

            return replace(incoming, notify=notify)

        async def open_sink(incoming: Incoming) -> ReplySink:
            return sinks.setdefault(incoming.event_id, RecordingSink())

        admissions = [await intake.submit(submit(_message(n, alice)), open_sink) for n in range(30)]
        bobs = await intake.submit(submit(_message(0, bob)), open_sink)
        await engine.idle()
        # a redelivery of a refused message is not counted again, nor answered
        again = await intake.submit(submit(_message(25, alice)), open_sink)
        await engine.idle()

    assert admissions.count(Admission.ADMITTED) == 20
    assert admissions[20:] == [Admission.LIMITED] * 10
    assert bobs is Admission.ADMITTED and again is Admission.DUPLICATE
    answered = {e for e, s in sinks.items() if s.final}
    assert answered == {f"Ev-rl-U1-{n}" for n in range(20)} | {"Ev-rl-U2-0"}
    assert len(private) == 1 and private[0][0] == "U1"
    assert "answer you again in about" in private[0][1]
