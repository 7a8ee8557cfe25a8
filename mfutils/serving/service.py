"""The recommendation service: a FastAPI app over one artifact.

Start it with one command (``pip install -e '.[serve]'`` first)::

    mfutils serve ARTIFACT --host 127.0.0.1 --port 8000

or from Python: ``uvicorn.run(create_app("ARTIFACT"))``. Interactive API docs are at
``/docs``. Every id is a raw MovieLens id; responses carry titles and genres. Options of
:func:`create_app` (``serve`` flags): ``allow_updates`` (``--allow-updates``), ``token``
(``--token`` or ``$MFUTILS_TOKEN``), ``save_dir`` (``--save-dir``), ``max_body_bytes``
(``--max-body-bytes``, default 256 KiB), ``max_new_users`` / ``max_new_items``
(``--max-new-users`` / ``--max-new-items``, default 1,000 each), ``allowed_hosts``
(``--allowed-hosts`` adds to loopback and a specific ``--host``; ``*`` allows any).

=======  ==================================  ==================================================
GET      ``/health``                          liveness: ``{"status": "ok", ...}``
GET      ``/metadata``                        model, options, data, metrics, version, methods
GET      ``/users/{user}/recommendations``    top-``k`` for a known user (``?k=10``), seen
                                              items excluded (``?exclude_seen=false`` keeps them)
POST     ``/recommendations``                 the same for ``{"users": [...], "k": 10}``
POST     ``/recommendations/new-user``        top-``k`` from ``{"ratings": [{"item": 50,
                                              "rating": 5}, ...]}``: fold-in, Asymmetric-SVD,
                                              or popularity (the response's ``method``)
GET      ``/items/{item}/similar``            the ``k`` most similar items
POST     ``/ratings``                         online update: ``{"ratings": [{"user": 1,
                                              "item": 50, "rating": 4}], "update": "users"}``
POST     ``/artifact/save``                   write the updated model as a new artifact
                                              version (to the ``save_dir`` given at start-up)
=======  ==================================  ==================================================

Bad input gets a 4xx with a short, readable ``detail`` that never echoes large inputs: 404
for an unknown id in the path, 413 for a body over ``max_body_bytes`` (refused before it is
parsed), 422 for a malformed body (``NaN``, ``Infinity`` and numbers past float range such as
``1e309`` included), an out-of-range ``k`` or rating, unknown ids in a body or new ids outside
``[1, 2**31 - 1]``, 409 for an online update the model cannot take, one past the growth limits
(``max_new_users`` / ``max_new_items`` since start-up) or a read-only service, 401 / 403 for a
write without the token / on a service that takes none, 400 for a ``Host`` header not in
``allowed_hosts``. Endpoints are plain functions, run by the server's thread pool; they share
the one model read-only and an online update takes it alone
(:class:`~mfutils.serving.recommender.ReadWriteLock`). Several ``--workers`` processes each
hold their own copy, so the service is then read-only.

Threat model: anyone who can reach the port may read; writes (``POST /ratings``,
``POST /artifact/save``) are off unless ``allow_updates`` (then anyone who can reach the port
may write) or a ``token`` is set (then only ``Authorization: Bearer TOKEN`` may). The service
trusts the artifact it loads and its own start-up options, nothing a request sends: it refuses
``Host`` names outside ``allowed_hosts`` (loopback by default, against DNS rebinding), bodies
over the limit, unbounded growth, and saving into or over the served artifact's folder.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import math
import os
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import mfutils
from mfutils.serving.artifact import Artifact
from mfutils.serving.online import UnsupportedError
from mfutils.serving.recommender import GrowthLimitError, Ranking, Recommender, UnknownIdError

MAX_BATCH = 1000  # users per POST /recommendations, ratings per request
MAX_ID_CHARS = 256  # longest raw id given as text
MAX_BODY_BYTES = 256 * 1024  # default request-body limit
MAX_NEW = 1000  # default new users, and new items, an online service takes since start-up
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
MAX_DETAIL = 500  # characters of an error's detail; longer ones are cut
ARTIFACT_ENV = "MFUTILS_ARTIFACT"
READ_ONLY_ENV = "MFUTILS_READ_ONLY"
SAVE_DIR_ENV = "MFUTILS_SAVE_DIR"
ALLOW_UPDATES_ENV = "MFUTILS_ALLOW_UPDATES"
TOKEN_ENV = "MFUTILS_TOKEN"
MAX_BODY_ENV = "MFUTILS_MAX_BODY_BYTES"
MAX_NEW_USERS_ENV = "MFUTILS_MAX_NEW_USERS"
MAX_NEW_ITEMS_ENV = "MFUTILS_MAX_NEW_ITEMS"
HOSTS_ENV = "MFUTILS_ALLOWED_HOSTS"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Raw ids: integers (MovieLens, most logs) or strings (own data with text ids); a JSON
# number or a numeric string is an integer id.
RawId = Annotated[
    int | Annotated[str, StringConstraints(max_length=MAX_ID_CHARS)],
    Field(union_mode="left_to_right"),
]


class RankedItem(BaseModel):
    item: RawId
    title: str | None
    genres: list[str]
    score: float


class Recommendations(BaseModel):
    user: RawId | None = Field(description="raw user id; null for a new user")
    k: int
    method: str = Field(
        description="model, fold-in, asymmetric-svd, popularity, item-factors or co-occurrence"
    )
    items: list[RankedItem]


class UsersRequest(_Body):
    users: list[RawId] = Field(min_length=1, max_length=MAX_BATCH, description="raw user ids")
    k: int = Field(10, ge=1)
    exclude_seen: bool = True


class RatedItem(_Body):
    item: RawId
    rating: float = Field(allow_inf_nan=False)


class NewUserRequest(_Body):
    ratings: list[RatedItem] = Field(min_length=1, max_length=MAX_BATCH)
    k: int = Field(10, ge=1)
    exclude_rated: bool = True


class NewRating(_Body):
    user: int
    item: int
    rating: float = Field(allow_inf_nan=False)


class RatingsRequest(_Body):
    ratings: list[NewRating] = Field(
        min_length=1, max_length=MAX_BATCH, description="one batch: each (user, item) pair once"
    )
    update: Literal["users", "both"] = Field(
        "users",
        description="users: re-solve the raters (and items new to the model); "
        "both: also re-solve every rated item",
    )
    allow_new: bool = Field(
        True, description="add unknown raw ids (in [1, 2**31 - 1]) as new users / items"
    )


class BodyLimitMiddleware:
    """Pure ASGI middleware: a request body over ``max_body_bytes`` gets a 413, unparsed.

    A ``Content-Length`` over the limit is refused at once; otherwise the body of a request
    other than GET / HEAD is read here, counting the streamed chunks (chunked uploads have no
    length), and handed on whole; past the limit reading stops with the 413.
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app, self.max_body_bytes = app, max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _content_length(scope)
        if length is not None and length > self.max_body_bytes:
            await self._refuse(scope, receive, send)
            return
        if scope["method"] in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body_bytes:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        pending: list[Message] = [
            {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        ]

        async def replay() -> Message:
            return pending.pop() if pending else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = (
            f"request body over the {self.max_body_bytes}-byte limit (the service's "
            "--max-body-bytes): send fewer ratings or users per request"
        )
        await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)


class _StrictJSONRequest(Request):
    """A request whose JSON body may not hold ``NaN``, ``Infinity`` or ``1e309``."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = _strict_json(await self.body())
        return self._json


class _StrictJSONRoute(APIRoute):
    """Routes with a body parse it with :class:`_StrictJSONRequest` (others are untouched)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def strict(request: Request) -> Response:
            return await handler(_StrictJSONRequest(request.scope, request.receive))

        return strict


def create_app(
    artifact: Recommender | Artifact | str | Path,
    *,
    device: str | None = None,
    read_only: bool = False,
    save_dir: str | Path | None = None,
    allow_updates: bool = False,
    token: str | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    max_new_users: int = MAX_NEW,
    max_new_items: int = MAX_NEW,
    allowed_hosts: Sequence[str] = LOOPBACK_HOSTS,
) -> FastAPI:
    """The FastAPI app serving ``artifact``.

    Parameters
    ----------
    artifact : Recommender, Artifact, str or Path
        What to serve; a path is loaded (and checked) with :meth:`Artifact.load`.
    device : str, optional
        Where the model computes (``cpu``, ``cuda``); default :func:`mfutils.get_device`.
    read_only : bool
        Refuse writes (409) whatever else is set, e.g. when several worker processes serve
        copies.
    save_dir : str or Path, optional
        Where ``POST /artifact/save`` writes the updated model; without it that endpoint
        answers 409. It may not be, lie inside or contain the served artifact's directory.
    allow_updates : bool
        Take writes (``POST /ratings``, ``POST /artifact/save``) from anyone who can reach
        the service; without it (and without ``token``) they get a 403.
    token : str, optional
        Take writes only with the header ``Authorization: Bearer TOKEN`` (401 otherwise);
        implies ``allow_updates``.
    max_body_bytes : int
        Larger request bodies get a 413 before they are parsed.
    max_new_users, max_new_items : int
        New users / items online updates may add since start-up (409 past them).
    allowed_hosts : sequence of str
        ``Host`` names served (400 for others, against DNS rebinding); ``"*"`` allows any.

    Raises
    ------
    ValueError
        For an empty ``token``, a limit below 1, a malformed host pattern, or a ``save_dir``
        that would overwrite the served artifact.
    """
    if token is not None and not token:
        raise ValueError("the token is empty: give a non-empty --token or unset $MFUTILS_TOKEN")
    for name, value in (
        ("max_body_bytes", max_body_bytes),
        ("max_new_users", max_new_users),
        ("max_new_items", max_new_items),
    ):
        if value < 1:
            raise ValueError(f"{name}={value} must be at least 1")
    hosts = _host_patterns(allowed_hosts)
    rec = artifact if isinstance(artifact, Recommender) else Recommender(artifact, device=device)
    if save_dir is not None:
        save_dir = Path(save_dir)
        _check_save_dir(save_dir, rec.path)
    writes = (
        "off"
        if read_only
        else "token"
        if token is not None
        else ("open" if allow_updates else "off")
    )
    info = rec.artifact.info
    app = FastAPI(
        title="mfutils recommendations",
        version=mfutils.__version__,
        description=f"{info['model']['name']} trained on {info['data']['dataset']} "
        f"({info['data']['split']}); raw MovieLens ids in and out.",
    )
    app.router.route_class = _StrictJSONRoute
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=max_body_bytes)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts, www_redirect=False)
    app.state.recommender = rec

    @app.exception_handler(RequestValidationError)
    def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()[:10]
        return JSONResponse(
            status_code=422,
            content={
                "detail": _clip("; ".join(_readable(error) for error in errors)),
                "errors": [
                    {
                        "type": error.get("type"),
                        "loc": [_clip(str(part), 80) for part in error.get("loc", ())],
                        "msg": _clip(str(error.get("msg"))),
                    }
                    for error in errors
                ],
            },
        )

    @app.exception_handler(StarletteHTTPException)
    def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"detail": _clip(str(exc.detail))}, status_code=exc.status_code, headers=exc.headers
        )

    async def may_write(request: Request) -> None:
        """403 / 409 unless this service takes writes; 401 without the right token."""
        if read_only:
            raise HTTPException(
                409,
                "this service is read-only (started with several workers "
                "or --read-only): online updates and saves are refused",
            )
        if writes == "off":
            raise HTTPException(
                403,
                "writes are disabled: start the service with "
                "--allow-updates, or with --token / $MFUTILS_TOKEN to "
                "take them from bearers of the token",
            )
        if writes == "token":
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.encode(), token.encode()
            ):
                raise HTTPException(
                    401,
                    "writes need the service's token: send the header "
                    "'Authorization: Bearer TOKEN'",
                    headers={"WWW-Authenticate": "Bearer"},
                )

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": info["model"]["name"],
            "version": rec.artifact.info.get("version"),
        }

    @app.get("/metadata")
    def metadata() -> dict[str, Any]:
        return jsonable_encoder(
            {
                **rec.metadata(),
                "read_only": read_only,
                "writes": writes,
                "save_dir": None if save_dir is None else str(save_dir),
                "limits": {
                    "max_body_bytes": max_body_bytes,
                    "max_new_users": max_new_users,
                    "max_new_items": max_new_items,
                },
            }
        )

    @app.get("/users/{user}/recommendations", response_model=Recommendations)
    def user_recommendations(
        user: str, k: Annotated[int, Query(ge=1)] = 10, exclude_seen: bool = True
    ) -> dict[str, Any]:
        user = rec.raw_id("user", user)
        with _client_errors(unknown_status=404):
            ranking = rec.recommend([user], k, exclude_seen=exclude_seen)[0]
        return _payload(rec, ranking, user, k)

    @app.post("/recommendations")
    def recommendations(body: UsersRequest) -> dict[str, list[Recommendations]]:
        with _client_errors(unknown_status=422):
            rankings = rec.recommend(body.users, body.k, exclude_seen=body.exclude_seen)
        return {
            "results": [
                _payload(rec, ranking, user, body.k)
                for user, ranking in zip(body.users, rankings, strict=True)
            ]
        }

    @app.post("/recommendations/new-user", response_model=Recommendations)
    def new_user(body: NewUserRequest) -> dict[str, Any]:
        with _client_errors(unknown_status=422):
            ranking = rec.recommend_new_user(
                [r.item for r in body.ratings],
                [r.rating for r in body.ratings],
                body.k,
                exclude_rated=body.exclude_rated,
            )
        return _payload(rec, ranking, None, body.k)

    @app.get("/items/{item}/similar")
    def similar(item: str, k: Annotated[int, Query(ge=1)] = 10) -> dict[str, Any]:
        item = rec.raw_id("item", item)
        with _client_errors(unknown_status=404):
            ranking = rec.similar_items(item, k)
        return {"item": item, "k": k, "method": ranking.method, "items": rec.describe(ranking)}

    @app.post("/ratings", dependencies=[Depends(may_write)])
    def ratings(body: RatingsRequest) -> dict[str, Any]:
        with _client_errors(unknown_status=422):
            report = rec.add_ratings(
                [r.user for r in body.ratings],
                [r.item for r in body.ratings],
                [r.rating for r in body.ratings],
                update=body.update,
                allow_new=body.allow_new,
                max_new_users=max_new_users,
                max_new_items=max_new_items,
            )
        return {**report, "version": rec.artifact.info.get("version"), "unsaved_updates": True}

    @app.post("/artifact/save", dependencies=[Depends(may_write)])
    def save() -> dict[str, Any]:
        if save_dir is None:
            raise HTTPException(
                409,
                "no save directory configured: start the service with "
                "--save-dir DIR (create_app(save_dir=...)) to save",
            )
        try:
            _check_save_dir(save_dir, rec.path)
        except ValueError as err:
            raise HTTPException(409, str(err)) from err
        saved = rec.save(save_dir, overwrite=True)
        return {
            "path": str(save_dir),
            "version": saved.info["version"],
            "created_at": saved.info.get("created_at"),
        }

    return app


def create_app_from_env() -> FastAPI:
    """App factory for ``uvicorn --factory`` and multi-worker serving: :func:`create_app`
    with the artifact path in ``$MFUTILS_ARTIFACT`` and its options from the environment.

    ``$MFUTILS_READ_ONLY`` and ``$MFUTILS_ALLOW_UPDATES`` (``1`` sets them),
    ``$MFUTILS_TOKEN``, ``$MFUTILS_SAVE_DIR``, ``$MFUTILS_MAX_BODY_BYTES``,
    ``$MFUTILS_MAX_NEW_USERS``, ``$MFUTILS_MAX_NEW_ITEMS``, ``$MFUTILS_ALLOWED_HOSTS``
    (comma-separated); the device from ``$MFUTILS_DEVICE``. Unset ones take the defaults.
    """
    env = os.environ
    path = env.get(ARTIFACT_ENV)
    if not path:
        raise RuntimeError(f"set ${ARTIFACT_ENV} to the artifact directory to serve")
    hosts = env.get(HOSTS_ENV)
    return create_app(
        path,
        read_only=env.get(READ_ONLY_ENV) == "1",
        save_dir=env.get(SAVE_DIR_ENV) or None,
        allow_updates=env.get(ALLOW_UPDATES_ENV) == "1",
        token=env.get(TOKEN_ENV) or None,
        max_body_bytes=int(env.get(MAX_BODY_ENV) or MAX_BODY_BYTES),
        max_new_users=int(env.get(MAX_NEW_USERS_ENV) or MAX_NEW),
        max_new_items=int(env.get(MAX_NEW_ITEMS_ENV) or MAX_NEW),
        allowed_hosts=hosts.split(",") if hosts else LOOPBACK_HOSTS,
    )


def serving_hosts(host: str, extra: Sequence[str] = ()) -> tuple[str, ...]:
    """The ``allowed_hosts`` of a service bound to ``host``: loopback, ``host`` itself if it
    is one interface (not ``0.0.0.0`` or ``::``), and ``extra``."""
    specific = [host] if host and host not in ("0.0.0.0", "::") else []
    return tuple(dict.fromkeys([*LOOPBACK_HOSTS, *specific, *extra]))


def _host_patterns(hosts: Sequence[str]) -> list[str]:
    """``hosts`` as :class:`TrustedHostMiddleware` matches them (IPv6 literals in brackets)."""
    patterns = []
    for host in hosts:
        if "*" in host and host != "*" and not (host.startswith("*.") and "*" not in host[1:]):
            raise ValueError(f"allowed host {host!r}: a wildcard is '*' or '*.example.com'")
        try:
            is_ipv6 = ipaddress.ip_address(host.strip("[]")).version == 6
        except ValueError:
            is_ipv6 = False
        patterns.append(f"[{host.strip('[]')}]" if is_ipv6 else host)
    return patterns


def _check_save_dir(save_dir: Path, served: Path | None) -> None:
    """Refuse a save directory that is, lies inside or contains the served artifact."""
    if served is None:
        return
    target, source = save_dir.resolve(), served.resolve()
    if target == source or source in target.parents or target in source.parents:
        raise ValueError(
            f"--save-dir {save_dir} would overwrite the served artifact {served}: "
            "save outside its directory"
        )


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _strict_json(body: bytes) -> Any:
    """``json.loads`` refusing ``NaN``, ``Infinity`` and floats past range (``1e309``)."""
    try:
        return json.loads(body, parse_constant=_non_finite, parse_float=_finite_float)
    except json.JSONDecodeError:
        raise
    except ValueError as err:  # ours, a huge integer, or bytes that are not UTF-8/16/32
        raise json.JSONDecodeError(_clip(str(err), 200), "", 0) from err


def _non_finite(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number: numbers must be finite")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{_clip(text, 40)} is past float range: numbers must be finite")
    return value


@contextmanager
def _client_errors(*, unknown_status: int) -> Iterator[None]:
    """Bad input found past pydantic's checks becomes a 4xx with the error's message."""
    try:
        yield
    except UnknownIdError as err:
        hint = (
            ": POST their ratings to /recommendations/new-user instead"
            if err.kind == "user" and unknown_status == 404
            else ""
        )
        raise HTTPException(unknown_status, f"{err}{hint}") from err
    except (UnsupportedError, GrowthLimitError) as err:
        raise HTTPException(409, str(err)) from err
    except OverflowError as err:
        raise HTTPException(422, f"an id is out of range (ids are 64-bit integers): {err}") from err
    except ValueError as err:
        raise HTTPException(422, str(err)) from err


def _payload(rec: Recommender, ranking: Ranking, user: int | None, k: int) -> dict[str, Any]:
    return {"user": user, "k": k, "method": ranking.method, "items": rec.describe(ranking)}


def _readable(error: dict[str, Any]) -> str:
    """``"body.ratings.0.rating: Input should be a valid number"`` from a pydantic error."""
    loc = ".".join(_clip(str(part), 80) for part in error.get("loc", ()))
    message = error.get("msg", "invalid")
    context = error.get("ctx", {}).get("error")
    return f"{loc}: {message}" + (f" ({_clip(str(context), 200)})" if context else "")


def _clip(text: str, limit: int = MAX_DETAIL) -> str:
    """``text`` cut to ``limit`` characters (an error message never echoes a large input)."""
    return text if len(text) <= limit else f"{text[: limit - 3]}..."
