"""A budget never destroys work: the pure rules behind pausing and resuming a job.

A job's escrow pays for its approved frames, one whole charge each (never a partial burn,
never past the escrow). The farm starts a frame only when the escrow left covers the
expected price of that frame and of every frame already in flight (leased, being verified,
or approved and waiting for its charge); otherwise the job pauses: no new leases, nothing
in flight is dropped. A top-up adds escrow; the settlement sweep then charges the waiting
frames and resumes the job (see docs/PAYMENTS.md, "Pause and top-up").
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_UP, Decimal

WARN_FRACTION = Decimal("0.8")  # status/watch warn once this share of the escrow is charged
LEASE_SHORT = "the escrow left does not cover the next frame and those in flight"
CHARGE_SHORT = "an approved frame costs more than the escrow left"


@dataclass(frozen=True)
class BudgetView:
    """One job's money at a glance, in token base units."""

    deposited: int  # escrow deposited: submit + landed top-ups
    charged: int  # burned (or being burned) for approved frames
    committed_frames: int  # frames leased, being verified, or approved and not yet charged
    remaining_frames: int  # frames not charged yet and not given up (queued ones included)
    price: int  # expected price of one frame (see frame_price)

    @property
    def left(self) -> int:
        return self.deposited - self.charged


def frame_price(estimate_tokens: int, charged_tokens: int, charged_frames: int) -> int:
    """Expected price of the job's next frame: its own mean charge once it has one.

    Before any frame is charged, the estimate's price per frame; after, what the job's
    frames have actually cost on average (an estimate off by 2x then stops mattering).
    """
    if charged_frames > 0:
        return -(-charged_tokens // charged_frames)  # rounded up: reserve, never under
    return max(0, estimate_tokens)


def may_lease(view: BudgetView, frames: int) -> bool:
    """May `frames` more frames be leased without the escrow being overshot, as expected?"""
    return view.left >= (view.committed_frames + frames) * view.price


def may_charge(left: int, cost: int) -> bool:
    """A charge is booked whole or not at all: never a partial burn, never past the escrow."""
    return 0 <= cost <= left


def topup_suggestion(view: BudgetView, waiting_cost: int = 0) -> int:
    """Tokens that would let the job finish at its expected price (at least one frame).

    `waiting_cost`: the charge of a frame waiting for money; the rest are expected to cost
    as much when it is more than the expected price (it is what the job really costs).
    """
    price = max(view.price, waiting_cost)
    need = view.remaining_frames * price - view.left
    return max(need, price, 1)


def used_fraction(charged_usd: Decimal, escrowed_usd: Decimal) -> Decimal:
    """Share of the escrow charged so far (0 when nothing was escrowed)."""
    return charged_usd / escrowed_usd if escrowed_usd > 0 else Decimal(0)


def usd_text(amount: Decimal) -> str:
    """A USD amount people can read and paste: cents when large, 6 decimals when tiny."""
    places = Decimal("0.01") if amount >= 1 else Decimal("0.000001")
    return f"${amount.quantize(places, rounding=ROUND_UP)}"


def pause_reason(job_id: str, cause: str, charged_usd: Decimal, escrowed_usd: Decimal,
                 suggested_usd: Decimal) -> str:
    """The one line a paused job shows, with the command that resumes it."""
    return (f"paused: budget used up ({usd_text(charged_usd)} of {usd_text(escrowed_usd)} "
            f"charged; {cause}); top up with `frameproof topup {job_id} --usd "
            f"{usd_text(suggested_usd)[1:]}`")
