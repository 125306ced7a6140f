"""Privacy audit: budget report, guarantee statement and the one-run canary audit."""
