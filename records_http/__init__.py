"""GET /api/integrations/{id}/records/{dataType}[/{externalId}]: the stored platform records."""
import azure.functions as func

from shared.api.records import records
from shared.http import handle


def main(req: func.HttpRequest) -> func.HttpResponse:
    return handle(req, records)
