"""Fault injection: fault profiles, a managed Toxiproxy, the HTTP fault stage, the scheduler."""
