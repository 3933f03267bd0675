"""POST /api/dynamics/companies: list companies for credentials, before creating an integration."""
import azure.functions as func

from shared.api.connection import discover_companies
from shared.http import handle


def main(req: func.HttpRequest) -> func.HttpResponse:
    return handle(req, discover_companies)
