"""The sync engine: one data type's pass (read pages, map, compare with what is stored, write, save state)."""
