"""The ledger: balances of customers and accounts, each changed only by an immutable entry."""
