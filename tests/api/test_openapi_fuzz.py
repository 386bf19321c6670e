"""Schemathesis against the served OpenAPI document: no schema-valid request is refused, no invalid one
is accepted, and every answer is one the document describes.

The real server runs on a free port (``start_server``) and schemathesis loads ``/openapi.json`` from it
over HTTP, as ``st run`` would: every phase (probing, examples, coverage, fuzzing, stateful), every
check, positive and negative data, a fixed seed and derandomized generation, at most ``MAX_EXAMPLES``
fuzzed cases per operation, and no example database: runs repeat exactly, and Hypothesis keeps its
files in the test's temporary directory, not in the checkout. Schemathesis' engine is synchronous, so
it runs in a worker thread while this test's event loop serves the requests.

The back-end endpoints name their app by the key in the body; a random key would only ever meet 401,
so a hook puts the test app's real key (and, for ``/message/sse``, its real id and a real connection
token; for ``/stream/{streamId}/events``, an offset the stream has) in place of any the document finds
well formed. Values a case made invalid on purpose stay.

The provider behind ``openai`` is a fake on loopback that answers every request as OpenAI answers a
well-formed one: what a provider makes of a payload's own fields is not the document's to say.
"""

from __future__ import annotations

import asyncio
import re
import string
import sys
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from schemathesis.engine import events
from schemathesis.generation.case import Case

from bfstream.api.idempotency import KEY_PATTERN
from bfstream.api.openapi import APP_KEY_PATTERN, LOWERS_TO_ASCII, PY_WHITESPACE, service_pattern
from tests.conftest import ServerFactory
from tests.fakes.openai_server import FakeOpenAI, JsonReply, StreamReply, completion, text_stream

pytestmark = pytest.mark.anyio

SEED = 20250101
# Hypothesis cases per operation in the fuzzing phase, positive and negative together. Coverage and
# stateful cases come on top: about 1,500 requests in all, some 20 seconds.
MAX_EXAMPLES = 50

# The echo service answers at once; the stream cap and the limits are far above what the run sends,
# so a 429 would be a finding, not a limit doing its job. Anthropic, Gemini and the Responses API are
# off: nothing may leave loopback, and their payload translations refuse what they cannot map
# (docs/providers.md), which the document does not describe field by field.
FUZZ_SETTINGS: dict[str, Any] = {
    "services": {
        "echo": {"delay_ms": 0},
        **{name: {"enabled": False} for name in ("anthropic", "gemini", "openai-responses")},
    },
    "streams": {"max_per_app": 100_000},
    "limits": {
        **{name: {"rate": 1e6, "burst": 10**6} for name in ("streams", "messages", "publishes")},
        "connections_per_app": 100_000,
        "connections_per_address": 100_000,
    },
}


class AnyRequestOpenAI(FakeOpenAI):
    """Answers every request as OpenAI answers a well-formed one: a short stream, or a completion."""

    def unscripted(self, method: str, path: str) -> JsonReply | StreamReply:  # type: ignore[override]
        try:
            streaming = self.requests[-1].json().get("stream") is True
        except ValueError:
            streaming = False
        if streaming:
            return StreamReply([text_stream(["fuzzed ", "answer"])], delay=0)
        return JsonReply(200, completion("fuzzed answer"))


@pytest.fixture
async def fake_openai() -> Any:
    async with AnyRequestOpenAI() as fake:
        yield fake


@dataclass
class Report:
    # operation -> (phase, generation mode) -> status -> cases
    cases: dict[str, dict[tuple[str, str], Counter[int]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(Counter))
    )
    checks: set[str] = field(default_factory=set)
    failures: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _config() -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "cache": {"enabled": False},
            "continue-on-failure": True,
            "workers": 1,
            "request-timeout": 10,
            # /message/sse never ends: read its first event (hello), then hang up.
            "max-stream-events": 1,
            "checks": {
                "enabled": True,
                # A valid request may meet 403 (a tab| channel, or a channel of users the fuzz user is
                # not one of) or 404 (a stream that does not exist); never 400, 401, 429 or a 5xx.
                "positive_data_acceptance": {"expected-statuses": ["2xx", "403", "404"]},
                # Everything here answers in milliseconds; this only catches a request left hanging.
                "max_response_time": 5.0,
            },
            "generation": {
                "mode": "all",
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "database": "none",
            },
        }
    )


def run_schemathesis(url: str, api_key: str, app_id: str, token: str) -> Report:
    schema = schemathesis.openapi.from_url(url + "/openapi.json", config=_config())

    @schema.hook
    def map_case(context: schemathesis.HookContext, case: Case) -> Case:
        """Real credentials in place of well-formed random ones; malformed ones (the case's point) stay."""
        if isinstance(case.body, dict) and _well_formed(APP_KEY, case.body.get("apiKey")):
            case.body["apiKey"] = api_key
        if isinstance(case.query, dict):
            if _well_formed(STREAM_OFFSET, case.query.get("offset")):
                # A stream's offsets are the server's to give: one past the stream's end is refused
                # (400, as the protocol allows), and a random one almost always is. A real one instead.
                case.query["offset"] = "0" * 16
            if _well_formed(APP_ID, case.query.get("app")):
                case.query["app"] = app_id
            if _well_formed(ANY, case.query.get("token")):
                case.query["token"] = token
        return case

    @schema.hook
    def before_add_examples(context: schemathesis.HookContext, examples: list[Case]) -> None:
        """The document's own examples do not pass through ``map_case``."""
        for example in examples:
            map_case(context, example)

    report = Report()
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            recorder = event.recorder
            for case_id, node in recorder.cases.items():
                case = node.value
                mode = case.meta.generation.mode.value if case.meta is not None else "?"
                phase = case.meta.phase.name.value if case.meta is not None else "?"
                response = recorder.find_response(case_id=case_id)
                status = response.status_code if response is not None else 0
                report.cases[case.operation.label][(phase, mode)][status] += 1
            for case_id, checks in recorder.checks.items():
                for check in checks:
                    report.checks.add(check.name)
                    if check.failure_info is not None:
                        report.failures.append(_describe(recorder, case_id, check, (api_key, token)))
        elif isinstance(event, events.NonFatalError):
            report.errors.append(f"{event.label}: {event.info.title}: {event.info.message}")
        elif isinstance(event, events.FatalError):
            report.errors.append(f"fatal: {event.exception!r}")
    return report


def _describe(recorder: Any, case_id: str, check: Any, secrets: tuple[str, ...]) -> str:
    """One line per failure: where, which check, what came back; the full request only in short."""
    failure = check.failure_info.failure
    case = recorder.cases[case_id].value
    response = recorder.find_response(case_id=case_id)
    answer = "no response"
    if response is not None:
        answer = f"{response.status_code} {_redact(response.content[:300].decode(errors='replace'), *secrets)}"
    request = _redact(case.as_curl_command(), *secrets)
    return (
        f"{recorder.label} [{check.name}] {failure.title}: {failure.message!r}\n    <- {answer}\n    -> {request[:400]}"
    )


APP_KEY = re.compile(APP_KEY_PATTERN)
STREAM_OFFSET = re.compile(r"^[0-9]{16}$")
IDEMPOTENCY_KEY = re.compile(KEY_PATTERN)
APP_ID = re.compile(".+", re.DOTALL)  # the document asks for a non-empty string
ANY = re.compile(".*", re.DOTALL)


def _well_formed(pattern: re.Pattern[str], value: Any) -> bool:
    return isinstance(value, str) and pattern.search(value) is not None


@schemathesis.hook
def before_call(context: schemathesis.HookContext, case: Case, **kwargs: Any) -> None:
    """An idempotency key is one per request: cases sharing "0" would be a 422 by design. Here, just
    before each call, not in ``map_case``: the coverage phase derives cases from a mapped one.
    (Schemathesis takes this hook only globally; no other test runs it.)"""
    fresh = uuid.uuid4().hex
    for name, value in list((case.headers or {}).items()):
        if name.lower() == "idempotency-key" and _well_formed(IDEMPOTENCY_KEY, value):
            case.headers[name] = fresh
    if isinstance(case.body, dict) and _well_formed(IDEMPOTENCY_KEY, case.body.get("idempotencyKey")):
        case.body["idempotencyKey"] = fresh


def _redact(text: str, *secrets: str) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return re.sub(r"BFAPI_[A-Za-z0-9_-]+", "BFAPI_***", text)


async def test_the_served_openapi_document_holds(start_server: ServerFactory, fake_openai: FakeOpenAI) -> None:
    server = await start_server(**FUZZ_SETTINGS)
    token = await server.token("fuzz-user", "fuzz@example.com")
    started = time.perf_counter()
    report = await asyncio.to_thread(run_schemathesis, server.url, server.api_key, server.app_id, token)
    elapsed = time.perf_counter() - started
    # What ran, printed for the record (pytest -s shows it; a failure shows it too).
    total = sum(sum(statuses.values()) for runs in report.cases.values() for statuses in runs.values())
    print(f"\nschemathesis: {total} cases in {elapsed:.1f} s; the fake OpenAI answered {len(fake_openai.requests)}")
    for label, runs in sorted(report.cases.items()):
        count = sum(sum(statuses.values()) for statuses in runs.values())
        parts = (f"{phase}/{mode} {dict(sorted(statuses.items()))}" for (phase, mode), statuses in sorted(runs.items()))
        print(f"  {label}: {count} cases; " + "; ".join(parts))
    print("checks:", ", ".join(sorted(report.checks)))
    problems = report.errors + report.failures
    assert not problems, "\n".join(problems[:40]) + f"\n({len(problems)} in all)"
    assert report.checks >= ALL_CHECKS, f"checks that never ran: {sorted(ALL_CHECKS - report.checks)}"
    for label, runs in report.cases.items():  # every operation was reached with a request it accepts
        statuses = {status for by_status in runs.values() for status in by_status}
        if label == "POST /llm/tool-response":
            # Accepted only while a model's ui_* call waits, which no fuzzed case can make: well-formed
            # answers get 404 (tests/streams/test_tools.py covers the accepted ones).
            assert 404 in statuses, label
            continue
        assert any(200 <= status < 300 for status in statuses), label


# Every check schemathesis has for an OpenAPI document.
ALL_CHECKS = {
    "not_a_server_error", "status_code_conformance", "content_type_conformance", "response_headers_conformance",
    "response_schema_conformance", "positive_data_acceptance", "negative_data_rejection", "use_after_free",
    "ensure_resource_availability", "missing_required_header", "ignored_auth", "unsupported_method",
    "allow_header_conformance", "object_level_authorization", "max_response_time",
}  # fmt: skip


def test_service_names_match_as_the_server_reads_them() -> None:
    """The document's service pattern accepts what ``.strip().lower()`` turns into a service name."""
    everything = [chr(code) for code in range(sys.maxunicode + 1)]
    whitespace = "".join(c for c in everything if c.isspace())
    assert set(PY_WHITESPACE) == set(whitespace)
    lowering: dict[str, set[str]] = defaultdict(set)
    for c in everything:
        if len(c.lower()) == 1 and c.lower() in string.ascii_lowercase:
            lowering[c.lower()].add(c)
    for letter in string.ascii_lowercase:
        assert lowering[letter] == {letter, letter.upper(), *LOWERS_TO_ASCII.get(letter, "")}, letter
    pattern = re.compile(service_pattern(["openai", "echo"]))
    assert pattern.match(whitespace + "OpenAI" + whitespace) and pattern.match("eCHo")
    assert not pattern.match("open ai") and not pattern.match("echo.") and not pattern.match("")
    assert re.match(service_pattern(["kimi"]), "\u212aimi")
