"""The recommendation service: a FastAPI app over one artifact.

Start it with one command (``pip install -e '.[serve]'`` first)::

    mfutils serve ARTIFACT --host 127.0.0.1 --port 8000

or from Python: ``uvicorn.run(create_app("ARTIFACT"))``. Interactive API docs are at
``/docs``. Every id is a raw MovieLens id; responses carry titles and genres.

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

Bad input gets a 4xx with a readable ``detail``: 404 for an unknown id in the path, 422 for a
malformed body, an out-of-range ``k`` or rating, or unknown ids in a body, 409 for an online
update the model cannot take (or a read-only service). Endpoints are plain functions, run by
the server's thread pool; they share the one model read-only and an online update takes it
alone (:class:`~mfutils.serving.recommender.ReadWriteLock`). Several ``--workers`` processes
each hold their own copy, so the service is then read-only.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

import mfutils
from mfutils.serving.artifact import Artifact
from mfutils.serving.online import UnsupportedError
from mfutils.serving.recommender import Ranking, Recommender, UnknownIdError

MAX_BATCH = 1000  # users per POST /recommendations, ratings per request
ARTIFACT_ENV = "MFUTILS_ARTIFACT"
READ_ONLY_ENV = "MFUTILS_READ_ONLY"
SAVE_DIR_ENV = "MFUTILS_SAVE_DIR"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RankedItem(BaseModel):
    item: int
    title: str | None
    genres: list[str]
    score: float


class Recommendations(BaseModel):
    user: int | None = Field(description="raw user id; null for a new user")
    k: int
    method: str = Field(description="model, fold-in, asymmetric-svd, popularity, item-factors "
                                    "or co-occurrence")
    items: list[RankedItem]


class UsersRequest(_Body):
    users: list[int] = Field(min_length=1, max_length=MAX_BATCH, description="raw user ids")
    k: int = Field(10, ge=1)
    exclude_seen: bool = True


class RatedItem(_Body):
    item: int
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
    ratings: list[NewRating] = Field(min_length=1, max_length=MAX_BATCH)
    update: Literal["users", "both"] = Field(
        "users", description="users: re-solve the raters (and items new to the model); "
                             "both: also re-solve every rated item")
    allow_new: bool = Field(True, description="add unknown raw ids as new users / items")


def create_app(
    artifact: Recommender | Artifact | str | Path, *, device: str | None = None,
    read_only: bool = False, save_dir: str | Path | None = None,
) -> FastAPI:
    """The FastAPI app serving ``artifact``.

    Parameters
    ----------
    artifact : Recommender, Artifact, str or Path
        What to serve; a path is loaded (and checked) with :meth:`Artifact.load`.
    device : str, optional
        Where the model computes (``cpu``, ``cuda``); default :func:`mfutils.get_device`.
    read_only : bool
        Refuse online updates (409), e.g. when several worker processes serve copies.
    save_dir : str or Path, optional
        Where ``POST /artifact/save`` writes the updated model; without it that endpoint
        answers 409.
    """
    rec = artifact if isinstance(artifact, Recommender) else Recommender(artifact, device=device)
    info = rec.artifact.info
    app = FastAPI(title="mfutils recommendations", version=mfutils.__version__,
                  description=f"{info['model']['name']} trained on {info['data']['dataset']} "
                              f"({info['data']['split']}); raw MovieLens ids in and out.")
    app.state.recommender = rec

    @app.exception_handler(RequestValidationError)
    def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content={
            "detail": "; ".join(_readable(error) for error in exc.errors()),
            "errors": jsonable_encoder(exc.errors(), custom_encoder={Exception: str})})

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "model": info["model"]["name"],
                "version": rec.artifact.info.get("version")}

    @app.get("/metadata")
    def metadata() -> dict[str, Any]:
        return jsonable_encoder({**rec.metadata(), "read_only": read_only,
                                 "save_dir": None if save_dir is None else str(save_dir)})

    @app.get("/users/{user}/recommendations", response_model=Recommendations)
    def user_recommendations(user: int, k: Annotated[int, Query(ge=1)] = 10,
                             exclude_seen: bool = True) -> dict[str, Any]:
        with _client_errors(unknown_status=404):
            ranking = rec.recommend([user], k, exclude_seen=exclude_seen)[0]
        return _payload(rec, ranking, user, k)

    @app.post("/recommendations")
    def recommendations(body: UsersRequest) -> dict[str, list[Recommendations]]:
        with _client_errors(unknown_status=422):
            rankings = rec.recommend(body.users, body.k, exclude_seen=body.exclude_seen)
        return {"results": [_payload(rec, ranking, user, body.k)
                            for user, ranking in zip(body.users, rankings, strict=True)]}

    @app.post("/recommendations/new-user", response_model=Recommendations)
    def new_user(body: NewUserRequest) -> dict[str, Any]:
        with _client_errors(unknown_status=422):
            ranking = rec.recommend_new_user([r.item for r in body.ratings],
                                             [r.rating for r in body.ratings], body.k,
                                             exclude_rated=body.exclude_rated)
        return _payload(rec, ranking, None, body.k)

    @app.get("/items/{item}/similar")
    def similar(item: int, k: Annotated[int, Query(ge=1)] = 10) -> dict[str, Any]:
        with _client_errors(unknown_status=404):
            ranking = rec.similar_items(item, k)
        return {"item": item, "k": k, "method": ranking.method, "items": rec.describe(ranking)}

    @app.post("/ratings")
    def ratings(body: RatingsRequest) -> dict[str, Any]:
        if read_only:
            raise HTTPException(409, "this service is read-only (started with several workers "
                                     "or --read-only): online updates are refused")
        with _client_errors(unknown_status=422):
            report = rec.add_ratings([r.user for r in body.ratings],
                                     [r.item for r in body.ratings],
                                     [r.rating for r in body.ratings], update=body.update,
                                     allow_new=body.allow_new)
        return {**report, "version": rec.artifact.info.get("version"), "unsaved_updates": True}

    @app.post("/artifact/save")
    def save() -> dict[str, Any]:
        if save_dir is None:
            raise HTTPException(409, "no save directory configured: start the service with "
                                     "--save-dir DIR (create_app(save_dir=...)) to save")
        saved = rec.save(save_dir, overwrite=True)
        return {"path": str(save_dir), "version": saved.info["version"],
                "created_at": saved.info.get("created_at")}

    return app


def create_app_from_env() -> FastAPI:
    """App factory for ``uvicorn --factory`` and multi-worker serving: the artifact path in
    ``$MFUTILS_ARTIFACT``, read-only if ``$MFUTILS_READ_ONLY`` is ``1``, device from
    ``$MFUTILS_DEVICE``, save directory from ``$MFUTILS_SAVE_DIR``."""
    path = os.environ.get(ARTIFACT_ENV)
    if not path:
        raise RuntimeError(f"set ${ARTIFACT_ENV} to the artifact directory to serve")
    return create_app(path, read_only=os.environ.get(READ_ONLY_ENV) == "1",
                      save_dir=os.environ.get(SAVE_DIR_ENV) or None)


@contextmanager
def _client_errors(*, unknown_status: int) -> Iterator[None]:
    """Bad input found past pydantic's checks becomes a 4xx with the error's message."""
    try:
        yield
    except UnknownIdError as err:
        hint = (": POST their ratings to /recommendations/new-user instead"
                if err.kind == "user" and unknown_status == 404 else "")
        raise HTTPException(unknown_status, f"{err}{hint}") from err
    except UnsupportedError as err:
        raise HTTPException(409, str(err)) from err
    except OverflowError as err:
        raise HTTPException(422, f"an id is out of range (ids are 64-bit integers): {err}"
                            ) from err
    except ValueError as err:
        raise HTTPException(422, str(err)) from err


def _payload(rec: Recommender, ranking: Ranking, user: int | None, k: int) -> dict[str, Any]:
    return {"user": user, "k": k, "method": ranking.method, "items": rec.describe(ranking)}


def _readable(error: dict[str, Any]) -> str:
    """``"body.ratings.0.rating: Input should be a valid number"`` from a pydantic error."""
    loc = ".".join(str(part) for part in error.get("loc", ()))
    message = error.get("msg", "invalid")
    context = error.get("ctx", {}).get("error")
    return f"{loc}: {message}" + (f" ({context})" if context else "")
