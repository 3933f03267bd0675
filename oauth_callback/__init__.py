"""GET /api/oauth/callback: where Microsoft Entra ID sends the browser back (anonymous: the state is the credential)."""
import azure.functions as func

from shared.api.oauth import callback


def main(req: func.HttpRequest) -> func.HttpResponse:
    return callback(req)
