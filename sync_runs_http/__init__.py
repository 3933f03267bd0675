"""GET /api/integrations/{id}/sync-runs[/{runId}]: runs with status, progress and counts."""
import azure.functions as func

from shared.api.runs import runs
from shared.http import handle


def main(req: func.HttpRequest) -> func.HttpResponse:
    return handle(req, runs)
