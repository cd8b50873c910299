"""Self-tests for tests/fakes/slack_api.py: the fake Slack Web API and the inbound builders.

Every Web API call goes through the real ``slack_sdk`` ``AsyncWebClient`` (or raw aiohttp where
the point is the wire format), and the bodies are checked against Slack's public OpenAPI spec.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

import aiohttp
import jsonschema
import pytest
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.models.messages.chunk import MarkdownTextChunk, TaskUpdateChunk
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from tests.fakes.slack_api import SPEC_ERRATA, FakeSlack, SlackPayloads, SlackSigner, SlackSpec

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

TOKEN = "xoxb-test"
TEAM = "T0TEAMTEST1"
BOT = "U0TEAMBOT01"
BOT_ID = "B0TEAMBOT01"
ALICE = "U0ALICE0001"
BOB = "U0BOB000001"
CAROL = "U0CAROL0001"
GENERAL = "C0GENERAL01"
RANDOM = "C0RANDOM001"
SECRET_CHANNEL = "C0SECRET001"

SPEC = SlackSpec()


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(bot_token=TOKEN, team_id=TEAM, bot_user_id=BOT, bot_id=BOT_ID) as fake:
        fake.add_user(ALICE, "alice", display_name="Alice", real_name="Alice Example")
        fake.add_user(BOB, "bob", display_name="Bob", real_name="Bob Example")
        fake.add_user(CAROL, "carol", real_name="Carol Example")
        fake.add_channel(GENERAL, "general", members=[ALICE, BOB])
        yield fake


@pytest.fixture
def client(slack: FakeSlack) -> AsyncWebClient:
    return AsyncWebClient(token=TOKEN, base_url=slack.api_url)


def spec_ok(method: str, body: Any) -> None:
    SPEC.validate(method, dict(body))


# ------------------------------------------------------------------------- server and auth


async def test_server_listens_on_loopback_and_stops_with_the_context() -> None:
    async with FakeSlack() as fake:
        assert fake.api_url.startswith("http://127.0.0.1:")
        assert fake.api_url.endswith("/api/")
        url = fake.api_url + "auth.test"
        async with aiohttp.ClientSession() as http, http.post(url) as res:
            assert res.status == 200
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientConnectionError):
            async with http.post(url):
                pass


async def test_auth_test_answers_the_bot_identity(slack: FakeSlack, client: AsyncWebClient) -> None:
    res = await client.auth_test()
    spec_ok("auth.test", res.data)
    assert res["user_id"] == BOT
    assert res["bot_id"] == BOT_ID
    assert res["team_id"] == TEAM
    call = slack.calls_to("auth.test")[0]
    assert call.headers["Authorization"] == f"Bearer {TOKEN}"


async def test_missing_token_is_not_authed_with_http_200(slack: FakeSlack) -> None:
    async with aiohttp.ClientSession() as http, http.post(slack.api_url + "auth.test") as res:
        assert res.status == 200
        body = await res.json()
    assert body == {"ok": False, "error": "not_authed"}
    spec_ok("auth.test", body)


async def test_wrong_token_is_invalid_auth(slack: FakeSlack) -> None:
    bad = AsyncWebClient(token="xoxb-wrong", base_url=slack.api_url)
    with pytest.raises(SlackApiError) as info:
        await bad.chat_postMessage(channel=GENERAL, text="hi")
    assert info.value.response.status_code == 200
    assert info.value.response["error"] == "invalid_auth"
    spec_ok("chat.postMessage", info.value.response.data)
    assert slack.messages(GENERAL) == []


async def test_token_argument_and_form_encoded_body(slack: FakeSlack) -> None:
    """Slack accepts the token as a POST argument and blocks as a URL-encoded JSON string."""
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*hi*"}}]
    form = {"token": TOKEN, "channel": GENERAL, "text": "hi", "blocks": json.dumps(blocks)}
    url = slack.api_url + "chat.postMessage"
    async with aiohttp.ClientSession() as http, http.post(url, data=form) as res:
        body = await res.json()
    spec_ok("chat.postMessage", body)
    assert body["message"]["blocks"] == blocks
    assert slack.calls_to("chat.postMessage")[0].content_type == (
        "application/x-www-form-urlencoded"
    )


async def test_read_methods_take_query_args_and_ignore_json_bodies(slack: FakeSlack) -> None:
    """conversations.* consume form/query arguments only (spec 'consumes'); a JSON body's
    arguments are not read, so the channel is missing."""
    parent = slack.add_message(GENERAL, "q", user=ALICE)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    url = slack.api_url + "conversations.replies"
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.get(url, params={"channel": GENERAL, "ts": parent}) as res:
            got = await res.json()
        async with http.post(url, json={"channel": GENERAL, "ts": parent}) as res:
            ignored = await res.json()
    assert got["ok"] is True
    assert [m["ts"] for m in got["messages"]] == [parent]
    assert ignored == {"ok": False, "error": "channel_not_found"}
    spec_ok("conversations.replies", ignored)


async def test_unknown_method(slack: FakeSlack, client: AsyncWebClient) -> None:
    with pytest.raises(SlackApiError) as info:
        await client.api_call("chat.frobnicate", json={"channel": GENERAL})
    assert info.value.response.status_code == 404
    assert info.value.response["error"] == "unknown_method"


@pytest.mark.parametrize(
    "method", ["chat.postMessage", "chat.update", "chat.postEphemeral", "reactions.add"]
)
async def test_each_argument_the_spec_requires_is_enforced(
    slack: FakeSlack, client: AsyncWebClient, method: str
) -> None:
    """Leaving out any argument the spec marks required gives an error from the method's enum."""
    parent = slack.add_message(GENERAL, "hello", user=ALICE)
    own = await client.chat_postMessage(channel=GENERAL, text="mine", thread_ts=parent)
    full: dict[str, Any] = {
        "channel": GENERAL,
        "text": "x",
        "ts": own["ts"],
        "user": ALICE,
        "name": "eyes",
        "timestamp": parent,
    }
    required = SPEC.required_args(method)
    assert required
    for arg in required:
        args = {k: v for k, v in full.items() if k != arg}
        with pytest.raises(SlackApiError) as info:
            await client.api_call(method, params=args)
        body = info.value.response.data
        assert body["error"] in SPEC.error_names(method), (arg, body)
        spec_ok(method, body)


@pytest.mark.parametrize(
    "method",
    [
        "chat.postMessage",
        "chat.update",
        "chat.delete",
        "chat.postEphemeral",
        "conversations.replies",
        "conversations.history",
        "conversations.info",
        "conversations.members",
        "users.info",
        "reactions.add",
    ],
)
async def test_a_call_with_no_arguments_fails_with_a_spec_error(
    client: AsyncWebClient, method: str
) -> None:
    with pytest.raises(SlackApiError) as info:
        await client.api_call(method, params={})
    assert info.value.response.status_code == 200
    spec_ok(method, info.value.response.data)


# ------------------------------------------------------------------------- posting


async def test_post_update_and_read_a_thread(slack: FakeSlack, client: AsyncWebClient) -> None:
    parent = slack.add_message(GENERAL, f"<@{BOT}> what is up?", user=ALICE)
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "thinking…"}}]
    posted = await client.chat_postMessage(
        channel=GENERAL,
        thread_ts=parent,
        text="thinking…",
        blocks=blocks,
        unfurl_links=False,
        unfurl_media=False,
        mrkdwn=True,
    )
    spec_ok("chat.postMessage", posted.data)
    assert posted["message"]["thread_ts"] == parent
    assert posted["message"]["parent_user_id"] == ALICE
    assert posted["message"]["bot_id"] == BOT_ID
    call = slack.calls_to("chat.postMessage")[0]
    assert call.args["unfurl_links"] is False
    assert call.args["unfurl_media"] is False
    assert call.content_type == "application/json"

    updated = await client.chat_update(
        channel=GENERAL,
        ts=posted["ts"],
        text="All good.",
        blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": "All good."}}],
    )
    spec_ok("chat.update", updated.data)
    assert updated["text"] == "All good."
    assert updated["message"]["edited"]["user"] == BOT

    replies = await client.conversations_replies(channel=GENERAL, ts=parent)
    spec_ok("conversations.replies", replies.data)
    head, reply = replies["messages"]
    # The required fields of the spec's parent / reply variants (see SPEC_ERRATA).
    for key in ("type", "user", "text", "thread_ts", "reply_count", "ts"):
        assert key in head
    for key in ("type", "user", "text", "thread_ts", "parent_user_id", "ts"):
        assert key in reply
    assert head["reply_count"] == 1
    assert head["reply_users"] == [BOT]
    assert head["latest_reply"] == posted["ts"]
    assert reply["text"] == "All good."

    seen = slack.thread(GENERAL, parent)
    assert [(m.user, m.text, m.is_bot, m.edited) for m in seen] == [
        (ALICE, f"<@{BOT}> what is up?", False, False),
        (BOT, "All good.", True, True),
    ]


async def test_a_reply_to_a_reply_joins_the_parent_thread(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    parent = slack.add_message(GENERAL, "root", user=ALICE)
    reply = slack.add_message(GENERAL, "first", user=BOB, thread_ts=parent)
    res = await client.chat_postMessage(channel=GENERAL, thread_ts=reply, text="second")
    assert res["message"]["thread_ts"] == parent
    assert [m.text for m in slack.thread(GENERAL, parent)] == ["root", "first", "second"]


async def test_message_content_limits(slack: FakeSlack, client: AsyncWebClient) -> None:
    async def error_of(**args: Any) -> dict[str, Any]:
        with pytest.raises(SlackApiError) as info:
            await client.api_call("chat.postMessage", json=args)
        return dict(info.value.response.data)

    no_text = await error_of(channel=GENERAL)
    assert no_text["error"] == "no_text"
    spec_ok("chat.postMessage", no_text)

    too_long = await error_of(channel=GENERAL, text="x" * 40_001)
    assert too_long["error"] == "msg_too_long"
    spec_ok("chat.postMessage", too_long)
    ok = await client.chat_postMessage(channel=GENERAL, text="x" * 40_000)
    assert ok["ok"] is True

    section = {"type": "section", "text": {"type": "plain_text", "text": "b"}}
    too_many = await error_of(channel=GENERAL, text="b", blocks=[section] * 51)
    assert too_many["error"] == "invalid_blocks"
    assert too_many["response_metadata"]["messages"]
    SPEC.validate("chat.postMessage", too_many, strict_enum=False)
    fifty = await client.chat_postMessage(channel=GENERAL, text="b", blocks=[section] * 50)
    assert len(fifty["message"]["blocks"]) == 50

    unknown = await error_of(channel="C0NOSUCH001", text="hi")
    assert unknown["error"] == "channel_not_found"
    no_thread = await error_of(channel=GENERAL, text="hi", thread_ts="1500000000.000001")
    assert no_thread["error"] == "thread_not_found"

    slack.add_channel(RANDOM, "random", members=[ALICE], bot_is_member=False)
    not_in = await error_of(channel=RANDOM, text="hi")
    assert not_in["error"] == "not_in_channel"
    spec_ok("chat.postMessage", not_in)
    slack.add_channel(SECRET_CHANNEL, "secret", is_private=True, bot_is_member=False)
    hidden = await error_of(channel=SECRET_CHANNEL, text="hi")
    assert hidden["error"] == "channel_not_found"


async def test_markdown_text(slack: FakeSlack, client: AsyncWebClient) -> None:
    res = await client.chat_postMessage(channel=GENERAL, markdown_text="**bold** and `code`")
    spec_ok("chat.postMessage", res.data)
    assert res["message"]["text"] == "**bold** and `code`"
    assert res["message"]["blocks"][0]["type"] == "markdown"
    with pytest.raises(SlackApiError) as info:
        await client.chat_postMessage(channel=GENERAL, text="t", markdown_text="m")
    assert info.value.response["error"] == "invalid_arguments"
    with pytest.raises(SlackApiError) as info:
        await client.chat_postMessage(channel=GENERAL, markdown_text="m" * 12_001)
    assert info.value.response["error"] == "msg_too_long"


async def test_posting_to_a_user_id_lands_in_the_apps_dm(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    res = await client.chat_postMessage(channel=ALICE, text="psst")
    dm = res["channel"]
    assert dm.startswith("D")
    assert dm == slack.add_im(ALICE)
    info = await client.conversations_info(channel=dm)
    spec_ok("conversations.info", info.data)
    assert info["channel"]["is_im"] is True
    assert info["channel"]["user"] == ALICE


async def test_update_and_delete_rules(slack: FakeSlack, client: AsyncWebClient) -> None:
    theirs = slack.add_message(GENERAL, "a person's message", user=ALICE)
    with pytest.raises(SlackApiError) as info:
        await client.chat_update(channel=GENERAL, ts=theirs, text="edit")
    assert info.value.response["error"] == "cant_update_message"
    spec_ok("chat.update", info.value.response.data)
    with pytest.raises(SlackApiError) as info:
        await client.chat_delete(channel=GENERAL, ts=theirs)
    assert info.value.response["error"] == "cant_delete_message"
    with pytest.raises(SlackApiError) as info:
        await client.chat_update(channel=GENERAL, ts="1500000000.000001", text="edit")
    assert info.value.response["error"] == "message_not_found"

    # A bot parent with replies becomes a tombstone; a plain message disappears.
    parent = (await client.chat_postMessage(channel=GENERAL, text="parent"))["ts"]
    slack.add_message(GENERAL, "reply", user=BOB, thread_ts=parent)
    lone = (await client.chat_postMessage(channel=GENERAL, text="lone"))["ts"]
    for ts in (parent, lone):
        res = await client.chat_delete(channel=GENERAL, ts=ts)
        spec_ok("chat.delete", res.data)
    assert [(m.subtype, m.text) for m in slack.thread(GENERAL, parent)] == [
        ("tombstone", "This message was deleted."),
        (None, "reply"),
    ]
    assert slack.message(GENERAL, lone) is None


async def test_ephemeral_and_reactions(slack: FakeSlack, client: AsyncWebClient) -> None:
    res = await client.chat_postEphemeral(channel=GENERAL, user=ALICE, text="only you")
    spec_ok("chat.postEphemeral", res.data)
    assert [(e.channel, e.text) for e in slack.ephemerals(ALICE)] == [(GENERAL, "only you")]
    assert slack.ephemerals(BOB) == []
    assert slack.messages(GENERAL) == []
    with pytest.raises(SlackApiError) as info:
        await client.chat_postEphemeral(channel=GENERAL, user=CAROL, text="not here")
    assert info.value.response["error"] == "user_not_in_channel"

    ts = slack.add_message(GENERAL, "nice", user=BOB)
    ok = await client.reactions_add(channel=GENERAL, name="eyes", timestamp=ts)
    spec_ok("reactions.add", ok.data)
    with pytest.raises(SlackApiError) as info:
        await client.reactions_add(channel=GENERAL, name="eyes", timestamp=ts)
    assert info.value.response["error"] == "already_reacted"
    spec_ok("reactions.add", info.value.response.data)
    assert slack.message(GENERAL, ts) is not None
    assert slack.thread(GENERAL, ts)[0].reactions == {"eyes": [BOT]}


# ------------------------------------------------------------------------- reading


@pytest.mark.parametrize("parent_on_every_page", [True, False])
async def test_paginating_a_500_reply_thread(parent_on_every_page: bool) -> None:
    async with FakeSlack(
        bot_token=TOKEN,
        team_id=TEAM,
        bot_user_id=BOT,
        bot_id=BOT_ID,
        replies_parent_on_every_page=parent_on_every_page,
    ) as slack:
        slack.add_user(ALICE, "alice")
        slack.add_user(BOB, "bob")
        slack.add_channel(GENERAL, "general", members=[ALICE, BOB])
        parent = slack.seed_thread(GENERAL, 500, users=[ALICE, BOB])
        client = slack.client()
        seen: list[str] = []
        cursor: str | None = None
        pages = 0
        while True:
            res = await client.conversations_replies(
                channel=GENERAL, ts=parent, limit=200, cursor=cursor
            )
            spec_ok("conversations.replies", res.data)
            pages += 1
            messages = res["messages"]
            starts_with_parent = messages[0]["ts"] == parent
            assert starts_with_parent is (pages == 1 or parent_on_every_page)
            seen += [m["ts"] for m in messages if m["ts"] not in seen]
            metadata: dict[str, str] = res.get("response_metadata") or {}
            cursor = metadata.get("next_cursor")
            assert res["has_more"] is bool(cursor)
            if not cursor:
                break
        assert pages == 3
        assert len(seen) == 501
        assert seen == sorted(seen)
        assert seen[0] == parent
        head = await client.conversations_replies(channel=GENERAL, ts=parent, limit=1)
        assert head["messages"][0]["reply_count"] == 500
        assert head["messages"][0]["reply_users"] == [BOB, ALICE]

        # slack_sdk's own cursor iteration walks the same pages.
        walked: set[str] = set()
        async for page in await client.conversations_replies(channel=GENERAL, ts=parent, limit=150):
            walked |= {m["ts"] for m in page["messages"]}
        assert len(walked) == 501


async def test_replies_time_range_and_bad_arguments(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    parent = slack.seed_thread(GENERAL, 5, users=[ALICE, BOB])
    replies = [m.ts for m in slack.thread(GENERAL, parent)[1:]]

    async def texts(**kw: Any) -> list[str]:
        res = await client.conversations_replies(channel=GENERAL, ts=parent, **kw)
        spec_ok("conversations.replies", res.data)
        return [m["text"] for m in res["messages"]]

    assert await texts(oldest=replies[1]) == [
        "thread parent",
        "message 3",
        "message 4",
        "message 5",
    ]
    assert await texts(oldest=replies[1], inclusive=True) == [
        "thread parent",
        "message 2",
        "message 3",
        "message 4",
        "message 5",
    ]
    assert await texts(oldest=replies[0], latest=replies[3]) == [
        "thread parent",
        "message 2",
        "message 3",
    ]
    # Asking by a reply's ts returns the whole thread.
    by_reply = await client.conversations_replies(channel=GENERAL, ts=replies[2])
    assert len(by_reply["messages"]) == 6

    cases: list[tuple[dict[str, Any], str]] = [
        ({"ts": "1500000000.000001"}, "thread_not_found"),
        ({"ts": parent, "cursor": "bm9wZQ=="}, "invalid_cursor"),
        ({"ts": parent, "oldest": "yesterday"}, "invalid_ts_oldest"),
    ]
    for kw, error in cases:
        with pytest.raises(SlackApiError) as info:
            await client.conversations_replies(channel=GENERAL, **kw)
        assert info.value.response["error"] == error
        SPEC.validate("conversations.replies", info.value.response.data, strict_enum=False)


async def test_history_lists_top_level_messages_newest_first(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    first = slack.add_message(GENERAL, "first", user=ALICE)
    threaded = slack.seed_thread(GENERAL, 3, users=[BOB, CAROL], parent_text="a thread")
    files = [slack.add_file("notes.txt", "text/plain", b"notes", user=ALICE)]
    with_file = slack.add_message(GENERAL, "see attached", user=ALICE, files=files)
    broadcast = slack.add_message(
        GENERAL, "also in channel", user=CAROL, thread_ts=threaded, reply_broadcast=True
    )
    res = await client.conversations_history(channel=GENERAL)
    spec_ok("conversations.history", res.data)
    assert [m["ts"] for m in res["messages"]] == [broadcast, with_file, threaded, first]
    parent = res["messages"][2]
    assert parent["reply_count"] == 4
    assert parent["thread_ts"] == threaded
    assert parent["reply_users"] == [CAROL, BOB]
    assert parent["latest_reply"] == broadcast
    assert res["messages"][1]["files"][0]["name"] == "notes.txt"
    assert res["has_more"] is False
    assert "thread_ts" not in res["messages"][3]

    page1 = await client.conversations_history(channel=GENERAL, limit=2)
    spec_ok("conversations.history", page1.data)
    assert page1["has_more"] is True
    page2 = await client.conversations_history(
        channel=GENERAL, limit=2, cursor=page1["response_metadata"]["next_cursor"]
    )
    assert [m["ts"] for m in page1["messages"] + page2["messages"]] == [
        broadcast,
        with_file,
        threaded,
        first,
    ]
    window = await client.conversations_history(
        channel=GENERAL, oldest=first, latest=with_file, inclusive=True
    )
    assert [m["ts"] for m in window["messages"]] == [with_file, threaded, first]
    exclusive = await client.conversations_history(channel=GENERAL, oldest=first, latest=with_file)
    assert [m["ts"] for m in exclusive["messages"]] == [threaded]

    empty_channel = "C0EMPTY0001"
    slack.add_channel(empty_channel, "empty")
    empty = await client.conversations_history(channel=empty_channel)
    spec_ok("conversations.history", empty.data)
    assert empty["messages"] == []


async def test_page_cap_acts_like_a_non_marketplace_app() -> None:
    async with FakeSlack(bot_token=TOKEN, page_cap=15) as slack:
        slack.add_user(ALICE, "alice")
        slack.add_channel(GENERAL, "general", members=[ALICE])
        parent = slack.seed_thread(GENERAL, 40, users=[ALICE])
        res = await slack.client().conversations_replies(channel=GENERAL, ts=parent, limit=200)
        assert len(res["messages"]) == 15
        assert res["has_more"] is True


async def test_info_members_and_users(slack: FakeSlack, client: AsyncWebClient) -> None:
    info = await client.conversations_info(channel=GENERAL, include_num_members=True)
    spec_ok("conversations.info", info.data)
    assert info["channel"]["name"] == "general"
    assert info["channel"]["is_member"] is True
    assert info["channel"]["num_members"] == 3

    for n in range(20):
        slack.add_user(f"U0MEMBER{n:03d}", f"member{n}")
    slack.add_channel(RANDOM, "random", members=[f"U0MEMBER{n:03d}" for n in range(20)])
    members: list[str] = []
    cursor = ""
    while True:
        page = await client.conversations_members(channel=RANDOM, limit=7, cursor=cursor or None)
        spec_ok("conversations.members", page.data)
        members += page["members"]
        cursor = page["response_metadata"]["next_cursor"]
        if not cursor:
            break
    assert len(members) == 21
    assert members[-1] == BOT

    alice = await client.users_info(user=ALICE, include_locale=True)
    spec_ok("users.info", alice.data)
    SPEC.validate_definition("objs_user", alice["user"])
    assert alice["user"]["profile"]["display_name"] == "Alice"
    assert alice["user"]["real_name"] == "Alice Example"
    assert alice["user"]["is_bot"] is False
    bot = await client.users_info(user=BOT)
    assert bot["user"]["is_bot"] is True
    assert bot["user"]["profile"]["bot_id"] == BOT_ID
    with pytest.raises(SlackApiError) as info_err:
        await client.users_info(user="U0NOBODY001")
    assert info_err.value.response["error"] == "user_not_found"
    spec_ok("users.info", info_err.value.response.data)

    slack.add_channel(SECRET_CHANNEL, "secret", is_private=True, bot_is_member=False)
    with pytest.raises(SlackApiError) as info_err:
        await client.conversations_info(channel=SECRET_CHANNEL)
    assert info_err.value.response["error"] == "channel_not_found"


# ------------------------------------------------------------------------- faults


async def test_rate_limit_is_honoured_by_the_retry_handler(slack: FakeSlack) -> None:
    slack.rate_limit("chat.postMessage", times=1, retry_after=0)
    client = AsyncWebClient(
        token=TOKEN,
        base_url=slack.api_url,
        retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=1)],
    )
    res = await client.chat_postMessage(channel=GENERAL, text="after the wait")
    assert res["ok"] is True
    first, second = slack.calls_to("chat.postMessage")
    assert (first.status, first.error) == (429, "ratelimited")
    assert second.ok
    assert [m.text for m in slack.messages(GENERAL)] == ["after the wait"]


async def test_rate_limit_reaches_a_client_without_the_handler(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    slack.rate_limit("conversations.replies", times=2, retry_after=7)
    parent = slack.add_message(GENERAL, "q", user=ALICE)
    for _ in range(2):
        with pytest.raises(SlackApiError) as info:
            await client.conversations_replies(channel=GENERAL, ts=parent)
        assert info.value.response.status_code == 429
        assert info.value.response.headers["Retry-After"] == "7"
        assert info.value.response["error"] == "ratelimited"
        SPEC.validate("conversations.replies", info.value.response.data, status=429)
    res = await client.conversations_replies(channel=GENERAL, ts=parent)
    assert res["ok"] is True


async def test_injected_errors_and_server_errors(slack: FakeSlack, client: AsyncWebClient) -> None:
    slack.fail("chat.postMessage", "is_archived", times=1)
    with pytest.raises(SlackApiError) as info:
        await client.chat_postMessage(channel=GENERAL, text="x")
    assert info.value.response["error"] == "is_archived"
    spec_ok("chat.postMessage", info.value.response.data)
    assert (await client.chat_postMessage(channel=GENERAL, text="x"))["ok"] is True

    slack.server_error("chat.postMessage", status=503, times=1)
    with pytest.raises(SlackApiError) as info:
        await client.chat_postMessage(channel=GENERAL, text="y")
    assert info.value.response.status_code == 503

    slack.server_error("chat.postMessage", status=500, times=1)
    retrying = AsyncWebClient(
        token=TOKEN,
        base_url=slack.api_url,
        retry_handlers=[AsyncServerErrorRetryHandler(max_retry_count=1)],
    )
    retrying.retry_handlers[0].interval_calculator.backoff_factor = 0.01  # type: ignore[attr-defined]
    assert (await retrying.chat_postMessage(channel=GENERAL, text="z"))["ok"] is True
    assert [m.text for m in slack.messages(GENERAL)] == ["x", "z"]

    slack.fail("users.info", "fatal_error", times=None)
    for _ in range(3):
        with pytest.raises(SlackApiError):
            await client.users_info(user=ALICE)
    slack.clear_faults()
    assert (await client.users_info(user=ALICE))["ok"] is True


# ------------------------------------------------------------------------- streaming


async def test_stream_methods_build_one_growing_message(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    parent = slack.add_message(GENERAL, f"<@{BOT}> explain", user=ALICE)
    start = await client.chat_startStream(
        channel=GENERAL,
        thread_ts=parent,
        recipient_team_id=TEAM,
        recipient_user_id=ALICE,
        markdown_text="Hel",
    )
    assert set(start.data) == {"ok", "channel", "ts"}
    ts = start["ts"]
    assert slack.thread(GENERAL, parent)[-1].text == "Hel"
    assert slack.thread(GENERAL, parent)[-1].streaming is True

    await client.chat_appendStream(channel=GENERAL, ts=ts, markdown_text="lo ")
    await client.chat_appendStream(
        channel=GENERAL,
        ts=ts,
        chunks=[
            MarkdownTextChunk(text="world"),
            TaskUpdateChunk(id="t1", title="Searching", status="complete"),
        ],
    )
    mid = await client.conversations_replies(channel=GENERAL, ts=parent)
    assert mid["messages"][-1]["text"] == "Hello world"
    with pytest.raises(SlackApiError) as info:
        await client.chat_appendStream(channel=GENERAL, ts=ts, markdown_text="x" * 12_001)
    assert info.value.response["error"] == "msg_too_long"
    assert slack.thread(GENERAL, parent)[-1].text == "Hello world"

    footer = [{"type": "context", "elements": [{"type": "mrkdwn", "text": "AI-generated"}]}]
    stop = await client.chat_stopStream(channel=GENERAL, ts=ts, markdown_text="!", blocks=footer)
    assert stop["ts"] == ts
    SPEC.validate_definition("objs_message", stop["message"])
    final = slack.thread(GENERAL, parent)[-1]
    assert (final.text, final.is_bot, final.streamed, final.streaming) == (
        "Hello world!",
        True,
        True,
        False,
    )
    assert final.blocks[-1] == footer[0]
    assert [c["type"] for c in final.chunks] == [
        "markdown_text",
        "markdown_text",
        "markdown_text",
        "task_update",
        "markdown_text",
    ]

    with pytest.raises(SlackApiError) as info:
        await client.chat_appendStream(channel=GENERAL, ts=ts, markdown_text="more")
    assert info.value.response["error"] == "message_not_in_streaming_state"


async def test_stream_argument_rules(slack: FakeSlack, client: AsyncWebClient) -> None:
    parent = slack.add_message(GENERAL, "q", user=ALICE)
    with pytest.raises(SlackApiError) as info:
        await client.chat_startStream(channel=GENERAL, thread_ts=parent)
    assert info.value.response["error"] == "missing_recipient_user_id"
    with pytest.raises(SlackApiError) as info:
        await client.chat_startStream(channel=GENERAL, thread_ts=parent, recipient_user_id=ALICE)
    assert info.value.response["error"] == "missing_recipient_team_id"
    with pytest.raises(SlackApiError) as info:
        await client.chat_startStream(
            channel=GENERAL,
            thread_ts=parent,
            recipient_user_id=ALICE,
            recipient_team_id=TEAM,
            markdown_text="x" * 12_001,
        )
    assert info.value.response["error"] == "msg_too_long"
    with pytest.raises(SlackApiError) as info:
        await client.api_call(
            "chat.startStream",
            json={
                "channel": GENERAL,
                "thread_ts": parent,
                "recipient_user_id": ALICE,
                "recipient_team_id": TEAM,
                "chunks": [{"type": "hologram"}],
            },
        )
    assert info.value.response["error"] == "invalid_chunks"

    # In a DM the recipient is implied.
    dm = slack.add_im(ALICE)
    question = slack.add_message(dm, "hi", user=ALICE)
    res = await client.chat_startStream(channel=dm, thread_ts=question, markdown_text="yo")
    started = res["ts"]
    with pytest.raises(SlackApiError) as info:
        await client.chat_appendStream(channel=dm, ts=question, markdown_text="not mine")
    assert info.value.response["error"] == "message_not_in_streaming_state"
    await client.chat_stopStream(channel=dm, ts=started)
    assert slack.thread(dm, question)[-1].text == "yo"
    assert len(slack.calls_to("chat.startStream")) == 5


async def test_chat_stream_helper(slack: FakeSlack, client: AsyncWebClient) -> None:
    parent = slack.add_message(GENERAL, f"<@{BOT}> tell me", user=ALICE)
    streamer = await client.chat_stream(
        channel=GENERAL,
        thread_ts=parent,
        recipient_team_id=TEAM,
        recipient_user_id=ALICE,
        buffer_size=8,
    )
    words = ["Once ", "upon ", "a ", "time ", "there ", "was ", "a ", "fake."]
    for word in words:
        await streamer.append(markdown_text=word)
    await streamer.stop()
    final = slack.thread(GENERAL, parent)[-1]
    assert final.text == "".join(words)
    assert final.streamed
    assert not final.streaming
    methods = [c.method for c in slack.calls if c.method.startswith("chat.")]
    assert methods[0] == "chat.startStream"
    assert methods[-1] == "chat.stopStream"
    assert "chat.appendStream" in methods
    with pytest.raises(SlackRequestError):
        await streamer.append(markdown_text="late")


async def test_refused_streaming(slack: FakeSlack, client: AsyncWebClient) -> None:
    parent = slack.add_message(GENERAL, "q", user=ALICE)
    slack.refuse_streaming()
    streamer = await client.chat_stream(
        channel=GENERAL, thread_ts=parent, recipient_team_id=TEAM, recipient_user_id=ALICE
    )
    with pytest.raises(SlackApiError) as info:
        await streamer.stop(markdown_text="answer")
    assert info.value.response["error"] == "channel_type_not_supported"
    assert len(slack.thread(GENERAL, parent)) == 1
    # Still refused: a fallback to chat.postMessage is what works.
    with pytest.raises(SlackApiError):
        await client.chat_startStream(
            channel=GENERAL, thread_ts=parent, recipient_team_id=TEAM, recipient_user_id=ALICE
        )
    await client.chat_postMessage(channel=GENERAL, thread_ts=parent, text="answer")
    assert [m.streamed for m in slack.thread(GENERAL, parent)] == [False, False]

    slack.refuse_streaming("not_allowed_token_type", times=1)
    with pytest.raises(SlackApiError) as info:
        await client.chat_startStream(channel=GENERAL, thread_ts=parent)
    assert info.value.response["error"] == "not_allowed_token_type"
    res = await client.chat_startStream(
        channel=GENERAL, thread_ts=parent, recipient_team_id=TEAM, recipient_user_id=ALICE
    )
    assert res["ok"] is True


async def test_broken_and_expired_streams(slack: FakeSlack, client: AsyncWebClient) -> None:
    parent = slack.add_message(GENERAL, "q", user=ALICE)
    kw: dict[str, Any] = {"recipient_team_id": TEAM, "recipient_user_id": ALICE}
    ts = (await client.chat_startStream(channel=GENERAL, thread_ts=parent, **kw))["ts"]
    slack.break_stream_after(2)
    await client.chat_appendStream(channel=GENERAL, ts=ts, markdown_text="one ")
    await client.chat_appendStream(channel=GENERAL, ts=ts, markdown_text="two ")
    with pytest.raises(SlackApiError) as info:
        await client.chat_appendStream(channel=GENERAL, ts=ts, markdown_text="three")
    assert info.value.response["error"] == "message_not_in_streaming_state"
    with pytest.raises(SlackApiError):
        await client.chat_stopStream(channel=GENERAL, ts=ts)
    partial = slack.thread(GENERAL, parent)[-1]
    assert (partial.text, partial.streaming) == ("one two ", False)
    # The partial message can still be finished with chat.update.
    await client.chat_update(channel=GENERAL, ts=ts, text="one two three")
    assert slack.thread(GENERAL, parent)[-1].text == "one two three"

    slack.clear_faults()
    ts2 = (await client.chat_startStream(channel=GENERAL, thread_ts=parent, **kw))["ts"]
    slack.expire_streams()
    with pytest.raises(SlackApiError) as info:
        await client.chat_stopStream(channel=GENERAL, ts=ts2)
    assert info.value.response["error"] == "message_not_in_streaming_state"


async def test_assistant_thread_status(slack: FakeSlack, client: AsyncWebClient) -> None:
    parent = slack.add_message(GENERAL, f"<@{BOT}> ?", user=ALICE)
    res = await client.assistant_threads_setStatus(
        channel_id=GENERAL,
        thread_ts=parent,
        status="is thinking…",
        loading_messages=["Reading the thread…", "Asking the model…"],
    )
    assert res.data == {"ok": True}
    assert slack.thread_status(GENERAL, parent) == "is thinking…"
    assert slack.statuses[-1].loading_messages == ["Reading the thread…", "Asking the model…"]
    await client.chat_postMessage(channel=GENERAL, thread_ts=parent, text="done")
    assert slack.thread_status(GENERAL, parent) == ""

    with pytest.raises(SlackApiError) as info:
        await client.assistant_threads_setStatus(
            channel_id=GENERAL, thread_ts=parent, status="x", loading_messages=["m"] * 11
        )
    assert info.value.response["error"] == "invalid_arguments"
    with pytest.raises(SlackApiError) as info:
        await client.assistant_threads_setStatus(
            channel_id=GENERAL, thread_ts="1500000000.000001", status="x"
        )
    assert info.value.response["error"] == "invalid_thread_ts"


# ------------------------------------------------------------------------- files


@pytest.mark.parametrize("failure", ["redirect", "forbidden"])
async def test_file_download_needs_the_bot_token(failure: str) -> None:
    async with FakeSlack(bot_token=TOKEN, file_auth_failure=failure) as slack:  # type: ignore[arg-type]
        slack.add_user(ALICE, "alice")
        slack.add_channel(GENERAL, "general", members=[ALICE])
        data = bytes(range(256)) * 4
        file = slack.add_file("chart.png", "image/png", data, user=ALICE, channels=[GENERAL])
        SPEC.validate_definition("objs_file", file)
        ts = slack.add_message(GENERAL, "look", user=ALICE, files=[file])
        history = await slack.client().conversations_history(channel=GENERAL)
        assert history["messages"][0]["files"][0]["url_private"] == file["url_private"]
        assert slack.message(GENERAL, ts) is not None

        async with aiohttp.ClientSession() as http:
            auth = {"Authorization": f"Bearer {TOKEN}"}
            for url in (file["url_private"], file["url_private_download"]):
                async with http.get(url, headers=auth) as res:
                    assert res.status == 200
                    assert res.content_type == "image/png"
                    assert await res.read() == data
            async with http.get(file["url_private"], allow_redirects=False) as res:
                assert res.status == (302 if failure == "redirect" else 403)
            wrong = {"Authorization": "Bearer xoxb-wrong"}
            async with http.get(file["url_private"], headers=wrong) as res:
                body = await res.read()
                if failure == "redirect":
                    # Followed to the sign-in page: 200, HTML, not the file.
                    assert res.status == 200
                    assert res.content_type == "text/html"
                else:
                    assert res.status == 403
                assert body != data
        assert [d.authorized for d in slack.file_downloads][:3] == [True, True, False]


# ------------------------------------------------------------------------- response_url


async def test_response_url_records_replies(slack: FakeSlack) -> None:
    form = slack.payloads.slash_command("/ask", "what's new", user_id=ALICE, channel_id=GENERAL)
    url = form["response_url"]
    assert url.startswith(slack.base_url + "/response/")
    hook = AsyncWebhookClient(url)
    res = await hook.send(text="Working on it…", response_type="ephemeral")
    assert res.status_code == 200
    res = await hook.send(text="Here it is", response_type="in_channel", replace_original=True)
    assert res.status_code == 200
    res = await hook.send_dict({"delete_original": True})
    assert res.status_code == 200
    assert [(r.response_type, r.replace_original, r.delete_original) for r in slack.responses] == [
        ("ephemeral", False, False),
        ("in_channel", True, False),
        ("ephemeral", False, True),
    ]
    assert slack.responses[1].text == "Here it is"
    for n in range(2):
        assert (await hook.send(text=f"extra {n}")).status_code == 200
    assert (await hook.send(text="sixth")).status_code == 404  # five uses per response_url


# ------------------------------------------------------------------------- inbound builders


async def test_event_envelopes_match_the_wrapper_schema(slack: FakeSlack) -> None:
    p = slack.payloads
    dm = slack.add_im(ALICE)
    file = slack.add_file("a.txt", "text/plain", b"a", user=ALICE)
    mention = slack.mention(GENERAL, ALICE, "summarize this", files=[file])
    parent = mention["event"]["ts"]
    envelopes = [
        mention,
        slack.user_message(GENERAL, BOB, "in thread", thread_ts=parent),
        slack.user_message(dm, ALICE, "hello in DM"),
        p.message(GENERAL, ALICE, "plain"),
        p.message(GENERAL, ALICE, "with a file", files=[file]),
        p.bot_message(GENERAL, "from another app", bot_id="B0OTHERAPP1", user="U0OTHERBOT1"),
        p.bot_message(GENERAL, "legacy", bot_id="B0WEBHOOK01", legacy=True),
        p.message_changed(GENERAL, user=ALICE, ts=parent, new_text="new", old_text="old"),
        p.message_deleted(GENERAL, user=ALICE, deleted_ts=parent, old_text="old"),
    ]
    ids = set()
    for env in envelopes:
        SPEC.validate_event_envelope(env)
        assert env["type"] == "event_callback"
        assert env["team_id"] == TEAM
        assert env["api_app_id"] == slack.api_app_id
        assert env["authorizations"][0]["user_id"] == BOT
        assert env["event_id"].startswith("Ev")
        assert isinstance(env["event_time"], int)
        ids.add(env["event_id"])
    assert len(ids) == len(envelopes)

    m = mention["event"]
    assert (m["type"], m["channel"], m["user"]) == ("app_mention", GENERAL, ALICE)
    assert m["text"] == f"<@{BOT}> summarize this"
    assert m["blocks"][0]["elements"][0]["elements"][0] == {"type": "user", "user_id": BOT}
    assert m["files"][0]["id"] == file["id"]
    # The stored message and the event agree.
    assert slack.thread(GENERAL, parent)[0].text == m["text"]
    reply = envelopes[1]["event"]
    assert (reply["thread_ts"], reply["parent_user_id"]) == (parent, ALICE)
    assert envelopes[2]["event"]["channel_type"] == "im"
    assert envelopes[4]["event"]["subtype"] == "file_share"
    assert envelopes[5]["event"]["bot_id"] == "B0OTHERAPP1"
    assert "subtype" not in envelopes[5]["event"]
    assert envelopes[6]["event"]["subtype"] == "bot_message"
    changed = envelopes[7]["event"]
    assert changed["subtype"] == "message_changed"
    assert changed["message"]["edited"]["user"] == ALICE
    assert changed["previous_message"]["text"] == "old"
    assert envelopes[8]["event"]["deleted_ts"] == parent

    modern = SlackPayloads(team_id=TEAM, include_authed_users=False)
    bare = modern.message(GENERAL, ALICE, "x")
    assert "authed_users" not in bare
    with pytest.raises(jsonschema.ValidationError):
        SPEC.validate_event_envelope(bare)  # the 2021 schema still requires authed_users


async def test_signed_requests_verify_with_slack_sdk(slack: FakeSlack) -> None:
    signer = slack.signer
    verifier = SignatureVerifier(slack.signing_secret)
    envelope = slack.payloads.app_mention(GENERAL, ALICE, f"<@{BOT}> hi")
    req = signer.json_request(envelope)
    h = req.headers
    assert h["Content-Type"] == "application/json"
    assert verifier.is_valid(req.body, h["X-Slack-Request-Timestamp"], h["X-Slack-Signature"])
    assert verifier.is_valid_request(req.body, h)
    assert not verifier.is_valid(
        req.body + b" ", h["X-Slack-Request-Timestamp"], h["X-Slack-Signature"]
    )
    assert "X-Slack-Retry-Num" not in h

    retry = signer.json_request(envelope, retry_num=1, retry_reason="http_timeout")
    assert retry.headers["X-Slack-Retry-Num"] == "1"
    assert retry.headers["X-Slack-Retry-Reason"] == "http_timeout"
    assert json.loads(retry.body)["event_id"] == envelope["event_id"]

    stale = signer.json_request(envelope, timestamp=int(time.time()) - 600)
    assert not verifier.is_valid_request(stale.body, stale.headers)
    other = SlackSigner("another-secret").json_request(envelope)
    assert not verifier.is_valid_request(other.body, other.headers)

    challenge = slack.payloads.url_verification(
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    )
    assert challenge == {
        "token": slack.verification_token,
        "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
        "type": "url_verification",
    }
    assert verifier.is_valid_request(
        signer.json_request(challenge).body, signer.json_request(challenge).headers
    )


async def test_slash_command_and_message_shortcut_forms(slack: FakeSlack) -> None:
    signer = slack.signer
    verifier = SignatureVerifier(slack.signing_secret)
    fields = slack.payloads.slash_command(
        "/summarize", "last 50", user_id=ALICE, channel_id=GENERAL
    )
    assert fields["command"] == "/summarize"
    assert fields["text"] == "last 50"
    assert (fields["user_id"], fields["user_name"]) == (ALICE, "alice")
    assert (fields["channel_id"], fields["channel_name"]) == (GENERAL, "general")
    assert fields["team_id"] == TEAM
    assert fields["trigger_id"].count(".") == 2
    req = signer.form_request(fields)
    assert req.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert dict(parse_qsl(req.text)) == fields
    assert verifier.is_valid_request(req.body, req.headers)

    ts = slack.add_message(GENERAL, "a long message worth summarizing", user=BOB)
    message = slack.payloads.user_message_object(BOB, "a long message worth summarizing", ts=ts)
    payload = slack.payloads.message_shortcut(
        "summarize_message", user_id=ALICE, channel_id=GENERAL, message=message
    )
    assert payload["type"] == "message_action"
    assert payload["callback_id"] == "summarize_message"
    assert payload["message"]["ts"] == ts == payload["message_ts"]
    assert payload["channel"] == {"id": GENERAL, "name": "general"}
    assert payload["response_url"].startswith(slack.base_url + "/response/")
    form = SlackPayloads.shortcut_form(payload)
    req = signer.form_request(form)
    decoded = dict(parse_qsl(req.text))
    assert json.loads(decoded["payload"]) == payload
    assert req.body == urlencode(form).encode()
    assert verifier.is_valid_request(req.body, req.headers)


# ------------------------------------------------------------------------- spec errata


def test_errata_are_needed_and_documented() -> None:
    """Each erratum the validator applies relaxes a rule a realistic body breaks."""
    import copy as _copy

    assert len(SPEC_ERRATA) == 8
    raw = SPEC.raw

    def raw_schema(method: str, ok: bool = True) -> dict[str, Any]:
        op = raw["paths"][f"/{method}"].get("post") or raw["paths"][f"/{method}"].get("get")
        schema = _copy.deepcopy(op["responses"]["200" if ok else "default"]["schema"])
        schema["definitions"] = raw["definitions"]
        return dict(schema)

    page = {
        "ok": True,
        "messages": [{"type": "message", "text": "x", "ts": "1700000000.000001"}],
        "has_more": True,
        "pin_count": 0,
        "channel_actions_ts": None,
        "channel_actions_count": 0,
        "response_metadata": {"next_cursor": "bmV4dF90czoxNzAwMDAwMDAwMDAwMDAx"},
    }
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft4Validator(raw_schema("conversations.history")).validate(page)
    SPEC.validate("conversations.history", page)

    update = {
        "ok": True,
        "channel": GENERAL,
        "ts": "1700000000.000001",
        "text": "x",
        "message": {"text": "x", "blocks": [{"type": "divider"}]},
    }
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft4Validator(raw_schema("chat.update")).validate(update)
    SPEC.validate("chat.update", update)

    # The union reading is stricter than the raw spec: a bad conversation is caught.
    bad_info = {"ok": True, "channel": {"id": GENERAL}}
    jsonschema.Draft4Validator(raw_schema("conversations.info")).validate(bad_info)
    with pytest.raises(jsonschema.ValidationError):
        SPEC.validate("conversations.info", bad_info)


# ------------------------------------------------------------------------- end to end


async def test_a_bolt_app_in_http_mode_runs_against_the_fake(slack: FakeSlack) -> None:
    """The inbound builders, the signer and the fake together drive a real Bolt AsyncApp
    over HTTP: signature checks pass, say() lands in the thread, respond() in the responses."""
    from aiohttp import web
    from slack_bolt.async_app import AsyncApp

    bolt = AsyncApp(
        signing_secret=slack.signing_secret,
        client=slack.client(),
        process_before_response=True,
    )

    @bolt.event("app_mention")
    async def on_mention(event: dict[str, Any], say: Any) -> None:
        await say(text="hi there", thread_ts=event.get("thread_ts") or event["ts"])

    @bolt.command("/ask")
    async def on_ask(ack: Any, respond: Any, command: dict[str, Any]) -> None:
        await ack()
        await respond(text=f"you asked: {command['text']}", response_type="in_channel")

    @bolt.shortcut("summarize_message")
    async def on_shortcut(ack: Any, respond: Any, shortcut: dict[str, Any]) -> None:
        await ack()
        await respond(text=f"summary of {shortcut['message']['ts']}")

    runner = web.AppRunner(bolt.web_app(path="/slack/events"), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events"
    signer = slack.signer
    try:
        async with aiohttp.ClientSession() as http:

            async def post(req: Any) -> tuple[int, str]:
                async with http.post(url, data=req.body, headers=req.headers) as res:
                    return res.status, await res.text()

            challenge = slack.payloads.url_verification()
            status, text = await post(signer.json_request(challenge))
            assert status == 200
            assert challenge["challenge"] in text

            mention = slack.mention(GENERAL, ALICE, "hello")
            assert (await post(signer.json_request(mention)))[0] == 200
            forged = SlackSigner("not-the-secret").json_request(mention)
            assert (await post(forged))[0] == 401

            fields = slack.payloads.slash_command("/ask", "why?", user_id=ALICE, channel_id=GENERAL)
            assert (await post(signer.form_request(fields)))[0] == 200

            ts = slack.add_message(GENERAL, "long text", user=BOB)
            message = slack.payloads.user_message_object(BOB, "long text", ts=ts)
            shortcut = slack.payloads.message_shortcut(
                "summarize_message", user_id=ALICE, channel_id=GENERAL, message=message
            )
            form = SlackPayloads.shortcut_form(shortcut)
            assert (await post(signer.form_request(form)))[0] == 200
    finally:
        await runner.cleanup()

    parent = mention["event"]["ts"]
    assert [(m.user, m.text) for m in slack.thread(GENERAL, parent)] == [
        (ALICE, f"<@{BOT}> hello"),
        (BOT, "hi there"),
    ]
    assert [(r.text, r.response_type) for r in slack.responses] == [
        ("you asked: why?", "in_channel"),
        (f"summary of {ts}", "ephemeral"),
    ]
    assert "auth.test" in [c.method for c in slack.calls]
