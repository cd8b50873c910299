"""Attachments → what the model reads: text blocks, media parts and plain notes.

`read_attachments(attachments, limits)` downloads every file of one message (each under a
time limit), reads documents off the event loop (each under a time limit) and returns:

* `text`: the documents as text blocks to add to the user's message: a PDF's text layer
  page by page (`--- page 17 ---`), plain text, Markdown, CSV, JSON, source code, DOCX
  (paragraphs and tables);
* `parts`: `MediaPart`s for images, audio, video and PDFs without a text layer (the router
  sends those to a model that reads them, Gemini 3.1 Flash-Lite);
* `notes`: one short sentence for every file that was cut or skipped, and why. Nothing is
  dropped in silence.

Types are told by MIME type and file extension (platforms often send
`application/octet-stream`), and a PDF is recognised by its first bytes.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from core.file_types import UNSUPPORTED_HINTS, FileType, classify, extension
from core.settings import Settings
from core.types import Attachment, MediaPart

__all__ = ["AttachmentsRead", "DocumentLimits", "classify", "read_attachments"]

log = logging.getLogger(__name__)

# A PDF whose pages carry fewer visible characters than this on average has no usable text
# layer (a scan, or slides that are all pictures): the model gets the PDF itself.
_SCANNED_CHARS_PER_PAGE = 20


@dataclass(frozen=True, slots=True)
class DocumentLimits:
    max_bytes: int = 20 * 1024 * 1024
    max_pages: int = 100
    max_chars: int = 120_000
    fetch_timeout: float = 30.0
    parse_timeout: float = 20.0

    @classmethod
    def from_settings(cls, settings: Settings) -> DocumentLimits:
        return cls(
            max_bytes=settings.max_attachment_bytes,
            max_pages=settings.max_document_pages,
            max_chars=settings.max_document_chars,
            # a download never holds the turn past TOTAL_TIMEOUT
            fetch_timeout=min(settings.attachment_fetch_timeout_seconds, settings.total_timeout),
            parse_timeout=settings.document_parse_timeout_seconds,
        )


@dataclass(slots=True)
class AttachmentsRead:
    """What a message's files give the model. `text` is empty or starts with a blank line."""

    text: str = ""
    parts: list[MediaPart] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def message_text(self, user_text: str) -> str:
        """The user's text, the documents, then the notes in brackets (the model should know
        what it was not given, as the user does)."""
        out = user_text + self.text
        if self.notes:
            out += "\n" + " ".join(f"[{note}]" for note in self.notes)
        return out


def _cannot_read(attachment: Attachment) -> str:
    hint = UNSUPPORTED_HINTS.get(extension(attachment.name))
    if hint:
        return f"I can't read {attachment.name}: I don't read {hint}."
    mime = (attachment.mime or "").split(";", 1)[0].strip()
    kind = "files of an unknown type" if mime in ("", "application/octet-stream") else mime
    return f"I can't read {attachment.name} ({kind})."


# --- reading, off the event loop ---------------------------------------------------------


class _Unreadable(Exception):
    """The file cannot be read; the message is the end of a sentence (why)."""


@dataclass(slots=True)
class _Document:
    """A file's text, in units that are kept whole when possible (a PDF's pages)."""

    label: str
    units: list[str]
    pages: int | None = None  # a PDF's page count
    notes: list[str] = field(default_factory=list)
    part: MediaPart | None = None


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def _fence(text: str, language: str) -> str:
    longest = max((len(run) for run in re.findall(r"`{3,}", text)), default=2)
    marks = "`" * (longest + 1)
    return f"{marks}{language}\n{text}\n{marks}"


def _decode(data: bytes) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", "replace")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", "replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        if b"\x00" in data[:8192]:
            raise _Unreadable("it is not a text file") from None
        return data.decode("cp1252", "replace")


def _read_text(data: bytes, kind: FileType) -> _Document:
    text = _decode(data)
    if "\x00" in text[:8192]:
        raise _Unreadable("it is not a text file")
    text = text.replace("\r\n", "\n")
    if not text.strip():
        raise _Unreadable("it is empty")
    return _Document(kind.label, [text])


def _read_pdf(data: bytes, name: str, max_pages: int, max_chars: int) -> _Document:
    from pypdf import PdfReader, PdfWriter
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            try:
                opened = bool(reader.decrypt(""))
            except Exception:  # an unsupported cipher counts as locked
                opened = False
            if not opened:
                raise _Unreadable("it is password-protected")
        total = len(reader.pages)
    except _Unreadable:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, OSError) as error:
        raise _Unreadable(f"it looks damaged ({type(error).__name__})") from None
    if total == 0:
        raise _Unreadable("it has no pages")
    wanted = min(total, max_pages)
    pages: list[str] = []
    chars = 0
    for number in range(wanted):
        try:
            text = reader.pages[number].extract_text() or ""
        except Exception as error:  # one bad page does not lose the rest
            log.info("page %d of %s unreadable: %s", number + 1, name, error)
            text = ""
        pages.append(text.strip())
        chars += len(text)
        if chars > max_chars:
            break
    notes: list[str] = []
    visible = sum(len(re.sub(r"\s+", "", page)) for page in pages)
    if chars <= max_chars and visible < _SCANNED_CHARS_PER_PAGE * len(pages):
        # No text layer: the model reads the pages themselves (at most the page cap).
        body = data
        if total > max_pages:
            writer = PdfWriter()
            for number in range(max_pages):
                writer.add_page(reader.pages[number])
            out = io.BytesIO()
            writer.write(out)
            body = out.getvalue()
            notes.append(f"{name} has {total} pages; I gave the model the first {max_pages}.")
        part = MediaPart(kind="pdf", mime="application/pdf", data=body, name=name)
        return _Document(f"PDF, {total} pages, no text layer", [], total, notes, part)
    if total > max_pages:
        notes.append(f"{name} has {total} pages; I read the first {max_pages}.")
    units = [f"--- page {i} ---\n{text}" for i, text in enumerate(pages, 1)]
    return _Document(f"PDF, {total} pages", units, total, notes)


def _read_docx(data: bytes, max_chars: int) -> _Document:
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as error:
        raise _Unreadable(f"it looks damaged ({type(error).__name__})") from None
    blocks: list[str] = []
    chars = 0
    for item in document.iter_inner_content():
        if isinstance(item, Paragraph):
            text = item.text.strip()
            if not text:
                continue
            style = (item.style.name if item.style is not None else "") or ""
            heading = re.match(r"Heading (\d)", style)
            if heading:
                text = "#" * int(heading.group(1)) + " " + text
            elif style.startswith("List"):
                text = "- " + text
            blocks.append(text)
        elif isinstance(item, Table):
            blocks.append(_docx_table(item))
        chars += len(blocks[-1]) if blocks else 0
        if chars > max_chars:
            break
    if not blocks:
        raise _Unreadable("it has no text")
    return _Document("Word document", ["\n\n".join(blocks)])


def _docx_table(table: object) -> str:
    from docx.table import Table

    assert isinstance(table, Table)
    rows: list[str] = []
    for index, row in enumerate(table.rows):
        cells: list[str] = []
        seen: object = None
        for cell in row.cells:
            if cell._tc is seen:  # a merged cell repeats; show it once
                continue
            seen = cell._tc
            cells.append(" ".join(cell.text.split()).replace("|", "\\|"))
        rows.append("| " + " | ".join(cells) + " |")
        if index == 0:
            rows.append("|" + "---|" * len(cells))
    return "\n".join(rows)


# --- one attachment ---------------------------------------------------------------------


@dataclass(slots=True)
class _Outcome:
    name: str
    document: _Document | None = None
    fence: str | None = None
    part: MediaPart | None = None
    notes: list[str] = field(default_factory=list)


async def _fetch(attachment: Attachment, limits: DocumentLimits) -> bytes | str:
    """The file's bytes, or a note saying why not."""
    name = attachment.name
    if attachment.size > limits.max_bytes:
        return (
            f"I skipped {name}: it is {_mb(attachment.size)}, over my "
            f"{_mb(limits.max_bytes)} limit."
        )
    try:
        async with asyncio.timeout(limits.fetch_timeout):
            data = await attachment.fetch()
    except TimeoutError:
        log.warning("download of %s took over %.0f s", name, limits.fetch_timeout)
        return (
            f"I couldn't read {name}: it did not download within {limits.fetch_timeout:g} seconds."
        )
    except Exception as error:
        log.warning("could not download %s: %s", name, error)
        return f"I couldn't download {name}."
    if len(data) > limits.max_bytes:
        return f"I skipped {name}: it is {_mb(len(data))}, over my {_mb(limits.max_bytes)} limit."
    return data


async def _parse(
    work: Callable[[], _Document], name: str, limits: DocumentLimits
) -> _Document | str:
    try:
        return await asyncio.wait_for(asyncio.to_thread(work), limits.parse_timeout)
    except TimeoutError:
        # The thread cannot be stopped; it finishes in the background and is ignored.
        log.warning("reading %s took over %.0f s", name, limits.parse_timeout)
        return f"I skipped {name}: reading it took longer than {limits.parse_timeout:g} seconds."
    except _Unreadable as why:
        return f"I couldn't read {name}: {why}."
    except Exception as error:
        log.warning("could not read %s: %r", name, error)
        return f"I couldn't read {name}: it looks damaged ({type(error).__name__})."


async def _read_one(attachment: Attachment, limits: DocumentLimits) -> _Outcome:
    name = attachment.name
    outcome = _Outcome(name)
    kind = classify(name, attachment.mime)
    if kind is None:
        outcome.notes.append(_cannot_read(attachment))
        return outcome
    fetched = await _fetch(attachment, limits)
    if isinstance(fetched, str):
        outcome.notes.append(fetched)
        return outcome
    data = fetched
    if data[:1024].lstrip().startswith(b"%PDF-") and kind.kind != "pdf":
        kind = FileType("pdf", "application/pdf", "PDF")  # a PDF sent under another name
    if kind.kind == "media":
        assert kind.modality is not None
        outcome.part = MediaPart(kind=kind.modality, mime=kind.mime, data=data, name=name)
        return outcome
    if kind.kind == "pdf" and b"%PDF-" not in data[:1024]:
        outcome.notes.append(f"I couldn't read {name}: it is not a PDF file.")
        return outcome
    work: Callable[[], _Document]
    if kind.kind == "pdf":

        def work() -> _Document:
            return _read_pdf(data, name, limits.max_pages, limits.max_chars)

    elif kind.kind == "docx":

        def work() -> _Document:
            return _read_docx(data, limits.max_chars)

    else:

        def work() -> _Document:
            return _read_text(data, kind)

    parsed = await _parse(work, name, limits)
    if isinstance(parsed, str):
        outcome.notes.append(parsed)
        return outcome
    outcome.document = parsed
    outcome.fence = kind.fence
    outcome.part = parsed.part
    outcome.notes.extend(parsed.notes)
    return outcome


def _render(outcome: _Outcome, room: int) -> tuple[str, int, str | None]:
    """The text block of one document within `room` characters: (block, characters of the
    document used, a note if it was cut)."""
    document = outcome.document
    assert document is not None
    name = outcome.name
    kept: list[str] = []
    used = 0
    note: str | None = None
    total = sum(len(unit) for unit in document.units)
    for index, unit in enumerate(document.units):
        if used + len(unit) <= room:
            kept.append(unit)
            used += len(unit)
            continue
        cut = max(0, room - used)
        if cut:
            kept.append(unit[:cut] + "\n[…cut here]")
            used += cut
        if document.pages is not None:
            last = index + (1 if cut else 0)
            shown = f"pages 1–{last}" if last > 1 else ("page 1" if last else "no page")
            note = (
                f"{name} was too long for me: I read {shown} of {document.pages} "
                f"(the first {used:,} characters)."
            )
        else:
            note = f"{name} was too long for me: I read its first {used:,} of {total:,} characters."
        break
    body = "\n\n".join(kept)
    if outcome.fence is not None and body:
        body = _fence(body, outcome.fence)
    block = f"\n\n[Attached file: {name} ({document.label})]\n{body}\n[End of {name}]"
    return block, used, note


async def read_attachments(
    attachments: Sequence[Attachment], limits: DocumentLimits
) -> AttachmentsRead:
    """Read a message's files, concurrently. The text of all documents together is at most
    `limits.max_chars` characters, shared in the order the files were attached."""
    result = AttachmentsRead()
    if not attachments:
        return result
    outcomes = await asyncio.gather(*(_read_one(a, limits) for a in attachments))
    room = limits.max_chars
    blocks: list[str] = []
    for outcome in outcomes:
        if outcome.part is not None:
            result.parts.append(outcome.part)
        if outcome.document is not None and outcome.document.units:
            if room <= 0:
                result.notes.append(
                    f"I skipped {outcome.name}: the files before it used up my "
                    f"{limits.max_chars:,}-character limit for documents."
                )
            else:
                block, used, note = _render(outcome, room)
                room -= used
                blocks.append(block)
                if note:
                    outcome.notes.append(note)
        result.notes.extend(outcome.notes)
    result.text = "".join(blocks)
    return result
