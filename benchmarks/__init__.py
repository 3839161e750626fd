"""`make bench`: every figure is a ratio against a baseline measured in the same run.

Run `python -m benchmarks --help`. One module per area (`receiver.py`, `reconciler.py`, `pusher.py`,
`cold_imports.py`, `sizes.py`, `cost.py`), registered in `registry.AREAS`; `docs/performance.md`
explains each row. This package imports nothing at package level: a cold-start child imports
`benchmarks.receiver_cold` after its timed part and must not drag anything else in.
"""
