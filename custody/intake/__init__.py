"""Taking withdrawal requests in: API-key authentication, the withdrawal service (idempotent intake, policy
decision, routing) and the group commit that lets one database transaction decide many requests."""
