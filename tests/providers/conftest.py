"""The fake providers, started for a test and named to the server the way each provider's own SDKs
are pointed elsewhere: by their base URL variable, set before the server loads its settings."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.gemini_server import FakeGemini


@pytest.fixture
async def fake_anthropic(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic() as fake:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
        yield fake


@pytest.fixture
async def fake_gemini(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeGemini]:
    async with FakeGemini() as fake:
        monkeypatch.setenv("GEMINI_BASE_URL", fake.base_url)
        yield fake
