"""POST /api/integrations/{id}/dynamics/test: token, company, counts, mapped fields."""
import azure.functions as func

from shared.api.connection import test_connection
from shared.http import handle


def main(req: func.HttpRequest) -> func.HttpResponse:
    return handle(req, test_connection)
