"""Routes (`dialogue`, `summary`) as ordered chains of targets, with retries,
fallback, a per-target circuit breaker, and capability / context-size checks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncGenerator, Callable, Iterable
from dataclasses import dataclass, field

import httpx

from core import metrics
from core.providers.base import (
    ErrorKind,
    Event,
    ModelRequest,
    Provider,
    ProviderError,
    Target,
    TextDelta,
    Timeouts,
    ToolCallEvent,
)
from core.providers.gemini import GeminiProvider
from core.providers.openai_chat import OpenAIChatProvider
from core.settings import Settings
from core.tokens import estimate_messages, estimate_text
from core.types import Modality

__all__ = ["Attempt", "CircuitBreaker", "ModelInfo", "Router", "known_model"]

log = logging.getLogger(__name__)

ROUTES = ("dialogue", "summary")


@dataclass(frozen=True, slots=True)
class ModelInfo:
    context_window: int
    max_output: int
    modalities: frozenset[Modality]


KNOWN_MODELS: dict[str, ModelInfo] = {
    "gpt-5.3-chat-latest": ModelInfo(128_000, 16_384, frozenset({"image"})),
    "gemini-3.1-flash-lite": ModelInfo(
        1_048_576, 65_536, frozenset({"image", "audio", "video", "pdf"})
    ),
}
_PROTOCOL_DEFAULTS: dict[str, ModelInfo] = {
    "openai": ModelInfo(128_000, 16_384, frozenset({"image"})),
    "gemini": ModelInfo(1_048_576, 65_536, frozenset({"image", "audio", "video", "pdf"})),
}


def known_model(protocol: str, model: str) -> ModelInfo:
    return KNOWN_MODELS.get(model, _PROTOCOL_DEFAULTS[protocol])


@dataclass(frozen=True, slots=True)
class Attempt:
    """Emitted before each call to a target. `restart` means text from the previous
    attempt was already streamed and must be discarded."""

    target: Target
    number: int
    restart: bool


@dataclass
class _BreakerState:
    failures: int = 0
    open_until: float = 0.0


@dataclass
class CircuitBreaker:
    """Opens a target for `cooldown` seconds after `threshold` failed requests in a row."""

    threshold: int = 3
    cooldown: float = 60.0
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    _states: dict[str, _BreakerState] = field(default_factory=dict, repr=False)

    def _now(self) -> float:
        return self.clock()

    def available(self, target: Target) -> bool:
        state = self._states.get(target.name)
        return state is None or state.open_until <= self._now()

    def reopens_at(self, target: Target) -> float:
        state = self._states.get(target.name)
        return 0.0 if state is None else state.open_until

    def success(self, target: Target) -> None:
        self._states.pop(target.name, None)

    def failure(self, target: Target, *, cooldown: float | None = None) -> None:
        state = self._states.setdefault(target.name, _BreakerState())
        state.failures += 1
        if cooldown is not None or state.failures >= self.threshold:
            wait = max(self.cooldown, cooldown or 0.0)
            state.open_until = self._now() + wait
            log.warning(
                "model target %s cooling down for %.0f s after %d failure(s)",
                target.name,
                wait,
                state.failures,
            )


def request_tokens(request: ModelRequest) -> int:
    tools = sum(
        estimate_text(str(t.parameters)) + estimate_text(t.description) for t in request.tools
    )
    return estimate_text(request.system) + estimate_messages(request.messages) + tools


class Router:
    def __init__(
        self,
        routes: dict[str, list[Target]],
        providers: dict[str, Provider],
        *,
        attempts: int = 3,
        base_delay: float = 0.5,
        max_wait: float = 20.0,
        breaker: CircuitBreaker | None = None,
        total: float | None = None,
    ) -> None:
        self.routes = routes
        self.total = total  # seconds one call may take in all, retries and fallbacks too
        self.providers = providers
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_wait = max_wait
        self.breaker = breaker or CircuitBreaker()

    @classmethod
    def from_settings(cls, settings: Settings, client: httpx.AsyncClient) -> Router:
        key = settings.cometapi_api_key.get_secret_value() if settings.cometapi_api_key else ""
        timeouts = Timeouts(
            connect=settings.connect_timeout,
            first_token=settings.first_token_timeout,
            idle=settings.idle_timeout,
            total=settings.total_timeout,
        )
        providers: dict[str, Provider] = {
            "openai": OpenAIChatProvider(client, settings.base_url, key, timeouts),
            "gemini": GeminiProvider(client, settings.base_url, key, timeouts),
        }
        return cls(
            build_routes(settings),
            providers,
            attempts=settings.retry_attempts,
            base_delay=settings.retry_base_delay,
            max_wait=settings.retry_max_wait,
            breaker=CircuitBreaker(settings.breaker_failures, settings.breaker_cooldown),
            total=settings.total_timeout,
        )

    def plan(self, route: str, request: ModelRequest) -> list[Target]:
        """The targets to try, in order: those that can take the request, healthy first."""
        targets = self.routes[route]
        needed = request.modalities()
        size = request_tokens(request)
        fitting = [
            t
            for t in targets
            if needed <= t.modalities
            and size + min(request.max_output_tokens, t.max_output) <= t.context_window
        ]
        if not fitting:
            if not any(needed <= t.modalities for t in targets):
                kinds = ", ".join(sorted(needed - set().union(*(t.modalities for t in targets))))
                raise ProviderError(
                    ErrorKind.FATAL, "unsupported_media", f"no model on this route reads {kinds}"
                )
            raise ProviderError(
                ErrorKind.FATAL,
                "too_large",
                f"about {size:,} tokens is more than any model on this route can read",
            )
        healthy = [t for t in fitting if self.breaker.available(t)]
        if healthy:
            return healthy
        return sorted(fitting, key=self.breaker.reopens_at)

    async def stream(
        self, route: str, request: ModelRequest
    ) -> AsyncGenerator[Attempt | Event, None]:
        """Stream the request along the route. Raises the last ProviderError if every
        target failed (its kind is FATAL when nothing else can be tried). With `total`,
        the call with all its retries and fallbacks ends by then: a FATAL timeout."""
        plan = self.plan(route, request)
        loop = asyncio.get_running_loop()
        deadline = None if self.total is None else loop.time() + self.total
        number = 0
        emitted = False
        last: ProviderError | None = None
        for target in plan:
            provider = self.providers[target.protocol]
            for attempt in range(1, self.attempts + 1):
                if deadline is not None and loop.time() >= deadline:
                    raise _out_of_time(last)
                number += 1
                yield Attempt(target, number, restart=emitted)
                emitted = False
                try:
                    events_of = provider.stream(target, request, deadline=deadline)
                    async with contextlib.aclosing(events_of) as events:
                        async for event in events:
                            if isinstance(event, TextDelta | ToolCallEvent):
                                emitted = True
                            yield event
                    self.breaker.success(target)
                    metrics.MODEL_CALLS.labels(route, target.name, "ok").inc()
                    return
                except ProviderError as error:
                    last = error
                    metrics.MODEL_CALLS.labels(route, target.name, error.category).inc()
                    log.warning(
                        "model call failed: target=%s attempt=%d kind=%s category=%s detail=%s",
                        target.name,
                        attempt,
                        error.kind,
                        error.category,
                        error.detail,
                    )
                    if error.kind is ErrorKind.FATAL:
                        raise
                    if error.kind is ErrorKind.FALLBACK:
                        if error.category == "quota":
                            self.breaker.failure(target, cooldown=self.breaker.cooldown * 10)
                        elif error.category not in ("context",):
                            self.breaker.failure(target)
                        break
                    wait = self._delay(attempt, error.retry_after)
                    if wait > self.max_wait:
                        self.breaker.failure(target, cooldown=wait)
                        break
                    if attempt == self.attempts:
                        self.breaker.failure(target)
                        break
                    if deadline is not None and loop.time() + wait >= deadline:
                        raise _out_of_time(last) from None
                    await asyncio.sleep(wait)
        assert last is not None
        raise last.with_kind(ErrorKind.FATAL) if last.kind is not ErrorKind.FATAL else last

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after
        return float(self.base_delay * (2 ** (attempt - 1)) * random.uniform(0.5, 1.0))


def _out_of_time(last: ProviderError | None) -> ProviderError:
    why = f" (last: {last.category}: {last.detail})" if last is not None else ""
    return ProviderError(
        ErrorKind.FATAL,
        "timeout",
        f"no answer within the total timeout{why}",
        status=last.status if last is not None else None,
    )


def build_routes(settings: Settings) -> dict[str, list[Target]]:
    def target(protocol: str, model: str) -> Target:
        info = known_model(protocol, model)
        if model == settings.summary_model:
            prices = (
                settings.summary_price_input,
                settings.summary_price_output,
                settings.summary_price_cached_input,
            )
        else:
            prices = (
                settings.dialogue_price_input,
                settings.dialogue_price_output,
                settings.dialogue_price_cached_input,
            )
        assert protocol in ("openai", "gemini")
        return Target(
            protocol,  # type: ignore[arg-type]
            model,
            info.context_window,
            info.max_output,
            info.modalities,
            *prices,
        )

    def chain(entries: Iterable[str]) -> list[Target]:
        return [target(*entry.split(":", 1)) for entry in entries]

    dialogue = settings.dialogue_route or [
        f"openai:{settings.dialogue_model}",
        f"gemini:{settings.summary_model}",
    ]
    summary = settings.summary_route or [
        f"gemini:{settings.summary_model}",
        f"openai:{settings.dialogue_model}",
    ]
    routes = {"dialogue": chain(dialogue), "summary": chain(summary)}
    # A channel may pick another dialogue model (DIALOGUE_MODEL_CHOICES): its route tries
    # that model first, then the dialogue route's others.
    for entry in settings.dialogue_model_choices:
        chosen = target(*entry.split(":", 1))
        rest = [t for t in routes["dialogue"] if t.model != chosen.model]
        routes[f"dialogue@{chosen.model}"] = [chosen, *rest]
    return routes
