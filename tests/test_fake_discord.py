"""Self-tests for tests/fakes/discord_server.py: the real discord.py client against the fake.

discord.py is pointed at the fake by patching two class attributes for the test's duration
(see the ``dc`` fixture): ``discord.http.Route.BASE`` (REST base) and
``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY`` (gateway URL; a plain ``Client``
never asks ``GET /gateway/bot`` for it).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

import aiohttp
import discord
import pytest
import yarl
from discord import app_commands
from discord.gateway import DiscordWebSocket

from tests.fakes.discord_server import (
    MF_EPHEMERAL,
    MF_LOADING,
    ChannelType,
    FakeDiscord,
    FakeGuild,
    Perm,
    get_spec_validator,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

TOKEN = "bot-token"


# --------------------------------------------------------------------------- fixtures


def _check_contract(dc: FakeDiscord) -> list[str]:
    """Every request body the fake accepted and every response it gave match the spec."""
    problems = [f"request {e.method} {e.route} {e.location}: {e.message}" for e in dc.spec_errors]
    validator = get_spec_validator()
    for call in dc.calls:
        if call.route is None or call.status is None:
            continue
        for err in validator.response_errors(call.method, call.route, call.status, call.response):
            problems.append(
                f"response {call.method} {call.route} {call.status} {err.location}: {err.message}"
            )
    return problems


@pytest.fixture
async def dc(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(token=TOKEN) as fake:
        monkeypatch.setattr(discord.http.Route, "BASE", fake.api_url)
        monkeypatch.setattr(DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(fake.gateway_url))
        yield fake
        assert _check_contract(fake) == []
        assert fake.unhandled_calls == []


@pytest.fixture
def world(dc: FakeDiscord) -> dict[str, Any]:
    guild = dc.add_guild("Team")
    general = dc.add_channel(guild, "general", topic="chat")
    staff = dc.add_role(guild, "staff", permissions=Perm.MANAGE_MESSAGES | Perm.VIEW_CHANNEL)
    alice = dc.add_member(guild, "alice", roles=[staff])
    bob = dc.add_member(guild, "bob")
    secret = dc.add_channel(
        guild,
        "secret",
        overwrites=[
            dc.overwrite(guild.everyone, deny=Perm.VIEW_CHANNEL | Perm.READ_MESSAGE_HISTORY),
            dc.overwrite(staff, allow=Perm.VIEW_CHANNEL | Perm.READ_MESSAGE_HISTORY),
        ],
    )
    thread = dc.add_thread(general, "existing thread", owner=alice)
    return {
        "guild": guild,
        "general": general,
        "secret": secret,
        "thread": thread,
        "staff": staff,
        "alice": alice,
        "bob": bob,
    }


def _intents() -> discord.Intents:
    intents = discord.Intents.default()
    intents.message_content = True
    return intents


def make_client(**kwargs: Any) -> discord.Client:
    kwargs.setdefault("intents", _intents())
    kwargs.setdefault("guild_ready_timeout", 0.05)  # on_ready 50 ms after the last GUILD_CREATE
    return discord.Client(**kwargs)


@contextlib.asynccontextmanager
async def running(client: discord.Client, token: str = TOKEN) -> AsyncIterator[discord.Client]:
    """Start ``client`` in the background, wait for on_ready, close it cleanly afterwards."""
    async with client:
        task = asyncio.create_task(client.start(token))
        ready = asyncio.create_task(client.wait_until_ready())
        try:
            done, _ = await asyncio.wait(
                {task, ready}, timeout=10, return_when=asyncio.FIRST_COMPLETED
            )
            if task in done:
                task.result()  # raises what start() raised
                raise AssertionError("client stopped before it was ready")
            assert ready in done, "client not ready within 10 s"
            yield client
        finally:
            ready.cancel()
            await client.close()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def eventually(predicate: Callable[[], Any], within: float = 5.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


# --------------------------------------------------------------------------- gateway


async def test_client_connects_and_caches_guild(dc: FakeDiscord, world: dict[str, Any]) -> None:
    guild: FakeGuild = world["guild"]
    async with running(make_client()) as client:
        assert client.user is not None
        assert client.user.id == dc.bot_user.id
        cached = client.get_guild(guild.id)
        assert cached is not None
        assert {c.name for c in cached.text_channels} == {"general", "secret"}
        thread = cached.get_thread(world["thread"].id)
        assert thread is not None
        assert thread.parent_id == world["general"].id
        staff_role = cached.get_role(world["staff"].id)
        assert staff_role is not None
        assert staff_role.permissions.manage_messages
        assert cached.me is not None
        assert cached.me.id == dc.bot_user.id
        # overwrites arrive intact: the bot (not staff) cannot see #secret
        secret = cached.get_channel(world["secret"].id)
        assert isinstance(secret, discord.TextChannel)
        assert not secret.permissions_for(cached.me).view_channel
        general = cached.get_channel(world["general"].id)
        assert isinstance(general, discord.TextChannel)
        assert general.permissions_for(cached.me).send_messages
        # without GUILD_PRESENCES Discord only sends the bot's own member
        assert [m.id for m in cached.members] == [dc.bot_user.id]

    (conn,) = dc.gateway_connections
    # zlib-stream, or zstd-stream when the zstandard package is installed (both are faked)
    wanted = discord.utils._ActiveDecompressionContext.COMPRESSION_TYPE
    assert conn.query == {"v": "10", "encoding": "json", "compress": wanted}
    (identify,) = dc.identifies
    assert identify["token"] == TOKEN
    assert identify["intents"] == _intents().value
    assert dc.heartbeats >= 1  # discord.py beats right after HELLO, the fake ACKs
    assert [c.path for c in dc.calls[:2]] == ["/users/@me", "/oauth2/applications/@me"]


async def test_wrong_token_is_refused(dc: FakeDiscord) -> None:
    client = make_client()
    async with client:
        with pytest.raises(discord.LoginFailure):
            await client.login("not-the-token")
    assert dc.calls[0].status == 401
    assert dc.calls[0].response == {"message": "401: Unauthorized", "code": 0}


async def test_disallowed_privileged_intent_closes_4014(monkeypatch: pytest.MonkeyPatch) -> None:
    async with FakeDiscord(token=TOKEN, allowed_intents=0) as fake:
        monkeypatch.setattr(discord.http.Route, "BASE", fake.api_url)
        monkeypatch.setattr(DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(fake.gateway_url))
        client = make_client()
        async with client:
            with pytest.raises(discord.PrivilegedIntentsRequired):
                await client.start(TOKEN)


async def test_resume_after_disconnect_replays_missed_events(
    dc: FakeDiscord, world: dict[str, Any]
) -> None:
    client = make_client()
    seen: list[str] = []
    resumed = asyncio.Event()

    @client.event
    async def on_message(message: discord.Message) -> None:
        seen.append(message.content)

    @client.event
    async def on_resumed() -> None:
        resumed.set()

    async with running(client):
        await dc.disconnect(code=4000)
        # dispatched while the client is away: buffered and replayed on RESUME
        await dc.dispatch(
            "MESSAGE_CREATE", dc.message(world["general"], "while away", world["bob"])
        )
        await asyncio.wait_for(resumed.wait(), 5)
        await eventually(lambda: "while away" in seen)
        assert dc.resumes[0]["session_id"] == dc.sessions()[0]["session_id"]
        assert dc.gateway_connections[-1].path == "/gateway/resume"
        assert len(dc.identifies) == 1


async def test_invalid_session_makes_client_identify_again(
    dc: FakeDiscord, world: dict[str, Any]
) -> None:
    class QuickClient(discord.Client):
        async def before_identify_hook(
            self, shard_id: int | None, *, initial: bool = False
        ) -> None:
            return None  # the default sleeps 5 s before every re-IDENTIFY

    client = QuickClient(intents=_intents(), guild_ready_timeout=0.05)
    got: list[str] = []

    @client.event
    async def on_message(message: discord.Message) -> None:
        got.append(message.content)

    async with running(client):
        first = dc.sessions()[0]["session_id"]
        await dc.invalidate_session(resumable=False)
        await dc.wait_until(
            lambda: [s for s in dc.sessions() if s["ready"] and s["connected"] and not s["invalid"]]
        )
        assert len(dc.identifies) == 2
        assert dc.resumes == []
        assert dc.sessions()[0] == {**dc.sessions()[0], "session_id": first, "invalid": True}
        await dc.dispatch("MESSAGE_CREATE", dc.message(world["general"], "after", world["bob"]))
        await eventually(lambda: got == ["after"])


async def test_shards_get_their_own_guilds(monkeypatch: pytest.MonkeyPatch) -> None:
    async with FakeDiscord(token=TOKEN, recommended_shards=2) as fake:
        monkeypatch.setattr(discord.http.Route, "BASE", fake.api_url)
        monkeypatch.setattr(DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(fake.gateway_url))
        ms = int(time.time() * 1000) - 1_420_070_400_000 - 10**9
        base = (ms - ms % 2) << 22
        even = fake.add_guild("even", id=base)  # (id >> 22) % 2 == shard
        odd = fake.add_guild("odd", id=base + (1 << 22))
        assert (even.id >> 22) % 2 == 0
        assert (odd.id >> 22) % 2 == 1
        odd_channel = fake.add_channel(odd, "general")
        bob = fake.add_member(odd, "bob")

        class Sharded(discord.AutoShardedClient):
            async def before_identify_hook(
                self, shard_id: int | None, *, initial: bool = False
            ) -> None:
                return None

        client = Sharded(intents=_intents(), guild_ready_timeout=0.05)
        got: list[tuple[int | None, str]] = []

        @client.event
        async def on_message(message: discord.Message) -> None:
            got.append((message.guild.shard_id if message.guild else None, message.content))

        async with running(client):
            await fake.wait_ready(shards=2)
            assert client.shard_count == 2
            by_shard = {tuple(s["shard"]): s for s in fake.sessions()}
            assert set(by_shard) == {(0, 2), (1, 2)}
            assert [g.shard_id for g in client.guilds if g.id == even.id] == [0]
            assert [g.shard_id for g in client.guilds if g.id == odd.id] == [1]
            sent = await fake.dispatch("MESSAGE_CREATE", fake.message(odd_channel, "hi", bob))
            assert sent == 1  # only shard 1 gets the odd guild's events
            await eventually(lambda: got == [(1, "hi")])
        assert any(c.path == "/gateway/bot" for c in fake.calls)
        assert _check_contract(fake) == []


# --------------------------------------------------------------------------- messages


async def test_on_message_receives_and_replies(dc: FakeDiscord, world: dict[str, Any]) -> None:
    client = make_client()
    received: list[discord.Message] = []

    @client.event
    async def on_message(message: discord.Message) -> None:
        received.append(message)
        if message.author.bot:
            return
        await message.reply(
            f"echo: {message.content}", allowed_mentions=discord.AllowedMentions(replied_user=False)
        )

    async with running(client):
        text = f"<@{dc.bot_user.id}> hello"
        payload = dc.message(world["general"], text, world["alice"])
        await dc.dispatch("MESSAGE_CREATE", payload)
        replies = await dc.wait_until(
            lambda: [m for m in dc.messages(world["general"]) if m.author_is_bot]
        )
        # the bot also receives its own reply, as on Discord
        await eventually(lambda: len(received) == 2)

    first = received[0]
    assert first.content == text
    assert isinstance(first.author, discord.Member)
    assert first.author.id == world["alice"].id
    assert dc.bot_user.id in [u.id for u in first.mentions]
    (reply,) = replies
    assert reply.content == f"echo: {text}"
    assert reply.reference_id == int(payload["id"])
    # discord.py leaves replied_user out when False; Discord then does not ping the author
    assert reply.allowed_mentions is not None
    assert "replied_user" not in reply.allowed_mentions
    assert set(reply.allowed_mentions["parse"]) == {"users", "roles", "everyone"}
    assert reply.mention_ids == (dc.bot_user.id,)  # echoed <@bot>; alice is not pinged
    assert received[1].author.id == dc.bot_user.id
    assert received[1].reference is not None


async def test_message_content_is_blanked_without_the_intent(
    dc: FakeDiscord, world: dict[str, Any]
) -> None:
    client = make_client(intents=discord.Intents.default())
    received: list[str] = []

    @client.event
    async def on_message(message: discord.Message) -> None:
        received.append(message.content)

    async with running(client):
        await dc.dispatch("MESSAGE_CREATE", dc.message(world["general"], "secret", world["bob"]))
        await dc.dispatch(
            "MESSAGE_CREATE", dc.message(world["general"], f"<@{dc.bot_user.id}> hi", world["bob"])
        )
        await eventually(lambda: len(received) == 2)
    assert received == ["", f"<@{dc.bot_user.id}> hi"]


async def test_2001_characters_are_rejected_with_50035(
    dc: FakeDiscord, world: dict[str, Any]
) -> None:
    async with running(make_client()) as client:
        channel = client.get_channel(world["general"].id)
        assert isinstance(channel, discord.TextChannel)
        with pytest.raises(discord.HTTPException) as info:
            await channel.send("x" * 2001)
        ok = await channel.send("y" * 2000)
    assert info.value.status == 400
    assert info.value.code == 50035
    assert "In content: Must be 2000 or fewer in length." in info.value.text
    rejected = dc.calls_to("POST", "/channels/{channel_id}/messages")[0]
    assert rejected.response == {
        "message": "Invalid Form Body",
        "code": 50035,
        "errors": {
            "content": {
                "_errors": [
                    {"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 2000 or fewer in length."}
                ]
            }
        },
    }
    assert [m.id for m in dc.messages(world["general"])] == [ok.id]


async def test_multipart_upload_and_attachment_download(
    dc: FakeDiscord, world: dict[str, Any]
) -> None:
    async with running(make_client()) as client:
        channel = client.get_channel(world["general"].id)
        assert isinstance(channel, discord.TextChannel)
        import io

        sent = await channel.send("report", file=discord.File(io.BytesIO(b"a,b\n1,2\n"), "r.csv"))
        (attachment,) = sent.attachments
        assert attachment.filename == "r.csv"
        assert attachment.size == 8
        assert await attachment.read() == b"a,b\n1,2\n"
    (call,) = dc.calls_to("POST", "/channels/{channel_id}/messages")
    assert call.files == [("files[0]", "r.csv", 8)]
    assert call.json["attachments"] == [{"id": 0, "filename": "r.csv"}]


async def test_edit_and_delete_and_edit_budget(dc: FakeDiscord, world: dict[str, Any]) -> None:
    dc.limit_channel_edits(2, per=0.4, channel=world["general"])
    async with running(make_client()) as client:
        channel = client.get_channel(world["general"].id)
        assert isinstance(channel, discord.TextChannel)
        msg = await channel.send("draft")
        for i in range(3):  # the third edit meets a 429 (with Via) and is retried
            msg = await msg.edit(content=f"draft {i}")
        assert msg.content == "draft 2"
        other = await channel.send("gone soon")
        await other.delete()

    (view,) = dc.messages(world["general"])
    assert view.content == "draft 2"
    assert view.edits == 3
    statuses = [
        c.status for c in dc.calls_to("PATCH", "/channels/{channel_id}/messages/{message_id}")
    ]
    assert statuses.count(429) >= 1
    assert statuses.count(200) == 3
    edits = dc.write_times(world["general"], "edit")
    assert len(edits) == 3
    assert edits[2] - edits[0] >= 0.4 - 0.05  # stayed within 2 edits per 0.4 s
    assert [w.kind for w in dc.writes if w.message_id == other.id] == ["create", "delete"]


# --------------------------------------------------------------------------- rate limits


async def test_429_with_via_is_retried(dc: FakeDiscord, world: dict[str, Any]) -> None:
    dc.rate_limit("POST /channels/{channel_id}/messages", retry_after=0.3, times=1)
    async with running(make_client()) as client:
        channel = client.get_channel(world["general"].id)
        assert isinstance(channel, discord.TextChannel)
        sent = await channel.send("after the wait")
    first, second = dc.calls_to("POST", "/channels/{channel_id}/messages")
    assert first.status == 429
    assert second.status == 200
    assert first.response == {
        "message": "You are being rate limited.",
        "retry_after": 0.3,
        "global": False,
    }
    assert second.time - first.time >= 0.3
    assert first.response_headers["Via"] == "1.1 google"
    assert first.response_headers["X-RateLimit-Scope"] == "user"
    assert first.response_headers["X-RateLimit-Reset-After"] == "0.300"
    assert dc.messages(world["general"])[0].id == sent.id


async def test_429_without_via_is_a_cloudflare_ban(dc: FakeDiscord, world: dict[str, Any]) -> None:
    dc.rate_limit("/channels/*/messages", retry_after=0.1, via=False)
    async with running(make_client()) as client:
        channel = client.get_channel(world["general"].id)
        assert isinstance(channel, discord.TextChannel)
        with pytest.raises(discord.HTTPException) as info:
            await channel.send("nope")
    assert info.value.status == 429


async def test_rate_limit_headers(dc: FakeDiscord, world: dict[str, Any]) -> None:
    url = f"{dc.api_url}/channels/{world['general'].id}/messages"
    headers = {"Authorization": f"Bot {TOKEN}"}
    async with aiohttp.ClientSession() as http:
        remaining = []
        for i in range(5):
            async with http.post(url, json={"content": f"m{i}"}, headers=headers) as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"] == "application/json"
                assert resp.headers["X-RateLimit-Limit"] == "5"
                assert float(resp.headers["X-RateLimit-Reset-After"]) <= 5.0
                assert float(resp.headers["X-RateLimit-Reset"]) > time.time()
                assert resp.headers["X-RateLimit-Bucket"]
                remaining.append(int(resp.headers["X-RateLimit-Remaining"]))
        assert remaining == [4, 3, 2, 1, 0]
        async with http.post(url, json={"content": "too many"}, headers=headers) as resp:
            assert resp.status == 429
            assert resp.headers["Via"] == "1.1 google"
            assert resp.headers["X-RateLimit-Scope"] == "user"
            assert int(resp.headers["Retry-After"]) >= 1
            body = await resp.json()
            assert body["global"] is False
            assert 0 < body["retry_after"] <= 5
        dc.rate_limit("GET /users/@me", retry_after=1.5, global_=True)
        async with http.get(f"{dc.api_url}/users/@me", headers=headers) as resp:
            assert resp.status == 429
            assert resp.headers["X-RateLimit-Global"] == "true"
            assert resp.headers["X-RateLimit-Scope"] == "global"
            assert resp.headers["Retry-After"] == "2"
            assert await resp.json() == {
                "message": "You are being rate limited.",
                "retry_after": 1.5,
                "global": True,
            }
        async with http.get(f"{dc.api_url}/users/@me") as resp:
            assert resp.status == 401
            assert await resp.json() == {"message": "401: Unauthorized", "code": 0}


# --------------------------------------------------------------------------- history


async def test_history_pagination_over_300_messages(dc: FakeDiscord, world: dict[str, Any]) -> None:
    ids = dc.seed_messages(world["general"], 300, authors=[world["alice"], world["bob"]])
    async with running(make_client()) as client:
        channel = client.get_channel(world["general"].id)
        assert isinstance(channel, discord.TextChannel)
        newest_first = [m async for m in channel.history(limit=None)]
        oldest_first = [m async for m in channel.history(limit=None, oldest_first=True)]
        around = [m async for m in channel.history(limit=11, around=discord.Object(ids[150]))]
        page = [m async for m in channel.history(limit=5, before=discord.Object(ids[10]))]
    assert [m.id for m in newest_first] == ids[::-1]
    assert [m.id for m in oldest_first] == ids
    assert newest_first[0].content == "seed message 299"
    assert newest_first[0].author.id == world["bob"].id
    assert ids[150] in [m.id for m in around]
    assert len(around) == 11
    assert [m.id for m in page] == ids[5:10][::-1]
    gets = dc.calls_to("GET", "/channels/{channel_id}/messages")
    assert [c.query.get("limit") for c in gets[:4]] == ["100", "100", "100", "100"]
    assert all(len(c.response) <= 100 for c in gets)


async def test_history_needs_view_channel(dc: FakeDiscord, world: dict[str, Any]) -> None:
    dc.seed_messages(world["secret"], 3)
    hidden_history = dc.add_channel(
        world["guild"],
        "no-history",
        overwrites=[dc.overwrite(dc.bot_user, deny=Perm.READ_MESSAGE_HISTORY)],
    )
    dc.seed_messages(hidden_history, 3)
    async with running(make_client()) as client:
        secret = client.get_channel(world["secret"].id)
        assert isinstance(secret, discord.TextChannel)
        with pytest.raises(discord.Forbidden) as info:
            [m async for m in secret.history(limit=10)]
        no_history = client.get_channel(hidden_history.id)
        assert isinstance(no_history, discord.TextChannel)
        assert [m async for m in no_history.history(limit=10)] == []
    assert info.value.code == 50001
    assert info.value.text == "Missing Access"


# --------------------------------------------------------------------------- threads


async def test_thread_creation(dc: FakeDiscord, world: dict[str, Any]) -> None:
    client = make_client()
    created: list[int] = []

    @client.event
    async def on_thread_create(thread: discord.Thread) -> None:
        created.append(thread.id)

    forum_id = dc.add_channel(world["guild"], "ideas", type=ChannelType.GUILD_FORUM).id
    async with running(client):
        channel = client.get_channel(world["general"].id)
        assert isinstance(channel, discord.TextChannel)
        forum = client.get_channel(forum_id)
        assert isinstance(forum, discord.ForumChannel)
        post = await forum.create_thread(name="idea", content="what if")
        assert post.message.content == "what if"
        assert post.thread.id == post.message.id
        starter = await channel.send("let's discuss")
        from_message = await starter.create_thread(name="discussion", auto_archive_duration=60)
        standalone = await channel.create_thread(
            name="side chat", type=discord.ChannelType.public_thread
        )
        await from_message.send("inside the thread")
        await eventually(lambda: len(created) == 3)
        assert client.get_channel(standalone.id) is not None

    assert from_message.id == starter.id  # Discord: a thread from a message shares its id
    assert [t.name for t in dc.threads] == ["idea", "discussion", "side chat"]
    assert dc.threads[2].type == ChannelType.PUBLIC_THREAD
    assert [m.content for m in dc.messages(from_message.id)] == ["inside the thread"]
    starter_view = dc.message_view(starter.id)
    assert starter_view is not None
    assert starter_view.thread_id == from_message.id


# --------------------------------------------------------------------------- interactions


def _tree(client: discord.Client) -> app_commands.CommandTree[discord.Client]:
    tree: app_commands.CommandTree[discord.Client] = app_commands.CommandTree(client)

    @tree.command(name="ask", description="Ask the bot")
    async def ask(interaction: discord.Interaction, question: str) -> None:
        await interaction.response.defer(thinking=True)
        await interaction.edit_original_response(content=f"answer to {question}")

    @tree.command(name="whisper", description="Answer privately")
    async def whisper(interaction: discord.Interaction, text: str) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await interaction.followup.send(f"first: {text}")  # replaces the loading message
        await interaction.followup.send("second")

    @tree.command(name="summarize", description="Summarize a file")
    async def summarize(interaction: discord.Interaction, file: discord.Attachment) -> None:
        data = await file.read()
        await interaction.response.send_message(f"{file.filename}: {len(data)} bytes")

    return tree


async def test_slash_command_defers_then_edits(dc: FakeDiscord, world: dict[str, Any]) -> None:
    client = make_client()
    tree = _tree(client)

    async def setup_hook() -> None:
        await tree.sync()
        tree.copy_global_to(guild=discord.Object(world["guild"].id))
        await tree.sync(guild=discord.Object(world["guild"].id))

    client.setup_hook = setup_hook  # type: ignore[method-assign]
    async with running(client):
        assert [(s.guild_id, s.names) for s in dc.command_syncs] == [
            (None, ["ask", "whisper", "summarize"]),
            (world["guild"].id, ["ask", "whisper", "summarize"]),
        ]
        payload = dc.interaction("ask", {"question": "why"}, world["alice"], world["general"])
        await dc.dispatch("INTERACTION_CREATE", payload)
        state = dc.interaction_state(payload)
        await dc.wait_until(lambda: state.original_content == "answer to why")

    assert payload["data"]["id"] == dc.commands(world["guild"])[0]["id"]
    assert state.callback_type == 5
    assert state.deferred
    assert not state.ephemeral
    original = state.original
    assert original is not None
    assert not original.loading
    assert original.edits == 0
    assert original.interaction_id == state.id
    assert [m.content for m in dc.messages(world["general"])] == ["answer to why"]
    (callback,) = dc.calls_to("POST", "/interactions/{interaction_id}/{interaction_token}/callback")
    assert callback.query == {"with_response": "1"}
    assert callback.response["interaction"]["response_message_loading"] is True


async def test_ephemeral_defer_and_followups(dc: FakeDiscord, world: dict[str, Any]) -> None:
    client = make_client()
    tree = _tree(client)
    async with running(client):
        payload = dc.interaction("whisper", {"text": "psst"}, world["bob"], world["general"])
        await dc.dispatch("INTERACTION_CREATE", payload)
        state = dc.interaction_state(payload)
        await dc.wait_until(lambda: len(state.followups) == 1)
    assert tree.get_command("whisper") is not None
    assert state.ephemeral
    assert state.original is not None
    assert state.original.content == "first: psst"
    assert state.original.flags & MF_EPHEMERAL
    assert not state.original.flags & MF_LOADING
    (second,) = state.followups
    assert second.content == "second"
    assert not second.ephemeral
    assert second.reference_id == state.original_message_id
    # ephemeral messages are not in the channel's history
    assert [m.content for m in dc.messages(world["general"], include_ephemeral=False)] == ["second"]


async def test_slash_command_attachment_option(dc: FakeDiscord, world: dict[str, Any]) -> None:
    client = make_client()
    tree = _tree(client)

    async def setup_hook() -> None:
        await tree.sync()

    client.setup_hook = setup_hook  # type: ignore[method-assign]
    async with running(client):
        payload = dc.interaction(
            "summarize",
            user=world["alice"],
            channel=world["general"],
            attachments=[("notes.txt", b"hello world", "text/plain")],
        )
        (att_id,) = payload["data"]["resolved"]["attachments"]
        assert payload["data"]["options"] == [{"name": "file", "type": 11, "value": att_id}]
        await dc.dispatch("INTERACTION_CREATE", payload)
        state = dc.interaction_state(payload)
        await dc.wait_until(lambda: state.original_content == "notes.txt: 11 bytes")
    assert state.callback_type == 4


async def test_late_callback_gets_10062(dc: FakeDiscord, world: dict[str, Any]) -> None:
    dc.interaction_ack_deadline = 0.2
    client = make_client()
    tree = app_commands.CommandTree(client)
    errors: list[discord.HTTPException] = []

    @tree.command(name="slow", description="Too slow")
    async def slow(interaction: discord.Interaction) -> None:
        await asyncio.sleep(0.3)
        try:
            await interaction.response.defer()
        except discord.NotFound as exc:
            errors.append(exc)

    async with running(client):
        payload = dc.interaction("slow", user=world["bob"], channel=world["general"])
        await dc.dispatch("INTERACTION_CREATE", payload)
        await eventually(lambda: errors)
    assert errors[0].code == 10062
    assert errors[0].text == "Unknown interaction"
    state = dc.interaction_state(payload)
    assert not state.acknowledged
    assert state.rejected[0][1:] == (404, 10062)


async def test_interaction_rest_errors(dc: FakeDiscord, world: dict[str, Any]) -> None:
    payload = dc.interaction("anything", {"n": 3}, world["bob"], world["general"])
    assert payload["data"]["options"] == [{"name": "n", "type": 4, "value": 3}]
    await dc.dispatch("INTERACTION_CREATE", payload)  # no client: nobody receives it
    iid, token = payload["id"], payload["token"]
    callback = f"{dc.api_url}/interactions/{iid}/{token}/callback"
    webhook = f"{dc.api_url}/webhooks/{dc.application_id}/{token}"
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{webhook}", json={"content": "too early"}) as resp:
            assert resp.status == 404
            assert (await resp.json())["code"] == 10015
        async with http.patch(f"{webhook}/messages/@original", json={"content": "early"}) as resp:
            assert resp.status == 404
            assert await resp.json() == {"message": "Unknown Webhook", "code": 10015}
        async with http.post(callback, json={"type": 4, "data": {"content": "hi"}}) as resp:
            assert resp.status == 204  # no with_response: no body
        async with http.post(callback, json={"type": 4, "data": {"content": "again"}}) as resp:
            assert resp.status == 400
            assert await resp.json() == {
                "message": "Interaction has already been acknowledged.",
                "code": 40060,
            }
        async with http.post(f"{webhook}?wait=true", json={"content": "follow"}) as resp:
            follow = await resp.json()
            assert resp.status == 200
            assert follow["content"] == "follow"
        async with http.patch(
            f"{webhook}/messages/{follow['id']}", json={"content": "fixed"}
        ) as resp:
            assert resp.status == 200
            assert (await resp.json())["content"] == "fixed"
        async with http.get(f"{webhook}/messages/@original") as resp:
            assert (await resp.json())["content"] == "hi"
        async with http.delete(f"{webhook}/messages/@original") as resp:
            assert resp.status == 204
        dc.advance_time(15 * 60 + 1)
        async with http.patch(
            f"{webhook}/messages/{follow['id']}", json={"content": "late"}
        ) as resp:
            assert resp.status == 401
            assert await resp.json() == {"message": "Invalid Webhook Token", "code": 50027}
    state = dc.interaction_state(iid)
    assert state.rejected[0][1:] == (400, 40060)
    assert [f.content for f in state.followups] == ["fixed"]
    assert state.original is None  # deleted


async def test_invalid_body_is_rejected_against_the_spec(
    dc: FakeDiscord, world: dict[str, Any]
) -> None:
    url = f"{dc.api_url}/channels/{world['general'].id}/messages"
    headers = {"Authorization": f"Bot {TOKEN}"}
    async with (
        aiohttp.ClientSession(headers=headers) as http,
        http.post(url, json={"content": 5, "tts": "yes"}) as resp,
    ):
        assert resp.status == 400
        body = await resp.json()
    assert body["code"] == 50035
    assert set(body["errors"]) == {"content", "tts"}
    assert {e.location for e in dc.spec_errors} == {"content", "tts"}
    dc.spec_errors.clear()  # the fixture asserts none are left


class _Feedback(discord.ui.Modal, title="Feedback"):
    answer: discord.ui.TextInput[_Feedback] = discord.ui.TextInput(label="Answer")


class _Buttons(discord.ui.View):
    def __init__(self) -> None:
        super().__init__(timeout=None)

    @discord.ui.button(label="Stop", custom_id="stop")
    async def stop_button(
        self, interaction: discord.Interaction, button: discord.ui.Button[Any]
    ) -> None:
        await interaction.response.edit_message(content="stopped", view=None)  # type 7

    @discord.ui.button(label="Ack", custom_id="ack")
    async def ack_button(
        self, interaction: discord.Interaction, button: discord.ui.Button[Any]
    ) -> None:
        await interaction.response.defer()  # type 6
        await interaction.edit_original_response(content="acked")

    @discord.ui.button(label="Form", custom_id="form")
    async def form_button(
        self, interaction: discord.Interaction, button: discord.ui.Button[Any]
    ) -> None:
        await interaction.response.send_modal(_Feedback())  # type 9


async def test_component_callbacks_update_defer_and_modal(
    dc: FakeDiscord, world: dict[str, Any]
) -> None:
    async with running(make_client()) as client:
        channel = client.get_channel(world["general"].id)
        assert isinstance(channel, discord.TextChannel)
        first = await channel.send("working", view=_Buttons())
        second = await channel.send("also working", view=_Buttons())
        states = []
        for message, custom_id in ((first, "stop"), (second, "ack"), (second, "form")):
            payload = dc.component_interaction(message.id, custom_id, world["alice"])
            await dc.dispatch("INTERACTION_CREATE", payload)
            state = dc.interaction_state(payload)
            await dc.wait_until(lambda: state.acknowledged)  # noqa: B023 - awaited right here
            states.append(state)
        await dc.wait_until(lambda: getattr(dc.message_view(second.id), "content", "") == "acked")

    stop, ack, form = states
    assert stop.callback_type == 7
    assert ack.callback_type == 6
    assert form.callback_type == 9
    first_view = dc.message_view(first.id)
    assert first_view is not None
    assert first_view.content == "stopped"
    assert dc.message_payload(first.id)["components"] == []
    assert len(dc.message_payload(second.id)["components"]) == 1  # buttons still there
    assert form.modal is not None
    assert form.modal["title"] == "Feedback"


async def test_more_rest_routes(dc: FakeDiscord, world: dict[str, Any]) -> None:
    client = make_client()
    tree = _tree(client)

    async def setup_hook() -> None:
        await tree.sync()

    client.setup_hook = setup_hook  # type: ignore[method-assign]
    async with running(client):
        channel = await client.fetch_channel(world["general"].id)
        assert isinstance(channel, discord.TextChannel)
        assert channel.topic == "chat"
        thread = await client.fetch_channel(world["thread"].id)
        assert isinstance(thread, discord.Thread)
        assert thread.owner_id == world["alice"].id
        sent = await channel.send("fetch me")
        assert (await channel.fetch_message(sent.id)).content == "fetch me"
        with pytest.raises(discord.NotFound) as missing:
            await channel.fetch_message(sent.id + 1)
        async with channel.typing():
            pass
        guild = client.get_guild(world["guild"].id)
        assert guild is not None
        member = await guild.fetch_member(world["alice"].id)
        assert [r.id for r in member.roles if not r.is_default()] == [world["staff"].id]
        commands = await tree.fetch_commands()
        assert [c.name for c in commands] == ["ask", "whisper", "summarize"]
        secret = client.get_channel(world["secret"].id)
        assert isinstance(secret, discord.TextChannel)
        with pytest.raises(discord.Forbidden) as hidden:
            await secret.send("no")
        shards, gateway_url, _limits = await client.http.get_bot_gateway()
    assert missing.value.code == 10008
    assert hidden.value.code == 50001
    assert gateway_url == dc.gateway_url
    assert shards == 1
    assert len(dc.typing) >= 1


async def test_members_intent_chunks_the_guild(dc: FakeDiscord, world: dict[str, Any]) -> None:
    intents = _intents()
    intents.members = True
    async with running(make_client(intents=intents)) as client:
        guild = client.get_guild(world["guild"].id)
        assert guild is not None
        assert guild.chunked
        assert {m.name for m in guild.members} == {"teambot", "team-owner", "alice", "bob"}
    requests = [p for p in dc.gateway_received if p["op"] == 8]
    assert requests
    assert int(requests[0]["d"]["guild_id"]) == world["guild"].id


async def test_direct_message_and_dm_interaction(dc: FakeDiscord, world: dict[str, Any]) -> None:
    client = make_client()
    tree = _tree(client)
    got: list[tuple[str, bool]] = []

    @client.event
    async def on_message(message: discord.Message) -> None:
        got.append((message.content, message.guild is None))
        if not message.author.bot:
            await message.channel.send("dm reply")

    async with running(client):
        dm = dc.add_dm_channel(world["bob"])
        await dc.dispatch("MESSAGE_CREATE", dc.message(dm, "hello in private"))
        await dc.wait_until(lambda: [m for m in dc.messages(dm) if m.author_is_bot])
        payload = dc.interaction("ask", {"question": "dm?"}, world["bob"], dm)
        assert payload["context"] == 1
        assert "member" not in payload
        await dc.dispatch("INTERACTION_CREATE", payload)
        state = dc.interaction_state(payload)
        await dc.wait_until(lambda: state.original_content == "answer to dm?")
    assert tree.get_command("ask") is not None
    assert got[0] == ("hello in private", True)
