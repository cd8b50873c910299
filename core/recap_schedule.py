"""Recap schedules: the `/recap` command's words, and due times in the setter's time zone.

    /recap daily 09:00          /recap weekdays 17:30      /recap weekly mon 09:00
    /recap every 4h             /recap every 30m           /recap off        /recap

Calendar schedules keep their local time across daylight-saving changes (a daily 09:00 is
09:00 on the wall clock in winter and in summer). On the day clocks skip an hour, a time in
the gap runs at the wall-clock time it maps to (02:30 → 03:30); on the day they repeat an
hour, it runs once, at the first 01:30. `every` schedules count real time from the moment
they were set (rounded to the minute).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from dataclasses import asdict, dataclass
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "RecapCommand",
    "RecapSchedule",
    "RecapSyntaxError",
    "parse_recap",
]

ScheduleKind = Literal["daily", "weekdays", "weekly", "every"]

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_DAY_WORDS = {
    **{d: i for i, d in enumerate(DAYS)},
    **{n.lower(): i for i, n in enumerate(DAY_NAMES)},
    "tues": 1,
    "wednes": 2,
    "thur": 3,
    "thurs": 3,
}
_LONGEST_MINUTES = 7 * 24 * 60

USAGE = (
    "`/recap daily 09:00`, `/recap weekdays 17:30`, `/recap weekly mon 09:00`, "
    "`/recap every 4h`, `/recap off`, or `/recap` to see this channel's schedule"
)


class RecapSyntaxError(ValueError):
    """The command could not be understood; the message is one sentence for the user."""


@dataclass(frozen=True, slots=True)
class RecapSchedule:
    """When a channel's recap is due. `anchor` (epoch seconds) is the first due time of an
    `every` schedule; later ones follow every `every_minutes` minutes."""

    kind: ScheduleKind
    timezone: str = "UTC"
    hour: int = 0
    minute: int = 0
    weekday: int = 0  # weekly: 0 = Monday
    every_minutes: int = 0
    anchor: int = 0

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def period_minutes(self) -> int:
        """The shortest time between two due times."""
        if self.kind == "every":
            return self.every_minutes
        return 7 * 24 * 60 if self.kind == "weekly" else 24 * 60

    def _runs_on(self, weekday: int) -> bool:
        if self.kind == "weekdays":
            return weekday < 5
        if self.kind == "weekly":
            return weekday == self.weekday
        return True

    def _on(self, day: dt.date) -> int:
        local = dt.datetime.combine(day, dt.time(self.hour, self.minute), tzinfo=self.zone)
        return int(local.timestamp())

    def next_due(self, after: float) -> int:
        """The first due time strictly after `after` (epoch seconds)."""
        if self.kind == "every":
            step = self.every_minutes * 60
            if after < self.anchor:
                return self.anchor
            return self.anchor + (math.floor((after - self.anchor) / step) + 1) * step
        today = dt.datetime.fromtimestamp(after, self.zone).date()
        for offset in range(-1, 9):
            day = today + dt.timedelta(days=offset)
            if self._runs_on(day.weekday()) and self._on(day) > after:
                return self._on(day)
        raise AssertionError("no due time within a week")  # pragma: no cover

    def last_due(self, at: float) -> int:
        """The latest due time at or before `at` (for `every`, the grid extends back before
        the anchor)."""
        if self.kind == "every":
            step = self.every_minutes * 60
            return self.anchor + math.floor((at - self.anchor) / step) * step
        today = dt.datetime.fromtimestamp(at, self.zone).date()
        for offset in range(1, -9, -1):
            day = today + dt.timedelta(days=offset)
            if self._runs_on(day.weekday()) and self._on(day) <= at:
                return self._on(day)
        raise AssertionError("no due time within a week")  # pragma: no cover

    def describe(self) -> str:
        clock = f"{self.hour:02d}:{self.minute:02d}"
        if self.kind == "every":
            return f"every {_duration(self.every_minutes)}"
        if self.kind == "daily":
            return f"daily at {clock} ({self.timezone})"
        if self.kind == "weekdays":
            return f"on weekdays at {clock} ({self.timezone})"
        return f"every {DAY_NAMES[self.weekday]} at {clock} ({self.timezone})"

    def local(self, ts: float) -> str:
        """`ts` as the channel reads it: `Mon 3 Mar 09:00 CET`."""
        moment = dt.datetime.fromtimestamp(ts, self.zone)
        return f"{moment:%a} {moment.day} {moment:%b %H:%M %Z}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> RecapSchedule:
        return cls(**json.loads(text))


@dataclass(frozen=True, slots=True)
class RecapCommand:
    action: Literal["list", "off", "set"]
    schedule: RecapSchedule | None = None


def _duration(minutes: int) -> str:
    hours, rest = divmod(minutes, 60)
    if not rest:
        return "hour" if hours == 1 else f"{hours} hours"
    if not hours:
        return "minute" if rest == 1 else f"{rest} minutes"
    return f"{hours} h {rest} min"


_TIME = re.compile(r"^(\d{1,2})(?:[:.h](\d{2}))?\s*(am|pm)?$")
_EVERY = re.compile(r"^(?:(\d+)(?:h|hr|hrs|hour|hours))?(?:(\d+)(?:m|min|mins|minute|minutes))?$")


def _time(word: str | None, example: str) -> tuple[int, int]:
    if not word:
        raise RecapSyntaxError(f"Say at what time, for example `/recap {example}`.")
    match = _TIME.match(word.lower())
    if match and (match.group(2) is not None or match.group(3)):
        hour, minute, half = int(match.group(1)), int(match.group(2) or 0), match.group(3)
        if half:
            if not 1 <= hour <= 12:
                match = None
            else:
                hour = hour % 12 + (12 if half == "pm" else 0)
        if match and hour < 24 and minute < 60:
            return hour, minute
    raise RecapSyntaxError(
        f"'{word}' is not a time of day; use 24-hour HH:MM, for example 09:00 or 17:30."
    )


def _zone(timezone: str) -> str:
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise RecapSyntaxError(
            f"'{timezone}' is not a time zone I know; use an IANA name such as Europe/Paris."
        ) from None
    return timezone


def parse_recap(text: str, *, timezone: str, min_interval_minutes: int, now: float) -> RecapCommand:
    """Parse the words after `/recap` (a leading `/recap` or `recap` is ignored).
    `timezone` is the setter's; `now` anchors `every` schedules. Raises RecapSyntaxError."""
    words = text.strip().lower().split()
    if words and words[0].lstrip("/") == "recap":
        words = words[1:]
    if not words or words == ["list"] or words == ["show"]:
        return RecapCommand("list")
    head, rest = words[0], words[1:]
    if head in ("off", "stop", "disable", "none") and not rest:
        return RecapCommand("off")
    if head in ("daily", "weekdays") and len(rest) <= 1:
        hour, minute = _time(rest[0] if rest else None, f"{head} 09:00")
        schedule = RecapSchedule(head, _zone(timezone), hour, minute)  # type: ignore[arg-type]
    elif head == "weekly" and len(rest) <= 2:
        day_word = next((w for w in rest if w.rstrip(".") in _DAY_WORDS), None)
        time_words = [w for w in rest if w is not day_word]
        if day_word is None:
            shown = next((w for w in rest if not _TIME.match(w)), None)
            if shown is not None:
                raise RecapSyntaxError(
                    f"'{shown}' is not a day of the week; use mon, tue, wed, thu, fri, sat or sun."
                )
            raise RecapSyntaxError("Say which day, for example `/recap weekly mon 09:00`.")
        hour, minute = _time(time_words[0] if time_words else None, "weekly mon 09:00")
        weekday = _DAY_WORDS[day_word.rstrip(".")]
        schedule = RecapSchedule("weekly", _zone(timezone), hour, minute, weekday=weekday)
    elif head == "every" and rest:
        spec = "".join(rest)
        match = _EVERY.match(spec)
        if not match or not (match.group(1) or match.group(2)):
            raise RecapSyntaxError(
                f"'{' '.join(rest)}' is not an interval; use hours or minutes, like 4h or 30m."
            )
        minutes = int(match.group(1) or 0) * 60 + int(match.group(2) or 0)
        if minutes < 1:
            raise RecapSyntaxError("The interval must be at least one minute.")
        if minutes > _LONGEST_MINUTES:
            raise RecapSyntaxError(
                "For recaps less often than weekly, use `/recap weekly mon 09:00`."
            )
        # the first recap comes one interval from now, on a whole minute
        first = math.ceil(now / 60) * 60 + minutes * 60
        schedule = RecapSchedule("every", _zone(timezone), every_minutes=minutes, anchor=first)
    else:
        raise RecapSyntaxError(f"I don't understand '/recap {' '.join(words)}'; try {USAGE}.")
    if schedule.period_minutes < min_interval_minutes:
        raise RecapSyntaxError(
            f"Recaps can come at most every {_duration(min_interval_minutes)} here; "
            f"choose a longer interval."
        )
    return RecapCommand("set", schedule)
