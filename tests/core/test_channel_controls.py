"""Core's controls that every platform shares, on real Redis and the fake CometAPI: Stop
(a `stop` message or a Stop button, on any process) cancels the model call within a
second; per-channel settings apply in that channel only; 👍/👎 are stored once per person."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any

import pytest

from core import Admission, Author, ConversationKey, Engine, Incoming, Intake
from tests.fakes.cometapi import FakeCometAPI, RecordedRequest, Reply
from tests.support import RecordingSink, make_settings

GPT = "gpt-5.3-chat-latest"
ANA = Author("U1", "Ana")
BO = Author("U2", "Bo")


class FeedbackSink(RecordingSink):
    """A screen that shows 👍/👎 under an answer (the engine gives it the answer's id)."""

    def __init__(self) -> None:
        super().__init__()
        self.answer_id: str | None = None

    def offer_feedback(self, answer_id: str) -> None:
        self.answer_id = answer_id


def thread(channel: str = "C1") -> ConversationKey:
    return ConversationKey("slack", "T1", channel, f"{time.time():.6f}-{uuid.uuid4().hex[:6]}")


def said(key: ConversationKey, text: str, position: int, **extra: Any) -> Incoming:
    values: dict[str, Any] = {
        "key": key,
        "event_id": f"{key.thread}:{position}:{uuid.uuid4().hex[:4]}",
        "author": ANA,
        "text": text,
        "message_id": f"m{position}",
        "position": position,
    }
    values.update(extra)
    return Incoming(**values)


class Screen:
    def __init__(self) -> None:
        self.sinks: dict[str, FeedbackSink] = {}

    async def open(self, incoming: Incoming) -> FeedbackSink:
        sink = FeedbackSink()
        self.sinks[incoming.text] = sink
        return sink

    async def ended(self, text: str, within: float = 10) -> FeedbackSink:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            sink = self.sinks.get(text)
            if sink is not None and sink.done.is_set():
                return sink
            await asyncio.sleep(0.01)
        raise AssertionError(f"{text!r} was not answered within {within} s")

    async def showing(self, text: str, within: float = 10) -> FeedbackSink:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            sink = self.sinks.get(text)
            if sink is not None and sink.shown:
                return sink
            await asyncio.sleep(0.01)
        raise AssertionError(f"nothing shown for {text!r} within {within} s")


@pytest.fixture
def engines(
    store_url: str, key_prefix: str, cometapi: FakeCometAPI
) -> Callable[..., AbstractAsyncContextManager[list[Engine]]]:
    class _Engines:
        def __init__(self, count: int, overrides: dict[str, Any]) -> None:
            self.count, self.overrides, self.stack = count, overrides, AsyncExitStack()

        async def __aenter__(self) -> list[Engine]:
            values: dict[str, Any] = {
                "redis_url": store_url,
                "redis_key_prefix": key_prefix,
                "cometapi_base_url": cometapi.base_url,
                **self.overrides,
            }
            started = []
            for _ in range(self.count):
                engine = await Engine.start(make_settings(**values))
                self.stack.push_async_callback(engine.close)
                started.append(engine)
            return started

        async def __aexit__(self, *exc: object) -> None:
            await self.stack.aclose()

    return lambda count=1, **overrides: _Engines(count, overrides)


def slow(request: RecordedRequest) -> Reply:
    return Reply(f"re: {request.last_user_text} " + "word " * 200, chunks=100, chunk_delay=0.1)


@pytest.mark.parametrize("how", ["message", "button on the other process"])
async def test_stop_cancels_the_model_call_within_a_second_and_the_thread_goes_on(
    engines: Callable[..., AbstractAsyncContextManager[list[Engine]]],
    cometapi: FakeCometAPI,
    how: str,
) -> None:
    cometapi.set_responder(slow)
    async with engines(2) as [a, b]:
        here, there, screen = Intake(a), Intake(b), Screen()
        key = thread()
        await here.submit(said(key, "tell me everything", 1, follow=True), screen.open)
        await screen.showing("tell me everything")
        asked = time.monotonic()
        if how == "message":
            stop = said(key, "<@UBOT> stop", 2)
            assert await there.submit(stop, screen.open) is Admission.ADMITTED
        else:
            assert await there.stop(key)
        stopped = await screen.ended("tell me everything", within=3)
        took = time.monotonic() - asked
        request = cometapi.requests_for(GPT)[0]
        assert took < 1.0, f"stopped after {took:.2f} s"
        assert request.client_closed_at is not None and request.client_closed_at - asked < 1.0
        # what was shown stays, ended by a short "(stopped)"
        assert stopped.final == stopped.shown.rstrip() + "\n\n_(stopped)_"
        assert stopped.shown.startswith("re: [Ana]")
        shown_when_stopped = stopped.shown
        await asyncio.sleep(0.3)  # nothing more is appended after the stop
        assert stopped.shown == shown_when_stopped
        assert "<@UBOT> stop" not in screen.sinks  # a stop gets no answer of its own

        cometapi.set_responder(lambda r: Reply(f"re: {r.last_user_text}"))
        await here.submit(said(key, "short version?", 3, addressed=False), screen.open)
        nxt = await screen.ended("short version?")
        assert nxt.final == "re: [Ana] short version?"
        later = cometapi.requests_for(GPT)[-1].messages
        kept = [str(m.get("content")) for m in later if m.get("role") == "assistant"]
        assert len(kept) == 1 and "(stopped by the user here)" in kept[0]
        assert kept[0].startswith(shown_when_stopped.rstrip())
        await a.idle()
        await b.idle()


async def test_stop_with_nothing_being_written_says_so_and_a_stray_stop_is_ignored(
    engines: Callable[..., AbstractAsyncContextManager[list[Engine]]], cometapi: FakeCometAPI
) -> None:
    async with engines(1) as [engine]:
        intake, screen = Intake(engine), Screen()
        key = thread()
        await intake.submit(said(key, "stop", 1), screen.open)
        told = await screen.ended("stop")
        assert told.final is not None and "nothing" in told.final.lower()
        other = thread()  # not addressed and not followed: not ours to stop
        assert await intake.submit(said(other, "stop", 2, addressed=False), screen.open) in {
            Admission.IGNORED,
            Admission.ADMITTED,
        }
        await asyncio.sleep(0.2)
        assert len([s for s in screen.sinks.values() if s.done.is_set()]) == 1
        assert cometapi.requests_for(GPT) == []
        await engine.idle()


async def test_channel_settings_apply_in_that_channel_only(
    engines: Callable[..., AbstractAsyncContextManager[list[Engine]]], cometapi: FakeCometAPI
) -> None:
    async with engines(1) as [engine]:
        intake, screen = Intake(engine), Screen()
        incidents = thread("CINC")
        await engine.channels.update(
            incidents.channel_key(),
            {"instructions": "Answer in at most two lines, on-call style."},
            by="UADMIN",
        )
        await intake.submit(said(incidents, "db is down", 1), screen.open)
        await screen.ended("db is down")
        elsewhere = thread("CGEN")
        await intake.submit(said(elsewhere, "hello", 2), screen.open)
        await screen.ended("hello")
        await engine.idle()
    first, second = cometapi.requests_for(GPT)
    assert "on-call style" in first.system_text
    assert "on-call style" not in second.system_text


async def test_mentions_only_channels_ignore_follow_ups(
    engines: Callable[..., AbstractAsyncContextManager[list[Engine]]], cometapi: FakeCometAPI
) -> None:
    async with engines(1) as [engine]:
        intake, screen = Intake(engine), Screen()
        key = thread("CQUIET")
        await engine.channels.update(key.channel_key(), {"answer_mode": "mentions"}, by="UADMIN")
        await intake.submit(said(key, "hi bot", 1, follow=True), screen.open)
        await screen.ended("hi bot")
        chatter = said(key, "thanks all", 2, addressed=False)
        assert await intake.submit(chatter, screen.open) is Admission.IGNORED
        again = said(key, "one more question", 3)
        assert await intake.submit(again, screen.open) is Admission.ADMITTED
        await screen.ended("one more question")
        await engine.idle()
    assert len(cometapi.requests_for(GPT)) == 2


async def test_votes_are_one_per_person_and_a_changed_vote_counts_once(
    engines: Callable[..., AbstractAsyncContextManager[list[Engine]]], cometapi: FakeCometAPI
) -> None:
    async with engines(1) as [engine]:
        intake, screen = Intake(engine), Screen()
        key = thread()
        await intake.submit(said(key, "what is 2+2?", 1), screen.open)
        sink = await screen.ended("what is 2+2?")
        await engine.idle()
        answer = sink.answer_id
        assert answer is not None
        assert await engine.feedback.vote(key.tenant, answer, "U1", "up")
        assert await engine.feedback.vote(key.tenant, answer, "U2", "down", "wrong   number")
        assert await engine.feedback.vote(key.tenant, answer, "U1", "down", "changed my mind")
        assert not await engine.feedback.vote(key.tenant, "no-such-answer", "U1", "up")
        week = await engine.feedback.week(key.tenant)
    assert week == {("dialogue", GPT): [0, 2]}


async def test_a_channels_summary_language_is_used_there_and_a_change_starts_over(
    engines: Callable[..., AbstractAsyncContextManager[list[Engine]]], cometapi: FakeCometAPI
) -> None:
    from core import ChatMessage
    from tests.support import team_model

    cometapi.set_responder(team_model)
    lines = [ChatMessage.user(f"line {i}", "Ana", id=f"{i}", ts=1000 + i) for i in range(5)]
    async with engines(1) as [engine]:
        berlin = ConversationKey("slack", "T1", "CBER", "t1")
        await engine.channels.update(
            berlin.channel_key(), {"summary_language": "German"}, by="UADMIN"
        )
        await engine.summarize(berlin, lines)
        await engine.summarize(ConversationKey("slack", "T1", "CGEN", "t1"), lines)
        await engine.summarize(berlin, lines)  # cached: no request
        await engine.channels.update(berlin.channel_key(), {"summary_language": ""}, by="U")
        await engine.summarize(berlin, lines)  # language changed: summarized again
    systems = [r.system_text for r in cometapi.requests_for("gemini-3.1-flash-lite")]
    assert len(systems) == 3
    assert "in German" in systems[0]
    assert "in German" not in systems[1] and "in German" not in systems[2]
