"""A user's message as the model reads it: text, documents read through `core.documents`
(PDF text layers, DOCX, text, CSV, JSON, code), media parts (images, audio, video and PDFs
without a text layer) and a short note for every file that was cut or skipped.

Memory keeps a document's text only while it is small next to the history budget; a large
one is folded to a summary on the summary route (`fold_documents`), so it is not resent in
full on every later turn.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from core.documents import DocumentLimits, read_attachments
from core.providers.base import ModelRequest
from core.settings import Settings
from core.tokens import estimate_text
from core.types import ChatMessage, Incoming

__all__ = ["DOCUMENT_SHARE", "UserMessage", "fold_documents", "user_message"]

log = logging.getLogger(__name__)

# A message's documents may take at most this share of the history budget in memory;
# beyond it memory keeps a summary of them instead.
DOCUMENT_SHARE = 0.5

DOCUMENT_SYSTEM = (
    "You condense documents a person attached to a chat message, so a chat assistant can "
    "answer later questions about them without the full text. Keep every fact, figure, "
    "name, date, decision and identifier, with the page it is on when pages are marked "
    "(`--- page N ---`). Plain text, no preamble."
)


@dataclass(slots=True)
class UserMessage:
    """The message for this turn, the notes for the person, and the documents' text (the
    part of `message.content` that `fold_documents` may replace)."""

    message: ChatMessage
    notes: list[str] = field(default_factory=list)
    documents: str = ""


async def user_message(incoming: Incoming, settings: Settings) -> UserMessage:
    """The message for `incoming`, with its files read within the settings' limits."""
    read = await read_attachments(incoming.attachments, DocumentLimits.from_settings(settings))
    message = ChatMessage.user(
        read.message_text(incoming.text),
        incoming.author.name,
        id=incoming.message_id or incoming.event_id,
        ts=incoming.ts,
        parts=read.parts,
    )
    return UserMessage(message, list(read.notes), read.text)


async def fold_documents(
    built: UserMessage,
    budget: int,
    call: Callable[[ModelRequest], Awaitable[str]],
) -> ChatMessage:
    """The message as memory keeps it: binary parts become notes (`for_storage`), and
    documents over `DOCUMENT_SHARE` of the history budget become a summary written on the
    summary route by `call`. If that call fails the text is kept (the history fold will
    deal with it later): never silently cut."""
    stored = built.message.for_storage()
    documents = built.documents
    limit = int(budget * DOCUMENT_SHARE)
    if not documents or estimate_text(documents) <= limit:
        return stored
    request = ModelRequest(
        system=DOCUMENT_SYSTEM,
        messages=[ChatMessage.user(documents)],
        max_output_tokens=max(256, min(2000, limit)),
    )
    try:
        summary = (await call(request)).strip()
    except Exception as error:
        log.warning("could not fold the documents of a message: %s", error)
        return stored
    if not summary or len(summary) >= len(documents):
        return stored
    folded = f"\n\n[Attached documents, summarized for memory]\n{summary}\n[End of summary]"
    return stored.model_copy(update={"content": stored.content.replace(documents, folded, 1)})
