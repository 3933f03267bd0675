"""GET /api/integrations/{id}/webhook-deliveries: each outbound notification and its attempts."""
import azure.functions as func

from shared.api.logs import webhook_deliveries
from shared.http import handle


def main(req: func.HttpRequest) -> func.HttpResponse:
    return handle(req, webhook_deliveries)
