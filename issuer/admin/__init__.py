"""The admin API: tenants, clients, secrets, tokens."""
