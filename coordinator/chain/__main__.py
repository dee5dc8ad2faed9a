"""Operator commands for a cluster-backed token: `python -m coordinator.chain --help`.

create-mint  make the farm's mint (treasury = mint authority) and its escrow; prints the mint
info         supply, escrow and treasury balances
grant        test clusters only: airdrop fee SOL to a creator and mint them tokens
"""

from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path

from solders.pubkey import Pubkey

from coordinator.chain.base import ChainError
from coordinator.chain.keys import load_keypair
from coordinator.chain.rpc import RpcChain, cluster_url


def main(argv: list[str] | None = None) -> int:
    """Parse, run one command, print its result; ChainError becomes exit status 1."""
    parser = argparse.ArgumentParser(prog="python -m coordinator.chain")
    parser.add_argument("command", choices=["create-mint", "info", "grant"])
    parser.add_argument("--cluster", required=True, help="devnet|testnet|mainnet-beta|localnet|URL")
    parser.add_argument("--treasury-keypair", type=Path, required=True)
    parser.add_argument("--mint", help="the farm's mint (all commands but create-mint)")
    parser.add_argument("--decimals", type=int, default=6)
    parser.add_argument("--owner", help="grant: the creator's wallet address")
    parser.add_argument("--amount", type=int, help="grant: base units")
    args = parser.parse_args(argv)
    url, treasury = cluster_url(args.cluster), load_keypair(args.treasury_keypair)
    try:
        if args.command == "create-mint":
            chain = RpcChain.create_mint(url, treasury, decimals=args.decimals)
        elif args.mint is None:
            parser.error("--mint is required")
        else:
            chain = RpcChain(url, treasury, Pubkey.from_string(args.mint))
        try:
            if args.command == "grant":
                if args.owner is None or args.amount is None:
                    parser.error("grant needs --owner and --amount")
                owner = Pubkey.from_string(args.owner)
                print(chain.fund_creator(owner, args.amount, memo=f"grant:{uuid.uuid4()}"))
            print(f"mint      {chain.mint} ({chain.decimals} decimals)")
            print(f"treasury  {chain.treasury} ({chain.sol_balance(chain.treasury)} lamports)")
            print(f"escrow    {chain.escrow} ({chain.escrow_balance()} base units)")
            print(f"supply    {chain.supply()} base units")
        finally:
            chain.close()
    except ChainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
