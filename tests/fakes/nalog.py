"""A fake service.nalog.ru: a real aiohttp server on 127.0.0.1 speaking the contract's protocol.

Three form-encoded ``POST`` endpoints, each wanting ``X-Requested-With: XMLHttpRequest`` and
``Referer: <base_url>/inn.do``:

* ``/static/personal-data-proc.json`` (``from=/inn.do``, ``svc=inn``, ``personalData=1``):
  consent; sets a fresh ``JSESSIONID`` cookie, which later calls must carry;
* ``/inn-new-proc.do`` (``c=find`` and the person's fields): answers per the person's script;
  a lookup that will have a result gets a ``requestId``, tied to the person and the session;
* ``/inn-new-proc.json`` (``c=get``, ``requestId``): the result, in the same session.

Any request that breaks the contract (headers, cookie, the exact set of form fields, their
formats: ``docno`` ``SS SS NNNNNN``, dates ``dd.mm.yyyy``, ``opt_otch`` agreeing with ``otch``,
``doctype=21``…) gets 400 and a line in ``protocol_errors``; tests assert that list is empty.

People are scripted by their 6-digit document number with the behaviours below; unscripted
people get the default (:func:`not_found` unless ``set_default`` changed it). Behaviours with a
``times`` answer that many searches and then hand over to ``then`` (None: the default); the
others (results, :func:`rejected`) answer every later search too. :func:`slow` and
:func:`not_ready` wrap ``then``: one search is delayed, or one lookup's first polls say "not
ready" before ``then`` answers; later searches go straight to ``then``.

    async with FakeNalog() as nalog:
        nalog.script("123456", captcha(1, then=found(VALID_INN)))
        ...  # point NalogClient at nalog.base_url
        assert nalog.finds["123456"] == 2
        assert nalog.protocol_errors == []
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import TracebackType
from typing import Self

from aiohttp import web

VALID_INN = "500100732259"

PAGE_PATH = "/inn.do"
CONSENT_PATH = "/static/personal-data-proc.json"
FIND_PATH = "/inn-new-proc.do"
RESULT_PATH = "/inn-new-proc.json"
SESSION_COOKIE = "JSESSIONID"

_CONSENT_FORM = {"from": PAGE_PATH, "svc": "inn", "personalData": "1"}
_FIND_FIELDS = frozenset(
    {"c", "fam", "nam", "otch", "opt_otch", "bdate", "bplace", "doctype", "docno", "docdt"}
    | {"captcha", "captchaToken"}
)
_GET_FIELDS = frozenset({"c", "requestId"})
_DOCNO = re.compile(r"\d{2} \d{2} \d{6}")
_DATE = re.compile(r"\d{2}\.\d{2}\.\d{4}")
_FORM_TYPE = "application/x-www-form-urlencoded"

_WEIGHTS_11 = (7, 2, 4, 10, 3, 5, 9, 4, 6, 8)
_WEIGHTS_12 = (3, 7, 2, 4, 10, 3, 5, 9, 4, 6, 8)


# -- INNs ------------------------------------------------------------------------------------


def _check_digit(digits: list[int], weights: tuple[int, ...]) -> int:
    return sum(w * d for w, d in zip(weights, digits, strict=False)) % 11 % 10


def make_valid_inn(seed: int) -> str:
    """A 12-digit personal INN whose check digits hold, the same for the same ``seed``."""
    rng = random.Random(seed)
    digits = [rng.randint(1, 9)] + [rng.randint(0, 9) for _ in range(9)]
    digits.append(_check_digit(digits, _WEIGHTS_11))
    digits.append(_check_digit(digits, _WEIGHTS_12))
    return "".join(map(str, digits))


def valid_inn() -> str:
    """A fresh random valid INN."""
    return make_valid_inn(secrets.randbits(64))


def broken_inn(inn: str = VALID_INN) -> str:
    """``inn`` with its last check digit wrong."""
    return inn[:-1] + str((int(inn[-1]) + 1) % 10)


# -- behaviours ------------------------------------------------------------------------------


class Kind(StrEnum):
    FOUND = "found"  # state 1 with the INN
    NOT_FOUND = "not_found"  # state 0
    EMPTY_INN = "empty_inn"  # state 1 with inn ""
    BAD_CHECK_DIGITS = "bad_check_digits"  # state 1 with an INN whose check digits fail
    NOT_READY = "not_ready"  # negative state ``polls`` times, then ``then``
    REJECTED = "rejected"  # ERRORS
    CAPTCHA = "captcha"  # captchaRequired
    HTTP_ERROR = "http_error"  # a bare HTTP status
    UPSTREAM_ERROR = "upstream_error"  # {"ERROR": …, "STATUS": n}
    GARBAGE = "garbage"  # 200 with a body that is not JSON
    SLOW = "slow"  # ``then``, after ``seconds``


_HAS_RESULT = frozenset(
    {Kind.FOUND, Kind.NOT_FOUND, Kind.EMPTY_INN, Kind.BAD_CHECK_DIGITS, Kind.NOT_READY}
)


@dataclass(frozen=True, slots=True)
class Behaviour:
    """How the fake answers one person; build them with the functions below."""

    kind: Kind
    times: int | None = None
    """How many searches this answers before ``then`` takes over; None: all of them."""
    then: Behaviour | None = None
    """What comes next; None: the fake's default."""
    inn: str = ""
    fields: tuple[str, ...] = ()
    status: int = 0
    seconds: float = 0.0
    polls: int = 0


def found(inn: str = VALID_INN) -> Behaviour:
    return Behaviour(Kind.FOUND, inn=inn)


def not_found() -> Behaviour:
    return Behaviour(Kind.NOT_FOUND)


def empty_inn() -> Behaviour:
    return Behaviour(Kind.EMPTY_INN)


def bad_check_digits(inn: str = VALID_INN) -> Behaviour:
    return Behaviour(Kind.BAD_CHECK_DIGITS, inn=broken_inn(inn))


def rejected(fields: tuple[str, ...] | list[str] = ("docno",), *, status: int = 200) -> Behaviour:
    """ERRORS for ``fields``; each message echoes the value sent, as real servers may. With
    ``status`` 400 it comes as the platform's other endpoints send it: HTTP 400 and
    ``{"ERROR": "-", "ERRORS": …, "STATUS": 400}``."""
    return Behaviour(Kind.REJECTED, fields=tuple(fields), status=status)


def captcha(times: int = 1, then: Behaviour | None = None, *, as_errors: bool = False) -> Behaviour:
    """``{"captchaRequired": true}``; or, ``as_errors``, the demand as an ERRORS answer naming
    the captcha field, with HTTP 400."""
    return Behaviour(Kind.CAPTCHA, times=times, then=then, fields=("captcha",) if as_errors else ())


def http_error(times: int = 1, status: int = 503, then: Behaviour | None = None) -> Behaviour:
    return Behaviour(Kind.HTTP_ERROR, times=times, then=then, status=status)


def upstream_error(
    times: int = 1, then: Behaviour | None = None, *, status: int = 500
) -> Behaviour:
    return Behaviour(Kind.UPSTREAM_ERROR, times=times, then=then, status=status)


def garbage(times: int = 1, then: Behaviour | None = None) -> Behaviour:
    return Behaviour(Kind.GARBAGE, times=times, then=then)


def slow(seconds: float, then: Behaviour | None = None) -> Behaviour:
    """The next search is answered after ``seconds``, as ``then`` would answer it."""
    return Behaviour(Kind.SLOW, times=1, then=then, seconds=seconds)


def not_ready(polls: int, then: Behaviour | None = None) -> Behaviour:
    """The next lookup's first ``polls`` results are "not ready"; then ``then`` answers."""
    return Behaviour(Kind.NOT_READY, times=1, then=then, polls=polls)


# -- records ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NalogRequest:
    """One request as the fake received it."""

    path: str
    form: dict[str, str]
    headers: dict[str, str]
    cookies: dict[str, str]
    received_at: float = field(default_factory=time.monotonic)

    def header(self, name: str) -> str | None:
        """A header by case-insensitive name."""
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), None)


@dataclass(slots=True)
class _Cursor:
    behaviour: Behaviour | None
    used: int = 0


@dataclass(slots=True)
class _Lookup:
    document_number: str
    behaviour: Behaviour
    session: str
    gets: int = 0


class FakeNalog:
    """The fake upstream; see the module docstring."""

    def __init__(self, *, default: Behaviour | None = None, port: int = 0) -> None:
        self._requested_port = port
        self.requests: list[NalogRequest] = []
        self.protocol_errors: list[str] = []
        self.finds: Counter[str] = Counter()
        self.gets: Counter[str] = Counter()
        self.consents = 0
        self._default = default or not_found()
        self._cursors: dict[str, _Cursor] = {}
        self._sessions: set[str] = set()
        self._lookups: dict[str, _Lookup] = {}
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("FakeNalog already started")
        app = web.Application()
        app.router.add_post(CONSENT_PATH, self._consent)
        app.router.add_post(FIND_PATH, self._find)
        app.router.add_post(RESULT_PATH, self._get)
        app.router.add_route("*", "/{tail:.*}", self._unexpected)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self._requested_port)
        await site.start()
        self._stopping.clear()
        self._runner = runner
        self._port = runner.addresses[0][1]

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            self._stopping.set()  # slow answers end now instead of holding up shutdown
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeNalog is not started")
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- scripting -------------------------------------------------------------------------

    def script(self, document_number: str, behaviour: Behaviour) -> None:
        """From now on the person with this 6-digit document number is answered so."""
        self._cursors[document_number] = _Cursor(behaviour)

    def set_default(self, behaviour: Behaviour) -> None:
        """How unscripted people (and scripts that ran out) are answered."""
        self._default = behaviour

    @property
    def calls(self) -> int:
        """Every request received, whatever its path or answer."""
        return len(self.requests)

    def _take(self, document_number: str) -> Behaviour:
        """The behaviour answering this search; advances the person's script."""
        cursor = self._cursors.setdefault(document_number, _Cursor(None))
        behaviour = cursor.behaviour
        if behaviour is None:
            return self._default
        if behaviour.times is not None:
            cursor.used += 1
            if cursor.used >= behaviour.times:
                cursor.behaviour, cursor.used = behaviour.then, 0
        return behaviour

    # -- the server ------------------------------------------------------------------------

    async def _record(self, request: web.Request) -> NalogRequest:
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        record = NalogRequest(request.path, form, dict(request.headers), dict(request.cookies))
        self.requests.append(record)
        return record

    def _violations(
        self, request: web.Request, record: NalogRequest, fields: frozenset[str]
    ) -> list[str]:
        problems = []
        if request.content_type != _FORM_TYPE:
            problems.append(f"content type {request.content_type!r}")
        if record.header("X-Requested-With") != "XMLHttpRequest":
            problems.append("no X-Requested-With: XMLHttpRequest")
        if record.header("Referer") != f"{self.base_url}{PAGE_PATH}":
            problems.append(f"Referer {record.header('Referer')!r}")
        if set(record.form) != fields:
            problems.append(f"form fields {sorted(record.form)} != {sorted(fields)}")
        return problems

    def _session_problem(self, record: NalogRequest) -> str | None:
        session = record.cookies.get(SESSION_COOKIE)
        if session is None:
            return f"no {SESSION_COOKIE} cookie"
        if session not in self._sessions:
            return f"{SESSION_COOKIE} not set by a consent"
        return None

    def _refuse(self, path: str, problems: list[str]) -> web.Response:
        self.protocol_errors.extend(f"{path}: {problem}" for problem in problems)
        return web.json_response({"ERROR": "Bad request", "STATUS": 400}, status=400)

    async def _consent(self, request: web.Request) -> web.Response:
        record = await self._record(request)
        self.consents += 1
        problems = self._violations(request, record, frozenset(_CONSENT_FORM))
        if not problems and record.form != _CONSENT_FORM:
            problems.append(f"consent form {record.form}")
        if SESSION_COOKIE in record.cookies:
            problems.append("consent in a session that has a cookie already (shared jar?)")
        if problems:
            return self._refuse(request.path, problems)
        session = secrets.token_hex(16)
        self._sessions.add(session)
        response = web.json_response({})
        response.set_cookie(SESSION_COOKIE, session, path="/", httponly=True)
        return response

    async def _find(self, request: web.Request) -> web.Response:
        record = await self._record(request)
        form = record.form
        document_number = form.get("docno", "").replace(" ", "")[-6:]
        self.finds[document_number] += 1
        problems = self._violations(request, record, _FIND_FIELDS)
        if not problems:
            problems = _find_form_problems(form)
        if problem := self._session_problem(record):
            problems.append(problem)
        if problems:
            return self._refuse(request.path, problems)

        behaviour = self._take(document_number)
        while behaviour.kind is Kind.SLOW:
            if await self._pause(behaviour.seconds):
                return web.Response(status=503, text="shutting down")
            behaviour = self._take(document_number)
        if behaviour.kind not in _HAS_RESULT:
            return self._refusal(behaviour, form)
        request_id = secrets.token_hex(8)
        session = record.cookies[SESSION_COOKIE]
        self._lookups[request_id] = _Lookup(document_number, behaviour, session)
        return web.json_response({"requestId": request_id})

    async def _get(self, request: web.Request) -> web.Response:
        record = await self._record(request)
        problems = self._violations(request, record, _GET_FIELDS)
        lookup = self._lookups.get(record.form.get("requestId", ""))
        self.gets[lookup.document_number if lookup else "?"] += 1
        if record.form.get("c") != "get":
            problems.append(f"c={record.form.get('c')!r}")
        if lookup is None:
            problems.append("unknown requestId")
        if problem := self._session_problem(record):
            problems.append(problem)
        elif lookup is not None and record.cookies[SESSION_COOKIE] != lookup.session:
            problems.append("requestId asked for in another session than its search")
        if problems or lookup is None:
            return self._refuse(request.path, problems)

        lookup.gets += 1
        return await self._result(lookup.behaviour, lookup.gets, record.form)

    async def _result(self, behaviour: Behaviour, poll: int, form: dict[str, str]) -> web.Response:
        """The answer to the ``poll``-th ``c=get`` of a lookup scripted with ``behaviour``."""
        match behaviour.kind:
            case Kind.NOT_READY if poll <= behaviour.polls:
                return web.json_response({"state": -1})
            case Kind.NOT_READY:
                return await self._result(
                    self._or_default(behaviour.then), poll - behaviour.polls, form
                )
            case Kind.SLOW:
                if await self._pause(behaviour.seconds):
                    return web.Response(status=503, text="shutting down")
                return await self._result(self._or_default(behaviour.then), poll, form)
            case Kind.FOUND | Kind.BAD_CHECK_DIGITS:
                return web.json_response({"state": 1, "inn": behaviour.inn})
            case Kind.EMPTY_INN:
                return web.json_response({"state": 1, "inn": ""})
            case Kind.NOT_FOUND:
                return web.json_response({"state": 0})
        return self._refusal(behaviour, form)

    def _or_default(self, behaviour: Behaviour | None) -> Behaviour:
        return behaviour if behaviour is not None else self._default

    @staticmethod
    def _refusal(behaviour: Behaviour, form: dict[str, str]) -> web.Response:
        """The answers that carry no result: captcha, ERRORS, ERROR, HTTP errors, garbage."""
        match behaviour.kind:
            case Kind.CAPTCHA:
                if behaviour.fields:
                    demand = {f: ["Введите цифры с картинки"] for f in behaviour.fields}
                    return _errors_answer(demand, 400)
                return web.json_response({"captchaRequired": True})
            case Kind.REJECTED:
                errors = {f: [f"Неверное значение «{form.get(f, '')}»"] for f in behaviour.fields}
                return _errors_answer(errors, behaviour.status)
            case Kind.UPSTREAM_ERROR:
                error = {"ERROR": "Внутренняя ошибка сервиса", "STATUS": behaviour.status}
                return web.json_response(error)
            case Kind.HTTP_ERROR:
                return web.Response(status=behaviour.status, text="<html>error</html>")
            case Kind.GARBAGE:
                return web.Response(text="<html>Сервис временно недоступен</html>")
        raise AssertionError(f"unhandled behaviour {behaviour.kind}")

    async def _unexpected(self, request: web.Request) -> web.Response:
        record = await self._record(request)
        return self._refuse(record.path, [f"unexpected {request.method} {request.path}"])

    async def _pause(self, seconds: float) -> bool:
        """Wait ``seconds``; True when the fake is stopping meanwhile."""
        try:
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
            return True
        except TimeoutError:
            return False


def _errors_answer(errors: dict[str, list[str]], status: int) -> web.Response:
    if status in (0, 200):
        return web.json_response({"ERRORS": errors})
    return web.json_response({"ERROR": "-", "ERRORS": errors, "STATUS": status}, status=status)


def _find_form_problems(form: dict[str, str]) -> list[str]:
    """What is wrong with a ``c=find`` form whose field names are right."""
    problems = []
    if form["c"] != "find":
        problems.append(f"c={form['c']!r}")
    for name in ("fam", "nam"):
        if not form[name]:
            problems.append(f"{name} empty")
    if form["opt_otch"] not in ("", "1") or (form["opt_otch"] == "1") != (form["otch"] == ""):
        problems.append(
            f"opt_otch={form['opt_otch']!r} with otch {'empty' if not form['otch'] else 'set'}"
        )
    for name in ("bdate", "docdt"):
        if not _is_date(form[name]):
            problems.append(f"{name}={form[name]!r} is not dd.mm.yyyy")
    if not _DOCNO.fullmatch(form["docno"]):
        problems.append(f"docno={form['docno']!r} is not 'SS SS NNNNNN'")
    if form["doctype"] != "21":
        problems.append(f"doctype={form['doctype']!r}")
    for name in ("bplace", "captcha", "captchaToken"):
        if form[name]:
            problems.append(f"{name} not empty")
    return problems


def _is_date(text: str) -> bool:
    if not _DATE.fullmatch(text):
        return False
    try:
        datetime.strptime(text, "%d.%m.%Y")
    except ValueError:
        return False
    return True


async def _serve(port: int, inn: str) -> None:
    async with FakeNalog(default=found(inn), port=port) as fake:
        print(f"fake service.nalog.ru on {fake.base_url}: everyone's INN is {inn}", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    # For trying the service by hand (see README): python -m tests.fakes.nalog --port 8090
    import argparse

    parser = argparse.ArgumentParser(description="A fake service.nalog.ru on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--inn", default=VALID_INN, help="the INN every lookup finds")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.port, args.inn))
