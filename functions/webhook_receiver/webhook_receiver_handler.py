"""POST /webhooks/moment: verify Moment's signature, store the delivery once, acknowledge it."""

from typing import Any

from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2
from aws_lambda_powertools.utilities.typing import LambdaContext

from moment_sync.observability import logger, metrics
from moment_sync.receiver import WebhookRequest, receive_webhook
from moment_sync.runtime import ReceiverDependencies, receiver_dependencies


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(
    event: dict[str, Any], context: LambdaContext, dependencies: ReceiverDependencies | None = None
) -> dict[str, Any]:
    request = APIGatewayProxyEventV2(event)
    dependencies = dependencies or receiver_dependencies()
    return receive_webhook(
        WebhookRequest(request.headers, request.body, request.is_base64_encoded),
        keys=dependencies.keys,
        store=dependencies.store,
        settings=dependencies.settings,
        now=dependencies.clock,
    )
