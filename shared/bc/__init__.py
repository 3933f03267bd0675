"""Business Central API v2.0 client: Entra ID tokens, OData paging, retries, typed errors."""
