"""Known-bad patches of the code, and the harness that proves the simulation finds each one."""
