"""The Docker-free local stack: moto on loopback, an HTTP front for the API routes, and helpers
that build AWS resources from template.yaml's own definitions."""
