"""Node bonds: a stake in tokens that makes identities cost something and cheating cost more.

A node operator moves tokens from its own wallet into the bond vault (a token account the
treasury owns, see `TokenChain.bond_vault`) with a transfer it signs itself, prepared and
relayed like a creator's escrow deposit. Every movement is a journaled chain operation with
its ledger posting (docs/PAYMENTS.md, "Bonds"):

    bond     wallet:<node>  -> bond:<node>     the node's transfer into the bond vault
    unbond   bond:<node>    -> wallet:<node>   returned after the cooldown, in good standing
    slash    bond:<node>    -> wallet:<creator> a cheated creator's share of a slash
    forfeit  bond:<node>    -> treasury        the treasury's share of a slash

The rules are pure functions (`lease_limits`, `slash_plan`, `availability_weights`) so they
can be tested and documented on their own; `Bonds` applies them to the database and chain.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from fractions import Fraction

from solders.message import Message
from solders.transaction import VersionedTransaction
from sqlalchemy.engine import Engine

from coordinator.chain.base import ChainError, TokenChain
from coordinator.chain.tokenops import MEMO_PROGRAM_ID
from coordinator.domain.epochs import allocate
from coordinator.domain.ledger import BondState, OpKind, OpState
from coordinator.domain.reputation import PROBATION_RUN, NodeStanding
from coordinator.payments.journal import MEMO_PREFIX, OpJournal, check_amount, new_op, parse_pubkey
from coordinator.payments.results import InsufficientBalance, PaymentError
from coordinator.storage.bond_rows import BondRefused, BondRows
from coordinator.storage.payment_models import (
    BondRecord,
    ChainOpRecord,
    SlashRecord,
)

# --- the rules --------------------------------------------------------------------------


@dataclass(frozen=True)
class BondPolicy:
    """What a node must stake and what it risks; `render-coordinator serve` flags set these."""

    min_bond_tokens: Decimal = Decimal("10")  # to leave probation and take unbounded work
    new_node_leases: int = 1  # leases in flight for a node without bond or verified record
    new_node_frames_per_job: int = 4  # frames of any one job such a node may take
    proven_after: int = 4  # consecutive verified frames that make a verified record
    unbond_cooldown_seconds: float = 86_400.0  # from `render-node unbond` to the return
    slash_share: Decimal = Decimal("0.5")  # part of the bond a proven cheat loses
    slash_to_creators: Decimal = Decimal("0.8")  # part of the slash paid to cheated creators

    def __post_init__(self) -> None:
        if self.min_bond_tokens < 0 or self.unbond_cooldown_seconds < 0:
            raise ValueError("the minimum bond and the cooldown must be >= 0")
        if self.new_node_leases < 1 or self.new_node_frames_per_job < 1:
            raise ValueError("new nodes need at least one lease and one frame per job")
        if self.proven_after < 0:
            raise ValueError("proven_after must be >= 0")
        for name in ("slash_share", "slash_to_creators"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1]")


@dataclass(frozen=True)
class LeaseLimits:
    """How much work a node may hold; None means no limit beyond the farm's usual rules."""

    max_leases: int | None = None
    max_frames_per_job: int | None = None
    reason: str = "bonded, with a verified record"

    @property
    def bounded(self) -> bool:
        return self.max_leases is not None or self.max_frames_per_job is not None


UNBOUNDED = LeaseLimits()


def lease_limits(policy: BondPolicy, standing: NodeStanding, bonded: bool) -> LeaseLimits:
    """A node takes unbounded work only with a bond of at least the minimum *and* a verified
    record (`proven_after` consecutive verified frames; any failure starts the run again).
    Anyone else gets `new_node_leases` leases in flight and `new_node_frames_per_job` frames
    of each job: enough to earn a record, too little for a swarm of fresh keys to matter."""
    record = standing.consecutive_verified >= policy.proven_after and not standing.quarantined
    if bonded and record:
        return UNBOUNDED
    missing = []
    if not bonded:
        missing.append(f"a bond of {policy.min_bond_tokens} tokens")
    if not record:
        missing.append(f"a verified record ({standing.consecutive_verified} of "
                       f"{policy.proven_after} frames verified in a row)")
    return LeaseLimits(policy.new_node_leases, policy.new_node_frames_per_job,
                       "new identity: needs " + " and ".join(missing))


def effective_standing(standing: NodeStanding, bonded: bool) -> NodeStanding:
    """An unbonded node stays on probation whatever its record: every frame is checked and it
    renders economy-tier jobs only. Posting the bond is what lets a record count."""
    if bonded or standing.consecutive_verified < PROBATION_RUN:
        return standing
    return replace(standing, consecutive_verified=PROBATION_RUN - 1)


@dataclass(frozen=True)
class SlashPlan:
    amount: int
    to_creators: dict[str, int]
    to_treasury: int


def slash_plan(policy: BondPolicy, held: int, rejected: Mapping[str, int]) -> SlashPlan:
    """Split a slash of `slash_share` of the bond: `slash_to_creators` of it to the cheated
    creators, pro rata to their rejected frames (`rejected`: creator -> frames), the rest to
    the treasury. Exact in base units (largest remainder); no creators: all to the treasury."""
    amount = math.floor(held * Fraction(policy.slash_share)) if held > 0 else 0
    shares = {creator: Fraction(frames) for creator, frames in rejected.items() if frames > 0}
    creators_pool = math.floor(amount * Fraction(policy.slash_to_creators)) if shares else 0
    to_creators = allocate(creators_pool, shares)
    return SlashPlan(amount, to_creators, amount - sum(to_creators.values()))


@dataclass(frozen=True)
class NodeEpochFacts:
    """What the network itself knows about a node at an epoch's close."""

    bonded: bool  # bond >= minimum and not unbonding
    quarantined: bool
    verified_work_ms: int  # approved work (credits) in the epoch: it answered leases
    answering: bool  # seen by the coordinator within the epoch (leases, heartbeats)
    measured_speed: float | None = None  # reference seconds per wall second, as the
    #                                      coordinator timed its leases (None: never measured)


def availability_weights(facts: Mapping[str, NodeEpochFacts]) -> dict[str, float]:
    """Who shares the availability pool, and in what proportion.

    Only bonded, unquarantined nodes that answered through the epoch (seen in it, with work
    the network verified in it) and whose speed the coordinator measured; weighted by that
    measured speed, the capacity the node offers. A key that merely connected has neither
    verified work nor a measured speed, so it gets nothing.
    """
    return {node: float(fact.measured_speed) for node, fact in sorted(facts.items())
            if fact.bonded and not fact.quarantined and fact.answering
            and fact.verified_work_ms > 0 and fact.measured_speed is not None
            and math.isfinite(fact.measured_speed) and fact.measured_speed > 0}


# --- the service -----------------------------------------------------------------------------


@dataclass(frozen=True)
class BondStatus:
    """A node's bond as the node and the lease gate see it."""

    node_id: str
    held: int
    minimum: int
    posted: int
    slashed: int
    returned: int
    unbond_requested_at: float | None
    release_after: float | None
    last_signature: str
    last_state: str

    @property
    def bonded(self) -> bool:
        """At least the minimum, and not on its way out."""
        return self.held >= self.minimum and self.held > 0 and self.unbond_requested_at is None

    @property
    def state(self) -> BondState:
        if self.unbond_requested_at is not None and self.held > 0:
            return BondState.UNBONDING
        if self.held <= 0:
            return BondState.RETURNED if self.returned > 0 else BondState.NONE
        return BondState.BONDED if self.bonded else BondState.BELOW_MINIMUM


class Bonds:
    """Bonds over one database and chain: post, return after a cooldown, slash."""

    def __init__(self, engine: Engine, chain: TokenChain, journal: OpJournal,
                 policy: BondPolicy | None = None, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.chain = chain
        self.policy = policy or BondPolicy()
        self._journal = journal
        self._clock = clock
        self.rows = BondRows(engine)

    @property
    def minimum(self) -> int:
        """The minimum bond in base units."""
        return int(self.policy.min_bond_tokens * 10**self.chain.decimals)

    # --- reading -----------------------------------------------------------------------------

    def status(self, node_id: str) -> BondStatus:
        record = self.rows.get(node_id)
        if record is None:
            return BondStatus(node_id, 0, self.minimum, 0, 0, 0, None, None, "", "")
        op = self._journal.op(record.last_op_id) if record.last_op_id else None
        release = (None if record.unbond_requested_at is None
                   else record.unbond_requested_at + self.policy.unbond_cooldown_seconds)
        return BondStatus(node_id, record.held, self.minimum, record.posted, record.slashed,
                          record.returned, record.unbond_requested_at, release,
                          (op.signature or "") if op else "", op.state if op else "")

    def bonded(self, node_id: str) -> bool:
        """Bond at least the minimum and no unbond pending (one primary-key read)."""
        record = self.rows.get(node_id)
        return (record is not None and record.held > 0 and record.held >= self.minimum
                and record.unbond_requested_at is None)

    def gate(self, node_id: str, standing: NodeStanding) -> tuple[LeaseLimits, NodeStanding]:
        """For the lease and the check draw: the node's limits and its standing as the farm
        treats it (an unbonded node stays on probation, see `effective_standing`)."""
        bonded = self.bonded(node_id)
        return lease_limits(self.policy, standing, bonded), effective_standing(standing, bonded)

    def bonded_nodes(self) -> set[str]:
        """Every node whose bond counts now (for the epoch's availability share)."""
        return self.rows.counting(self.minimum)

    def unbonding(self) -> list[BondRecord]:
        return self.rows.unbonding()

    def slashed_events(self, node_id: str) -> set[int]:
        return self.rows.slashed_events(node_id)

    def holders(self) -> dict[str, int]:
        """node -> held, for every node with tokens in the bond vault."""
        return self.rows.holders()

    # --- posting a bond ------------------------------------------------------------------------

    def bond_message(self, node_id: str, amount: int) -> bytes:
        """The bond transfer for the node to sign; its memo carries a fresh bond id."""
        check_amount(amount)
        owner = parse_pubkey(node_id)
        try:
            self.chain.ensure_vaults()
            memo = f"{MEMO_PREFIX}bond-{uuid.uuid4().hex}"
            return self.chain.build_bond(owner, amount, memo=memo)
        except ChainError as exc:
            raise PaymentError(f"cannot build the bond: {exc}") from exc

    def post_bond(self, node_id: str, signed_bond: bytes, amount: int) -> BondStatus:
        """Relay the node's signed bond into the vault; the bond counts once it lands.

        Raises InsufficientBalance before sending when the node's wallet is short, and
        PaymentError when the transfer is not exactly the expected one or fails on chain.
        """
        check_amount(amount)
        owner = parse_pubkey(node_id)
        held = self.chain.token_balance(owner)
        if held < amount:
            decimals = self.chain.decimals
            raise InsufficientBalance(
                f"insufficient balance: node wallet {node_id} holds "
                f"{Decimal(held) / 10**decimals} tokens, the bond needs "
                f"{Decimal(amount) / 10**decimals} (test clusters: render-node airdrop)")
        memo = _memo_of(signed_bond, f"{MEMO_PREFIX}bond-")
        try:
            tx = self.chain.prepare_signed_bond(signed_bond, owner, amount, memo=memo)
        except ChainError as exc:
            raise PaymentError(f"bond refused: {exc}") from exc
        now = self._clock()
        op_id = memo.removeprefix(MEMO_PREFIX)
        op = ChainOpRecord(
            op_id=op_id, purpose=f"bond:{node_id}:{op_id}", kind=OpKind.BOND, owner=node_id,
            node_id=node_id, amount=amount, state=OpState.SENT, attempts=1, signature=tx.signature,
            raw=tx.raw, description=tx.description, valid_until=tx.valid_until,
            created_at=now, updated_at=now,
        )
        try:
            self.rows.add_bond_intent(op)
        except BondRefused as exc:
            raise PaymentError(str(exc)) from exc
        self._journal.drive_signed(op.op_id, "the bond")
        return self.status(node_id)

    # --- leaving ---------------------------------------------------------------------------------

    def request_unbond(self, node_id: str, *, quarantined: bool) -> BondStatus:
        """Start the cooldown; the bond stops counting at once and returns after it."""
        if quarantined:
            raise PaymentError("a quarantined node's bond is held: it cannot be withdrawn")
        try:
            self.rows.request_unbond(node_id, self._clock())
        except BondRefused as exc:
            raise PaymentError(str(exc)) from exc
        return self.status(node_id)

    def release(self, node_id: str) -> str | None:
        """Return an unbonding node's whole bond (the caller checked its standing and that the
        cooldown passed); the op id, or None when there is nothing to return."""
        now = self._clock()
        op = self.rows.release(
            node_id, now, self.policy.unbond_cooldown_seconds,
            lambda amount: new_op(OpKind.UNBOND, f"unbond:{node_id}:{uuid.uuid4().hex}",
                                  amount, now, owner=node_id, node_id=node_id))
        if op is None:
            return None
        self._journal.drive(op.op_id)
        return op.op_id

    # --- slashing --------------------------------------------------------------------------------

    def slash(self, node_id: str, event_id: int, rejected: Mapping[str, int],
              reason: str) -> SlashRecord | None:
        """Slash the bond once for the quarantine that `event_id` recorded (None: already done).

        The plan (slash record, reduced bond, one op per payee) commits in one transaction;
        the transfers follow and, like every op, are finished by reconcile after a crash.
        """
        now = self._clock()

        def planned(held: int) -> tuple[SlashRecord, list[ChainOpRecord]]:
            plan = slash_plan(self.policy, held, rejected)
            slash_id = uuid.uuid4().hex
            ops = [new_op(OpKind.SLASH, f"slash:{slash_id}:{creator}", amount, now,
                          owner=creator, node_id=node_id)
                   for creator, amount in sorted(plan.to_creators.items()) if amount > 0]
            if plan.to_treasury > 0:
                ops.append(new_op(OpKind.FORFEIT, f"forfeit:{slash_id}", plan.to_treasury, now,
                                  node_id=node_id))
            return SlashRecord(
                slash_id=slash_id, node_id=node_id, event_id=event_id, amount=plan.amount,
                to_creators=sum(plan.to_creators.values()), to_treasury=plan.to_treasury,
                rejected_frames=sum(rejected.values()), reason=reason[:500],
                created_at=now), ops

        done = self.rows.slash(node_id, event_id, now, planned)
        if done is None:
            return None
        slash, ops = done
        for op in ops:
            self._journal.drive(op.op_id)
        return slash

    def slashes(self, node_id: str) -> list[SlashRecord]:
        return self.rows.slashes(node_id)


def _memo_of(signed: bytes, prefix: str) -> str:
    """The operation id a user-signed message was built with (its Memo); verified later."""
    try:
        message = VersionedTransaction.from_bytes(signed).message
    except Exception as exc:
        raise PaymentError(f"not a serialized transaction: {exc}") from exc
    if not isinstance(message, Message):
        raise PaymentError("must be the legacy message the coordinator prepared")
    for ix in message.instructions:
        if message.account_keys[ix.program_id_index] == MEMO_PROGRAM_ID:
            memo = bytes(ix.data).decode(errors="replace")
            if memo.startswith(prefix):
                return memo
    raise PaymentError("the transaction was not prepared by the coordinator (no operation id)")
