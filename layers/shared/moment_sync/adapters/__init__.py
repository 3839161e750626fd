"""Adapters at the edge: DynamoDB, Secrets Manager and (later) Moment's HTTP API."""
