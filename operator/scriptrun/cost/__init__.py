"""Pure: cost allocation formula and provider price adapters (the cost issue fills this in)."""
