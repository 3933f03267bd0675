"""POST /api/integrations/{id}/dynamics/authorize: start the Microsoft sign-in of a delegated integration."""
import azure.functions as func

from shared.api.oauth import authorize
from shared.http import handle


def main(req: func.HttpRequest) -> func.HttpResponse:
    return handle(req, authorize)
