"""service.nalog.ru: a person's INN from passport data, as the contract describes the protocol.

One lookup is one HTTP session with a cookie jar of its own, and three kinds of call, each a
form-encoded ``POST`` with ``X-Requested-With: XMLHttpRequest`` and ``Referer: <base>/inn.do``:

1. consent to personal-data processing (``/static/personal-data-proc.json``), which sets the
   session cookie;
2. the search (``/inn-new-proc.do``, ``c=find``), answered with a ``requestId``, a captcha
   demand, the fields it rejects (``ERRORS``) or an upstream fault (``ERROR``);
3. the result (``/inn-new-proc.json``, ``c=get``), asked again after ``poll_interval_seconds``
   while its ``state`` is negative (not ready), at most ``max_polls`` times.

Every call first takes a slot from the shared :class:`RateLimiter` and has a total timeout.
Network and protocol trouble never raises: :meth:`NalogClient.find_inn` always answers an
:class:`UpstreamAnswer`:

* FOUND: the INN, only when its check digits hold (otherwise FAULT "bad check digits");
* NOT_FOUND: ``state`` 0, or ``state`` 1 with an empty ``inn``;
* REJECTED: ``ERRORS``; the detail names the fields ("fields: bdate, docno"), never the
  messages, which may echo the data sent. The same body with HTTP 400, as the platform sends
  its refusals elsewhere, is read the same way;
* THROTTLED: a captcha demand ("captcha": ``captchaRequired``, or ``ERRORS`` naming only the
  captcha fields, which we always send empty) or HTTP 429 ("http 429"). For
  ``captcha_pause_seconds`` after one, no lookup in this process calls the upstream: each
  answers PAUSED "paused after a captcha" at its next call, which is no attempt (other
  processes learn of the pause from the database when they claim work);
* FAULT: other non-2xx ("http 503"), ``ERROR`` ("upstream error 500"), "timeout",
  "connection error", "bad response" (unparseable or unexpected body), "result not ready".

Details and log lines never hold names, dates, document numbers or the INN.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from datetime import date
from typing import Any

import aiohttp

from onboarding.adapters.rate_limit import RateLimiter
from onboarding.domain.inn import PersonData, UpstreamAnswer, UpstreamVerdict, inn_is_valid

log = logging.getLogger(__name__)

PAGE_PATH = "/inn.do"
CONSENT_PATH = "/static/personal-data-proc.json"
FIND_PATH = "/inn-new-proc.do"
RESULT_PATH = "/inn-new-proc.json"

CONSENT_FORM = {"from": PAGE_PATH, "svc": "inn", "personalData": "1"}
RUSSIAN_PASSPORT = "21"

_FIELD_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")
_MAX_FIELDS_SHOWN = 20
#: ERRORS naming only these is a captcha demand, not a rejection of the person's data.
_CAPTCHA_FIELDS = frozenset({"captcha", "captchaToken"})
_PAUSED = "paused after a captcha"


class _Stop(Exception):
    """Ends a lookup early: ``answer`` is the final word."""

    def __init__(self, answer: UpstreamAnswer) -> None:
        super().__init__(answer.detail)
        self.answer = answer


def _fault(detail: str) -> _Stop:
    return _Stop(UpstreamAnswer(UpstreamVerdict.FAULT, detail=detail))


def _date(day: date) -> str:
    return f"{day.day:02d}.{day.month:02d}.{day.year:04d}"


def find_form(person: PersonData) -> dict[str, str]:
    """The ``c=find`` form for ``person`` (a Russian passport)."""
    serial = person.document_serial
    return {
        "c": "find",
        "fam": person.last_name,
        "nam": person.first_name,
        "otch": person.middle_name,
        "opt_otch": "" if person.middle_name else "1",
        "bdate": _date(person.birth_date),
        "bplace": "",
        "doctype": RUSSIAN_PASSPORT,
        "docno": f"{serial[:2]} {serial[2:]} {person.document_number}",
        "docdt": _date(person.document_date),
        "captcha": "",
        "captchaToken": "",
    }


def _parse_object(raw: bytes) -> dict[str, Any]:
    """A JSON object, or FAULT "bad response"."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise _fault("bad response") from None
    if not isinstance(body, dict):
        raise _fault("bad response")
    return body


def _fields_detail(errors: dict[Any, Any]) -> str:
    """The rejected fields' names (identifier-like ones only); never the messages."""
    names = sorted({k for k in errors if isinstance(k, str) and _FIELD_NAME.fullmatch(k)})
    if len(names) < len(errors):
        names.append("other")
    return "fields: " + ", ".join(names[:_MAX_FIELDS_SHOWN])


def _upstream_status(body: dict[str, Any]) -> str:
    status = body.get("STATUS")
    if isinstance(status, str) and status.isascii() and status.isdigit() and len(status) <= 4:
        return f"upstream error {status}"
    if isinstance(status, int) and not isinstance(status, bool):
        return f"upstream error {status}"
    return "upstream error"


def _check_refusals(body: dict[str, Any]) -> None:
    """Raise the final answer when ``body`` is a captcha demand, ``ERRORS`` or ``ERROR``."""
    if body.get("captchaRequired"):
        raise _Stop(UpstreamAnswer(UpstreamVerdict.THROTTLED, detail="captcha"))
    errors = body.get("ERRORS")
    if errors is not None:
        if isinstance(errors, dict) and errors:
            if errors.keys() <= _CAPTCHA_FIELDS:
                raise _Stop(UpstreamAnswer(UpstreamVerdict.THROTTLED, detail="captcha"))
            raise _Stop(UpstreamAnswer(UpstreamVerdict.REJECTED, detail=_fields_detail(errors)))
        raise _fault("bad response")
    if "ERROR" in body:
        raise _fault(_upstream_status(body))


def request_id_of(body: dict[str, Any]) -> str:
    """The ``requestId`` of a ``c=find`` answer; any other answer is raised as final."""
    _check_refusals(body)
    request_id = body.get("requestId")
    if isinstance(request_id, int) and not isinstance(request_id, bool):
        return str(request_id)
    if isinstance(request_id, str) and request_id.strip():
        return request_id
    raise _fault("bad response")


def result_of(body: dict[str, Any]) -> UpstreamAnswer | None:
    """The answer held by a ``c=get`` body; None while it is not ready (negative state)."""
    _check_refusals(body)
    state = body.get("state")
    if not isinstance(state, int) or isinstance(state, bool) or state > 1:
        raise _fault("bad response")
    if state < 0:
        return None
    if state == 0:
        return UpstreamAnswer(UpstreamVerdict.NOT_FOUND, detail="state 0")
    inn = body.get("inn")
    if inn is None or inn == "":
        return UpstreamAnswer(UpstreamVerdict.NOT_FOUND, detail="empty inn")
    if not isinstance(inn, str):
        raise _fault("bad response")
    if not inn_is_valid(inn.strip()):
        return UpstreamAnswer(UpstreamVerdict.FAULT, detail="bad check digits")
    return UpstreamAnswer(UpstreamVerdict.FOUND, inn=inn.strip())


class NalogClient:
    """Looks INNs up on service.nalog.ru; see the module docstring.

    One ``aiohttp.TCPConnector`` is created on the first lookup (inside the running loop) and
    shared by every lookup until :meth:`close`; each lookup has a session and cookie jar of its
    own. A lookup after :meth:`close` opens a fresh connector.
    """

    def __init__(
        self,
        base_url: str,
        *,
        limiter: RateLimiter,
        timeout_seconds: float = 10.0,
        poll_interval_seconds: float = 1.0,
        max_polls: int = 10,
        captcha_pause_seconds: float = 0.0,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._limiter = limiter
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._poll_interval = poll_interval_seconds
        self._max_polls = max_polls
        self._headers = {
            "X-Requested-With": "XMLHttpRequest",
            "Referer": f"{self._base}{PAGE_PATH}",
        }
        self._connector: aiohttp.TCPConnector | None = None
        self._captcha_pause = captcha_pause_seconds
        #: Loop time until which no call goes upstream (a captcha or a 429 was seen).
        self._paused_until = float("-inf")

    async def find_inn(self, person: PersonData) -> UpstreamAnswer:
        """One whole lookup: consent, search, result. Never raises for upstream trouble."""
        async with self._new_session() as session:
            try:
                answer = await self._lookup(session, person)
            except _Stop as stop:
                answer = stop.answer
        if answer.verdict is UpstreamVerdict.THROTTLED:
            loop_time = asyncio.get_running_loop().time()
            self._paused_until = max(self._paused_until, loop_time + self._captcha_pause)
        log.info("service.nalog.ru answered %s %s", answer.verdict.value, answer.detail)
        return answer

    def _check_paused(self) -> None:
        if asyncio.get_running_loop().time() < self._paused_until:
            raise _Stop(UpstreamAnswer(UpstreamVerdict.PAUSED, detail=_PAUSED))

    async def close(self) -> None:
        connector, self._connector = self._connector, None
        if connector is not None and not connector.closed:
            await connector.close()

    def _new_session(self) -> aiohttp.ClientSession:
        if self._connector is None or self._connector.closed:
            self._connector = aiohttp.TCPConnector()
        return aiohttp.ClientSession(
            connector=self._connector,
            connector_owner=False,
            cookie_jar=aiohttp.CookieJar(unsafe=True),
            timeout=self._timeout,
        )

    async def _lookup(self, session: aiohttp.ClientSession, person: PersonData) -> UpstreamAnswer:
        await self._post(session, CONSENT_PATH, CONSENT_FORM)
        found = _parse_object(await self._post(session, FIND_PATH, find_form(person)))
        request_id = request_id_of(found)
        for poll in range(self._max_polls):
            if poll:
                await asyncio.sleep(self._poll_interval)
            form = {"c": "get", "requestId": request_id}
            answer = result_of(_parse_object(await self._post(session, RESULT_PATH, form)))
            if answer is not None:
                return answer
        return UpstreamAnswer(UpstreamVerdict.FAULT, detail="result not ready")

    async def _post(self, session: aiohttp.ClientSession, path: str, form: dict[str, str]) -> bytes:
        """One upstream call: the body of a 2xx answer; anything else is raised as final."""
        self._check_paused()
        await self._limiter.acquire()
        self._check_paused()  # the pause may have begun while this call waited for its slot
        try:
            async with session.post(
                self._base + path,
                data=form,  # application/x-www-form-urlencoded
                headers=self._headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                status = response.status
                if status == 429:
                    raise _Stop(UpstreamAnswer(UpstreamVerdict.THROTTLED, detail="http 429"))
                if 400 <= status < 500:
                    # The platform sends its refusals (ERRORS, a captcha demand) with a 400.
                    try:
                        refusal = _parse_object(await response.read())
                    except _Stop:  # not the platform's JSON: the status says it all
                        refusal = {}
                    _check_refusals(refusal)
                if not 200 <= status < 300:
                    raise _fault(f"http {status}")
                return await response.read()
        except TimeoutError:  # asyncio's and aiohttp's timeouts alike
            raise _fault("timeout") from None
        except (aiohttp.ClientConnectionError, OSError):
            raise _fault("connection error") from None
        except (aiohttp.ClientPayloadError, aiohttp.ClientResponseError):
            raise _fault("bad response") from None
        except aiohttp.ClientError:  # e.g. an invalid base URL
            raise _fault("client error") from None
