"""metricstore's migration history (peewee-migrate), shipped as metricstore.migrations."""
