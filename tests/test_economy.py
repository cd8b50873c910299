"""Token economy: a long thread keeps a flat request size, facts survive folding, and the
summary route's cost is counted separately."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from core.engine import Engine
from core.sink import CollectingSink
from core.types import Author, ConversationKey, Incoming
from tests.fakes.cometapi import FakeCometAPI
from tests.support import team_model

FILLER = "we talked about the weather and lunch plans and other small things again"


async def test_a_fact_from_turn_one_is_answerable_at_turn_two_hundred(
    engine_with: Callable[..., AbstractAsyncContextManager[Engine]], cometapi: FakeCometAPI
) -> None:
    cometapi.set_responder(team_model)
    budget = 1500
    key = ConversationKey("slack", "T1", "C1", "long-thread")
    async with engine_with(history_token_budget=budget) as engine:
        sizes = []
        for turn in range(1, 201):
            if turn == 1:
                text = "Remember this: the staging database password hint is MARMALADE 7741."
            elif turn == 200:
                text = "What was the password hint I gave at the very start?"
            else:
                text = f"{FILLER} ({'x' * (turn % 7)})"
            incoming = Incoming(key, f"ev-{turn}", Author("U1", "Ana"), text)
            sink = CollectingSink()
            await engine.reply(incoming, sink)
            assert sink.text is not None, sink.error
            sizes.append(len(json.dumps(cometapi.requests_for("gpt-5.3-chat-latest")[-1].messages)))

        last = cometapi.requests_for("gpt-5.3-chat-latest")[-1]
        assert "MARMALADE 7741" in last.messages[0]["content"]  # in the rolling summary
        assert all("MARMALADE" not in m["content"] for m in last.messages[1:])
        # the request stays flat: late requests are no bigger than the budget allows
        assert max(sizes[100:]) / 4 < budget + 700
        assert max(sizes[100:]) < 1.5 * max(sizes[20:60])
        folds = [r for r in cometapi.requests if "running memory" in r.system_text]
        assert 5 <= len(folds) <= 40  # batches, not one call per turn
        # every fold request carried the previous memory forward
        assert all("MARMALADE 7741" in r.last_user_text for r in folds)

        report = await engine.usage(key.tenant)
        summary_in, _, summary_cost = report.by_route("summary")
        dialogue_in, _, dialogue_cost = report.by_route("dialogue")
        assert summary_in > 0
        assert 0 < summary_cost < dialogue_cost
        assert dialogue_in > summary_in
