"""BC Sync Functions: everything the Azure Functions folders import (deployed as is)."""
