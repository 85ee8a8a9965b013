"""The prompt registry: immutable versions, labels, rendering, and the SDK's cached prompt client."""
