"""Handlers behind the HTTP functions: each takes a checked Request and returns a response."""
