"""The config file: schema, loading with clear errors, and checks across fields."""
