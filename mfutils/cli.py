"""``mfutils``: train, evaluate, query and serve any registered model from the command line.

    mfutils models                                   # registered models and their options
    mfutils tune BiasedMF-SGD --split u1 --trials 30 --out presets/mf-sgd.json
    mfutils train BiasedMF --param method=sgd --split u1 --out artifacts/mf
    mfutils train BiasedMF-SGD --preset presets/mf-sgd.json --out artifacts/mf-tuned
    mfutils train SVDpp --dataset ml-1m --split random --param n_factors=50 --out artifacts/svdpp
    mfutils evaluate artifacts/mf --split u1
    mfutils recommend artifacts/mf --user 1 -k 10
    mfutils recommend artifacts/mf --rated 50=5 172=5 181=4   # a new user, from ratings
    mfutils recommend artifacts/mf --similar-to 50
    mfutils serve artifacts/mf --host 127.0.0.1 --port 8000
    mfutils upgrade old-artifact --out artifacts/mf-v2        # format 1 (pickle) -> current

``tune`` searches a model's options with Optuna on a validation part of the chosen split's
*training* part (:mod:`mfutils.tuning`; the test part is never read) and writes a preset JSON
that ``train --preset`` reads (``-p`` options override it). ``train`` writes a versioned
artifact directory (:mod:`mfutils.serving.artifact`); ``serve``
starts the FastAPI service of :mod:`mfutils.serving.service` on it (the ``serve`` extra:
``pip install -e '.[serve]'``). An error ends in one line (``--debug`` shows the traceback).
The same code runs in the notebooks: ``load_movielens``, the
package's splits, ``model.fit`` and :mod:`mfutils.metrics` (see
:mod:`mfutils.serving.pipeline`). Also runnable as ``python -m mfutils.cli``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from mfutils.data.movielens import DATASETS, load_movielens
from mfutils.data.own_data import load_ratings, parse_columns
from mfutils.models import registry
from mfutils.results import to_markdown
from mfutils.serving import pipeline
from mfutils.serving.artifact import FORMAT_VERSION, Artifact, upgrade_artifact
from mfutils.serving.recommender import Recommender, UnknownIdError
from mfutils.train import TrainingFailed


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mfutils`` command; returns the exit status.

    Every anticipated failure -- a malformed or unreadable data file, a refused artifact, a
    failed download, a diverged fit, a bad parameter, Ctrl-C -- ends in one line on stderr,
    ``mfutils COMMAND: error: ...``, and a non-zero exit (2; 130 for Ctrl-C). ``--debug``
    shows the traceback instead. Anything else is a bug and keeps its traceback.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if getattr(args, "debug", False):
        return args.run(args, parser)
    try:
        return args.run(args, parser)
    except KeyboardInterrupt:
        print(f"mfutils {args.command}: interrupted", file=sys.stderr)
        return 130
    except ANTICIPATED as err:
        parser.exit(2, f"mfutils {args.command}: error: {_one_line(err)}\n")
    return 0


# The errors a user causes (data, files, downloads, artifacts, options, divergence): each
# carries a message naming the file, line or option, and becomes one line on stderr.
ANTICIPATED = (ValueError, OSError, OverflowError, TrainingFailed, UnknownIdError)


def _one_line(err: BaseException) -> str:
    """The error's message on one line (an OS error's names its file and errno)."""
    return " ".join(str(err).split()) or type(err).__name__


# ---------------------------------------------------------------------- commands
def _models(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    for name, cls in pipeline.registered_models(kind=None).items():
        options = ", ".join(f"{k}={v!r}" for k, v in registry.constructor_options(cls).items())
        print(f"{name} ({cls.kind}): {options}")
    return 0


def _train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    sub = parser.subparsers["train"]
    preset: dict = {}
    if args.preset is not None:
        from mfutils.tuning import load_preset  # Optuna loads only for the commands that tune

        preset_model, preset = load_preset(args.preset)
        args.model = args.model or preset_model
        if args.model.lower() != preset_model.lower():
            sub.error(f"--preset {args.preset} is for {preset_model}, not {args.model}")
    if args.model is None:
        sub.error("name a MODEL or pass --preset")
    cls, _ = pipeline.resolve_model(args.model)
    params = {**preset, **pipeline.parse_params(cls, args.param)}
    pipeline.build_model(args.model, params, seed=args.seed, device=args.device)
    if args.out.exists() and not args.overwrite:
        sub.error(f"--out {args.out} exists; pass --overwrite or choose a new directory")
    data = _load(args, sub)
    artifact = pipeline.train_artifact(
        args.model,
        data,
        params=params,
        split=args.split,
        seed=args.seed,
        device=args.device,
        topk=not args.no_topk,
    )
    artifact.save(args.out, overwrite=args.overwrite)
    _print_metrics(artifact)
    for warning in artifact.info.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    print(f"wrote {args.out}")
    return 0


def _tune(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from mfutils.tuning import TUNABLE_MODELS, tune  # Optuna loads only when tuning

    sub = parser.subparsers["tune"]
    if args.model not in TUNABLE_MODELS:
        sub.error(f"cannot tune {args.model!r}; tunable models: {', '.join(TUNABLE_MODELS)}")
    if (args.storage is None) != (args.study_name is None):
        sub.error("--storage and --study-name go together (a resumable study needs both)")
    data = _load(args, sub)
    train, _, protocol = pipeline.make_split(data, args.split, seed=args.seed)
    # Only the training part goes on: tune() carves its validation part from it.
    result = tune(
        args.model,
        train,
        trials=args.trials,
        seed=args.seed,
        metric=args.metric,
        valid_fraction=args.valid_fraction,
        storage=args.storage,
        study_name=args.study_name,
        timeout=args.timeout,
        progress=not args.quiet,
        device=args.device,
    )
    result = dataclasses.replace(result, dataset=data.name, split=args.split)
    result.save(args.out)
    options = ", ".join(f"{k}={v!r}" for k, v in result.options.items())
    print(
        f"{args.model} on {data.name}, training part of {protocol}; "
        f"{result.protocol}, {result.n_trials} trials"
    )
    print(f"best validation {result.metric} {result.value:.4f}: {options}")
    print(f"wrote {args.out}")
    return 0


def _evaluate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    sub = parser.subparsers["evaluate"]
    artifact = Artifact.load(args.artifact, device=args.device)
    info = artifact.info
    args.dataset = args.dataset or info["data"]["dataset"]
    args.split = args.split or info["data"]["split"]
    data = _load(args, sub)
    pipeline.check_same_ids(artifact.model, data)
    _, test, protocol = pipeline.make_split(data, args.split, seed=args.seed)
    if test is None:
        sub.error("--split full has no test part; choose u1..u5, random, per-user or temporal")
    trained_on = info["data"]["split"]
    if trained_on != args.split or info.get("version", 1) > 1:
        print(
            f"warning: the artifact was trained on split {trained_on!r} (version "
            f"{info.get('version', 1)}); test ratings of {args.split!r} may be in its "
            "training data, so these numbers are not held-out",
            file=sys.stderr,
        )
    metrics = pipeline.evaluate(artifact.model, test, topk=not args.no_topk)
    print(f"{info['model']['name']} on {data.name}, {protocol}")
    print(to_markdown(_metric_table(metrics)))
    return 0


def _recommend(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:

    sub = parser.subparsers["recommend"]
    rec = Recommender(args.artifact, device=args.device)
    if args.user is not None:
        ranking = rec.recommend([args.user], args.k, exclude_seen=not args.include_seen)[0]
        heading = f"top-{args.k} for user {args.user}"
    elif args.rated:
        items, ratings = _rated(args.rated, sub)
        ranking = rec.recommend_new_user(items, ratings, args.k)
        heading = f"top-{args.k} for a new user who rated {len(items)} items"
    else:
        ranking = rec.similar_items(args.similar_to, args.k)
        heading = f"{args.k} items most similar to item {args.similar_to}"
    if args.json:
        print(json.dumps({"method": ranking.method, "items": rec.describe(ranking)}, indent=2))
    else:
        print(f"{heading} ({rec.artifact.info['model']['name']}, method: {ranking.method})")
        print(to_markdown(rec.frame(ranking), floatfmt=".3f"))
    return 0


def _upgrade(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    upgrade_artifact(args.artifact, args.out, overwrite=args.overwrite)
    print(f"wrote {args.out} (format version {FORMAT_VERSION})")
    return 0


def _serve(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    sub = parser.subparsers["serve"]
    try:
        import uvicorn

        from mfutils.serving import service
    except ImportError as err:
        sub.error(f"serving needs the 'serve' extra ({err}): pip install -e '.[serve]'")
    hosts = service.serving_hosts(args.host, args.allowed_hosts)
    token = args.token or os.environ.get(service.TOKEN_ENV) or None
    workers = args.workers > 1  # each process loads its own copy: no online updates then
    if workers and (args.allow_updates or token):
        print(
            "warning: several --workers serve read-only: --allow-updates and the token are ignored",
            file=sys.stderr,
        )
    # with workers too: fail here, clearly (main() reports it), not in every worker
    app = service.create_app(
        args.artifact,
        device="cpu" if workers else args.device,
        read_only=args.read_only or workers,
        save_dir=args.save_dir,
        allow_updates=args.allow_updates,
        token=token,
        max_body_bytes=args.max_body_bytes,
        max_new_users=args.max_new_users,
        max_new_items=args.max_new_items,
        allowed_hosts=hosts,
    )
    if workers:
        os.environ.update(
            {
                service.ARTIFACT_ENV: str(args.artifact),
                service.READ_ONLY_ENV: "1",
                service.MAX_BODY_ENV: str(args.max_body_bytes),
                service.HOSTS_ENV: ",".join(hosts),
            }
        )
        if args.device:
            os.environ["MFUTILS_DEVICE"] = args.device
        uvicorn.run(
            "mfutils.serving.service:create_app_from_env",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_level=args.log_level,
            access_log=args.access_log,
        )
        return 0
    uvicorn.run(
        app, host=args.host, port=args.port, log_level=args.log_level, access_log=args.access_log
    )
    return 0


# ---------------------------------------------------------------------- helpers
def _load(args: argparse.Namespace, sub: argparse.ArgumentParser):
    """The data a command runs on: ``--ratings FILE`` (own data) or a MovieLens release;
    resolves the default ``--split`` (``u1`` on ML-100K, else ``random``)."""
    if args.ratings is not None:
        try:
            columns = parse_columns(args.columns or "")
        except ValueError as err:
            sub.error(str(err))
        data = load_ratings(
            args.ratings, **columns, sep=args.sep, users=args.users, items=args.items, progress=True
        )
    else:
        if args.columns or args.users or args.items:
            sub.error("--columns, --users and --items describe a --ratings FILE")
        if args.dataset not in DATASETS:
            sub.error(
                f"unknown dataset {args.dataset!r}; choose one of {', '.join(DATASETS)}"
                " or pass your own data with --ratings FILE"
            )
        data = load_movielens(args.dataset, data_dir=args.data_dir, download=not args.no_download)
    if args.split is None:
        args.split = "u1" if data.fold is not None else "random"
    return data


def _rated(pairs: list[str], sub: argparse.ArgumentParser) -> tuple[list[str], list[float]]:
    items, ratings = [], []
    for pair in pairs:
        item, sep, rating = pair.rpartition("=")
        try:
            ratings.append(float(rating))
            items.append(item)
        except ValueError:
            sep = ""
        if not sep or not item:
            sub.error(f"--rated {pair!r} is not of the form ITEM=RATING (e.g. 50=5)")
    return items, ratings


def _metric_table(metrics: dict[str, float]):
    import pandas as pd

    return pd.DataFrame({"metric": list(metrics), "value": [float(v) for v in metrics.values()]})


def _print_metrics(artifact: Artifact) -> None:
    info = artifact.info
    print(f"{info['model']['name']} on {info['data']['dataset']}, {info['protocol']}")
    if info["metrics"]:
        print(to_markdown(_metric_table(info["metrics"])))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mfutils", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parser.subparsers = {}

    def command(name: str, run, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(run=run)
        sub.add_argument(
            "--debug",
            action="store_true",
            help="show the traceback of an error instead of its one-line message",
        )
        parser.subparsers[name] = sub
        return sub

    def data_options(sub: argparse.ArgumentParser, default: str | None) -> None:
        sub.add_argument(
            "--dataset",
            default=default,
            metavar="NAME",
            help=f"MovieLens release: {', '.join(DATASETS)}"
            + (f" (default {default})" if default else " (default: the artifact's)"),
        )
        sub.add_argument(
            "--ratings",
            type=Path,
            default=None,
            metavar="FILE",
            help="your own ratings or events instead of a release: CSV, TSV or "
            "Parquet (.gz read transparently); without a rating column "
            "the rows are events, for ranking models",
        )
        sub.add_argument(
            "--columns",
            default=None,
            metavar="ROLE=NAME,...",
            help="column names in --ratings, e.g. user=visitor,item=product,"
            "rating=stars,timestamp=time (default: user/user_id/userId, "
            "item/item_id/movieId, rating, timestamp)",
        )
        sub.add_argument("--sep", default=None, help="field separator of a text --ratings")
        sub.add_argument(
            "--users",
            type=Path,
            default=None,
            metavar="FILE",
            help="a user side table for --ratings (id, age, gender, ...)",
        )
        sub.add_argument(
            "--items",
            type=Path,
            default=None,
            metavar="FILE",
            help="an item side table for --ratings (id, title, genres, year)",
        )
        sub.add_argument(
            "--data-dir",
            type=Path,
            default=None,
            help="folder holding the release (default $MFUTILS_DATA_DIR)",
        )
        sub.add_argument(
            "--no-download",
            action="store_true",
            help="fail instead of downloading a missing release",
        )
        sub.add_argument(
            "--split",
            default=None,
            choices=pipeline.SPLITS,
            help="train/test split (default u1 on ML-100K, else random; 'full' "
            "trains on every rating)",
        )
        sub.add_argument("--seed", type=int, default=0, help="seed of model and split")
        sub.add_argument(
            "--no-topk",
            action="store_true",
            help="skip recall@10 / ndcg@10 (slow for neighbourhood models)",
        )

    command("models", _models, "list the registered models and their options")

    tune = command(
        "tune",
        _tune,
        "tune a model's options on a validation part of a split's "
        "training part (Optuna), write a preset",
    )
    tune.add_argument("model", help="a series model, e.g. BiasedMF-SGD, SVDpp, FM-side, FM-ids")
    data_options(tune, "ml-100k")
    tune.add_argument("--trials", type=int, required=True, help="trials in total")
    tune.add_argument("--out", type=Path, required=True, help="preset JSON to write")
    tune.add_argument("--metric", default="rmse", choices=("rmse", "mae"))
    tune.add_argument(
        "--valid-fraction",
        type=float,
        default=0.1,
        help="share of the training part held out for validation (default 0.1)",
    )
    tune.add_argument(
        "--storage",
        default=None,
        help="Optuna storage, e.g. sqlite:///tune.db: resume an interrupted study",
    )
    tune.add_argument("--study-name", default=None, help="study name within --storage")
    tune.add_argument("--timeout", type=float, default=None, help="seconds; stop after")
    tune.add_argument("--quiet", action="store_true", help="no progress lines")
    tune.add_argument("--device", default=None, help="cpu, cuda, mps (default: auto)")

    train = command("train", _train, "train a model, evaluate it, write an artifact")
    train.add_argument(
        "model",
        nargs="?",
        default=None,
        help="a registered model (see `mfutils models`), e.g. BiasedMF or "
        "BiasedMF-SGD (default: the --preset's)",
    )
    train.add_argument(
        "--preset",
        type=Path,
        default=None,
        help="options from a preset JSON of `mfutils tune` (-p overrides them)",
    )
    train.add_argument(
        "--param",
        "-p",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a model option, repeatable (e.g. -p n_factors=50 -p reg=0.1)",
    )
    data_options(train, "ml-100k")
    train.add_argument("--out", type=Path, required=True, help="artifact directory to write")
    train.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    train.add_argument("--device", default=None, help="cpu, cuda, mps (default: auto)")

    evaluate = command("evaluate", _evaluate, "evaluate an artifact on a split's test part")
    evaluate.add_argument("artifact", type=Path)
    data_options(evaluate, None)
    evaluate.add_argument("--device", default=None)

    recommend = command("recommend", _recommend, "print recommendations from an artifact")
    recommend.add_argument("artifact", type=Path)
    query = recommend.add_mutually_exclusive_group(required=True)
    query.add_argument("--user", help="raw id of a known user")
    query.add_argument(
        "--rated",
        nargs="+",
        metavar="ITEM=RATING",
        help="a new user's ratings, e.g. --rated 50=5 172=4",
    )
    query.add_argument("--similar-to", metavar="ITEM", help="raw item id")
    recommend.add_argument("-k", type=int, default=10, help="list length (default 10)")
    recommend.add_argument(
        "--include-seen", action="store_true", help="keep items the user rated in training"
    )
    recommend.add_argument("--json", action="store_true", help="print JSON instead of a table")
    recommend.add_argument("--device", default=None)

    upgrade = command(
        "upgrade",
        _upgrade,
        "convert an artifact of format version 1 (pickled "
        "model.pt) to the current, code-free format",
    )
    upgrade.add_argument("artifact", type=Path)
    upgrade.add_argument("--out", type=Path, required=True, help="artifact directory to write")
    upgrade.add_argument("--overwrite", action="store_true", help="replace an existing --out")

    serve = command("serve", _serve, "serve an artifact over HTTP (FastAPI + uvicorn)")
    serve.add_argument("artifact", type=Path)
    serve.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument(
        "--workers", type=int, default=1, help="processes; more than 1 makes the service read-only"
    )
    serve.add_argument("--device", default=None, help="cpu, cuda, mps (default: auto)")
    serve.add_argument("--read-only", action="store_true", help="refuse online updates")
    serve.add_argument(
        "--allow-updates",
        action="store_true",
        help="take POST /ratings and /artifact/save from anyone who can reach "
        "the service (default: refuse them)",
    )
    serve.add_argument(
        "--token",
        default=None,
        help="take writes only with 'Authorization: Bearer TOKEN' (implies "
        "--allow-updates; default $MFUTILS_TOKEN, which ps does not show)",
    )
    serve.add_argument(
        "--save-dir",
        type=Path,
        default=None,
        help="where POST /artifact/save writes the updated model (outside the "
        "served artifact's folder)",
    )
    serve.add_argument(
        "--max-body-bytes",
        type=int,
        default=256 * 1024,
        metavar="N",
        help="larger request bodies get a 413 (default 262144)",
    )
    serve.add_argument(
        "--max-new-users",
        type=int,
        default=1000,
        metavar="N",
        help="new users online updates may add since start-up (default 1000)",
    )
    serve.add_argument(
        "--max-new-items",
        type=int,
        default=1000,
        metavar="N",
        help="new items online updates may add since start-up (default 1000)",
    )
    serve.add_argument(
        "--allowed-hosts",
        default=[],
        metavar="HOST,...",
        type=lambda value: [host for host in value.split(",") if host],
        help="comma-separated Host names to serve besides loopback and a "
        "specific --host (against DNS rebinding); '*' allows any",
    )
    serve.add_argument("--log-level", default="info", help="uvicorn log level")
    serve.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="log every request (default off)",
    )
    return parser


if __name__ == "__main__":
    raise SystemExit(main())
