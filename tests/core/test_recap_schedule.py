"""`/recap` words → schedules, and due times in the setter's zone across DST changes."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from core.recap_schedule import RecapSchedule, RecapSyntaxError, parse_recap

NOW = dt.datetime(2025, 3, 28, 12, 0, 20, tzinfo=dt.UTC).timestamp()  # a Friday
MINUTE = int(dt.datetime(2025, 3, 28, 12, 1, tzinfo=dt.UTC).timestamp())  # the next whole one


NOT_A_TIME = "is not a time of day; use 24-hour HH:MM, for example 09:00 or 17:30."


def parse(text: str, timezone: str = "UTC", minimum: int = 60) -> RecapSchedule | str:
    command = parse_recap(text, timezone=timezone, min_interval_minutes=minimum, now=NOW)
    return command.schedule if command.schedule is not None else command.action


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "list"),
        ("/recap", "list"),
        ("recap list", "list"),
        ("off", "off"),
        ("/recap OFF", "off"),
        ("daily 09:00", RecapSchedule("daily", "UTC", 9, 0)),
        ("/recap daily 9:05", RecapSchedule("daily", "UTC", 9, 5)),
        ("daily 5:30pm", RecapSchedule("daily", "UTC", 17, 30)),
        ("daily 12am", RecapSchedule("daily", "UTC", 0, 0)),
        ("weekdays 17:30", RecapSchedule("weekdays", "UTC", 17, 30)),
        ("weekly mon 09:00", RecapSchedule("weekly", "UTC", 9, 0, weekday=0)),
        ("weekly Friday 16:00", RecapSchedule("weekly", "UTC", 16, 0, weekday=4)),
        ("weekly 08:15 sun", RecapSchedule("weekly", "UTC", 8, 15, weekday=6)),
        ("every 4h", RecapSchedule("every", "UTC", every_minutes=240, anchor=MINUTE + 4 * 3600)),
        ("every 90m", RecapSchedule("every", "UTC", every_minutes=90, anchor=MINUTE + 90 * 60)),
        ("every 1h 30m", RecapSchedule("every", "UTC", every_minutes=90, anchor=MINUTE + 90 * 60)),
        (
            "every 2 hours",
            RecapSchedule("every", "UTC", every_minutes=120, anchor=MINUTE + 2 * 3600),
        ),
    ],
)
def test_commands_that_parse(text: str, expected: RecapSchedule | str) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("daily", "Say at what time, for example `/recap daily 09:00`."),
        ("daily 25:00", "'25:00' " + NOT_A_TIME),
        ("daily 9", "'9' " + NOT_A_TIME),
        ("daily 13pm", "'13pm' " + NOT_A_TIME),
        ("weekly mnday 09:00", "'mnday' is not a day of the week; "
         "use mon, tue, wed, thu, fri, sat or sun."),
        ("weekly 09:00", "Say which day, for example `/recap weekly mon 09:00`."),
        ("every 4 days", "'4 days' is not an interval; use hours or minutes, like 4h or 30m."),
        ("every 0m", "The interval must be at least one minute."),
        ("every 200h", "For recaps less often than weekly, use `/recap weekly mon 09:00`."),
        ("every 30m", "Recaps can come at most every hour here; choose a longer interval."),
        ("monthly 09:00", "I don't understand '/recap monthly 09:00'; try `/recap daily 09:00`, "
         "`/recap weekdays 17:30`, `/recap weekly mon 09:00`, `/recap every 4h`, `/recap off`, "
         "or `/recap` to see this channel's schedule."),
    ],
)  # fmt: skip
def test_errors_are_one_clear_sentence(text: str, error: str) -> None:
    with pytest.raises(RecapSyntaxError) as caught:
        parse(text)
    assert str(caught.value) == error


def test_minimum_interval_and_time_zone_checks() -> None:
    assert parse("every 1m", minimum=1) == RecapSchedule(
        "every", "UTC", every_minutes=1, anchor=MINUTE + 60
    )
    with pytest.raises(RecapSyntaxError, match="at most every 2 hours"):
        parse("every 90m", minimum=120)
    with pytest.raises(RecapSyntaxError, match="'Mars/Olympus' is not a time zone I know"):
        parse("daily 09:00", timezone="Mars/Olympus")


def local(ts: float, zone: str) -> str:
    return dt.datetime.fromtimestamp(ts, ZoneInfo(zone)).strftime("%a %Y-%m-%d %H:%M %Z")


def dues(schedule: RecapSchedule, start: float, count: int) -> list[str]:
    out, at = [], start
    for _ in range(count):
        at = schedule.next_due(at)
        out.append(local(at, schedule.timezone))
    return out


def test_daily_stays_at_nine_local_across_spring_and_autumn_changes() -> None:
    paris = RecapSchedule("daily", "Europe/Paris", 9, 0)
    assert dues(paris, NOW, 3) == [
        "Sat 2025-03-29 09:00 CET",
        "Sun 2025-03-30 09:00 CEST",  # clocks went forward that night
        "Mon 2025-03-31 09:00 CEST",
    ]
    # UTC moved by an hour, the wall clock did not
    first = paris.next_due(NOW)
    assert paris.next_due(first) - first == 23 * 3600
    new_york = RecapSchedule("daily", "America/New_York", 9, 0)
    autumn = dt.datetime(2025, 11, 1, 12, tzinfo=dt.UTC).timestamp()
    assert dues(new_york, autumn, 3) == [
        "Sat 2025-11-01 09:00 EDT",
        "Sun 2025-11-02 09:00 EST",  # clocks went back that night
        "Mon 2025-11-03 09:00 EST",
    ]
    saturday = new_york.next_due(autumn)
    assert new_york.next_due(saturday) - saturday == 25 * 3600


def test_times_in_the_skipped_and_repeated_hour_run_once() -> None:
    skipped = RecapSchedule("daily", "Europe/Paris", 2, 30)
    before = dt.datetime(2025, 3, 29, 12, tzinfo=dt.UTC).timestamp()
    assert dues(skipped, before, 2) == ["Sun 2025-03-30 03:30 CEST", "Mon 2025-03-31 02:30 CEST"]
    repeated = RecapSchedule("daily", "Europe/Paris", 2, 30)
    before = dt.datetime(2025, 10, 25, 12, tzinfo=dt.UTC).timestamp()
    assert dues(repeated, before, 2) == ["Sun 2025-10-26 02:30 CEST", "Mon 2025-10-27 02:30 CET"]


def test_weekdays_weekly_and_every() -> None:
    weekdays = RecapSchedule("weekdays", "UTC", 17, 30)
    assert dues(weekdays, NOW, 3) == [
        "Fri 2025-03-28 17:30 UTC",
        "Mon 2025-03-31 17:30 UTC",
        "Tue 2025-04-01 17:30 UTC",
    ]
    weekly = RecapSchedule("weekly", "Asia/Tokyo", 9, 0, weekday=0)
    assert dues(weekly, NOW, 2) == ["Mon 2025-03-31 09:00 JST", "Mon 2025-04-07 09:00 JST"]
    assert weekly.last_due(weekly.next_due(NOW)) == weekly.next_due(NOW)
    every = parse("every 4h")
    assert isinstance(every, RecapSchedule)
    assert every.next_due(NOW) == every.anchor
    assert every.next_due(every.anchor) == every.anchor + 4 * 3600
    assert every.last_due(every.anchor + 5 * 3600) == every.anchor + 4 * 3600
    assert every.describe() == "every 4 hours"
    assert weekly.describe() == "every Monday at 09:00 (Asia/Tokyo)"
    assert RecapSchedule.from_json(weekly.to_json()) == weekly
