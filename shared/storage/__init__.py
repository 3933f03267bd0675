"""Repositories over Azure Table Storage."""
