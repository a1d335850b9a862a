"""Local fakes of the payment platforms' published HTTP APIs, for tests (no test reaches the internet)."""
