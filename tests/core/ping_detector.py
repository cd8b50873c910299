"""An independent judge of "would this ping anyone?", for property tests of mention safety.

It knows nothing of how `core.outbound.mentions` works: it decodes HTML entities with the
standard library, again and again until nothing changes, and looks at every stage for a
live broadcast (`<!…>`), a role or user mention that is not of an allowed id, or a plain
`@channel` / `@here` / `@everyone`."""

from __future__ import annotations

import html
import re
from collections.abc import Iterable

_USER = re.compile(r"<@!?([A-Za-z0-9]+)[>|]")
_PLAIN = re.compile(r"(?<!\w)@(?:channel|here|everyone)(?!\w)", re.IGNORECASE)


def stages(text: str) -> list[str]:
    """`text` and each of its forms after one more round of HTML decoding."""
    forms = [text]
    for _ in range(64):
        decoded = html.unescape(forms[-1])
        if decoded == forms[-1]:
            break
        forms.append(decoded)
    return forms


def live_pings(text: str, allowed: Iterable[str] = ()) -> list[str]:
    """Every live ping in `text`, at any stage of decoding."""
    allowed = set(allowed)
    found: list[str] = []
    for form in stages(text):
        found += [form[m.start() : m.start() + 24] for m in re.finditer("<!", form)]
        for match in re.finditer("<@", form):
            user = _USER.match(form, match.start())
            if user is None or user.group(1) not in allowed:
                found.append(form[match.start() : match.start() + 24])
        found += _PLAIN.findall(form)
    return found
