"""POST /webhooks/moment: verify Moment's signature, store the delivery once, acknowledge it."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from moment_sync.observability import Invocation
from moment_sync.receiver import WebhookRequest, receive_webhook
from moment_sync.runtime import ReceiverDependencies, receiver_dependencies


# No Powertools decorators: `Invocation` does their work only when an outcome logs through Powertools;
# an accepted webhook is one line written directly (docs/performance.md, the receiver's warm call).
def lambda_handler(
    event: dict[str, Any], context: LambdaContext, dependencies: ReceiverDependencies | None = None
) -> dict[str, Any]:
    # Three fields of the API Gateway (payload 2.0) event; its data class would load every Powertools
    # event class at cold start (~20 ms) for nothing else. Header names are matched case-insensitively.
    dependencies = dependencies or receiver_dependencies()
    invocation = Invocation(context)
    try:
        return receive_webhook(
            WebhookRequest(event.get("headers") or {}, event.get("body"), bool(event.get("isBase64Encoded"))),
            keys=dependencies.keys,
            store=dependencies.store,
            settings=dependencies.settings,
            now=dependencies.clock,
            invocation=invocation,
        )
    finally:
        invocation.finish()
