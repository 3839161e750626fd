"""The soak: thousands of webhooks through the local stack over real HTTP, with faults injected on
every side, then a check that no money was lost or applied twice and that Moment agrees with the
ledger. `make soak` runs it (`python -m soak --help`); `tests/integration/test_soak.py` runs a short
one inside `make test`.

- `workload`: what happens, drawn from the seed before anything runs (the books, then every webhook
  delivery and merchant request, in order);
- `faults`: DynamoDB throttling and transaction conflicts (botocore event hooks on the functions'
  client), a reconciler that dies in the middle of a batch, a pusher cut off by its time budget
  (Moment's 429s, 500s and timeouts are the sandbox's own faults);
- `traffic`: Moment's side (payments, and webhook deliveries signed and retried as Moment does,
  several at once) and the merchant's (charges, balance sets, new accounts), over HTTP;
- `verdict`: what the tables and the sandbox hold at the end, against what was sent;
- `run`: the phases (open the books, traffic under faults, quiet, verdict) and the summary line.
"""
