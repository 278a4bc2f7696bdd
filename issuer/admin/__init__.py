"""The admin API: tenants, clients, secrets, tokens (DESIGN §4.1, §4.5)."""
