"""Tasks: follow-up work items, created for a new case when its routing address asks for one
("create a task with status X") and listed or updated from the CLI and the REST API."""
