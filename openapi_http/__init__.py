"""GET /api/openapi.json: the OpenAPI 3.1 description of this API (no caller identity needed)."""
import json

import azure.functions as func

from shared.openapi import build


def main(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(build()), status_code=200, mimetype="application/json", charset="utf-8")
