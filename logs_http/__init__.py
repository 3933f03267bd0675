"""GET /api/integrations/{id}/sync-logs: newest first, filtered and paged."""
import azure.functions as func

from shared.api.logs import sync_logs
from shared.http import handle


def main(req: func.HttpRequest) -> func.HttpResponse:
    return handle(req, sync_logs)
