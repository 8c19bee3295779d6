"""Contract tests: what the runtime writes, the add-on reads."""
