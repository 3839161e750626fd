"""Moment Balance Sync: the merchant's side of Moment billing.

The domain sits in the middle (pure modules: no I/O, no clock of their own), adapters to AWS and
Moment sit in `moment_sync.adapters`, and each Lambda handler is a thin shell around one use case.
"""
