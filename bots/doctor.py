"""`teambot doctor`: is the configuration sound, does Redis answer, does the API know
both model ids?"""

from __future__ import annotations

import httpx

from core.settings import ConfigError, Settings
from core.store import connect_store

__all__ = ["run_doctor"]


def _line(ok: bool, text: str) -> bool:
    print(f"{'ok ' if ok else 'FAIL'} {text}")
    return ok


async def run_doctor(settings: Settings) -> int:
    results: list[bool] = []
    try:
        settings.require("cometapi_api_key")
        results.append(_line(True, "configuration: COMETAPI_API_KEY is set"))
    except ConfigError as error:
        results.append(_line(False, f"configuration: {error}"))

    store = None
    where = "in-process store (REDIS_URL unset: memory is not persistent)"
    if settings.redis_url is not None:
        where = "Redis at REDIS_URL"
    try:
        store = await connect_store(settings)
        await store.ping()
        results.append(_line(True, f"memory: {where} answers"))
    except Exception as error:
        results.append(_line(False, f"memory: {where} does not answer ({type(error).__name__})"))
    finally:
        if store is not None:
            await store.close()

    if settings.cometapi_api_key is None:
        results.append(_line(False, "model API: skipped, no API key"))
        return 1
    url = f"{settings.base_url}/v1/models"
    try:
        async with httpx.AsyncClient(timeout=settings.connect_timeout + 10) as client:
            response = await client.get(
                url,
                headers={"Authorization": f"Bearer {settings.cometapi_api_key.get_secret_value()}"},
            )
    except httpx.HTTPError as error:
        results.append(_line(False, f"model API: {url} unreachable ({type(error).__name__})"))
        return 1
    if response.status_code != 200:
        results.append(_line(False, f"model API: {url} answered HTTP {response.status_code}"))
        return 1
    try:
        ids = {str(item.get("id")) for item in response.json().get("data", [])}
    except (ValueError, AttributeError):
        results.append(_line(False, f"model API: {url} did not answer with a model list"))
        return 1
    results.append(_line(True, f"model API: {url} answers ({len(ids)} models)"))
    for role, model in (("dialogue", settings.dialogue_model), ("summary", settings.summary_model)):
        results.append(
            _line(
                model in ids, f"{role} model {model} is {'' if model in ids else 'NOT '}available"
            )
        )
    return 0 if all(results) else 1
