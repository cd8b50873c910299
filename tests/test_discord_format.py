"""Discord's text shaping: summaries as Discord Markdown, status lines, thread names and
quoted questions. (Pages, pacing and mention safety are core's: tests/core.)"""

from __future__ import annotations

from bots.discord.format import (
    close_fence,
    quote_prompt,
    status_line,
    summary_markdown,
    thread_name,
)
from core import ActionItem, StructuredSummary, Summary


def test_fences_and_labels() -> None:
    assert close_fence("```py\nprint(1)") == "```py\nprint(1)\n```"
    assert close_fence("```py\nprint(1)\n```") == "```py\nprint(1)\n```"
    assert close_fence("~~~~\nx\n") == "~~~~\nx\n~~~~"
    assert status_line("Using   current_time…") == "-# Using current_time…"
    assert len(status_line("y" * 500)) <= 93
    assert thread_name("<@123> What's the **plan** for `deploy`?") == "What's the plan for deploy?"
    assert thread_name("   ") == "Conversation"
    assert len(thread_name("word " * 100)) <= 90
    assert quote_prompt("a *b* `c`", "Ann_B") == "> **Ann\\_B:** a \\*b\\* \\`c\\`\n\n"


def test_a_summary_is_rendered_from_its_data() -> None:
    data = StructuredSummary(
        tldr="We ship Friday.",
        decisions=["Ship on Friday"],
        action_items=[ActionItem(owner="Bo", task="write notes", due="Thu")],
        open_questions=["Who demos?"],
    )
    text = summary_markdown(Summary(data, "Summary of #general", 12), footer="-# shared")
    assert text.startswith("### 📋 Summary of #general\n\n**TL;DR:** We ship Friday.")
    assert "- Ship on Friday" in text
    assert "- **Bo**: write notes (due Thu)" in text
    assert "- Who demos?" in text
    assert text.endswith("-# shared")
    empty = summary_markdown(Summary(StructuredSummary(tldr="Quiet."), "T", 1))
    assert "Decisions" not in empty and "Action items" not in empty
