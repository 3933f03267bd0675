"""POST /api/integrations/{id}/dynamics/sync: a full, delta or modifiedSince sync."""
import azure.functions as func

from shared.api.sync import sync
from shared.http import handle


def main(req: func.HttpRequest) -> func.HttpResponse:
    return handle(req, sync)
