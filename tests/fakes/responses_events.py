"""OpenAI's Responses API as it streams, for ``FakeOpenAI`` to serve at ``/v1/responses``.

Written from OpenAI's streaming-events reference (platform.openai.com/docs/api-reference/responses-streaming)
and the Response object it documents: every event is ``event: <type>`` then ``data: <compact JSON whose
type repeats it>`` with a ``sequence_number`` counting from 0; output items carry their ``output_index``,
content events their ``item_id`` and ``content_index``, delta events an ``obfuscation`` filler (on by
default); ``response.created``/``in_progress``/``completed``/``incomplete``/``failed`` carry the whole
Response (``id``, ``object: "response"``, ``status``, ``output``, ``usage``, and the request's settings
echoed). No ``[DONE]`` follows the last event.
"""

from __future__ import annotations

import json
import random
import secrets
import string
import time
from typing import Any

MODEL = "gpt-5-mini-2025-08-07"


def _id(prefix: str) -> str:
    return prefix + secrets.token_hex(24)


def fragments(text: str, size: int = 5) -> list[str]:
    """Fixed-size pieces, so keys, values and escapes are cut mid-token as OpenAI's deltas are."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def usage(input_tokens: int = 36, output_tokens: int = 87, reasoning_tokens: int = 0, cached: int = 0) -> dict:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
        "total_tokens": input_tokens + output_tokens,
    }


def response_object(
    status: str,
    output: list[dict[str, Any]],
    *,
    model: str = MODEL,
    id: str = "resp_68af4030592c81938ec0a5fbab4a3e9f05438e46b5f69a3b",
    created_at: int | None = None,
    usage: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    incomplete_details: dict[str, Any] | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """A Response as the API returns it; ``settings`` override the echoed request settings."""
    return {
        "id": id,
        "object": "response",
        "created_at": int(time.time()) if created_at is None else created_at,
        "status": status,
        "background": False,
        "error": error,
        "incomplete_details": incomplete_details,
        "instructions": None,
        "max_output_tokens": None,
        "max_tool_calls": None,
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "prompt_cache_key": None,
        "reasoning": {"effort": "medium", "summary": None},
        "safety_identifier": None,
        "service_tier": "auto",
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": "auto",
        "tools": [],
        "top_logprobs": 0,
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": {},
        **settings,
    }


def message_item(
    text: str, *, id: str | None = None, annotations: list[dict[str, Any]] | None = None, status: str = "completed"
) -> dict:
    part = {"type": "output_text", "annotations": annotations or [], "logprobs": [], "text": text}
    return {"id": id or _id("msg_"), "type": "message", "status": status, "content": [part], "role": "assistant"}


def function_call_item(call_id: str, name: str, arguments: str, *, id: str | None = None) -> dict:
    return {
        "id": id or _id("fc_"),
        "type": "function_call",
        "status": "completed",
        "arguments": arguments,
        "call_id": call_id,
        "name": name,
    }


def reasoning_item(summaries: list[str], *, id: str | None = None, encrypted: str | None = None) -> dict:
    item: dict[str, Any] = {
        "id": id or _id("rs_"),
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": s} for s in summaries],
    }
    if encrypted is not None:
        item["encrypted_content"] = encrypted
    return item


def url_citation(url: str, title: str, start: int, end: int) -> dict[str, Any]:
    return {"type": "url_citation", "start_index": start, "end_index": end, "title": title, "url": url}


class ResponseStream:
    """One streamed Response, built event by event in the order OpenAI sends them."""

    def __init__(self, *, model: str = MODEL, seed: int = 0, **settings: Any) -> None:
        self._rng = random.Random(seed)  # ids and fillers: one seed, one byte-identical stream
        self._seq = 0
        self._model = model
        self._settings = settings
        self._created_at = int(time.time())
        self._id = self._new_id("resp_")
        self.output: list[dict[str, Any]] = []
        self._events: list[bytes] = []
        self.event("response.created", response=self._response("in_progress"))
        self.event("response.in_progress", response=self._response("in_progress"))

    def _new_id(self, prefix: str) -> str:
        return prefix + self._rng.randbytes(24).hex()

    def _filler(self) -> str:
        """The ``obfuscation`` field: random characters that pad a delta event's size."""
        return "".join(self._rng.choices(string.ascii_letters + string.digits, k=self._rng.randint(2, 15)))

    def _response(self, status: str, **fields: Any) -> dict[str, Any]:
        return response_object(
            status,
            [dict(item) for item in self.output],
            model=self._model,
            id=self._id,
            created_at=self._created_at,
            **{**self._settings, **fields},
        )

    def event(self, type: str, **fields: Any) -> ResponseStream:
        """Any event, named as OpenAI names it, with the next sequence number."""
        data = {"type": type, "sequence_number": self._seq, **fields}
        self._seq += 1
        self._events.append(
            f"event: {type}\ndata: {json.dumps(data, separators=(',', ':'), ensure_ascii=False)}\n\n".encode()
        )
        return self

    def _open(self, item: dict[str, Any]) -> int:
        index = len(self.output)
        self.event("response.output_item.added", output_index=index, item=item)
        return index

    def _close(self, index: int, item: dict[str, Any]) -> None:
        self.output.append(item)
        self.event("response.output_item.done", output_index=index, item=item)

    def reasoning(self, summaries: list[list[str]], *, encrypted: str | None = None, id: str | None = None) -> dict:
        """A reasoning item whose summary parts (each a list of deltas) stream one after another."""
        whole = reasoning_item(["".join(s) for s in summaries], id=id or self._new_id("rs_"), encrypted=encrypted)
        started = {k: v for k, v in whole.items() if k != "encrypted_content"} | {"summary": []}
        if encrypted is not None:
            started["encrypted_content"] = encrypted[: len(encrypted) // 2]  # documented as incomplete here
        index = self._open(started)
        at = {"item_id": whole["id"], "output_index": index}
        for s, deltas in enumerate(summaries):
            text = "".join(deltas)
            self.event(
                "response.reasoning_summary_part.added",
                **at,
                summary_index=s,
                part={"type": "summary_text", "text": ""},
            )
            for delta in deltas:
                self.event(
                    "response.reasoning_summary_text.delta",
                    **at,
                    summary_index=s,
                    delta=delta,
                    obfuscation=self._filler(),
                )
            self.event("response.reasoning_summary_text.done", **at, summary_index=s, text=text)
            self.event(
                "response.reasoning_summary_part.done",
                **at,
                summary_index=s,
                part={"type": "summary_text", "text": text},
            )
        self._close(index, whole)
        return whole

    def message(
        self, deltas: list[str], *, annotations: list[tuple[int, dict[str, Any]]] = (), status: str = "completed"
    ) -> dict:
        """A message whose text streams in ``deltas``; each annotation (``(delta index, annotation)``) is
        added after the delta it follows. ``status="incomplete"``: cut by the output limit."""
        text = "".join(deltas)
        notes = [a for _, a in annotations]
        whole = message_item(text, id=self._new_id("msg_"), annotations=notes, status=status)
        index = self._open({**whole, "status": "in_progress", "content": []})
        at = {"item_id": whole["id"], "output_index": index, "content_index": 0}
        self.event(
            "response.content_part.added",
            **at,
            part={"type": "output_text", "annotations": [], "logprobs": [], "text": ""},
        )
        for d, delta in enumerate(deltas):
            self.event("response.output_text.delta", **at, delta=delta, logprobs=[], obfuscation=self._filler())
            for n, (after, annotation) in enumerate(annotations):
                if after == d:
                    self.event("response.output_text.annotation.added", **at, annotation_index=n, annotation=annotation)
        self.event("response.output_text.done", **at, text=text, logprobs=[])
        self.event("response.content_part.done", **at, part=whole["content"][0])
        self._close(index, whole)
        return whole

    def refusal(self, deltas: list[str]) -> dict:
        """A message that refuses: a ``refusal`` content part instead of text."""
        text = "".join(deltas)
        part = {"type": "refusal", "refusal": text}
        whole = {"id": self._new_id("msg_"), "type": "message", "status": "completed", "content": [part]}
        whole["role"] = "assistant"
        index = self._open({**whole, "status": "in_progress", "content": []})
        at = {"item_id": whole["id"], "output_index": index, "content_index": 0}
        self.event("response.content_part.added", **at, part={"type": "refusal", "refusal": ""})
        for delta in deltas:
            self.event("response.refusal.delta", **at, delta=delta)
        self.event("response.refusal.done", **at, refusal=text)
        self.event("response.content_part.done", **at, part=part)
        self._close(index, whole)
        return whole

    def function_call(self, call_id: str, name: str, arguments: str, *, size: int = 5, id: str | None = None) -> dict:
        """A function call whose arguments stream in ``size``-character fragments."""
        whole = function_call_item(call_id, name, arguments, id=id or self._new_id("fc_"))
        index = self._open({**whole, "status": "in_progress", "arguments": ""})
        at = {"item_id": whole["id"], "output_index": index}
        for piece in fragments(arguments, size):
            self.event("response.function_call_arguments.delta", **at, delta=piece, obfuscation=self._filler())
        self.event("response.function_call_arguments.done", **at, name=name, arguments=arguments)
        self._close(index, whole)
        return whole

    def web_search(self, query: str) -> dict:
        """A built-in web search call: items and progress events the relay has nothing to do with."""
        whole = {
            "id": self._new_id("ws_"),
            "type": "web_search_call",
            "status": "completed",
            "action": {"type": "search", "query": query},
        }
        index = self._open({"id": whole["id"], "type": "web_search_call", "status": "in_progress"})
        for stage in ("in_progress", "searching", "completed"):
            self.event(f"response.web_search_call.{stage}", output_index=index, item_id=whole["id"])
        self._close(index, whole)
        return whole

    def completed(self, counts: dict[str, Any] | None = None) -> bytes:
        self.event("response.completed", response=self._response("completed", usage=counts or usage()))
        return self.body()

    def incomplete(self, reason: str = "max_output_tokens", counts: dict[str, Any] | None = None) -> bytes:
        response = self._response("incomplete", usage=counts or usage(), incomplete_details={"reason": reason})
        self.event("response.incomplete", response=response)
        return self.body()

    def failed(self, code: str, message: str) -> bytes:
        response = self._response("failed", error={"code": code, "message": message}, usage=None)
        self.event("response.failed", response=response)
        return self.body()

    def error(self, code: str | None, message: str, param: str | None = None) -> bytes:
        """The ``error`` event, fields at the top as the reference documents it."""
        self.event("error", code=code, message=message, param=param)
        return self.body()

    def body(self) -> bytes:
        return b"".join(self._events)
