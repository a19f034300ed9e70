"""Seed data shipped with metricstore (as metricstore.seeds)."""
