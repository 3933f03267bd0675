"""GET /api/integrations/{id}/changes/{dataType}?cursor=...: the change feed."""
import azure.functions as func

from shared.api.records import changes
from shared.http import handle


def main(req: func.HttpRequest) -> func.HttpResponse:
    return handle(req, changes)
