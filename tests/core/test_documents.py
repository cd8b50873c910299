"""Documents attached to a message: what the model is given, and a note for everything cut
or skipped. Files are real: PDFs made with fpdf2, DOCX with python-docx."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import docx
import pytest
from fpdf import FPDF
from pypdf import PdfReader

from core.documents import DocumentLimits, classify, read_attachments
from core.engine import Engine
from core.providers.base import ModelRequest, TextDelta
from core.types import Attachment, Author, ChatMessage, ConversationKey, Incoming
from tests.fakes.cometapi import FakeCometAPI, Reply
from tests.support import RecordingSink

LIMITS = DocumentLimits(
    max_bytes=1_000_000, max_pages=100, max_chars=50_000, fetch_timeout=2, parse_timeout=10
)


class Fetches:
    """Counts downloads, so a test can tell a file was skipped without one."""

    def __init__(self) -> None:
        self.count = 0

    def attachment(
        self, name: str, data: bytes, mime: str = "application/octet-stream", size: int = -1
    ) -> Attachment:
        async def fetch() -> bytes:
            self.count += 1
            return data

        return Attachment(name, mime, len(data) if size < 0 else size, fetch)


def text_pdf(pages: int, fact_page: int | None = None, fact: str = "") -> bytes:
    pdf = FPDF()
    pdf.set_font("helvetica", size=11)
    for number in range(1, pages + 1):
        pdf.add_page()
        pdf.multi_cell(
            0,
            6,
            f"Quarterly report, section {number}. " + "Filler sentence. " * 20,
            new_x="LMARGIN",
            new_y="NEXT",
        )
        if number == fact_page:
            pdf.multi_cell(0, 6, fact)
    return bytes(pdf.output())


def scanned_pdf(pages: int) -> bytes:
    """Pages with drawings only: no text layer, like a scan."""
    pdf = FPDF()
    for number in range(pages):
        pdf.add_page()
        for row in range(12):
            pdf.rect(15 + number * 3, 20 + row * 20, 150, 8, style="F")
    return bytes(pdf.output())


async def test_a_fact_on_page_17_of_20_arrives_with_its_page_number() -> None:
    fetches = Fetches()
    data = text_pdf(20, fact_page=17, fact="The venue contract number is VX-4471.")
    result = await read_attachments([fetches.attachment("report.pdf", data)], LIMITS)
    assert result.parts == [] and result.notes == []
    assert "[Attached file: report.pdf (PDF, 20 pages)]" in result.text
    page17 = result.text.split("--- page 17 ---", 1)[1].split("--- page 18 ---", 1)[0]
    assert "VX-4471" in page17
    assert result.text.count("VX-4471") == 1
    assert "--- page 20 ---" in result.text and result.text.rstrip().endswith("[End of report.pdf]")


async def test_a_pdf_without_a_text_layer_goes_to_the_model_as_a_pdf() -> None:
    fetches = Fetches()
    data = scanned_pdf(3)
    result = await read_attachments([fetches.attachment("scan.pdf", data, "")], LIMITS)
    assert result.text == "" and result.notes == []
    [part] = result.parts
    assert (part.kind, part.mime, part.name, part.data) == (
        "pdf",
        "application/pdf",
        "scan.pdf",
        data,
    )


async def test_a_long_scanned_pdf_is_trimmed_to_the_page_cap_with_a_note() -> None:
    fetches = Fetches()
    limits = DocumentLimits(max_bytes=1_000_000, max_pages=2)
    result = await read_attachments([fetches.attachment("scan.pdf", scanned_pdf(5))], limits)
    [part] = result.parts
    assert len(PdfReader(io.BytesIO(part.data)).pages) == 2
    assert result.notes == ["scan.pdf has 5 pages; I gave the model the first 2."]


async def test_page_cap_reads_the_first_pages_and_says_so() -> None:
    fetches = Fetches()
    data = text_pdf(20, fact_page=17, fact="VX-4471")
    limits = DocumentLimits(max_pages=5)
    result = await read_attachments([fetches.attachment("report.pdf", data)], limits)
    assert "--- page 5 ---" in result.text and "--- page 6 ---" not in result.text
    assert "VX-4471" not in result.text
    assert result.notes == ["report.pdf has 20 pages; I read the first 5."]


async def test_oversized_file_is_skipped_with_a_note_and_not_downloaded() -> None:
    fetches = Fetches()
    big = fetches.attachment("huge.pdf", b"%PDF-1.7", size=5_000_000)
    result = await read_attachments([big], LIMITS)
    assert fetches.count == 0 and result.text == "" and result.parts == []
    assert result.notes == ["I skipped huge.pdf: it is 5.0 MB, over my 1.0 MB limit."]
    # a platform that under-reports the size is caught after the download
    liar = fetches.attachment("liar.txt", b"x" * 1_000_001, size=10)
    result = await read_attachments([liar], LIMITS)
    assert result.notes == ["I skipped liar.txt: it is 1.0 MB, over my 1.0 MB limit."]


async def test_docx_paragraphs_headings_and_tables_in_order() -> None:
    document = docx.Document()
    document.add_heading("Offsite plan", level=1)
    document.add_paragraph("We compared three venues.")
    table = document.add_table(rows=3, cols=2)
    for row, (venue, price) in enumerate(
        [("Venue", "Price"), ("Lakeside Hall", "4,200 EUR"), ("Old Mill", "3,900 EUR")]
    ):
        table.cell(row, 0).text = venue
        table.cell(row, 1).text = price
    document.add_paragraph("Decision: Old Mill.")
    out = io.BytesIO()
    document.save(out)
    fetches = Fetches()
    result = await read_attachments([fetches.attachment("plan.docx", out.getvalue())], LIMITS)
    assert result.notes == [] and result.parts == []
    text = result.text
    assert "[Attached file: plan.docx (Word document)]" in text
    assert "# Offsite plan" in text
    assert (
        "| Venue | Price |\n|---|---|\n| Lakeside Hall | 4,200 EUR |\n| Old Mill | 3,900 EUR |"
        in (text)
    )
    assert text.index("three venues") < text.index("Lakeside") < text.index("Decision: Old Mill")


@pytest.mark.parametrize(
    ("name", "body", "label", "fence"),
    [
        ("budget.csv", b"item,cost\nvenue,3900\n", "CSV", "csv"),
        ("config.json", json.dumps({"venue": "Old Mill"}).encode(), "JSON", "json"),
        ("deploy.py", b"def main() -> None:\n    print('hi')\n", "Python source", "python"),
        ("notes.md", b"# Notes\n- venue booked\n", "Markdown", None),
        ("Dockerfile", b"FROM python:3.11\n", "Dockerfile", "dockerfile"),
    ],
)
async def test_text_kinds_are_told_by_extension_when_the_mime_is_generic(
    name: str, body: bytes, label: str, fence: str | None
) -> None:
    fetches = Fetches()
    result = await read_attachments([fetches.attachment(name, body)], LIMITS)
    assert result.notes == [] and result.parts == []
    assert f"[Attached file: {name} ({label})]" in result.text
    content = body.decode().rstrip("\n")
    if fence is None:
        assert f"]\n{content}" in result.text
    else:
        assert f"```{fence}\n{content}" in result.text


async def test_a_code_fence_inside_a_file_does_not_close_ours() -> None:
    fetches = Fetches()
    body = b"Example:\n```python\nprint(1)\n```\n"
    result = await read_attachments([fetches.attachment("snippet.py", body)], LIMITS)
    assert "````python\nExample:\n```python" in result.text


async def test_corrupt_encrypted_and_disguised_pdfs_get_notes() -> None:
    fetches = Fetches()
    corrupt = b"%PDF-1.7\n" + bytes(range(256)) * 40
    encrypted = FPDF()
    encrypted.set_encryption(owner_password="owner", user_password="secret")
    encrypted.add_page()
    encrypted.set_font("helvetica", size=12)
    encrypted.cell(text="hidden")
    files = [
        fetches.attachment("broken.pdf", corrupt, "application/pdf"),
        fetches.attachment("locked.pdf", bytes(encrypted.output())),
        fetches.attachment("fake.pdf", b"<html>not a pdf</html>"),
    ]
    result = await read_attachments(files, LIMITS)
    assert result.text == "" and result.parts == []
    assert result.notes[0].startswith("I couldn't read broken.pdf: it looks damaged")
    assert result.notes[1:] == [
        "I couldn't read locked.pdf: it is password-protected.",
        "I couldn't read fake.pdf: it is not a PDF file.",
    ]


async def test_media_unknown_types_and_binary_text() -> None:
    fetches = Fetches()
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
    files = [
        fetches.attachment("photo.png", png),  # octet-stream: the extension says image/png
        fetches.attachment("memo.ogg", b"OggS", "audio/ogg"),
        fetches.attachment("tool.exe", b"MZ"),
        fetches.attachment("sheet.xlsx", b"PK"),
        fetches.attachment("data.txt", b"\x00\x01\x02\xff\xfe\x00" * 10),
    ]
    result = await read_attachments(files, LIMITS)
    assert [(p.kind, p.mime, p.name) for p in result.parts] == [
        ("image", "image/png", "photo.png"),
        ("audio", "audio/ogg", "memo.ogg"),
    ]
    assert result.notes == [
        "I can't read tool.exe (files of an unknown type).",
        "I can't read sheet.xlsx: I don't read Excel files; export the sheet as CSV.",
        "I couldn't read data.txt: it is not a text file.",
    ]
    assert fetches.count == 3  # the unknown types were not downloaded


async def test_character_cap_is_shared_and_cuts_with_notes() -> None:
    fetches = Fetches()
    limits = DocumentLimits(max_chars=3000)
    pdf = text_pdf(10)
    files = [
        fetches.attachment("log.txt", b"a" * 2000),
        fetches.attachment("report.pdf", pdf),
        fetches.attachment("late.md", b"# too late"),
    ]
    result = await read_attachments(files, limits)
    assert result.text.count("a" * 2000) == 1
    assert "--- page 1 ---" in result.text and "--- page 4 ---" not in result.text
    assert len(result.notes) == 2
    assert result.notes[0].startswith("report.pdf was too long for me: I read page")
    assert result.notes[0].endswith("of 10 (the first 1,000 characters).")
    assert result.notes[1] == (
        "I skipped late.md: the files before it used up my 3,000-character limit for documents."
    )


async def test_stalled_download_times_out_with_a_note() -> None:
    async def stall() -> bytes:
        await asyncio.sleep(30)
        return b""

    stuck = Attachment("slow.pdf", "application/pdf", 10, stall)
    limits = DocumentLimits(fetch_timeout=0.2)
    result = await read_attachments([stuck], limits)
    assert result.notes == ["I couldn't read slow.pdf: it did not download within 0.2 seconds."]


async def test_failed_download_and_message_text() -> None:
    async def broken() -> bytes:
        raise ConnectionError("reset")

    fetches = Fetches()
    files = [
        Attachment("gone.txt", "text/plain", 10, broken),
        fetches.attachment("ok.txt", b"hello", "text/plain"),
    ]
    result = await read_attachments(files, LIMITS)
    assert result.notes == ["I couldn't download gone.txt."]
    assert result.message_text("Look at these") == (
        "Look at these\n\n[Attached file: ok.txt (text)]\nhello\n[End of ok.txt]"
        "\n[I couldn't download gone.txt.]"
    )


def test_classify_prefers_a_specific_mime_and_falls_back_to_the_extension() -> None:
    kind = classify("x.bin", "application/json; charset=utf-8")
    assert kind is not None and kind.label == "JSON"
    kind = classify("main.go", "text/plain")
    assert kind is not None and (kind.kind, kind.fence) == ("text", "go")
    kind = classify("scan", "application/pdf")
    assert kind is not None and kind.kind == "pdf"
    kind = classify("clip.mov", "application/octet-stream")
    assert kind is not None and (kind.modality, kind.mime) == ("video", "video/quicktime")
    assert classify("archive.tar.gz", "application/gzip") is None


async def _dialogue(engine: Engine, message: ChatMessage) -> str:
    """Send one user message along the dialogue route; returns the answer's text."""
    request = ModelRequest(system="test", messages=[message], max_output_tokens=512)
    text = []
    async for event in engine.router.stream("dialogue", request):
        if isinstance(event, TextDelta):
            text.append(event.text)
    return "".join(text)


async def test_the_models_get_the_page_text_and_the_scanned_pdf(
    engine: Engine, cometapi: FakeCometAPI
) -> None:
    fetches = Fetches()
    pdf = text_pdf(20, fact_page=17, fact="The venue contract number is VX-4471.")
    read = await read_attachments([fetches.attachment("report.pdf", pdf)], LIMITS)
    message = ChatMessage.user(read.message_text("What is the contract number?"), "Ann")
    await _dialogue(engine, message)
    [request] = cometapi.requests
    assert request.model == "gpt-5.3-chat-latest"  # text: the dialogue model reads it
    assert "--- page 17 ---" in request.last_user_text and "VX-4471" in request.last_user_text

    cometapi.clear_requests()
    scan = scanned_pdf(3)
    read = await read_attachments([fetches.attachment("scan.pdf", scan)], LIMITS)
    message = ChatMessage.user(read.message_text("Summarize it"), "Ann", parts=read.parts)
    await _dialogue(engine, message)
    [request] = cometapi.requests
    assert request.model == "gemini-3.1-flash-lite"  # the only model on the route for PDFs
    blobs = [
        part["inlineData"]
        for content in request.contents
        for part in content.get("parts", [])
        if "inlineData" in part
    ]
    assert [b["mimeType"] for b in blobs] == ["application/pdf"]
    assert base64.b64decode(blobs[0]["data"]) == scan
    assert cometapi.rejected == []


# --- through the engine: a message with files, as the adapters hand it over --------------


def _incoming(text: str, *attachments: Attachment) -> Incoming:
    return Incoming(
        key=ConversationKey("console", "local", "docs", "t1"),
        event_id=f"Ev-{time.monotonic_ns()}",
        author=Author("U1", "Ann"),
        text=text,
        attachments=attachments,
    )


async def test_engine_answers_from_page_17_of_a_20_page_pdf(
    engine: Engine, cometapi: FakeCometAPI
) -> None:
    pdf = text_pdf(20, fact_page=17, fact="The venue contract number is VX-4471.")
    sink = RecordingSink()
    await engine.reply(
        _incoming("What is the contract number?", Fetches().attachment("report.pdf", pdf)), sink
    )
    assert sink.final is not None
    [request] = cometapi.requests
    assert request.model == "gpt-5.3-chat-latest"
    assert "--- page 17 ---" in request.last_user_text
    assert "VX-4471" in request.last_user_text
    assert "[Attached file: report.pdf (PDF, 20 pages)]" in request.last_user_text
    assert cometapi.rejected == []


async def test_engine_sends_a_scanned_pdf_to_flash_lite_as_a_pdf(
    engine: Engine, cometapi: FakeCometAPI
) -> None:
    scan = scanned_pdf(3)
    sink = RecordingSink()
    await engine.reply(_incoming("Summarize it", Fetches().attachment("scan.pdf", scan)), sink)
    assert sink.final is not None
    [request] = cometapi.requests
    assert request.model == "gemini-3.1-flash-lite"
    blobs = [
        part["inlineData"]
        for content in request.contents
        for part in content.get("parts", [])
        if "inlineData" in part
    ]
    assert [b["mimeType"] for b in blobs] == ["application/pdf"]
    assert base64.b64decode(blobs[0]["data"]) == scan
    assert cometapi.rejected == []


async def test_engine_notes_an_oversized_file_and_does_not_download_it(
    engine_with: Callable[..., AbstractAsyncContextManager[Engine]], cometapi: FakeCometAPI
) -> None:
    fetches = Fetches()
    big = fetches.attachment("minutes.txt", b"x", size=3 * 1024 * 1024)
    async with engine_with(max_attachment_bytes=1024 * 1024) as engine:
        sink = RecordingSink()
        await engine.reply(_incoming("read this", big), sink)
    assert fetches.count == 0
    assert sink.final is not None and "I skipped minutes.txt: it is 3.1 MB" in sink.final
    assert "I skipped minutes.txt" in cometapi.requests[-1].last_user_text


async def test_a_large_document_is_folded_to_a_summary_in_memory(
    engine_with: Callable[..., AbstractAsyncContextManager[Engine]], cometapi: FakeCometAPI
) -> None:
    """A document far over the history budget is read whole for its own turn, then kept in
    memory as a summary written on the summary route, not resent in full."""
    body = "\n".join(f"Line {n}: the budget line item is fine." for n in range(600))
    body += "\nThe launch date is 14 March."
    doc = Fetches().attachment("plan.md", body.encode())
    cometapi.script("gemini-3.1-flash-lite", Reply(text="Plan: launch on 14 March (line 600)."))
    cometapi.script("gpt-5.3-chat-latest", Reply(text="The plan launches on 14 March."))
    async with engine_with(history_token_budget=2000) as engine:
        await engine.reply(_incoming("Read the plan", doc), RecordingSink())
        first = cometapi.requests_for("gpt-5.3-chat-latest")[0]
        assert "The launch date is 14 March." in first.last_user_text
        folds = cometapi.requests_for("gemini-3.1-flash-lite")
        assert len(folds) == 1 and "The launch date is 14 March." in folds[0].last_user_text
        cometapi.clear_requests()
        await engine.reply(_incoming("thanks"), RecordingSink())
    [second] = cometapi.requests
    history = json.dumps(second.messages)
    assert "Line 300:" not in history
    assert "[Attached documents, summarized for memory]" in history
    assert "launch on 14 March (line 600)" in history
    assert second.model == "gpt-5.3-chat-latest"
