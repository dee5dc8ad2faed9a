"""A loopback Solana JSON-RPC endpoint over LiteSVM, for testing the RPC backend without a cluster.

Test-only, but importable. It implements just the methods `RpcChain` uses, answers with
solders' own response types (so solana-py parses exactly what it would from a validator), and
executes every transaction for real in LiteSVM.

It models what matters for reconciliation: each getLatestBlockhash opens a new block with a new
blockhash, valid for 150 blocks; a transaction with an unknown or expired blockhash is refused
(or, with skipPreflight, silently dropped, as a real cluster would); `expire_blockhashes()`
jumps past every blockhash issued so far. Everything is "finalized" as soon as it executes.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from solders.hash import Hash
from solders.litesvm import LiteSVM
from solders.pubkey import Pubkey
from solders.rpc.responses import (
    GetAccountInfoResp,
    GetBalanceResp,
    GetBlockHeightResp,
    GetLatestBlockhashResp,
    GetMinimumBalanceForRentExemptionResp,
    GetSignatureStatusesResp,
    RequestAirdropResp,
    RpcBlockhash,
    RpcResponseContext,
    RpcSimulateTransactionResult,
    SendTransactionResp,
)
from solders.signature import Signature
from solders.transaction import VersionedTransaction
from solders.transaction_metadata import FailedTransactionMetadata
from solders.transaction_status import (
    TransactionConfirmationStatus,
    TransactionErrorFieldless,
    TransactionErrorType,
    TransactionStatus,
)

MAX_PROCESSING_AGE = 150


class RpcError(Exception):
    """A JSON-RPC error object to send back."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code, self.message, self.data = code, message, data


class TestRpcServer:
    """`with TestRpcServer() as server: RpcChain(server.url, ...)`; one LiteSVM behind it."""

    __test__ = False  # not a pytest test class

    def __init__(self) -> None:
        self.svm = LiteSVM().with_blockhash_check(False)  # validity is modelled here instead
        self._lock = threading.Lock()
        self._height = 1
        self._blockhashes: dict[Hash, int] = {}
        self._statuses: dict[Signature, TransactionStatus] = {}
        self._httpd: ThreadingHTTPServer | None = None
        self._methods: dict[str, Callable[[list[Any]], str]] = {
            "getAccountInfo": self._get_account_info,
            "getBalance": self._get_balance,
            "getBlockHeight": lambda _: GetBlockHeightResp(self._height).to_json(),
            "getLatestBlockhash": self._get_latest_blockhash,
            "getMinimumBalanceForRentExemption": self._get_minimum_balance,
            "getSignatureStatuses": self._get_signature_statuses,
            "requestAirdrop": self._request_airdrop,
            "sendTransaction": self._send_transaction,
        }

    @property
    def url(self) -> str:
        """http://127.0.0.1:<port> of the running server."""
        if self._httpd is None:
            raise RuntimeError("server is not running")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> str:
        """Serve on an ephemeral loopback port in a daemon thread; returns the URL."""
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else each reply waits ~40 ms for a delayed ACK

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                reply = server.handle(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self.url

    def stop(self) -> None:
        """Stop serving and free the port."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> TestRpcServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def expire_blockhashes(self) -> None:
        """Advance past the validity of every blockhash issued so far."""
        with self._lock:
            self._height += MAX_PROCESSING_AGE + 1

    def handle(self, body: bytes) -> str:
        """One JSON-RPC request in, one response out (batches are not needed by solana-py)."""
        request: dict[str, Any] = {}
        try:
            request = json.loads(body)
            method = self._methods.get(request.get("method", ""))
            if method is None:
                raise RpcError(-32601, f"Method not found: {request.get('method')}")
            with self._lock:
                response = json.loads(method(request.get("params") or []))
        except RpcError as exc:
            error: dict[str, Any] = {"code": exc.code, "message": exc.message}
            if exc.data is not None:
                error["data"] = exc.data
            response = {"jsonrpc": "2.0", "error": error}
        except Exception as exc:
            response = {"jsonrpc": "2.0", "error": {"code": -32602, "message": str(exc)}}
        response["id"] = request.get("id") if isinstance(request, dict) else None
        return json.dumps(response)

    # --- methods ---------------------------------------------------------------------------

    def _context(self) -> RpcResponseContext:
        return RpcResponseContext(self._height)

    def _get_latest_blockhash(self, _: list[Any]) -> str:
        self._height += 1
        self.svm.expire_blockhash()
        blockhash = self.svm.latest_blockhash()
        self._blockhashes[blockhash] = self._height
        valid = RpcBlockhash(blockhash, self._height + MAX_PROCESSING_AGE)
        return GetLatestBlockhashResp(valid, self._context()).to_json()

    def _get_account_info(self, params: list[Any]) -> str:
        account = self.svm.get_account(Pubkey.from_string(params[0]))
        return GetAccountInfoResp(account, self._context()).to_json()

    def _get_balance(self, params: list[Any]) -> str:
        balance = self.svm.get_balance(Pubkey.from_string(params[0])) or 0
        return GetBalanceResp(balance, self._context()).to_json()

    def _get_minimum_balance(self, params: list[Any]) -> str:
        lamports = self.svm.minimum_balance_for_rent_exemption(int(params[0]))
        return GetMinimumBalanceForRentExemptionResp(lamports).to_json()

    def _get_signature_statuses(self, params: list[Any]) -> str:
        statuses = [self._statuses.get(Signature.from_string(s)) for s in params[0]]
        return GetSignatureStatusesResp(statuses, self._context()).to_json()

    def _request_airdrop(self, params: list[Any]) -> str:
        result = self.svm.airdrop(Pubkey.from_string(params[0]), int(params[1]))
        if isinstance(result, FailedTransactionMetadata):
            raise RpcError(-32600, f"airdrop failed: {result.err()}")
        signature = result.signature()
        self._record(signature, None)
        return RequestAirdropResp(signature).to_json()

    def _send_transaction(self, params: list[Any]) -> str:
        config = params[1] if len(params) > 1 else {}
        if config.get("encoding", "base58") != "base64":
            raise RpcError(-32602, "only base64 transactions are supported here")
        tx = VersionedTransaction.from_bytes(base64.b64decode(params[0]))
        signature = tx.signatures[0]
        if not all(tx.verify_with_results()):
            raise RpcError(-32003, "Transaction signature verification failure")
        preflight = not config.get("skipPreflight", False)
        refusal = self._refusal(tx)
        if refusal is not None:
            if preflight:
                raise _preflight_failure(refusal, [])
            return SendTransactionResp(signature).to_json()  # dropped, as a cluster would
        if preflight:
            simulated = self.svm.simulate_transaction(tx)
            if isinstance(simulated, FailedTransactionMetadata):
                raise _preflight_failure(simulated.err(), list(simulated.meta().logs()))
        result = self.svm.send_transaction(tx)
        if isinstance(result, FailedTransactionMetadata):
            if self.svm.get_transaction(signature) is None:
                return SendTransactionResp(signature).to_json()  # not processed: dropped
            self._record(signature, result.err())
        else:
            self._record(signature, None)
        return SendTransactionResp(signature).to_json()

    def _refusal(self, tx: VersionedTransaction) -> TransactionErrorType | None:
        if tx.signatures[0] in self._statuses:
            return TransactionErrorFieldless.AlreadyProcessed
        issued = self._blockhashes.get(tx.message.recent_blockhash)
        if issued is None or self._height > issued + MAX_PROCESSING_AGE:
            return TransactionErrorFieldless.BlockhashNotFound
        return None

    def _record(self, signature: Signature, err: TransactionErrorType | None) -> None:
        self._statuses[signature] = TransactionStatus(
            self._height, None, err, err, TransactionConfirmationStatus.Finalized
        )


def _preflight_failure(err: TransactionErrorType, logs: list[str]) -> RpcError:
    data = json.loads(RpcSimulateTransactionResult(err=err, logs=logs).to_json())
    return RpcError(-32002, f"Transaction simulation failed: {err}", data)
