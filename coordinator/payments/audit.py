"""`Payments.check`: prove the ledger and the chain agree exactly, line by line.

Kept apart from the service because it reads everything and trusts nothing it wrote: it
recomputes what each landed operation must have posted and compares amounts with the chain.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sqlalchemy.engine import Engine

from coordinator.chain.base import TokenChain
from coordinator.domain.ledger import (
    OPEN_STATES,
    EscrowState,
    OpState,
    bond_account,
    escrow_account,
    movement_lines,
)
from coordinator.payments.results import CheckReport
from coordinator.storage.ledger import read_books
from coordinator.storage.payment_models import BondRecord
from coordinator.storage.quarantine import quarantine_lines


def run_check(engine: Engine, chain: TokenChain, *, verify_signatures: bool) -> CheckReport:
    """See `Payments.check`; every line is a verdict, "MISMATCH ..." lines make it fail."""
    lines: list[str] = []

    def verdict(good: bool, text: str) -> None:
        lines.append(("ok       " if good else "MISMATCH ") + text)

    books = read_books(engine)
    ops, posted, unbalanced = books.ops, books.posted, books.unbalanced
    issued, burned, treasury = books.issued, books.burned, books.treasury
    escrows, bond_accounts, jobs, bonds = books.escrows, books.bonds_held, books.jobs, books.bonds
    burned_per_job = books.burned_per_job

    postings = len(posted)
    verdict(not unbalanced, f"{postings} postings balance to zero" if not unbalanced else
            "unbalanced postings: " + ", ".join(f"#{pid} off by {d}" for pid, d in unbalanced))

    bad_ops = 0
    for op in ops:
        got = sorted(posted.get(op.op_id, []))
        if op.state == OpState.LANDED:
            want = sorted(movement_lines(op.kind, op.amount, owner=op.owner,
                                                job_id=op.job_id or "",
                                                node_id=op.node_id or ""))
            if got != want:
                bad_ops += 1
                verdict(False, f"{op.kind} {op.op_id}: posted {got}, expected {want}")
            if verify_signatures and op.signature:
                status = chain.status(op.signature)
                if status != "landed":
                    bad_ops += 1
                    verdict(False, f"{op.kind} {op.op_id}: ledger says landed, chain says "
                                   f"{status} ({op.signature})")
        elif got:
            bad_ops += 1
            verdict(False, f"{op.kind} {op.op_id} is {op.state} but has ledger lines {got}")
    landed = sum(op.state == OpState.LANDED for op in ops)
    if not bad_ops:
        checked = " (signatures verified on chain)" if verify_signatures else ""
        verdict(True, f"{landed} landed operations posted exactly once{checked}")
    pending = [op for op in ops if op.state in OPEN_STATES]
    if pending:
        lines.append(f"pending  {len(pending)} operations not final (run reconcile_pending): "
                     + ", ".join(f"{op.kind} {op.op_id} {op.state}" for op in pending[:10]))

    chain_escrow = chain.escrow_balance()
    ledger_escrow = sum(escrows.values())
    verdict(ledger_escrow == chain_escrow,
            f"escrow: ledger {ledger_escrow}, chain {chain_escrow}")
    minted_total = -issued
    ledger_supply = minted_total - burned
    chain_supply = chain.supply()
    verdict(ledger_supply == chain_supply,
            f"supply: ledger minted {minted_total} - burned {burned} = {ledger_supply}, "
            f"chain {chain_supply}")
    for kind, total in (("minted", minted_total), ("burned", burned)):
        kinds = ("grant", "mint") if kind == "minted" else ("burn",)
        ops_total = sum(op.amount for op in ops if op.state == OpState.LANDED and op.kind in kinds)
        verdict(total == ops_total, f"{kind} total: ledger {total}, landed ops {ops_total}")

    open_jobs = {op.job_id for op in pending if op.job_id}
    for job in jobs:
        held = escrows.get(escrow_account(job.job_id), 0)
        if held < 0:
            verdict(False, f"job {job.job_id}: escrow account is negative ({held})")
        if burned_per_job[job.job_id] != job.charged:
            verdict(False, f"job {job.job_id}: frames burned {burned_per_job[job.job_id]}, "
                           f"billing charged {job.charged}")
        if job.job_id in open_jobs or job.state in (EscrowState.OPENING, EscrowState.FAILED):
            continue
        want = job.deposited - job.charged - job.refunded
        if held != want:
            verdict(False, f"job {job.job_id}: escrow holds {held}, billing says {want} "
                           f"(deposited {job.deposited} - charged {job.charged} - refunded "
                           f"{job.refunded})")
    if not any(line.startswith("MISMATCH job") for line in lines):
        verdict(True, f"{len(jobs)} jobs: escrow accounts match their billing")
    _check_bonds(chain, verdict, lines, bond_accounts, treasury, bonds,
                 {op.node_id for op in pending if op.node_id})
    ok = not any(line.startswith("MISMATCH") for line in lines)
    return CheckReport(ok, lines + quarantine_lines(engine))


def _check_bonds(chain: TokenChain, verdict: Callable[[bool, str], None], lines: list[str],
                 accounts: dict[str, int], treasury: int, bonds: Sequence[BondRecord],
                 pending_nodes: set[str | None]) -> None:
    """Bond vault and treasury vault against their ledger accounts; each bond against its
    account once its operations are final."""
    chain_bonds = chain.bond_vault_balance()
    verdict(sum(accounts.values()) == chain_bonds,
            f"bonds: ledger {sum(accounts.values())}, chain bond vault {chain_bonds}")
    chain_treasury = chain.treasury_vault_balance()
    verdict(treasury == chain_treasury,
            f"treasury: ledger {treasury}, chain treasury vault {chain_treasury}")
    for account, held in accounts.items():
        if held < 0:
            verdict(False, f"{account} is negative ({held})")
    for bond in bonds:
        if bond.node_id in pending_nodes:
            continue
        account = accounts.get(bond_account(bond.node_id), 0)
        if account != bond.held:
            verdict(False, f"bond of {bond.node_id}: ledger {account}, bond record {bond.held} "
                           f"(posted {bond.posted} - slashed {bond.slashed} - returned "
                           f"{bond.returned})")
    if not any(line.startswith("MISMATCH bond of") for line in lines):
        verdict(True, f"{len(bonds)} bonds match their ledger accounts")
