"""What operators watch: status and metrics (from one shared read) and webhooks."""
