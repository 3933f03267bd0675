"""Near-real-time sync through BC webhooks (design.md §10): subscriptions, the notification
endpoint's logic, renewal, and the follow-up that keeps a coalesced notification from being lost."""
