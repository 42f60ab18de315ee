"""Everything that talks to AimHarder: the HTTP client and the firing line."""
