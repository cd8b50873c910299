"""What core decides for every adapter's commands: who may run a model-calling command
now (restarting, per-user cooldown across processes, the shared rate limit), who may
share a private summary (once, only its owner, for a day), and that a command's failure
or interruption always reaches its user. Real Redis, two engines where it crosses
processes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from core.engine import Engine
from core.failures import RESTARTING, reported
from core.intake import RESTARTING_SOON, Intake
from core.shares import Shareable, SummaryShares

EngineWith = Callable[..., AbstractAsyncContextManager[Engine]]


async def test_a_cooldown_holds_across_processes_and_names_the_command(
    engine_with: EngineWith,
) -> None:
    async with engine_with() as one, engine_with() as two:
        first, second = Intake(one), Intake(two)
        go = await first.admit_command("discord", "G1", "U1", command="ask", cooldown=30)
        assert go is None
        again = await second.admit_command("discord", "G1", "U1", command="summarize", cooldown=30)
        assert again is not None
        assert again.startswith("You're going a little fast. Please wait ")
        assert again.endswith("seconds before using /summarize again.")
        # someone else, or the same id on another platform, is not held
        assert await second.admit_command("discord", "G1", "U2", command="ask", cooldown=30) is None
        assert await second.admit_command("slack", "T1", "U1", command="ask", cooldown=30) is None


async def test_commands_share_the_rate_limit_unless_counted_elsewhere(
    engine_with: EngineWith,
) -> None:
    async with engine_with(user_rate_limit="2/minute") as engine:
        intake = Intake(engine)
        notes = [
            await intake.admit_command("slack", "T1", "U1", command="summarize") for _ in range(3)
        ]
        assert notes[:2] == [None, None]
        assert notes[2] is not None and "faster than this workspace allows" in notes[2]
        # `/ask` is counted where its question is admitted, not here
        assert await intake.admit_command("slack", "T1", "U1", command="ask", counted=False) is None


async def test_no_command_starts_while_the_process_shuts_down(engine_with: EngineWith) -> None:
    async with engine_with() as engine:
        intake = Intake(engine)
        await engine.drain(0.1)
        assert await intake.admit_command("slack", "T1", "U1", command="summarize") == (
            RESTARTING_SOON
        )


async def test_a_summary_is_shared_once_by_its_owner_on_any_process(
    engine_with: EngineWith,
) -> None:
    async with engine_with() as one, engine_with() as two:
        here, there = SummaryShares(one, "slack"), SummaryShares(two, "slack")
        token = await here.keep("U1", {"text": "the summary", "channel": "C1"})
        assert await there.take(token, "U2") == (
            "Only the person who asked for this summary can share it."
        )
        presses = await asyncio.gather(here.take(token, "U1"), there.take(token, "U1"))
        taken = [p for p in presses if isinstance(p, Shareable)]
        assert len(taken) == 1 and taken[0].record == {"text": "the summary", "channel": "C1"}
        assert "This summary is already shared in the channel." in presses
        # posting failed: the owner may try again
        await here.failed(taken[0])
        again = await there.take(token, "U1")
        assert isinstance(again, Shareable)
        # another platform's shares are apart; an unknown token has expired
        assert await SummaryShares(one, "discord", command="/summarize").take(token, "U1") == (
            "This summary has expired. Run /summarize again."
        )
        assert "expired" in str(await here.take("", "U1"))


async def test_a_failing_command_tells_its_user_with_an_error_id() -> None:
    told: list[str] = []

    async def tell(text: str) -> None:
        told.append(text)

    async def broken() -> str:
        raise KeyError("nope")

    assert await reported(broken(), tell, "test") is None
    assert len(told) == 1 and told[0].startswith("Something went wrong on my side (error ")

    async def fine() -> str:
        return "done"

    assert await reported(fine(), tell, "test") == "done" and len(told) == 1


async def test_an_interrupted_command_says_so_and_a_failing_tell_is_only_logged() -> None:
    told: list[str] = []

    async def tell(text: str) -> None:
        told.append(text)

    started = asyncio.Event()

    async def slow() -> None:
        started.set()
        await asyncio.sleep(60)

    task = asyncio.create_task(reported(slow(), tell, "test"))
    await started.wait()
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    else:
        raise AssertionError("the cancellation must go on")
    assert told == [RESTARTING]

    async def unreachable(text: str) -> None:
        raise ConnectionError("platform down")

    async def broken() -> None:
        raise ValueError("bad")

    assert await reported(broken(), unreachable, "test") is None  # no exception escapes


async def test_the_usage_report_adds_this_weeks_totals_per_model(engine: Engine) -> None:
    import datetime as dt

    from core.ledger import UsageRecord

    tenant = "slack:T-week"
    for _ in range(2):
        await engine.ledger.record_usage(tenant, UsageRecord("dialogue", "gpt", 100, 20, 0.25))
    await engine.ledger.record_usage(tenant, UsageRecord("summary", "flash", 1000, 50, 0.5))
    report = await engine.usage(tenant)
    assert report.week == {
        ("dialogue", "gpt"): (200, 40, 0.5),
        ("summary", "flash"): (1000, 50, 0.5),
    }
    text = report.render()
    assert "**This week**" in text
    assert "- dialogue · `gpt`: 200 in / 40 out tokens, $0.5000" in text
    # a week later, today's calls are last week's
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=7)
    assert await engine.ledger.week(tenant, later) == {}


async def test_a_reply_continues_an_answer_only_in_its_own_channel(
    engine_with: EngineWith,
) -> None:
    from core.types import ConversationKey

    async with engine_with() as one, engine_with() as two:
        key = ConversationKey("discord", "G1", "C1", "answer:900")
        await Intake(one).remember_answer(key, ["901", "902"])
        other = Intake(two)  # another process
        assert await other.replied_to("discord", "G1", "C1", "902") == key
        # the same message id seen from another channel, server or platform: a new start
        assert await other.replied_to("discord", "G1", "C2", "902") is None
        assert await other.replied_to("discord", "G2", "C1", "902") is None
        assert await other.replied_to("slack", "G1", "C1", "902") is None
        assert await other.replied_to("discord", "G1", "C1", "903") is None


async def test_a_stop_button_stops_only_where_it_belongs(engine: Engine) -> None:
    from core.types import ConversationKey

    intake = Intake(engine)
    key = str(ConversationKey("discord", "G1", "C1", "T1"))
    elsewhere = "That Stop button belongs somewhere else."
    assert await intake.stop_pressed(key, "discord", "G2", {"T1"}) == elsewhere
    assert await intake.stop_pressed(key, "discord", "G1", {"C9"}) == elsewhere
    assert await intake.stop_pressed(key, "slack", "G1", {"T1"}) == elsewhere
    assert await intake.stop_pressed("not a key", "discord", "G1", {"T1"}) == elsewhere
    # in its place, with nothing being written: said so
    assert await intake.stop_pressed(key, "discord", "G1", {"T1"}) == (
        "There is nothing to stop: that answer has ended."
    )
