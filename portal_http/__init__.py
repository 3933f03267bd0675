"""GET /api/portal[/{asset}]: the monitoring page (static files; its data comes from the JSON API)."""
import azure.functions as func

from shared.portal import serve


def main(req: func.HttpRequest) -> func.HttpResponse:
    return serve(req.route_params.get("path") or "")
