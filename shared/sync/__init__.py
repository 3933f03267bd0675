"""The sync engine (one data type's pass) and the runner (one run of an integration)."""
