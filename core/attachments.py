"""A user's message as the model reads it: text, files inline or as media parts, and a
short note for every file that could not be read."""

from __future__ import annotations

import logging

from core.types import ChatMessage, Incoming, MediaPart, Modality

__all__ = ["MAX_INLINE_TEXT", "user_message"]

log = logging.getLogger(__name__)

_MODALITY_BY_MIME: dict[str, Modality] = {"application/pdf": "pdf"}
_TEXT_MIMES = ("text/", "application/json", "application/xml", "application/x-yaml")
MAX_INLINE_TEXT = 200_000


def _modality(mime: str) -> Modality | None:
    if mime in _MODALITY_BY_MIME:
        return _MODALITY_BY_MIME[mime]
    top = mime.split("/", 1)[0]
    if top in ("image", "audio", "video"):
        return top  # type: ignore[return-value]
    return None


async def user_message(incoming: Incoming, max_bytes: int) -> tuple[ChatMessage, list[str]]:
    """The stored message for `incoming` and the notes about files it could not use."""
    parts: list[MediaPart] = []
    notes: list[str] = []
    inline: list[str] = []
    for attachment in incoming.attachments:
        kind = _modality(attachment.mime)
        is_text = attachment.mime.startswith(_TEXT_MIMES)
        if kind is None and not is_text:
            notes.append(f"I can't read {attachment.name} ({attachment.mime} files).")
            continue
        max_size = MAX_INLINE_TEXT if is_text else max_bytes
        if attachment.size > max_size:
            notes.append(
                f"I skipped {attachment.name}: it is {attachment.size / 1e6:.1f} MB, "
                f"over my {max_size / 1e6:.1f} MB limit."
            )
            continue
        try:
            data = await attachment.fetch()
        except Exception as error:
            log.warning("could not download %s: %s", attachment.name, error)
            notes.append(f"I couldn't download {attachment.name}.")
            continue
        if len(data) > max_size:
            notes.append(f"I skipped {attachment.name}: it is over my size limit.")
            continue
        if is_text:
            inline.append(f"\n\n--- {attachment.name} ---\n{data.decode('utf-8', 'replace')}\n---")
        elif kind is not None:
            parts.append(
                MediaPart(kind=kind, mime=attachment.mime, data=data, name=attachment.name)
            )
    text = incoming.text + "".join(inline)
    if notes:
        text += "\n" + " ".join(f"[{note}]" for note in notes)
    message = ChatMessage.user(
        text,
        incoming.author.name,
        id=incoming.message_id or incoming.event_id,
        ts=incoming.ts,
        parts=parts,
    )
    return message, notes
