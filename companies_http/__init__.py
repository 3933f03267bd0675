"""GET /api/integrations/{id}/dynamics/companies: companies the integration's app can see."""
import azure.functions as func

from shared.api.connection import companies
from shared.http import handle


def main(req: func.HttpRequest) -> func.HttpResponse:
    return handle(req, companies)
