"""Image URLs fetched by bfstream, for providers that take images only as bytes (Gemini).

A stream does it once, before its first turn (``Stream._inline_images``): every http(s) URL of an
``image_url`` part in a user message that its provider cannot read itself is fetched, all of them
at once, and the part's URL becomes a base64 ``data:`` URI, which the adapter translates like any
other. Tool rounds and retries reuse those bytes: nothing is fetched twice.

The fetch runs inside the network, on a URL a caller chose, so it is bounded as webhooks are:
``webhooks.url_problem`` checks every hop, redirects included (followed here, never by aiohttp), so
nothing reaches a loopback, private or link-local address unless ``images.allow_private`` is on;
the answer must be a 200 with an ``image/*`` media type; at most ``images.max_bytes`` are read
(after decompression), every hop within ``images.timeout`` seconds. Any failure refuses the whole
request with one 400 naming each part that failed, before the provider is called.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Callable
from typing import Any

import aiohttp
from yarl import URL

from bfstream.config import ImageSettings
from bfstream.errors import ValidationFailed
from bfstream.providers.http import ProviderClient
from bfstream.scrub import scrub
from bfstream.webhooks import url_problem

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_HEADERS = {"Accept": "image/*", "User-Agent": "bfstream-images"}  # some image hosts refuse a request with no agent
_IMAGE_TYPE = re.compile(r"image/[\w.+-]+")


class _Refused(Exception):
    """Why one image cannot be used: a detail of the request's 400."""


def _http_url(part: Any) -> str | None:
    if not isinstance(part, dict) or part.get("type") != "image_url":
        return None
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if isinstance(url, str) and url.strip().lower().startswith(("http://", "https://")):
        return url.strip()
    return None


async def inline_images(
    messages: list[Any], wanted: Callable[[str], bool], http: ProviderClient, settings: ImageSettings
) -> list[Any]:
    """``messages`` with each http(s) image URL of a user message for which ``wanted`` holds replaced
    by the image as a base64 data URI, in new message and part objects (the caller's stay as they
    were). Raises ``ValidationFailed`` naming every image that could not be fetched."""
    places: list[tuple[int, int, str]] = []
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) and message.get("role") == "user" else None
        for j, part in enumerate(content if isinstance(content, list) else []):
            if (url := _http_url(part)) is not None and wanted(url):
                places.append((i, j, url))
    if not places:
        return messages
    urls = list(dict.fromkeys(url for _, _, url in places))  # the same image twice is fetched once
    if len(urls) > settings.max_count:
        why = f"at most {settings.max_count} image URLs in one request, not {len(urls)} (images.max_count)"
        raise ValidationFailed("Too many images to fetch", details=[{"field": "payload.messages", "message": why}])
    results = await asyncio.gather(*(_fetch(url, http, settings) for url in urls), return_exceptions=True)
    fetched = dict(zip(urls, results, strict=True))
    problems = []
    for i, j, url in places:
        result = fetched[url]
        if isinstance(result, _Refused):
            problems.append({"field": f"payload.messages.{i}.content.{j}.image_url.url", "message": str(result)})
        elif isinstance(result, BaseException):
            raise result
    if problems:
        raise ValidationFailed("An image could not be fetched", details=problems)
    copies: dict[int, dict[str, Any]] = {}
    for i, j, url in places:
        message = copies.setdefault(i, {**messages[i], "content": list(messages[i]["content"])})
        part = message["content"][j]
        image = part["image_url"]
        inlined = {**image, "url": fetched[url]} if isinstance(image, dict) else fetched[url]
        message["content"][j] = {**part, "image_url": inlined}
    return [copies.get(i, message) for i, message in enumerate(messages)]


async def _fetch(url: str, http: ProviderClient, settings: ImageSettings) -> str:
    """The image at ``url`` as a base64 data URI; ``_Refused`` saying why not."""
    first = True
    try:
        async with asyncio.timeout(settings.timeout):
            for _ in range(settings.max_redirects + 1):
                if (why := await url_problem(url, settings.allow_private, "images.allow_private")) is not None:
                    raise _Refused(why if first else f"it redirects to a URL that cannot be used: {why}")
                first = False
                async with http.get(url, headers=_HEADERS, allow_redirects=False) as response:
                    if response.status not in _REDIRECTS:
                        return await _read_image(response, settings.max_bytes)
                    location = response.headers.get("Location")
                    if not location:
                        raise _Refused(f"its server answered HTTP {response.status} without a Location")
                    url = str(response.url.join(URL(location)))
            raise _Refused(f"more than {settings.max_redirects} redirects (images.max_redirects)")
    except TimeoutError:
        raise _Refused(f"the image did not arrive within {settings.timeout:g} s (images.timeout)") from None
    except (aiohttp.ClientError, OSError, ValueError) as exc:  # yarl and aiohttp refuse malformed URLs with ValueError
        raise _Refused(f"the image could not be fetched: {scrub(str(exc)) or type(exc).__name__}") from None


async def _read_image(response: aiohttp.ClientResponse, max_bytes: int) -> str:
    if response.status != 200:
        raise _Refused(f"its server answered HTTP {response.status}")
    media_type = response.content_type  # lower case, without parameters
    if not _IMAGE_TYPE.fullmatch(media_type):
        raise _Refused(f"it is {media_type}, not an image")
    too_big = _Refused(f"it is larger than {max_bytes} bytes (images.max_bytes)")
    if response.content_length is not None and response.content_length > max_bytes:
        raise too_big
    data = bytearray()
    async for piece in response.content.iter_any():
        data += piece
        if len(data) > max_bytes:
            raise too_big
    if not data:
        raise _Refused("it is empty")
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"
