"""The studio's web app: server-rendered pages (Jinja2) and a REST API (``/api``, OpenAPI at
``/api/openapi.json``) over one :class:`~parley.studio.store.Store`.

Browsers log in for an HttpOnly, SameSite=Strict session cookie; every unsafe request from a session
carries its CSRF token (form field ``csrf_token`` or header ``X-CSRF-Token``), else 403. Machines use
``Authorization: Bearer TOKEN`` (no cookie, so no CSRF). Roles: viewers read, editors edit and
publish, admins also manage users and tokens. Every asset is served from ``/static``: no CDN.
"""

import asyncio
import contextlib
import hmac
import logging
import threading
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path as FilePath
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, Form, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field

from parley.agent.loader import load_agent_text
from parley.studio.analytics import summarise
from parley.studio.browser_calls import BrowserCalls
from parley.studio.console import Consoles, ConsoleSession
from parley.studio.graph import flow_svg_of
from parley.studio.store import (
    COUNT_CAP,
    NAME_PATTERN,
    Conflict,
    Invalid,
    NotFound,
    Principal,
    Store,
    validate_text,
)
from parley.studio.views import present, timeline
from parley.telephony.webpage import STATIC as CALL_PAGE_ASSETS
from parley.telephony.webpage import call_panel, offer_error, read_offer
from parley.telephony.webrtc import OfferError

HERE = FilePath(__file__).parent
log = logging.getLogger(__name__)
COOKIE = "parley_session"
MAX_YAML_BYTES = 256 * 1024  # an agent file; larger uploads get 413
MAX_BODY_BYTES = 16 * 1024 * 1024  # a batch of call records with their audio
LOGIN_ATTEMPTS = 5  # failed logins per user name and per address ...
LOGIN_WINDOW_S = 60.0  # ... within this window, then 429
PURGE_EVERY_S = 3600.0  # retention periods are checked this often (and at start)
MAX_REPLAY_CALLS = 50  # calls one replay request runs (each through the recognisers)
INT_MAX = 2**31 - 1  # numbers in URLs fit the database's integers (larger ones are 422, not a crash)
Number = Annotated[int, Path(ge=0, le=INT_MAX)]


class ReplayChanged(Conflict):
    """Publishing refused: calls of a required replay set end differently on the version."""

    def __init__(self, message: str, changes: list[str]) -> None:
        super().__init__(message)
        self.changes = changes


class LoginRequired(Exception):
    """A page was asked for without a login: the browser is sent to the login page."""


class LoginLimiter:
    """Failed logins per key in a sliding window (in memory: one studio process)."""

    def __init__(self, attempts: int = LOGIN_ATTEMPTS, window_s: float = LOGIN_WINDOW_S) -> None:
        self.attempts = attempts
        self.window_s = window_s
        self.failures: dict[str, deque[float]] = defaultdict(deque)

    def blocked(self, *keys: str) -> float:
        """Seconds until a new attempt is allowed (0 when it is)."""
        now = time.monotonic()
        wait = 0.0
        for key in keys:
            times = self.failures[key]
            while times and now - times[0] > self.window_s:
                times.popleft()
            if len(times) >= self.attempts:
                wait = max(wait, self.window_s - (now - times[0]))
        return wait

    def failed(self, *keys: str) -> None:
        for key in keys:
            self.failures[key].append(time.monotonic())

    def succeeded(self, *keys: str) -> None:
        for key in keys:
            self.failures.pop(key, None)


class BodyLimit:
    """413 for a request body larger than the limit: at once when its Content-Length says so, else
    as soon as that much of it has arrived (a chunked upload announces no length)."""

    def __init__(self, app: Callable[..., Any], limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(
        self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            await JSONResponse({"detail": "request body too large"}, status_code=413)(scope, receive, send)
            return
        received = 0

        async def limited() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise HTTPException(413, "request body too large")
            return message

        await self.app(scope, limited, send)


# -- API models (the OpenAPI schema) ---------------------------------------------------------------
class AgentIn(BaseModel):
    name: str = Field(pattern=NAME_PATTERN)
    yaml: str = Field(max_length=MAX_YAML_BYTES)


class VersionIn(BaseModel):
    yaml: str = Field(max_length=MAX_YAML_BYTES)
    base: int = Field(ge=0, le=INT_MAX, description="the version this edit started from (optimistic locking)")
    note: str = Field(default="", max_length=200)


class PublishIn(BaseModel):
    version: int = Field(ge=1, le=INT_MAX)
    force: bool = Field(default=False, description="publish even if a required replay set changed")


class ReplayIn(BaseModel):
    version: int | None = Field(default=None, ge=1, le=INT_MAX, description="default: the newest version")
    calls: list[str] = Field(min_length=1, max_length=MAX_REPLAY_CALLS)


class ReplaySetIn(BaseModel):
    name: str = Field(pattern=NAME_PATTERN)
    calls: list[str] = Field(min_length=1, max_length=MAX_REPLAY_CALLS)
    required: bool = False


class ReplayRunIn(BaseModel):
    version: int | None = Field(default=None, ge=1, le=INT_MAX, description="default: the newest version")


class RollbackIn(BaseModel):
    version: int | None = Field(
        default=None, ge=1, le=INT_MAX, description="default: the previously live version"
    )


class ValidateIn(BaseModel):
    yaml: str = Field(max_length=MAX_YAML_BYTES)


class UserIn(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=8, max_length=200)
    role: str = Field(pattern="^(admin|editor|viewer)$")


class TokenIn(BaseModel):
    user: str = Field(min_length=1, max_length=64)
    label: str = Field(default="", max_length=100)


class ConsoleIn(BaseModel):
    text: str | None = Field(default=None, max_length=500, description="the caller's typed answer")
    dtmf: str | None = Field(default=None, max_length=50, pattern=r"^[0-9*#]*$")
    hangup: bool = False


class RetentionIn(BaseModel):
    days: int | None = Field(default=None, ge=1, le=36500)


class ErrorOut(BaseModel):
    """Every error answer: a message, and for agent files each problem located (line, column, text)."""

    detail: str
    errors: list[dict[str, Any]] = Field(default_factory=list)


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut} for status in (401, 403, 404, 409, 413, 422)
}


def create_app(
    store: Store, *, secure_cookies: bool = False, purge_every_s: float = PURGE_EVERY_S
) -> FastAPI:
    """The studio app over ``store`` (``secure_cookies``: the studio is served over HTTPS). While it
    runs, calls older than their agent's retention period are purged every ``purge_every_s``, and the
    database's planner statistics refreshed."""

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async def purge() -> None:
            while True:
                try:
                    removed = await asyncio.to_thread(store.purge)
                    if removed:
                        log.warning("retention: %d calls and their audio purged", removed)
                    await asyncio.to_thread(store.optimize)
                except Exception:  # a database hiccup: try again next time
                    log.exception("retention purge or statistics failed")
                await asyncio.sleep(purge_every_s)

        task = asyncio.ensure_future(purge())
        try:
            yield
        finally:
            task.cancel()
            await browser_calls.close()

    app = FastAPI(
        title="Parley Studio",
        version="1",
        openapi_url="/api/openapi.json",
        docs_url=None,
        redoc_url=None,
        responses=ERRORS,
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimit)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.mount("/call-assets", StaticFiles(directory=CALL_PAGE_ASSETS), name="call-assets")
    templates = Jinja2Templates(directory=HERE / "templates")
    limiter = LoginLimiter()
    consoles = Consoles()
    browser_calls = BrowserCalls(store)
    app.state.store = store
    app.state.limiter = limiter

    # -- who is asking ----------------------------------------------------------------------------
    def principal_or_none(request: Request) -> Principal | None:
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            found = store.token_principal(auth[7:].strip())
            if found is None:
                raise HTTPException(401, "unknown API token")
            return found
        cookie = request.cookies.get(COOKIE)
        return store.session_principal(cookie) if cookie else None

    async def csrf_ok(request: Request, who: Principal) -> bool:
        if who.csrf is None or request.method in ("GET", "HEAD", "OPTIONS"):
            return True
        sent = request.headers.get("x-csrf-token")
        if sent is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")
        ):
            sent = (await request.form()).get("csrf_token")  # type: ignore[assignment]
        return isinstance(sent, str) and hmac.compare_digest(sent, who.csrf)

    async def api_user(request: Request) -> Principal:
        who = principal_or_none(request)
        if who is None:
            raise HTTPException(401, "log in or send Authorization: Bearer TOKEN")
        if not await csrf_ok(request, who):
            raise HTTPException(403, "missing or wrong CSRF token")
        return who

    async def page_user(request: Request) -> Principal:
        who = principal_or_none(request)
        if who is None:
            raise LoginRequired
        if not await csrf_ok(request, who):
            raise HTTPException(403, "missing or wrong CSRF token")
        return who

    def editor(who: Principal) -> None:
        if not who.can_edit:
            raise HTTPException(403, "editors and admins only")

    def admin(who: Principal) -> None:
        if not who.is_admin:
            raise HTTPException(403, "admins only")

    User = Annotated[Principal, Depends(api_user)]
    PageUser = Annotated[Principal, Depends(page_user)]

    @app.exception_handler(LoginRequired)
    async def to_login(request: Request, _exc: Exception) -> Response:
        return RedirectResponse(f"/login?next={request.url.path}", status_code=303)

    @app.exception_handler(NotFound)
    async def not_found(_request: Request, exc: Exception) -> Response:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(Conflict)
    async def conflict(_request: Request, exc: Exception) -> Response:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(Invalid)
    async def invalid(_request: Request, exc: Invalid) -> Response:
        return JSONResponse(
            {"detail": str(exc), "errors": [_problem(e) for e in exc.errors]}, status_code=422
        )

    @app.exception_handler(PermissionError)
    async def forbidden(_request: Request, exc: Exception) -> Response:
        return JSONResponse({"detail": str(exc)}, status_code=403)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        too_long = any(e.get("type") == "string_too_long" and e["loc"][-1] == "yaml" for e in exc.errors())
        status = 413 if too_long else 422
        body = {
            "detail": "request too large" if too_long else "invalid request",
            "errors": _jsonable_errors(exc.errors()),
        }
        return JSONResponse(body, status_code=status)

    def render(
        request: Request, name: str, who: Principal | None, status: int = 200, **context: Any
    ) -> Response:
        return templates.TemplateResponse(
            request, name, {"who": who, "csrf": who.csrf if who else "", **context}, status_code=status
        )

    # == REST API ================================================================================
    @app.get("/api/agents", tags=["agents"])
    def api_agents(who: User) -> list[dict[str, Any]]:
        return store.agents()

    @app.post("/api/agents", status_code=201, tags=["agents"])
    def api_create_agent(body: AgentIn, who: User) -> dict[str, Any]:
        editor(who)
        number = store.create_agent(body.name, body.yaml, who)
        return {"name": body.name, "version": number}

    @app.get("/api/agents/{name}", tags=["agents"])
    def api_agent(name: str, who: User) -> dict[str, Any]:
        return {**store.agent(name), "versions": store.versions(name), "deployments": store.deployments(name)}

    @app.get("/api/agents/{name}/versions/{number}", tags=["agents"])
    def api_version(name: str, number: Number, who: User) -> dict[str, Any]:
        return store.version(name, number)

    @app.post("/api/agents/{name}/versions", status_code=201, tags=["agents"])
    def api_save(name: str, body: VersionIn, who: User) -> dict[str, Any]:
        editor(who)
        return {"name": name, "version": store.save_version(name, body.yaml, body.base, who, body.note)}

    @app.post("/api/validate", tags=["agents"])
    def api_validate(body: ValidateIn, who: User, name: str = "agent") -> dict[str, Any]:
        errors = validate_text(body.yaml, name)
        return {"valid": not errors, "errors": [_problem(e) for e in errors]}

    @app.get("/api/agents/{name}/diff", tags=["agents"])
    def api_diff(
        name: str,
        who: User,
        old: Annotated[int, Query(ge=1, le=INT_MAX)],
        new: Annotated[int, Query(ge=1, le=INT_MAX)],
    ) -> dict[str, Any]:
        return {"old": old, "new": new, "diff": store.diff(name, old, new)}

    @app.get("/api/agents/{name}/live", tags=["agents"])
    def api_live(name: str, who: User) -> dict[str, Any]:
        return store.live(name)

    @app.post("/api/agents/{name}/publish", tags=["agents"])
    def api_publish(name: str, body: PublishIn, who: User) -> dict[str, Any]:
        """Make a version live; if the agent has required replay sets, only when every call of them
        ends as it did on that version (409 with what changed), unless ``force``."""
        editor(who)
        if not body.force:
            check_required_replays(name, body.version, who)
        return store.publish(name, body.version, who)

    @app.post("/api/agents/{name}/rollback", tags=["agents"])
    def api_rollback(name: str, body: RollbackIn, who: User) -> dict[str, Any]:
        editor(who)
        return store.rollback(name, who, body.version)

    def version_analytics(name: str, version: int | None) -> dict[str, Any]:
        agent = store.agent(name)
        number = version or agent["live"] or agent["head"]
        text = store.version(name, number)["yaml"]
        return {"agent": name, "version": number, **summarise(store.version_records(name, number), text)}

    @app.get("/api/agents/{name}/analytics", tags=["agents"])
    def api_analytics(
        name: str, who: User, version: Annotated[int | None, Query(ge=1, le=INT_MAX)] = None
    ) -> dict[str, Any]:
        """Figures of one version (default: the live one) over its newest 5,000 calls."""
        return version_analytics(name, version)

    replaying = threading.Lock()  # one replay at a time: each keeps the recognisers busy

    def run_replay(name: str, version: int | None, call_ids: list[str], who: Principal) -> dict[str, Any]:
        editor(who)
        number = version or store.agent(name)["head"]
        agent = load_agent_text(store.version(name, number)["yaml"], f"{name}.yaml")
        calls = [store.call(call_id) for call_id in call_ids]
        if any(call["agent"] != name for call in calls):
            raise Invalid(f"replay calls of agent {name!r} only")
        store.audit(who, "reveal", f"agent {name}", f"replay of {len(calls)} calls against v{number}")
        with replaying:
            if getattr(app.state, "replayer", None) is None:
                from parley.studio.replay import Replayer

                app.state.replayer = Replayer()
            results = []
            for call in calls:
                record = store.keyring.unseal(call["record"])
                audio = {turn: store.turn_audio(call["call_id"], turn) for turn in call["audio_turns"]}
                replayed = asyncio.run(app.state.replayer.replay(agent, record, audio))
                results.append(replayed.view())
        return {
            "agent": name,
            "version": number,
            "results": results,
            "passed": all(r["same"] for r in results),
        }

    def check_required_replays(name: str, version: int, who: Principal) -> None:
        required = [c for s in store.replay_sets(name) if s["required"] for c in s["calls"]]
        if not required:
            return
        outcome = run_replay(name, version, list(dict.fromkeys(required)), who)
        if not outcome["passed"]:
            changed = [
                f"{r['call_id']}: {'; '.join(r['changes'])}" for r in outcome["results"] if not r["same"]
            ]
            raise ReplayChanged(
                f"v{version} changes {len(changed)} call(s) of a required replay set", changed
            )

    @app.exception_handler(ReplayChanged)
    async def replay_changed(_request: Request, exc: ReplayChanged) -> Response:
        return JSONResponse(
            {"detail": str(exc), "errors": [{"text": c} for c in exc.changes]}, status_code=409
        )

    @app.post("/api/agents/{name}/replay", tags=["replay"])
    def api_replay(name: str, body: ReplayIn, who: User) -> dict[str, Any]:
        """Replay recorded calls (their audio through the recognisers) against a version: what changes."""
        return run_replay(name, body.version, body.calls, who)

    @app.get("/api/agents/{name}/replay-sets", tags=["replay"])
    def api_replay_sets(name: str, who: User) -> list[dict[str, Any]]:
        return store.replay_sets(name)

    @app.post("/api/agents/{name}/replay-sets", status_code=201, tags=["replay"])
    def api_add_replay_set(name: str, body: ReplaySetIn, who: User) -> dict[str, Any]:
        editor(who)
        store.add_replay_set(name, body.name, body.calls, body.required, who)
        return {"name": body.name, "calls": body.calls, "required": body.required}

    @app.post("/api/agents/{name}/replay-sets/{set_name}/run", tags=["replay"])
    def api_run_replay_set(name: str, set_name: str, body: ReplayRunIn, who: User) -> dict[str, Any]:
        found = [s for s in store.replay_sets(name) if s["name"] == set_name]
        if not found:
            raise NotFound(f"agent {name!r} has no replay set {set_name!r}")
        return run_replay(name, body.version, found[0]["calls"], who)

    def open_console(name: str, version: int | None, who: Principal) -> ConsoleSession:
        editor(who)
        number = version or store.agent(name)["head"]
        return consoles.open(name, number, store.version(name, number)["yaml"], who.user_id)

    def console_session(session_id: str, who: Principal) -> ConsoleSession:
        editor(who)
        try:
            return consoles.get(session_id, who.user_id)
        except LookupError as exc:
            raise NotFound(str(exc)) from None

    @app.post("/api/agents/{name}/console", status_code=201, tags=["console"])
    def api_console_open(
        name: str, who: User, version: Annotated[int | None, Query(ge=1, le=INT_MAX)] = None
    ) -> dict[str, Any]:
        """Start a test conversation with a version (default: the newest); webhooks are simulated."""
        return open_console(name, version, who).view()

    @app.post("/api/console/{session_id}", tags=["console"])
    def api_console_turn(session_id: str, body: ConsoleIn, who: User) -> dict[str, Any]:
        """The caller's next move: ``text``, ``dtmf``, ``hangup``, or none of them for silence."""
        session = console_session(session_id, who)
        return consoles.turn(session, text=body.text, dtmf=body.dtmf, hangup=body.hangup).view()

    @app.put("/api/agents/{name}/retention", tags=["agents"])
    def api_retention(name: str, body: RetentionIn, who: User) -> dict[str, Any]:
        admin(who)
        store.set_retention(name, body.days, who)
        return store.agent(name)

    @app.post("/api/calls", tags=["calls"])
    async def api_ingest(request: Request, who: User) -> dict[str, Any]:
        """Call records: a JSON list of ``parley.call/1`` records, or JSON lines (``parley serve``)."""
        editor(who)
        records = _parse_records(await request.body())
        return {"received": len(records), "new": store.ingest(records)}

    @app.get("/api/calls", tags=["calls"])
    def api_calls(
        who: User,
        agent: str | None = None,
        version: Annotated[int | None, Query(ge=0, le=INT_MAX)] = None,
        outcome: str | None = None,
        transferred: bool | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        min_duration: float | None = None,
        max_duration: float | None = None,
        slot: str | None = None,
        slot_status: Annotated[str | None, Query(pattern="^(filled|missing)$")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0, le=INT_MAX)] = 0,
    ) -> dict[str, Any]:
        total, calls = store.calls(
            agent=agent,
            version=version,
            outcome=outcome,
            transferred=transferred,
            since=since,
            until=until,
            min_duration=min_duration,
            max_duration=max_duration,
            slot=slot,
            slot_status=slot_status,
            limit=limit,
            offset=offset,
        )
        return {"total": min(total, COUNT_CAP), "more": total > COUNT_CAP, "calls": calls}

    def call_view(call_id: str, who: Principal, reveal: bool) -> dict[str, Any]:
        if reveal and not who.can_edit:
            raise HTTPException(403, "viewers see caller data masked")
        call = store.call(call_id)
        agent_yaml = _version_yaml(store, call["agent"], call["version"])
        if reveal:
            store.audit(who, "reveal", f"call {call_id}")
        record = present(
            call["record"],
            store.keyring,
            reveal=reveal,
            step_slots=store.step_slots(call["agent"], call["version"]),
            agent_yaml=agent_yaml,
        )
        return {**call, "record": record, "revealed": reveal}

    @app.get("/api/calls/{call_id}", tags=["calls"])
    def api_call(call_id: str, who: User, reveal: bool = False) -> dict[str, Any]:
        """A call record; caller data masked, or in clear with ``reveal=true`` (editors; audited)."""
        return call_view(call_id, who, reveal)

    @app.get("/api/calls/{call_id}/audio/{turn}", tags=["calls"], response_class=Response)
    def api_audio(call_id: str, turn: Number, who: User) -> Response:
        """A turn's caller audio as WAV (editors: it is caller data; audited as a reveal)."""
        if not who.can_edit:
            raise HTTPException(403, "viewers cannot hear caller audio")
        data = store.turn_audio(call_id, turn)
        store.audit(who, "reveal", f"call {call_id}", f"audio of turn {turn}")
        return Response(data, media_type="audio/wav", headers={"Cache-Control": "no-store"})

    @app.get("/api/users", tags=["users"])
    def api_users(who: User) -> list[dict[str, Any]]:
        admin(who)
        return store.users()

    @app.post("/api/users", status_code=201, tags=["users"])
    def api_add_user(body: UserIn, who: User) -> dict[str, Any]:
        admin(who)
        store.add_user(body.name, body.password, body.role)
        store.audit(who, "user", body.name, body.role)
        return {"name": body.name, "role": body.role}

    @app.post("/api/tokens", status_code=201, tags=["users"])
    def api_token(body: TokenIn, who: User) -> dict[str, Any]:
        return {"token": store.add_token(body.user, body.label, who)}

    @app.get("/api/audit", tags=["users"])
    def api_audit(who: User) -> list[dict[str, Any]]:
        admin(who)
        return store.audit_log()

    # == pages =====================================================================================
    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_page(request: Request, next: str = "/") -> Response:
        return render(request, "login.html", None, next=_local(next), error=None)

    @app.post("/login", include_in_schema=False)
    def login(
        request: Request,
        name: Annotated[str, Form(max_length=64)],
        password: Annotated[str, Form(max_length=200)],
        next: Annotated[str, Form()] = "/",
    ) -> Response:
        keys = (f"user:{name}", f"addr:{request.client.host if request.client else '?'}")
        wait = limiter.blocked(*keys)
        if wait:
            return render(
                request,
                "login.html",
                None,
                status=429,
                next=_local(next),
                error=f"too many failed logins: try again in {wait:.0f} s",
            )
        who = store.check_password(name, password)
        if who is None:
            limiter.failed(*keys)
            return render(
                request, "login.html", None, status=401, next=_local(next), error="wrong name or password"
            )
        limiter.succeeded(*keys)
        token, _csrf = store.open_session(who)
        response = RedirectResponse(_local(next), status_code=303)
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=secure_cookies, path="/")
        return response

    @app.post("/logout", include_in_schema=False)
    def logout(request: Request, who: PageUser) -> Response:
        store.close_session(request.cookies.get(COOKIE, ""))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def home(request: Request, who: PageUser) -> Response:
        return render(request, "agents.html", who, agents=store.agents())

    @app.post("/agents", include_in_schema=False)
    def page_create_agent(
        request: Request,
        who: PageUser,
        name: Annotated[str, Form(max_length=64)],
        yaml_text: Annotated[str, Form(alias="yaml")],
    ) -> Response:
        editor(who)
        _check_size(yaml_text)
        try:
            store.create_agent(name, yaml_text, who)
        except (Invalid, Conflict) as exc:
            errors = exc.errors if isinstance(exc, Invalid) else []
            return render(
                request,
                "agents.html",
                who,
                status=422 if isinstance(exc, Invalid) else 409,
                agents=store.agents(),
                error=str(exc),
                problems=[_problem(e) for e in errors],
                new_name=name,
                new_yaml=yaml_text,
            )
        return RedirectResponse(f"/agents/{name}", status_code=303)

    def agent_page(
        request: Request,
        who: Principal,
        name: str,
        *,
        text: str | None = None,
        base: int | None = None,
        problems: list[dict[str, Any]] | None = None,
        error: str | None = None,
        status: int = 200,
    ) -> Response:
        agent = store.agent(name)
        head = store.version(name)
        live_diff = store.diff(name, agent["live"], agent["head"]) if agent["live"] else None
        return render(
            request,
            "agent.html",
            who,
            status=status,
            agent=agent,
            versions=store.versions(name),
            deployments=store.deployments(name),
            text=head["yaml"] if text is None else text,
            base=agent["head"] if base is None else base,
            problems=problems or [],
            error=error,
            live_diff=live_diff,
            flow=flow_svg_of(head["yaml"]),
            replay_sets=store.replay_sets(name),
        )

    @app.get("/agents/{name}", response_class=HTMLResponse, include_in_schema=False)
    def page_agent(request: Request, name: str, who: PageUser) -> Response:
        return agent_page(request, who, name)

    @app.post("/agents/{name}/save", include_in_schema=False)
    def page_save(
        request: Request,
        name: str,
        who: PageUser,
        yaml_text: Annotated[str, Form(alias="yaml")],
        base: Annotated[int, Form(ge=0, le=INT_MAX)],
        note: Annotated[str, Form(max_length=200)] = "",
    ) -> Response:
        editor(who)
        _check_size(yaml_text)
        try:
            number = store.save_version(name, yaml_text, base, who, note)
        except Invalid as exc:
            problems = [_problem(e) for e in exc.errors]
            return agent_page(request, who, name, text=yaml_text, base=base, problems=problems, status=422)
        except Conflict as exc:
            return agent_page(request, who, name, text=yaml_text, base=base, error=str(exc), status=409)
        return RedirectResponse(f"/agents/{name}?saved={number}", status_code=303)

    @app.post("/agents/{name}/publish", include_in_schema=False)
    def page_publish(
        request: Request, name: str, who: PageUser, version: Annotated[int, Form(ge=1, le=INT_MAX)]
    ) -> Response:
        editor(who)
        try:
            check_required_replays(name, version, who)
        except ReplayChanged as exc:
            return agent_page(request, who, name, error=f"{exc}: " + "; ".join(exc.changes), status=409)
        store.publish(name, version, who)
        return RedirectResponse(f"/agents/{name}", status_code=303)

    @app.post("/agents/{name}/rollback", include_in_schema=False)
    def page_rollback(
        request: Request,
        name: str,
        who: PageUser,
        version: Annotated[int | None, Form(ge=1, le=INT_MAX)] = None,
    ) -> Response:
        editor(who)
        try:
            store.rollback(name, who, version)
        except Conflict as exc:
            return agent_page(request, who, name, error=str(exc), status=409)
        return RedirectResponse(f"/agents/{name}", status_code=303)

    @app.get("/agents/{name}/diff", response_class=HTMLResponse, include_in_schema=False)
    def page_diff(
        request: Request,
        name: str,
        who: PageUser,
        old: Annotated[int, Query(ge=1, le=INT_MAX)],
        new: Annotated[int, Query(ge=1, le=INT_MAX)],
    ) -> Response:
        return render(
            request,
            "diff.html",
            who,
            agent=store.agent(name),
            old=old,
            new=new,
            diff=store.diff(name, old, new),
            versions=store.versions(name),
        )

    @app.get("/agents/{name}/call", response_class=HTMLResponse, include_in_schema=False)
    def page_browser_call(request: Request, name: str, who: PageUser, version: int | None = None) -> Response:
        editor(who)
        agent = store.agent(name)
        picker = _version_picker(store.versions(name), agent["live"], version or agent["head"])
        offer_url = f"/agents/{quote(name)}/call/offer"
        panel = call_panel(offer_url, f"Call {name}", extra=picker, csrf=who.csrf or "")
        return render(request, "browser_call.html", who, agent=agent, panel=panel)

    @app.post("/agents/{name}/call/offer", include_in_schema=False)
    async def page_browser_call_offer(request: Request, name: str, who: PageUser) -> Response:
        editor(who)
        try:
            offer = await read_offer(request)
            number = offer.get("version") if isinstance(offer, dict) else None
            number = int(number) if number else store.agent(name)["head"]
            text = (await asyncio.to_thread(store.version, name, number))["yaml"]
            return JSONResponse(await browser_calls.answer(offer, name, number, text))
        except OfferError as exc:
            return offer_error(exc)
        except ValueError:
            return JSONResponse({"error": "the version must be a number", "reason": "sdp"}, status_code=400)

    @app.post("/agents/{name}/console", include_in_schema=False)
    def page_console_open(
        request: Request,
        name: str,
        who: PageUser,
        version: Annotated[int | None, Form(ge=1, le=INT_MAX)] = None,
    ) -> Response:
        session = open_console(name, version, who)
        return RedirectResponse(f"/console/{session.id}", status_code=303)

    @app.get("/console/{session_id}", response_class=HTMLResponse, include_in_schema=False)
    def page_console(request: Request, session_id: str, who: PageUser) -> Response:
        return render(request, "console.html", who, session=console_session(session_id, who).view())

    @app.post("/console/{session_id}", include_in_schema=False)
    def page_console_turn(
        request: Request,
        session_id: str,
        who: PageUser,
        text: Annotated[str, Form(max_length=500)] = "",
        dtmf: Annotated[str, Form(max_length=50, pattern=r"^[0-9*#]*$")] = "",
        action: Annotated[str, Form()] = "say",
    ) -> Response:
        session = console_session(session_id, who)
        if action == "hangup":
            consoles.turn(session, hangup=True)
        elif action == "keys":
            consoles.turn(session, dtmf=dtmf or None)
        elif action == "silence":
            consoles.turn(session)
        else:
            consoles.turn(session, text=text)
        return RedirectResponse(f"/console/{session_id}", status_code=303)

    @app.post("/agents/{name}/replay", response_class=HTMLResponse, include_in_schema=False)
    async def page_replay(request: Request, name: str, who: PageUser) -> Response:
        form = await request.form()
        calls = [str(c) for c in form.getlist("calls")][:MAX_REPLAY_CALLS]
        set_name = str(form.get("set_name") or "")
        version = _bounded(str(form.get("version") or "")) or None
        if set_name:
            found = [s for s in store.replay_sets(name) if s["name"] == set_name]
            if not found:
                raise NotFound(f"agent {name!r} has no replay set {set_name!r}")
            calls = found[0]["calls"]
        if form.get("action") == "save":
            store.add_replay_set(
                name, str(form.get("new_set") or ""), calls, form.get("required") == "on", who
            )
            return RedirectResponse(f"/agents/{name}", status_code=303)
        if not calls:
            raise Invalid("choose the calls to replay")
        outcome = await asyncio.to_thread(run_replay, name, version, calls, who)
        return render(request, "replay.html", who, agent=store.agent(name), outcome=outcome)

    @app.get("/agents/{name}/analytics", response_class=HTMLResponse, include_in_schema=False)
    def page_analytics(
        request: Request,
        name: str,
        who: PageUser,
        version: Annotated[int | None, Query(ge=1, le=INT_MAX)] = None,
    ) -> Response:
        figures = version_analytics(name, version)
        return render(
            request,
            "analytics.html",
            who,
            agent=store.agent(name),
            versions=store.versions(name),
            figures=figures,
        )

    @app.get("/agents/{name}/versions/{number}", response_class=HTMLResponse, include_in_schema=False)
    def page_version(request: Request, name: str, number: Number, who: PageUser) -> Response:
        return render(
            request, "version.html", who, agent=store.agent(name), version=store.version(name, number)
        )

    @app.get("/calls", response_class=HTMLResponse, include_in_schema=False)
    def page_calls(
        request: Request,
        who: PageUser,
        agent: str | None = None,
        version: str | None = None,
        outcome: str | None = None,
        transferred: str | None = None,
        since: str | None = None,
        until: str | None = None,
        min_duration: str | None = None,
        max_duration: str | None = None,
        slot: str | None = None,
        slot_status: str | None = None,
        page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    ) -> Response:
        filters = {k: v for k, v in request.query_params.items() if v and k != "page"}
        try:
            total, calls = store.calls(
                agent=agent or None,
                version=_bounded(version),
                outcome=outcome or None,
                transferred={"yes": True, "no": False}.get(transferred or ""),
                since=datetime.fromisoformat(since) if since else None,
                until=datetime.fromisoformat(until) if until else None,
                min_duration=float(min_duration) if min_duration else None,
                max_duration=float(max_duration) if max_duration else None,
                slot=slot or None,
                slot_status=slot_status or None,
                limit=50,
                offset=50 * (max(page, 1) - 1),
            )
        except ValueError as exc:
            raise HTTPException(422, f"bad filter: {exc}") from exc
        return render(
            request,
            "calls.html",
            who,
            calls=calls,
            total=total,
            count_cap=COUNT_CAP,
            filters=filters,
            page=max(page, 1),
            agents=store.agents(),
        )

    @app.get("/calls/{call_id}", response_class=HTMLResponse, include_in_schema=False)
    def page_call(request: Request, call_id: str, who: PageUser, reveal: bool = False) -> Response:
        call = call_view(call_id, who, reveal)
        return render(request, "call.html", who, call=call, turns=timeline(call["record"]))

    @app.get("/audit", response_class=HTMLResponse, include_in_schema=False)
    def page_audit(request: Request, who: PageUser) -> Response:
        admin(who)
        return render(request, "audit.html", who, entries=store.audit_log(), users=store.users())

    @app.post("/tokens", response_class=HTMLResponse, include_in_schema=False)
    def page_token(
        request: Request, who: PageUser, label: Annotated[str, Form(max_length=100)] = ""
    ) -> Response:
        token = store.add_token(who.name, label, who)
        return render(request, "token.html", who, token=token)

    return app


def _version_yaml(store: Store, agent: str, version: int | None) -> str | None:
    if version is None:
        return None
    try:
        return store.version(agent, version)["yaml"]
    except NotFound:
        return None


def _problem(error: Any) -> dict[str, Any]:
    return {
        "line": error.line,
        "column": error.column,
        "message": error.message,
        "hint": error.hint,
        "text": str(error),
    }


def _bounded(text: str | None) -> int | None:
    """A filter's number, or None; ValueError when it is not a number the database can hold."""
    if not text:
        return None
    number = int(text)
    if not 0 <= number <= INT_MAX:
        raise ValueError(f"{number} is out of range")
    return number


def _check_size(text: str) -> None:
    if len(text.encode()) > MAX_YAML_BYTES:
        raise HTTPException(413, f"an agent file is at most {MAX_YAML_BYTES // 1024} KiB")


def _local(target: str) -> str:
    """Only redirect within the studio (no open redirect through ``next``)."""
    local = target.startswith("/") and not target.startswith(("//", "/\\")) and "\\" not in target
    return target if local else "/"


def _jsonable_errors(errors: Any) -> list[dict[str, Any]]:
    return [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in errors
    ]


def _parse_records(body: bytes) -> list[dict[str, Any]]:
    import json

    try:
        text = body.decode("utf-8").strip()
        if text.startswith("["):
            records = json.loads(text)
        else:
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
    except (UnicodeDecodeError, ValueError) as exc:
        raise Invalid(f"call records must be JSON (a list, or one record a line): {exc}") from exc
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise Invalid("call records must be JSON objects")
    return records


def _version_picker(versions: list[dict[str, Any]], live: int | None, chosen: int) -> str:
    """The call page's version select (every version; those after the live one are drafts)."""
    options = []
    for version in versions:
        number = version["number"]
        tags = " (live)" if version["live"] else " (draft)" if number > (live or 0) else ""
        selected = " selected" if number == chosen else ""
        options.append(f'<option value="{number}"{selected}>v{number}{tags}</option>')
    return (
        '<p><label>Version <select id="version" data-offer-field="version">'
        + "".join(options)
        + "</select></label> Webhooks are simulated with a sample answer.</p>"
    )
