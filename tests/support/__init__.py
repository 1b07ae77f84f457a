"""What the test suites share: servers, captures, pipelines, references."""
