"""A deterministic, seeded simulation of the whole system (the idea of TigerBeetle's VOPR), driven by
hypothesis's stateful testing: see docs/testing.md, "The simulation"."""
