"""The Docker-free local stack: the whole system on one machine, from template.yaml's own definitions.

- `stack.py`: `running_stack(LocalSettings)`, everything started and wired; `python -m local_stack`
  (`__main__.py`, what `make local` runs) keeps it in the foreground until Ctrl-C;
- `moto_server.py`: moto's server on loopback, threaded, each request's work under one lock;
- `template.py`: tables from template.yaml, and its intrinsic functions resolved locally;
- `functions.py`: the handlers, their environments, `LocalFunctions` invoking them as Lambda would;
- `workers.py`: each function in worker processes of its own (its concurrency), killed at its timeout;
- `api_gateway.py`: the HTTP API front (payload 2.0 events in, HTTP out);
- `streams.py`, `event_source.py`: the stream read back as Lambda delivers it, and the reconciler's
  event source mapping (filter, batches, partial failures, bisection, retries, on-failure queue);
- `scheduler.py`: the scheduled functions on a timer and on demand;
- `demo.py` (`make demo`), `ledger_access.py` (the ledger API, or its use cases directly);
- `sample_events.py`: writes events/ for `sam local invoke`; `made_up_values.py`: every made-up secret.
"""
