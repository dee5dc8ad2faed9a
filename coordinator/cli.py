"""`render-coordinator`: run the farm's coordinator, and administer it.

`serve` runs the gRPC service. `epoch close` and `ledger check` act on the
coordinator that owns a data dir: through its local admin socket when it is
running, directly on its database and chain when it is stopped. `doctor` lists
the records the money path quarantined, straight from the database. `migrate`
brings a database's schema to this release (`serve` does it on start too).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import ctypes.util
import json
import logging
import math
import os
import sys
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
from solders.keypair import Keypair

from coordinator.api.rate_limit import DEFAULT_BURST, DEFAULT_CALLS_PER_SECOND
from coordinator.payments.bonds import BondPolicy
from coordinator.server import CoordinatorConfig, admin_socket_path, serve
from coordinator.storage.cluster import DifferentChain
from coordinator.storage.proof import PEER_AUDIT_RATE
from frameproof import config
from frameproof.cli.argv import OneLineParser, options_after_command
from frameproof.client import FarmClient
from frameproof.v1 import farm_pb2 as pb

SAVED_CONFIG = "coordinator.json"  # what `serve` ran with, for the offline admin commands
M_ARENA_MAX = -8  # glibc's mallopt parameter number
MALLOC_ARENAS = 2


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # `render-node --coordinator X run` works like `render-node run --coordinator X`.
    argv = options_after_command(parser, sys.argv[1:] if argv is None else argv)
    role = None
    if config.command_of(argv) == "serve":
        role = config.coordinator_role(config.subcommand_parsers(parser)["serve"])
    args = config.parse_args(parser, argv, role)
    if args.command == "serve":
        return _serve(args, parser)
    if args.command == "epoch":
        return _epoch_close(args)
    if args.command == "doctor":
        return _doctor(args)
    if args.command == "migrate":
        return _migrate(args)
    return _ledger_check(args)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="render-coordinator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    _serve_arguments(commands.add_parser("serve", help="serve the gRPC API until SIGTERM"))
    epoch = commands.add_parser("epoch", help="epochs of node payouts")
    epoch_commands = epoch.add_subparsers(dest="action", required=True)
    _admin_arguments(epoch_commands.add_parser("close", help="mint the open epoch's emission "
                                               "to node operators now"))
    ledger = commands.add_parser("ledger", help="the payments ledger")
    ledger_commands = ledger.add_subparsers(dest="action", required=True)
    _admin_arguments(ledger_commands.add_parser("check", help="prove the ledger and the chain "
                                                "agree; exit 1 when they do not"))
    doctor = commands.add_parser("doctor", help="list the records quarantined out of the "
                                 "money path; exit 1 when there are any")
    doctor.add_argument("--data-dir", type=Path, default=Path(".farm"),
                        help="the coordinator's data dir (default .farm)")
    doctor.add_argument("--json", action="store_true", help="print JSON instead of text")
    doctor.add_argument("--release", nargs=2, metavar=("KIND", "KEY"),
                        help="let the next sweep try this record again (after fixing it)")
    migrate = commands.add_parser("migrate", help="upgrade the database's schema to this "
                                  "release (serve does it on start)")
    migrate.add_argument("--data-dir", type=Path, default=Path(".farm"),
                         help="the farm's SQLite database, or the --db its coordinator ran with")
    migrate.add_argument("--db", type=_database_url,
                         help="SQLAlchemy URL (default: the data dir's database)")
    return parser


def _database_url(text: str) -> str:
    from coordinator.storage.database import database_url

    return database_url(text)


def _fraction(text: str) -> float:
    """argparse type: a number in [0, 1]."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def _positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not at least 1")
    return value


def _non_negative(text: str) -> float:
    """argparse type: a finite number >= 0."""
    value = float(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number >= 0")
    return value


def _at_least_one(text: str) -> float:
    """argparse type: a finite number >= 1."""
    value = _non_negative(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is less than 1")
    return value


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is less than 1")
    return value


BOND_FLAGS = {  # serve flag -> BondPolicy field
    "min_bond": "min_bond_tokens", "new_node_leases": "new_node_leases",
    "new_node_frames_per_job": "new_node_frames_per_job", "proven_after": "proven_after",
    "unbond_cooldown_seconds": "unbond_cooldown_seconds", "slash_share": "slash_share",
    "slash_to_creators": "slash_to_creators",
}


DECIMAL_FIELDS = ("min_bond_tokens", "slash_share", "slash_to_creators")


def bond_policy(values: Mapping[str, Any]) -> BondPolicy:
    """The serve flags (or the config `serve` saved) as a BondPolicy; absent ones default."""
    given: dict[str, Any] = {}
    for flag, name in BOND_FLAGS.items():
        value = values.get(flag)
        if value is not None:
            given[name] = Decimal(str(value)) if name in DECIMAL_FIELDS else value
    return BondPolicy(**given)


def _serve_arguments(run: argparse.ArgumentParser) -> None:
    run.add_argument("--config", type=Path, metavar="FILE", help="a TOML file of these "
                     "settings (docs/CONFIG.md); variables and flags override it")
    run.add_argument("--listen", default="127.0.0.1:50051", help="HOST:PORT (port 0: any)")
    run.add_argument("--data-dir", type=Path, default=Path(".farm"),
                     help="database, blobs, scenes and the embedded chain live here")
    run.add_argument("--db", type=_database_url,
                     help="SQLAlchemy URL, e.g. postgresql://user@host/db "
                          "(default: SQLite in the data dir)")
    run.add_argument("--blobs-dir", type=Path,
                     help="blob store folder (default: DATA_DIR/blobs); coordinators sharing "
                     "one PostgreSQL database share this folder too (docs/DEPLOY.md)")
    run.add_argument("--lease-seconds", type=float, default=60.0,
                     help="a node that stops heartbeating loses its task after this long")
    run.add_argument("--heartbeat-seconds", type=float, default=10.0,
                     help="how often nodes report progress (at most a third of the lease)")
    run.add_argument("--max-attempts", type=int, default=3,
                     help="failed leases before a frame is given up")
    run.add_argument("--tls-cert", type=Path, help="PEM certificate: serve TLS instead of "
                     "plaintext (with --tls-key)")
    run.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    run.add_argument("--admin-pubkey", action="append", default=[],
                     help="a public key with admin rights (repeatable); the data dir's own "
                          "admin-keypair.json and the local admin.sock always have them")
    run.add_argument("--no-verifier", action="store_true",
                     help="do not start a verifier beside the coordinator")
    run.add_argument("--verifier-threads", type=int, default=0,
                     help="render threads of the built-in verifier (0: all cores)")
    run.add_argument("--verifier-workers", type=_positive_int, default=1,
                     help="checks the built-in verifier runs at once, each in its own Blender "
                          "(default 1; more keep small jobs moving behind slow checks)")
    run.add_argument("--verifier-pubkey", action="append", default=[],
                     help="a public key allowed to run render-verifier (repeatable)")
    run.add_argument("--peer-audit-rate", type=_fraction, default=PEER_AUDIT_RATE,
                     help="share of Tier 1 peers' passes a coordinator verifier checks again "
                     f"(default {PEER_AUDIT_RATE})")
    run.add_argument("--rate-limit", type=_non_negative, default=DEFAULT_CALLS_PER_SECOND,
                     metavar="CALLS_PER_S", help="calls per second allowed to each key, admins "
                     f"and verifiers excepted (default {DEFAULT_CALLS_PER_SECOND:g}; 0: no limit)")
    run.add_argument("--rate-burst", type=_at_least_one, default=DEFAULT_BURST, metavar="CALLS",
                     help=f"calls a key may make at once above its rate (default "
                     f"{DEFAULT_BURST:g})")
    run.add_argument("--cluster", help="devnet, testnet, mainnet-beta, localnet or an RPC URL "
                     "(default: the embedded chain in the data dir)")
    run.add_argument("--treasury-keypair", type=Path,
                     help="RPC clusters: the mint authority's Solana keypair file")
    run.add_argument("--mint", help="RPC clusters: the farm token's mint address")
    run.add_argument("--epoch-seconds", type=float, default=86_400.0,
                     help="length of a payout epoch (default one day)")
    policy = BondPolicy()
    run.add_argument("--min-bond", type=_non_negative, default=float(policy.min_bond_tokens),
                     metavar="TOKENS", help="bond a node needs, with a verified record, to "
                     f"take unbounded work (default {policy.min_bond_tokens})")
    run.add_argument("--new-node-leases", type=_positive_int, default=policy.new_node_leases,
                     help="leases in flight for a node without bond or verified record "
                     f"(default {policy.new_node_leases})")
    run.add_argument("--new-node-frames-per-job", type=_positive_int,
                     default=policy.new_node_frames_per_job,
                     help="frames of one job such a node may take "
                     f"(default {policy.new_node_frames_per_job})")
    run.add_argument("--proven-after", type=int, default=policy.proven_after,
                     metavar="FRAMES", help="frames verified in a row that make a verified "
                     f"record (default {policy.proven_after})")
    run.add_argument("--unbond-cooldown-seconds", type=_non_negative,
                     default=policy.unbond_cooldown_seconds, help="from `render-node unbond` "
                     f"to the bond's return (default {policy.unbond_cooldown_seconds:g})")
    run.add_argument("--slash-share", type=_fraction, default=float(policy.slash_share),
                     help="part of the bond a node quarantined by Proof-of-Render loses "
                     f"(default {policy.slash_share})")
    run.add_argument("--slash-to-creators", type=_fraction,
                     default=float(policy.slash_to_creators), help="part of a slash paid to "
                     f"the cheated creators; the rest to the treasury "
                     f"(default {policy.slash_to_creators})")
    run.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    run.add_argument("--http", metavar="HOST:PORT", help="serve HTTP here: /metrics in the "
                     "Prometheus format and the read-only web dashboard, no login: keep it on "
                     "loopback (default: no HTTP)")
    run.add_argument("--blob-http", metavar="HOST:PORT", help="serve scene and frame blobs "
                     "over signed HTTP here, the fast path for big transfers (default: "
                     "--listen's host, a port the OS picks; clients learn it over gRPC)")
    run.add_argument("--no-blob-http", action="store_true", help="blobs only over the gRPC "
                     "streams (slower; for networks that allow the one port only)")
    run.add_argument("--no-spare-blender", action="store_true",
                     help="keep no Blender child started ahead of need (saves its ~260 MB; "
                     "each new scene's inspection and probe then wait 0.5-2 s for Blender "
                     "to start)")
    run.add_argument("--machine-score", type=_positive_score, metavar="SCORE",
                     help="this machine's benchmark score, if already measured (default: "
                     "measure it once with the reference scene and cache it in the data dir)")


MACHINE_SCORE_ENV = "RENDER_COORDINATOR_MACHINE_SCORE"  # what frameproof.config derives


def _positive_score(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and 0 < value <= 1000):
        raise argparse.ArgumentTypeError("a benchmark score is a number in (0, 1000]")
    return value


def _admin_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, default=Path(".farm"),
                        help="the coordinator's data dir (default .farm)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def _serve(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    limit_malloc_arenas()
    config = CoordinatorConfig(
        listen=args.listen,
        data_dir=args.data_dir,
        db_url=args.db,
        blobs_dir=args.blobs_dir,
        lease_seconds=args.lease_seconds,
        heartbeat_seconds=min(args.heartbeat_seconds, args.lease_seconds / 3),
        max_attempts=args.max_attempts,
        admins=tuple(args.admin_pubkey),
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        verifiers=tuple(args.verifier_pubkey),
        peer_audit_rate=args.peer_audit_rate,
        calls_per_second=args.rate_limit,
        call_burst=args.rate_burst,
        run_verifier=not args.no_verifier,
        verifier_threads=args.verifier_threads,
        verifier_workers=args.verifier_workers,
        cluster=args.cluster,
        treasury_keypair=args.treasury_keypair,
        mint=args.mint,
        epoch_seconds=args.epoch_seconds,
        http_listen=args.http,
        blob_http_listen=None if args.no_blob_http else (args.blob_http or ""),
        machine_score=args.machine_score,
        spare_blender=not args.no_spare_blender,
        bonds=bond_policy(vars(args)),
    )
    args.data_dir.mkdir(parents=True, exist_ok=True)
    (args.data_dir / SAVED_CONFIG).write_text(json.dumps({
        "db_url": args.db, "cluster": args.cluster, "mint": args.mint,
        "treasury_keypair": str(args.treasury_keypair) if args.treasury_keypair else None,
        "epoch_seconds": args.epoch_seconds,
        "bonds": {flag: getattr(args, flag) for flag in BOND_FLAGS},
    }, indent=2))
    try:
        asyncio.run(serve(config))
    except (OSError, DifferentChain) as error:
        parser.exit(2, f"render-coordinator: {error}\n")
    return 0


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas before the server starts its threads.

    By default glibc gives threads up to 8 arenas per core, and each keeps the memory its
    thread freed: in the load run (bench/load_bench.py) the coordinator's RSS carried ~20 MiB
    of such free memory and crept up with it; with 2 arenas it held ~5 MiB, at the same
    throughput. An explicit MALLOC_ARENA_MAX in the environment wins; other C libraries are
    left alone.
    """
    if os.environ.get("MALLOC_ARENA_MAX") or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):  # not glibc (musl has no mallopt arenas)
        return False


def _running_admin(data_dir: Path) -> FarmClient | None:
    """A client on the running coordinator's admin socket, or None when it is stopped."""
    socket = admin_socket_path(data_dir)
    if not socket.exists():
        return None
    client = FarmClient(f"unix:{socket.resolve()}", Keypair())
    try:
        grpc.channel_ready_future(client.channel).result(timeout=3)
    except grpc.FutureTimeoutError:
        client.close()
        return None
    return client


def _offline(data_dir: Path):  # type: ignore[no-untyped-def]
    """Database, chain and payments of a stopped coordinator."""
    from coordinator.server import open_payments
    from coordinator.storage.database import open_database, sqlite_url
    from coordinator.storage.proof import ProofStore
    from coordinator.storage.store import FarmStore

    saved = json.loads((data_dir / SAVED_CONFIG).read_text()) if (
        data_dir / SAVED_CONFIG).exists() else {}
    config = CoordinatorConfig(
        data_dir=data_dir, db_url=saved.get("db_url"), cluster=saved.get("cluster"),
        mint=saved.get("mint"), epoch_seconds=saved.get("epoch_seconds") or 86_400.0,
        treasury_keypair=Path(saved["treasury_keypair"]) if saved.get("treasury_keypair")
        else None,
        bonds=bond_policy(saved.get("bonds") or {}),
    )
    engine = open_database(config.db_url or sqlite_url(data_dir))
    return FarmStore(engine), ProofStore(engine), open_payments(config, engine)


def _epoch_close(args: argparse.Namespace) -> int:
    client = _running_admin(args.data_dir)
    if client is not None:
        with client:
            summary = client.admin.CloseEpoch(pb.CloseEpochRequest(), timeout=300)
        payouts = [(node, p.minted, p.signature) for node, p in zip(summary.node_ids,
                                                                   summary.payouts, strict=True)]
        epoch, emission = summary.epoch, summary.emission
    else:
        import time

        from coordinator.api.admin_service import close_epoch_now

        store, proof, payments = _offline(args.data_dir)
        try:
            result = close_epoch_now(store, proof, payments, time.time())
        finally:
            payments.chain.close()
        payouts = [(p.node_id, p.amount, p.signature or "") for p in result.payouts]
        epoch, emission = result.epoch, result.emission
    if args.json:
        print(json.dumps({"epoch": epoch, "emission": emission, "payouts": [
            {"node_id": n, "minted": m, "signature": s} for n, m, s in payouts]}, indent=2))
    else:
        print(f"epoch {epoch} closed: emission {emission} base units to {len(payouts)} node(s)")
        for node, minted, signature in payouts:
            print(f"  {node}  {minted}  {signature}")
    return 0


def _doctor(args: argparse.Namespace) -> int:
    """Quarantined records, read straight from the database (SQLite's WAL lets a running
    coordinator go on writing meanwhile; PostgreSQL is shared anyway)."""
    from datetime import UTC, datetime

    from coordinator.storage.database import open_database, sqlite_url
    from coordinator.storage.proof import ProofStore
    from coordinator.storage.quarantine import VERIFICATION, Quarantine

    saved = json.loads((args.data_dir / SAVED_CONFIG).read_text()) if (
        args.data_dir / SAVED_CONFIG).exists() else {}
    if not saved.get("db_url") and not (args.data_dir / "farm.db").exists():
        print(f"render-coordinator: no farm database in {args.data_dir}", file=sys.stderr)
        return 2
    engine = open_database(saved.get("db_url") or sqlite_url(args.data_dir))
    try:
        quarantine = Quarantine(engine)
        if args.release:
            kind, key = args.release
            if not quarantine.release(kind, key):
                print(f"render-coordinator: no quarantined {kind} {key}", file=sys.stderr)
                return 2
            if kind == VERIFICATION:  # held out of the queue: back in for the next verifier
                ProofStore(engine).requeue_held_verification(key)
            print(f"released {kind} {key}: the next settlement sweep tries it again")
        held = quarantine.held()
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps({"quarantined": [
            {"kind": h.kind, "key": h.key, "reason": h.reason, "at": h.at} for h in held]},
            indent=2))
    elif not held:
        print("no quarantined records: every frame, job and node goes through settlement")
    else:
        print(f"{len(held)} record(s) quarantined out of the money path "
              "(fix the cause, then --release KIND KEY):")
        for h in held:
            when = datetime.fromtimestamp(h.at, UTC).strftime("%Y-%m-%d %H:%M:%S")
            print(f"  {h.kind:<18} {h.key}  since {when} UTC\n    {h.reason}")
    return 1 if held else 0


def _migrate(args: argparse.Namespace) -> int:
    """One line: what the upgrade did (or that the schema was current already)."""
    from sqlalchemy.exc import SQLAlchemyError

    from coordinator.storage import migrations
    from coordinator.storage.database import open_engine, safe_url, sqlite_url

    saved = json.loads((args.data_dir / SAVED_CONFIG).read_text()) if (
        args.data_dir / SAVED_CONFIG).exists() else {}
    url = args.db or saved.get("db_url") or sqlite_url(args.data_dir)
    if url.startswith("sqlite") and not args.db and not args.data_dir.is_dir():
        print(f"render-coordinator: no data dir {args.data_dir}", file=sys.stderr)
        return 2
    try:
        engine = open_engine(url)
    except (SQLAlchemyError, ImportError) as error:  # a malformed URL, a missing driver
        print(f"render-coordinator: migrate: {error}", file=sys.stderr)
        return 2
    try:
        migration = migrations.upgrade(engine)
    except (SQLAlchemyError, RuntimeError) as error:
        reason = str(error).strip().splitlines()[0]
        print(f"render-coordinator: migrate {safe_url(url)}: {reason}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    print(f"{safe_url(url)}: {migration.describe()}")
    return 0


def _ledger_check(args: argparse.Namespace) -> int:
    client = _running_admin(args.data_dir)
    if client is not None:
        with client:
            report = client.admin.CheckLedger(pb.CheckLedgerRequest(), timeout=300)
        ok, lines = report.ok, list(report.lines)
    else:
        _, _, payments = _offline(args.data_dir)
        try:
            result = payments.check()
        finally:
            payments.chain.close()
        ok, lines = result.ok, result.lines
    if args.json:
        print(json.dumps({"ok": ok, "lines": lines}, indent=2))
    else:
        print("\n".join(lines))
        print("ledger and chain agree" if ok else "MISMATCH: ledger and chain disagree",
              file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
