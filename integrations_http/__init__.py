"""/api/integrations[/{id}]: create, list, get, update, delete (= disconnect)."""
import azure.functions as func

from shared.api import integrations
from shared.errors import ServiceError
from shared.http import Request, handle

ROUTES = {
    ("POST", False): integrations.create,
    ("GET", False): integrations.list_,
    ("GET", True): integrations.get,
    ("PATCH", True): integrations.update,
    ("DELETE", True): integrations.delete,
}


def dispatch(request: Request) -> func.HttpResponse:
    handler = ROUTES.get((request.raw.method.upper(), bool(request.route.get("id"))))
    if handler is None:
        raise ServiceError(f"{request.raw.method} is not allowed here", code="method_not_allowed", status=405)
    return handler(request)


def main(req: func.HttpRequest) -> func.HttpResponse:
    return handle(req, dispatch)
