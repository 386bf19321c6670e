"""``POST /llm/query`` (the reference's llmQuery service) and ``POST /llm/tool-response``."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
