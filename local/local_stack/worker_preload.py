"""Imported once by the workers' fork server (workers.PRELOAD): warms what every worker would otherwise
pay for on its first call, about a second each on this machine.

boto3's first client of a session loads the endpoint rules, the partitions and the service model; a
worker forked after this finds them in the default session's loader. The clients made here are thrown
away, and carry explicit made-up credentials so that the session caches none: each worker resolves
its own from the environment its function is given.
"""

from __future__ import annotations

import boto3

from local_stack.made_up_values import LOCAL_AWS_ACCESS_KEY_ID, LOCAL_AWS_SECRET_ACCESS_KEY

for _service in ("dynamodb", "secretsmanager"):
    boto3.client(
        _service,
        region_name="af-south-1",
        aws_access_key_id=LOCAL_AWS_ACCESS_KEY_ID,
        aws_secret_access_key=LOCAL_AWS_SECRET_ACCESS_KEY,
    )
